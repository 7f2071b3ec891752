"""Every media type this project reads or writes (OCI and Docker v2), and what each says about its document."""

from __future__ import annotations

# Indexes (a manifest per platform) and image manifests, in the two families.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# distribution 2.8 answers 404 for an OCI index unless its type is accepted too.
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)

# Image configs.
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

# Layers: the ones export can read (gzip, zstd or plain tar). Docker's zstd name is the one moby and
# containerd accept (Docker's own v2 schema has no zstd type).
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
GZIP_LAYERS = (OCI_LAYER_GZIP, DOCKER_LAYER_GZIP)
ZSTD_LAYERS = (OCI_LAYER_ZSTD, DOCKER_LAYER_ZSTD)
TAR_LAYERS = (OCI_LAYER,)
LAYER_TYPES = GZIP_LAYERS + ZSTD_LAYERS + TAR_LAYERS

# OCI artifacts (referrers): the empty config, and the SBOM format attached.
EMPTY = "application/vnd.oci.empty.v1+json"
CYCLONEDX = "application/vnd.cyclonedx+json"

# The registry layer cache's artifacts (registry.layercache): one compressed layer tarball each, of our own types
# since OCI has no xz layer type (and the tarball is a cache entry, not an image's layer).
CACHED_LAYER = "application/vnd.lambdaimages.layer.v1"
CACHED_TARBALLS = {
    "xz": "application/vnd.lambdaimages.layer.v1.tar+xz",
    "gzip": "application/vnd.lambdaimages.layer.v1.tar+gzip",
}

# The same roles in each family, keyed by the manifest type.
_INDEX_FOR = {OCI_MANIFEST: OCI_INDEX, DOCKER_MANIFEST: DOCKER_LIST}
_MANIFEST_FOR = {OCI_INDEX: OCI_MANIFEST, DOCKER_LIST: DOCKER_MANIFEST}
_CONFIG_FOR = {OCI_MANIFEST: OCI_CONFIG, DOCKER_MANIFEST: DOCKER_CONFIG}
_GZIP_LAYER_FOR = {OCI_MANIFEST: OCI_LAYER_GZIP, DOCKER_MANIFEST: DOCKER_LAYER_GZIP}


def is_index(media_type: str) -> bool:
    """An index or manifest list: one manifest per platform."""
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    """An image manifest: one config and its layers."""
    return media_type in MANIFEST_TYPES


def is_layer(media_type: str) -> bool:
    """A layer type export can read."""
    return media_type in LAYER_TYPES


def layer_compression(media_type: str) -> str | None:
    """How a layer blob of this type is compressed: "gzip", "zstd", or None (a plain tar, or not a layer type)."""
    if media_type in GZIP_LAYERS:
        return "gzip"
    if media_type in ZSTD_LAYERS:
        return "zstd"
    return None


def index_for(manifest_type: str) -> str:
    """The index type of the manifest type's family (OCI for a type of neither)."""
    return _INDEX_FOR.get(manifest_type, OCI_INDEX)


def manifest_for(index_type: str) -> str:
    """The manifest type of the index type's family (OCI for a type of neither)."""
    return _MANIFEST_FOR.get(index_type, OCI_MANIFEST)


def config_for(manifest_type: str) -> str:
    """The config type of the manifest type's family (OCI for a type of neither)."""
    return _CONFIG_FOR.get(manifest_type, OCI_CONFIG)


def gzip_layer_for(manifest_type: str) -> str:
    """The gzip layer type of the manifest type's family (OCI for a type of neither)."""
    return _GZIP_LAYER_FOR.get(manifest_type, OCI_LAYER_GZIP)
