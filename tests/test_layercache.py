"""The registry layer cache against real local registries: round trip, a tampered blob, a cache down, read-only."""

import json
import lzma

import pytest

from lambdaimages import mediatypes, output
from lambdaimages.digest import Digest
from lambdaimages.reference import Repository
from lambdaimages.registry import layercache
from lambdaimages.registry.client import RegistryClient
from lambdaimages.registry.layercache import Entry, RegistryLayerCache
from lambdaimages.testbed.localregistry import LocalRegistry, _free_port

LAYER_TAR = b"a layer tar, standing for one\n" * 4000
DIFF_ID = Digest.of(LAYER_TAR)


def _tarball(tmp_path, data: bytes = LAYER_TAR, name: str = "t.tar.xz"):
    path = tmp_path / name
    path.write_bytes(lzma.compress(data, preset=6))
    return path


def _notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: registry cache")]


def test_the_tag_says_codec_level_and_diff_id():
    entry = Entry(DIFF_ID, "xz", 6)
    assert entry.tag == f"xz6-{DIFF_ID.hex}"
    assert len(Entry(DIFF_ID, "gzip", 9).tag) <= 128


def test_a_stored_tarball_comes_back_byte_for_byte(registry, tmp_path):
    cache = RegistryLayerCache(RegistryClient(registry.url), "cache/roundtrip")
    entry = Entry(DIFF_ID, "xz", 6)
    tarball = _tarball(tmp_path)
    assert not cache.fetch(entry, tmp_path / "miss")
    assert cache.store(entry, tarball)
    assert cache.fetch(entry, tmp_path / "hit")
    assert (tmp_path / "hit").read_bytes() == tarball.read_bytes()
    manifest = json.loads(RegistryClient(registry.url).get_manifest("cache/roundtrip", entry.tag).body)
    assert manifest["artifactType"] == mediatypes.CACHED_LAYER
    assert manifest["config"]["mediaType"] == mediatypes.EMPTY
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == mediatypes.CACHED_TARBALLS["xz"]
    assert layer["digest"] == Digest.of(tarball.read_bytes())
    assert layer["annotations"] == {
        layercache.DIFF_ID: DIFF_ID,
        layercache.CODEC: "xz",
        layercache.LEVEL: "6",
    }
    # Stored again (another machine compressed it too): the blob is not sent twice, the manifest is the same.
    since = len(registry.requests_log())
    assert RegistryLayerCache(RegistryClient(registry.url), "cache/roundtrip").store(entry, tarball)
    assert registry.count("PUT", "/blobs/uploads/", since=since) == 0
    assert registry.count("PUT", f"/manifests/{entry.tag}", since=since) == 1


def test_another_codec_or_level_is_another_entry(registry, tmp_path):
    cache = RegistryLayerCache(RegistryClient(registry.url), "cache/levels")
    assert cache.store(Entry(DIFF_ID, "xz", 6), _tarball(tmp_path))
    assert not cache.fetch(Entry(DIFF_ID, "xz", 9), tmp_path / "a")
    assert not cache.fetch(Entry(DIFF_ID, "gzip", 6), tmp_path / "b")


def test_a_tag_holding_something_else_is_a_miss(registry, tmp_path):
    client = RegistryClient(registry.url)
    entry = Entry(DIFF_ID, "xz", 6)
    config = client.push_blob("cache/foreign", b'{"architecture": "amd64", "os": "linux"}')
    image = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": config, "size": 40},
        "layers": [],
    }
    client.push_manifest("cache/foreign", entry.tag, mediatypes.OCI_MANIFEST, json.dumps(image).encode())
    assert not RegistryLayerCache(client, "cache/foreign").fetch(entry, tmp_path / "x")


def test_a_blob_tampered_in_the_registry_storage_is_refused(registry, tmp_path, capsys):
    cache = RegistryLayerCache(RegistryClient(registry.url), "cache/tampered")
    entry = Entry(DIFF_ID, "xz", 6)
    tarball = _tarball(tmp_path)
    assert cache.store(entry, tarball)
    digest = Digest.of(tarball.read_bytes())
    data = registry.storage / "docker/registry/v2/blobs/sha256" / digest.hex[:2] / digest.hex / "data"
    spoiled = bytearray(data.read_bytes())
    spoiled[len(spoiled) // 2] ^= 0xFF
    data.write_bytes(bytes(spoiled))
    output.reset()
    assert not cache.fetch(entry, tmp_path / "fetched")
    said = capsys.readouterr().out
    assert f"registry cache {cache.name}: {entry.tag}: " in said and "compressed here instead" in said
    assert output.counts()["cache rejected"] == {"layers": 1}
    assert not cache.is_off(layercache.READ)  # one bad entry does not turn the cache off


def test_a_cache_that_is_down_costs_one_note(tmp_path, capsys):
    cache = RegistryLayerCache(RegistryClient(f"http://127.0.0.1:{_free_port()}"), "cache/down")
    tarball = _tarball(tmp_path)
    for n in range(3):
        entry = Entry(Digest.of(b"%d" % n), "xz", 6)
        assert not cache.fetch(entry, tmp_path / "x")
        assert not cache.store(entry, tarball)
    notes = _notes(capsys)
    assert len(notes) == 1
    assert "not used for the rest of this run" in notes[0] and "unreachable" in notes[0]
    assert cache.is_off(layercache.READ) and cache.is_off(layercache.WRITE)


def test_a_read_only_cache_serves_what_it_has_and_takes_nothing(tmp_path, capsys):
    storage = tmp_path / "storage"
    entry = Entry(DIFF_ID, "xz", 6)
    tarball = _tarball(tmp_path)
    with LocalRegistry(storage=storage) as writable:
        assert RegistryLayerCache(RegistryClient(writable.url), "cache/ro").store(entry, tarball)
    with LocalRegistry(storage=storage, read_only=True) as read_only:
        cache = RegistryLayerCache(RegistryClient(read_only.url), "cache/ro")
        other = Entry(Digest.of(b"another layer"), "xz", 6)
        assert not cache.store(other, _tarball(tmp_path, b"another layer", "o.tar.xz"))
        assert not cache.store(other, _tarball(tmp_path, b"another layer", "o.tar.xz"))
        assert cache.fetch(entry, tmp_path / "hit")
        assert (tmp_path / "hit").read_bytes() == tarball.read_bytes()
        assert read_only.count("POST", "/blobs/uploads/") == 1  # refused once, not asked again
    notes = _notes(capsys)
    assert len(notes) == 1
    assert "not written to (reads go on)" in notes[0] and "405" in notes[0]
    assert not cache.is_off(layercache.READ) and cache.is_off(layercache.WRITE)


def test_one_cache_per_location_and_run():
    client = RegistryClient("http://127.0.0.1:1")
    location = Repository.parse("http://127.0.0.1:1/cache/one")
    assert layercache.for_run(location, client) is layercache.for_run(location, client)


@pytest.mark.parametrize("codec", ["xz", "gzip"])
def test_the_manifest_is_the_same_bytes_every_time(codec, tmp_path):
    entry = Entry(DIFF_ID, codec, 6)
    blob = layercache.Descriptor(mediatypes.CACHED_TARBALLS[codec], DIFF_ID, 10)
    assert entry.manifest(blob) == Entry(DIFF_ID, codec, 6).manifest(blob)
    assert Digest.of(entry.manifest(blob)) != Digest.of(Entry(DIFF_ID, codec, 7).manifest(blob))
