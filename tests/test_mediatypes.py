"""The media type table: what each type says, and the types of one family."""

from lambdaimages import mediatypes as mt


def test_indexes_and_manifests():
    assert mt.is_index(mt.OCI_INDEX) and mt.is_index(mt.DOCKER_LIST)
    assert not mt.is_index(mt.OCI_MANIFEST)
    assert mt.is_manifest(mt.OCI_MANIFEST) and mt.is_manifest(mt.DOCKER_MANIFEST)
    assert not mt.is_manifest(mt.DOCKER_LIST)
    # distribution 2.8 needs the index types in Accept, or it answers 404 for an OCI index.
    assert mt.ACCEPT.split(", ") == [mt.OCI_INDEX, mt.DOCKER_LIST, mt.OCI_MANIFEST, mt.DOCKER_MANIFEST]


def test_layer_compression():
    assert mt.layer_compression("application/vnd.oci.image.layer.v1.tar+gzip") == "gzip"
    assert mt.layer_compression("application/vnd.docker.image.rootfs.diff.tar.gzip") == "gzip"
    assert mt.layer_compression("application/vnd.oci.image.layer.v1.tar") is None
    assert mt.layer_compression("application/vnd.oci.image.layer.v1.tar+zstd") == "zstd"
    assert mt.layer_compression("application/vnd.docker.image.rootfs.diff.tar.zstd") == "zstd"
    assert mt.layer_compression(mt.OCI_CONFIG) is None
    assert mt.is_layer("application/vnd.oci.image.layer.v1.tar")
    assert mt.is_layer("application/vnd.oci.image.layer.v1.tar+zstd")  # read and re-encoded (issue 18)
    assert mt.is_layer("application/vnd.docker.image.rootfs.diff.tar.zstd")
    assert not mt.is_layer("application/vnd.oci.image.layer.v1.tar+bzip2")
    assert not mt.is_layer(mt.OCI_CONFIG)


def test_one_family_each():
    assert mt.index_for(mt.DOCKER_MANIFEST) == mt.DOCKER_LIST
    assert mt.index_for(mt.OCI_MANIFEST) == mt.OCI_INDEX
    assert mt.manifest_for(mt.DOCKER_LIST) == mt.DOCKER_MANIFEST
    assert mt.config_for(mt.DOCKER_MANIFEST) == "application/vnd.docker.container.image.v1+json"
    assert mt.gzip_layer_for(mt.DOCKER_MANIFEST) == mt.DOCKER_LAYER_GZIP
    assert mt.gzip_layer_for(mt.OCI_MANIFEST) == mt.OCI_LAYER_GZIP
    assert mt.gzip_layer_for("text/plain") == mt.OCI_LAYER_GZIP  # what push has always used for an unknown type
