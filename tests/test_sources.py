"""Layer sources: the check every candidate tarball passes, the order they are asked in, and export taking them."""

import gzip
import io
import json
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from states import make_state

from lambdaimages import layout, output
from lambdaimages.catalog import Runtime
from lambdaimages.errors import DigestMismatch, RegistryError
from lambdaimages.registry.client import RegistryClient
from lambdaimages.snapshot import export
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.sources import Sources, check_tarball
from lambdaimages.state import Layer
from lambdaimages.testbed import samples
from lambdaimages.tools import xzblocks

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TAR_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _sample(text: bytes = b"hello\n") -> samples.Layer:
    # Two MiB of random bytes: more than one block at level 0 (1 MiB), one of them incompressible.
    return samples.layer_from_files(
        [samples.file("a.txt", text * 2000), samples.file("noise.bin", os.urandom(2 << 20))]
    )


def _layer(sample: samples.Layer, media_type: str = GZIP_LAYER) -> Layer:
    return Layer(sample.digest, media_type, len(sample.blob), sample.diff_id)


def _xz(sample: samples.Layer, level: int, folder: Path) -> bytes:
    source = folder / "layer.tar"
    source.write_bytes(sample.tar)
    out = io.BytesIO()
    xzblocks.compress_file(source, out, level, spool=folder)
    return out.getvalue()


def _runtime(**settings) -> Runtime:
    return Runtime("t", "http://127.0.0.1:1", "sources/t", "latest", ("x86_64",), **settings)


@pytest.fixture(autouse=True)
def _fresh_counts():
    output.reset()
    yield
    output.reset()


# -- check_tarball ------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0, 6])
def test_a_tarball_as_export_writes_it_passes(tmp_path, level):
    sample = _sample()
    path = tmp_path / "c.tar.xz"
    path.write_bytes(_xz(sample, level, tmp_path))
    fed = io.BytesIO()
    assert check_tarball(path, _runtime(level=level), _layer(sample), fed) == len(sample.tar)
    assert fed.getvalue() == sample.tar


def test_another_level_or_encoder_or_content_is_refused(tmp_path):
    sample, other = _sample(), _sample(b"other\n")
    path = tmp_path / "c.tar.xz"
    path.write_bytes(_xz(sample, 1, tmp_path))
    with pytest.raises(DigestMismatch, match="not xz level 6"):
        check_tarball(path, _runtime(), _layer(sample))
    # xz -T1 (and python's lzma) writes one block without sizes: the same bytes, not export's file.
    path.write_bytes(lzma.compress(sample.tar, preset=6))
    with pytest.raises(DigestMismatch, match="both sizes"):
        check_tarball(path, _runtime(), _layer(sample))
    path.write_bytes(_xz(other, 6, tmp_path))
    with pytest.raises(DigestMismatch, match=f"hashes to {other.diff_id}"):
        check_tarball(path, _runtime(), _layer(sample))
    # Two streams (a valid tarball with another appended) are not one tarball.
    path.write_bytes(_xz(sample, 6, tmp_path) * 2)
    with pytest.raises(DigestMismatch, match="do not fill the file"):
        check_tarball(path, _runtime(), _layer(sample))
    # Damaged data inside a block: the layout is intact, decompression is not.
    data = bytearray(_xz(sample, 6, tmp_path))
    data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch, match="cannot decompress"):
        check_tarball(path, _runtime(), _layer(sample))


def test_gzip_is_upstreams_blob_as_is(tmp_path):
    sample = _sample()
    path = tmp_path / "c.tar.gz"
    path.write_bytes(sample.blob)
    assert check_tarball(path, _runtime(compression="gzip"), _layer(sample)) == len(sample.tar)
    path.write_bytes(gzip.compress(sample.tar, compresslevel=6, mtime=1))
    with pytest.raises(DigestMismatch, match="not upstream's gzip blob"):
        check_tarball(path, _runtime(compression="gzip"), _layer(sample))
    # An uncompressed upstream layer is gzipped here at the catalog's level: that stream, any file of it.
    plain = Layer(sample.digest, TAR_LAYER, len(sample.tar), sample.diff_id)
    assert check_tarball(path, _runtime(compression="gzip", level=6), plain) == len(sample.tar)
    with pytest.raises(DigestMismatch, match="level 9"):
        check_tarball(path, _runtime(compression="gzip", level=9), plain)
    path.write_bytes(b"\x1f\x8b")  # cut off inside the header
    with pytest.raises(DigestMismatch, match="not a gzip stream"):
        check_tarball(path, _runtime(compression="gzip", level=6), plain)


# -- Sources -----------------------------------------------------------------------------------------


class _Source:
    """A source that serves fixed bytes per diff_id hex; it may raise, and may store."""

    def __init__(self, name: str, tarballs: dict[str, bytes], fail: Exception | None = None) -> None:
        self.name, self.tarballs, self.fail = name, tarballs, fail
        self.asked: list[str] = []
        self.wanted: list[list[str]] = []

    def want(self, runtime, layers) -> None:
        self.wanted.append([layer.hex for layer in layers])

    def fetch(self, runtime, layer, dest: Path) -> bool:
        self.asked.append(layer.hex)
        if self.fail is not None:
            raise self.fail
        if layer.hex not in self.tarballs:
            return False
        dest.write_bytes(self.tarballs[layer.hex])
        return True


class _Store(_Source):
    def __init__(self, name: str) -> None:
        super().__init__(name, {})
        self.stored: dict[str, bytes] = {}

    def store(self, runtime, layer, tarball: Path) -> None:
        self.stored[layer.hex] = tarball.read_bytes()


def test_sources_are_asked_in_order_and_a_wrong_candidate_is_reported_and_dropped(tmp_path, capsys):
    sample = _sample()
    layer = _layer(sample)
    good = _xz(sample, 6, tmp_path)
    down = _Source("down cache", {}, fail=RegistryError("connection refused"))
    wrong = _Source("wrong cache", {layer.hex: _xz(_sample(b"x\n"), 6, tmp_path)})
    right = _Source("right cache", {layer.hex: good})
    found = Sources([down, wrong, right])
    dest = tmp_path / "dest"
    context = {"runtime": "t", "arch": "x86_64", "where": f"layer 1/1 {layer.hex[:12]}"}
    taken = found.take(_runtime(), layer, dest, context)
    assert taken is not None and taken.source == "right cache" and taken.uncompressed == len(sample.tar)
    assert dest.read_bytes() == good
    # The down source is said once however often it is met.
    assert found.take(_runtime(), layer, tmp_path / "again", context).source == "right cache"
    shown = capsys.readouterr().out.splitlines()
    assert [line for line in shown if "down cache" in line] == [
        "down cache: connection refused (layers it lacks are compressed here)"
    ]
    wrong_lines = [line for line in shown if "wrong cache" in line]
    assert len(wrong_lines) == 2
    assert wrong_lines[0].startswith(f"t x86_64 layer 1/1 {layer.hex[:12]}: the tarball from wrong cache is wrong,")
    assert "compressing it here" in wrong_lines[0]
    counts = output.counts()
    assert counts["from right cache"]["layers"] == 2 and counts["from right cache"]["bytes"] == 2 * len(good)
    assert counts["wrong from wrong cache"]["layers"] == 2
    assert not list(tmp_path.glob(".tmp-*"))


def test_no_source_has_it(tmp_path):
    sample = _sample()
    assert Sources([_Source("empty", {})]).take(_runtime(), _layer(sample), tmp_path / "d", {}) is None
    assert not (tmp_path / "d").exists()
    assert not Sources()


# -- export with sources, against the local registry ---------------------------------------------------


def _push(registry, repository: str, layers: list[samples.Layer]) -> tuple[Runtime, RegistryClient]:
    client = RegistryClient(registry.url)
    for layer in layers:
        client.push_blob(repository, layer.blob)
    return Runtime("t", registry.url, repository, "latest", ("x86_64",)), client


def _state(layers: list[samples.Layer]):
    return make_state([_layer(s).to_json() for s in layers])


def test_export_takes_a_checked_tarball_compresses_the_rest_and_stores_it(registry, tmp_path):
    given, missing, wrong = _sample(b"given\n"), _sample(b"missing\n"), _sample(b"wrong\n")
    runtime, client = _push(registry, "sources/export", [given, missing, wrong])
    given_xz = _xz(given, 6, tmp_path)
    source = _Source("branches", {_layer(given).hex: given_xz, _layer(wrong).hex: _xz(missing, 6, tmp_path)})
    store = _Store("registry cache")
    state = _state([given, missing, wrong])
    facts: dict[str, bytes] = {}

    class _Tar(io.BytesIO):
        def __init__(self, hex_digest):
            super().__init__()
            self.hex_digest = hex_digest

        def close(self):
            facts[self.hex_digest] = self.getvalue()

    sources = Sources([store, source])
    export.fetch(runtime, {"x86_64": state}, tmp_path, client, tar_sink=lambda a, n, la: _Tar(la.hex), sources=sources)
    for s in (given, missing, wrong):
        assert facts[_layer(s).hex] == s.tar  # the tar sink saw each layer once, from a source or the download
    cache = LayerCache(tmp_path)
    taken = cache.tarball(runtime, _layer(given))
    assert taken.read_bytes() == given_xz
    assert json.loads(LayerCache.record(taken).read_text())["source"] == "branches"
    assert "source" not in json.loads(LayerCache.record(cache.tarball(runtime, _layer(missing))).read_text())
    counts = output.counts()
    assert counts["from branches"]["layers"] == 1 and counts["compressed"]["layers"] == 2
    assert counts["downloaded"]["layers"] == 2 and counts["wrong from branches"]["layers"] == 1
    # Asked once for the three layers the local cache lacked; what was compressed here went to the store.
    assert source.wanted == [[_layer(s).hex for s in (given, missing, wrong)]]
    assert sorted(store.stored) == sorted([_layer(missing).hex, _layer(wrong).hex])
    assert store.stored[_layer(missing).hex] == cache.tarball(runtime, _layer(missing)).read_bytes()
    # The snapshot is made from the cache as always; a second export asks no source.
    export.export(runtime, "x86_64", state, tmp_path, client, sources)
    assert (layout.arch_dir(tmp_path, "t", "x86_64") / taken.name).read_bytes() == given_xz
    assert source.asked == [_layer(s).hex for s in (given, missing, wrong)]
    assert not list(layout.cache_dir(tmp_path, "xz6").glob(".tmp-*"))


def test_a_layer_from_a_source_is_byte_identical_to_one_compressed_here(registry, tmp_path):
    sample = _sample(b"same\n")
    runtime, client = _push(registry, "sources/same", [sample])
    state = _state([sample])
    export.fetch(runtime, {"x86_64": state}, tmp_path / "a", client)
    made = LayerCache(tmp_path / "a").tarball(runtime, _layer(sample))
    source = _Source("branches", {_layer(sample).hex: made.read_bytes()})
    export.fetch(runtime, {"x86_64": state}, tmp_path / "b", client, sources=Sources([source]))
    assert LayerCache(tmp_path / "b").tarball(runtime, _layer(sample)).read_bytes() == made.read_bytes()
    assert shutil.which("xz") is not None
    assert subprocess.run(["xz", "-t", str(made)]).returncode == 0
