"""Loads fed by export (image/load.py), against a fake engine that reads the archive as `docker load` does."""

import io
import json
import tarfile
import threading
import time

import pytest

from lambdaimages import engine, layout
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest
from lambdaimages.image import load
from lambdaimages.snapshot import documents
from lambdaimages.snapshot.cache import LayerCache
from tests.states import make_state

RUNTIME = Runtime("rt", "https://r", "lambda/rt", "1", ("x86_64", "arm64"))


class FakeEngine:
    """Reads each streamed archive to its end, as the engine does before it loads; the last one per tag is kept."""

    def __init__(self) -> None:
        self.archives: dict[str, tarfile.TarFile] = {}
        self.ids: dict[str, str] = {}
        self.ended = threading.Event()

    def load(self, chunks, **about):
        data = b"".join(chunks)
        archive = tarfile.open(fileobj=io.BytesIO(data))
        manifest = json.loads(archive.extractfile("manifest.json").read())[0]
        config = archive.extractfile(manifest["Config"]).read()
        for tag in manifest["RepoTags"]:
            self.archives[tag] = archive
            self.ids[tag] = Digest.of(config)
        self.ended.set()
        return manifest["RepoTags"]

    def image_id(self, tag):
        return self.ids.get(tag)


@pytest.fixture
def fake(monkeypatch):
    fake = FakeEngine()
    monkeypatch.setattr(engine, "load", fake.load)
    monkeypatch.setattr(engine, "image_id", fake.image_id)
    return fake


def _snapshot(out, arch: str, layers: list[bytes], label: str):
    """A state of `arch` whose config and layer tarballs (the layers' bytes stand for them) are in the caches."""
    config = json.dumps({"architecture": arch, "label": label}).encode()
    config_digest = Digest.of(config)
    documents.keep(out, config_digest, config)
    described = []
    for data in layers:
        digest = Digest.of(data)
        gzip = "application/vnd.oci.image.layer.v1.tar+gzip"
        described.append({"digest": digest, "media_type": gzip, "size": len(data), "diff_id": digest})
    state = make_state(described, runtime=RUNTIME.name, architecture=arch, config_digest=config_digest)
    cache = LayerCache(out)
    for layer, data in zip(state.layers, layers, strict=True):
        path = cache.tarball(RUNTIME, layer)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return state


def test_a_load_completes_from_the_caches_once_every_blob_is_downloaded(tmp_path, fake):
    x86 = _snapshot(tmp_path, "x86_64", [b"base", b"changed", b"top"], "v2")
    arm = _snapshot(tmp_path, "arm64", [b"arm base"], "v2")  # its config alone changed: nothing to download
    LayerCache(tmp_path).tarball(RUNTIME, x86.layers[1]).unlink()  # being compressed: only its blob is there
    loads = load.FromDownloads(tmp_path, RUNTIME, {"x86_64": x86, "arm64": arm})
    writer = loads.sink("x86_64", 2, x86.layers[1])
    writer.write(b"changed")  # the layer's blob as it downloads
    writer.close()
    assert not fake.ended.wait(0.2)  # the archive is not complete while export may download more
    loads.downloaded()
    # Both archives are complete and loaded before export's compression ends (finish is not called yet).
    for arch, state in (("x86_64", x86), ("arm64", arm)):
        tag = layout.loaded_tag(RUNTIME.name, arch)
        for _ in range(50):
            if fake.image_id(tag):
                break
            time.sleep(0.1)
        assert fake.image_id(tag) == state.config_digest
    members = {m.name: fake.archives["rt:x86_64"].extractfile(m).read() for m in fake.archives["rt:x86_64"]}
    hexes = [layer.hex for layer in x86.layers]
    assert members[f"1/{hexes[0]}.tar.xz"] == b"base"
    assert members[f"2/{Digest(x86.layers[1].digest).hex}.blob"] == b"changed"
    assert members[f"3/{hexes[2]}.tar.xz"] == b"top"
    loads.finish()  # waits for the engine, sends nothing more
    assert len(fake.archives) == 2


def test_a_load_whose_other_layers_are_not_cached_yet_completes_at_finish(tmp_path, fake):
    state = _snapshot(tmp_path, "x86_64", [b"base", b"changed"], "v2")
    LayerCache(tmp_path).tarball(RUNTIME, state.layers[0]).unlink()  # another task still writes it
    loads = load.FromDownloads(tmp_path, RUNTIME, {"x86_64": state})
    writer = loads.sink("x86_64", 2, state.layers[1])
    writer.write(b"changed")
    writer.close()
    loads.downloaded()
    assert not fake.ended.wait(0.3)
    loads.abort()  # export failed: the engine got no complete archive, so it loads nothing
    assert fake.image_id("rt:x86_64") is None
