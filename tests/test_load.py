"""Loads fed by export (image/load.py), on the real engine: an archive streamed as the blobs download and
completed from the caches, which the engine loads as upstream's image (its ID the config digest, its layers
checked against the config's diff_ids), or cut, which it loads nothing of."""

import json
import lzma
import os
import time

import pytest

from lambdaimages import engine, layout
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest
from lambdaimages.image import load
from lambdaimages.snapshot import documents
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.testbed.samples import Layer, file, layer_from_files
from tests.states import make_state

RUNTIME = Runtime("loadtest", "https://r", "lambda/loadtest", "1", ("x86_64", "arm64"))
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture
def engine_tags():
    """The tags this test loads, removed before and after (the engine is shared with the other tests)."""
    tags = [layout.loaded_tag(RUNTIME.name, arch) for arch in RUNTIME.architectures]
    for tag in tags:
        engine.remove_image(tag)
    yield tags
    for tag in tags:
        engine.remove_image(tag)


def _layers(*names: str) -> list[Layer]:
    # A token of this run in every layer: layers the engine has from an earlier run would not be read at all.
    token = os.urandom(8).hex()
    return [layer_from_files([file(f"{name}/{token}", f"{name} {token}\n".encode())]) for name in names]


def _snapshot(out, arch: str, layers: list[Layer]):
    """A state of `arch` whose config and xz tarballs are in the caches, as export leaves them."""
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in layers]},
        }
    ).encode()
    config_digest = Digest.of(config)
    documents.keep(out, config_digest, config)
    described = [
        {"digest": la.digest, "media_type": GZIP, "size": len(la.blob), "diff_id": la.diff_id} for la in layers
    ]
    state = make_state(described, runtime=RUNTIME.name, architecture=arch, config_digest=config_digest)
    cache = LayerCache(out)
    for layer, data in zip(state.layers, layers, strict=True):
        path = cache.tarball(RUNTIME, layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(lzma.compress(data.tar, preset=0))
    return state


def _wait_for(tag: str, digest: str, seconds: float = 10.0) -> str | None:
    deadline = time.monotonic() + seconds
    while (found := engine.image_id(tag)) != digest and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_a_load_completes_from_the_caches_once_every_blob_is_downloaded(tmp_path, engine_tags):
    x86_layers, arm_layers = _layers("base", "changed", "top"), _layers("arm-base")
    x86 = _snapshot(tmp_path, "x86_64", x86_layers)
    arm = _snapshot(tmp_path, "arm64", arm_layers)  # its config alone changed: nothing to download
    LayerCache(tmp_path).tarball(RUNTIME, x86.layers[1]).unlink()  # being compressed: only its blob is there
    loads = load.FromDownloads(tmp_path, RUNTIME, {"x86_64": x86, "arm64": arm})
    writer = loads.sink("x86_64", 2, x86.layers[1])
    writer.write(x86_layers[1].blob)  # the layer's blob as it downloads
    writer.close()
    time.sleep(0.3)
    assert engine.image_id("loadtest:x86_64") is None  # not complete while export may download more
    loads.downloaded()
    # Both archives are complete and loaded before export's compression ends (finish is not called yet).
    for arch, state in (("x86_64", x86), ("arm64", arm)):
        assert _wait_for(layout.loaded_tag(RUNTIME.name, arch), state.config_digest) == state.config_digest
    # The engine checked each layer against the config's diff_ids: the blob and both tarballs were upstream's.
    assert engine.image_diff_ids("loadtest:x86_64") == tuple(la.diff_id for la in x86_layers)
    loads.finish()  # waits for the engine, sends nothing more
    assert engine.image_id("loadtest:x86_64") == x86.config_digest


def test_a_load_whose_other_layers_are_not_cached_yet_completes_at_finish(tmp_path, engine_tags):
    layers = _layers("base", "changed")
    state = _snapshot(tmp_path, "x86_64", layers)
    LayerCache(tmp_path).tarball(RUNTIME, state.layers[0]).unlink()  # another task still writes it
    loads = load.FromDownloads(tmp_path, RUNTIME, {"x86_64": state})
    writer = loads.sink("x86_64", 2, state.layers[1])
    writer.write(layers[1].blob)
    writer.close()
    loads.downloaded()
    time.sleep(0.5)
    assert engine.image_id("loadtest:x86_64") is None
    loads.abort()  # export failed: the engine got no complete archive, so it loads nothing
    time.sleep(0.3)
    assert engine.image_id("loadtest:x86_64") is None
