"""zstd layers (`...tar+zstd`): resolve accepts them, export unzstds the blob, checks the diff_id on the tar and
re-encodes it with the catalog's codec (the legacy builder cannot ADD zstd); the build and verify then pass
(real doit CLI, real local registry, real engine)."""

import gzip
import hashlib
import json
import lzma
import platform
import tarfile
import uuid

import pytest
import zstandard
from doit_cli import run_doit, smoke_catalog
from states import export_peak_mb, make_state

from lambdaimages import mediatypes
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest
from lambdaimages.errors import RegistryError
from lambdaimages.mediatypes import DOCKER_MANIFEST, OCI_MANIFEST, config_for, gzip_layer_for
from lambdaimages.registry.client import RegistryClient
from lambdaimages.snapshot import export
from lambdaimages.state import State
from lambdaimages.testbed import samples

ZSTD_LAYER = 1  # the runtime layer (0-based): entrypoint and bootstrap, so the built image runs only if it is right
EVENT = {"hello": "zstd"}


def _zstd_blob(tar: bytes) -> bytes:
    """The tar as two concatenated zstd frames, as a multi-threaded or appending writer may leave it."""
    half = len(tar) // 2
    compressor = zstandard.ZstdCompressor(level=3)
    return compressor.compress(tar[:half]) + compressor.compress(tar[half:])


def _push_with_zstd_layer(client: RegistryClient, repository: str, image: samples.SampleImage, manifest_type: str):
    """Push `image` under tag 1 as one manifest (no index) whose layer ZSTD_LAYER is a zstd blob."""
    zstd_type = mediatypes.OCI_LAYER_ZSTD if manifest_type == OCI_MANIFEST else mediatypes.DOCKER_LAYER_ZSTD
    layers = []
    for number, layer in enumerate(image.layers):
        blob, media_type = (_zstd_blob(layer.tar), zstd_type) if number == ZSTD_LAYER else (layer.blob, None)
        client.push_blob(repository, blob)
        layers.append({"mediaType": media_type or gzip_layer_for(manifest_type), "digest": Digest.of(blob),
                       "size": len(blob)})  # fmt: skip
    client.push_blob(repository, image.config_bytes)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": {
                "mediaType": config_for(manifest_type),
                "digest": image.config_digest,
                "size": len(image.config_bytes),
            },
            "layers": layers,
        },
        indent=2,
    ).encode()
    client.push_manifest(repository, "1", manifest_type, body)
    return layers


def test_layer_compression_knows_zstd():
    assert mediatypes.layer_compression(mediatypes.OCI_LAYER_ZSTD) == "zstd"
    assert mediatypes.layer_compression(mediatypes.DOCKER_LAYER_ZSTD) == "zstd"
    assert mediatypes.is_layer(mediatypes.OCI_LAYER_ZSTD) and mediatypes.is_layer(mediatypes.DOCKER_LAYER_ZSTD)


def _zstd_state(blob: bytes, diff_id: str) -> State:
    layer = {"digest": Digest.of(blob), "media_type": mediatypes.OCI_LAYER_ZSTD, "size": len(blob), "diff_id": diff_id}
    return make_state([layer])


def test_sparse_zstd_layer_inflates_in_bounded_pieces(registry, tmp_path):
    # 256 MiB of zeros zstd to a few KB: the decompressor must hand them on in pieces, not as one buffer.
    member = tmp_path / "zeros"
    with open(member, "wb") as f:
        f.truncate(256 << 20)
    tar_path = tmp_path / "layer.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(member, arcname="zeros")
    member.unlink()
    tar = tar_path.read_bytes()
    tar_path.unlink()
    blob, diff_id = zstandard.ZstdCompressor(level=3).compress(tar), Digest.of(tar)
    del tar
    RegistryClient(registry.url).push_blob("zstd/sparse", blob)
    state = _zstd_state(blob, diff_id)
    # A fresh process, so its peak RSS is the export's.
    peak_mb = export_peak_mb(registry.url, "zstd/sparse", state, tmp_path / "out")
    assert peak_mb < 100, f"exporting a 256 MiB sparse zstd layer peaked at {peak_mb:.0f} MB"
    gz = tmp_path / "out" / ".cache" / "gzip" / f"{state.layers[0].hex}.tar.gz"
    assert gz.read_bytes().startswith(b"\x1f\x8b")  # re-encoded (the diff_id matched), not the zstd blob stored


def test_a_blob_that_is_not_zstd_is_named(registry, tmp_path):
    layer = samples.layer_from_files([samples.file("a.txt", b"a\n")])
    client = RegistryClient(registry.url)
    client.push_blob("zstd/bad", layer.blob)  # gzip bytes under the zstd type
    runtime = Runtime("t", registry.url, "zstd/bad", "latest", ("x86_64",))
    with pytest.raises(RegistryError, match=f"blob {layer.digest} is not valid zstd"):
        export.fetch(runtime, {"x86_64": _zstd_state(layer.blob, layer.diff_id)}, tmp_path, client)


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the build and verify run the x86_64 sample image")
def test_zstd_layer_is_snapshotted_re_encoded_built_and_verified(registry, docker_client, tmp_path):
    prefix = f"z{uuid.uuid4().hex[:6]}"
    client = RegistryClient(registry.url)
    # One runtime per catalog codec; the OCI type in an OCI manifest, Docker's zstd name in a Docker manifest.
    cases = {f"{prefix}.xz": ("xz", OCI_MANIFEST), f"{prefix}.gz": ("gzip", DOCKER_MANIFEST)}
    images, manifests = {}, {}
    for name, (_, manifest_type) in cases.items():
        images[name] = samples.lambda_like_image(name, "x86_64")
        manifests[name] = _push_with_zstd_layer(client, f"lambda/{name}", images[name], manifest_type)
    catalog = tmp_path / "runtimes.yaml"
    names = {name: compression for name, (compression, _) in cases.items()}
    catalog.write_text(smoke_catalog(registry.url, names, EVENT, ("x86_64",)))
    out = tmp_path / "out"
    try:
        targets = [f"{task}:{name}" for task in ("build", "verify") for name in cases]
        run = run_doit(catalog, out, *targets, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        # The engine (before Docker 23) cannot load a zstd blob: the load fed from the download takes that layer
        # from its tarball instead of failing and leaving the image to load:<rt>.
        logs = "".join(path.read_text() for path in sorted((out / ".logs").rglob("*.log")))
        assert "docker load failed" not in logs + run.stdout
        for name, (compression, _) in cases.items():
            image = images[name]
            assert manifests[name][ZSTD_LAYER]["mediaType"].endswith("zstd")
            suffix = {"xz": ".tar.xz", "gzip": ".tar.gz"}[compression]
            unpack = {"xz": lzma.decompress, "gzip": gzip.decompress}[compression]
            magic = {"xz": b"\xfd7zXZ\x00", "gzip": b"\x1f\x8b"}[compression]
            for layer in image.layers:
                tarball = out / name / "x86_64" / f"{layer.diff_id.removeprefix('sha256:')}{suffix}"
                data = tarball.read_bytes()
                assert data.startswith(magic), (name, tarball)
                assert not data.startswith(b"\x28\xb5\x2f\xfd"), "a zstd frame is never written"
                tar = unpack(data)
                assert "sha256:" + hashlib.sha256(tar).hexdigest() == layer.diff_id
                assert tar == layer.tar
            summary = json.loads((out / ".reports" / "verify" / f"{name}.json").read_text())["result"]
            (arch,) = summary["architectures"]
            statuses = {c["name"]: c["status"] for c in arch["checks"]}
            assert statuses == dict.fromkeys(("tarballs", "identity", "tree", "config", "invoke"), "pass"), arch
    finally:
        for name in cases:
            for tag in (f"{name}:local", f"{name}:x86_64"):
                try:
                    docker_client.images.remove(tag, force=True)
                except Exception:
                    pass
