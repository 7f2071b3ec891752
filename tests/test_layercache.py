"""The registry layer cache against real local registries: round trip, a tampered blob, a cache down, read-only;
and between two out directories standing for two machines (CI jobs), through the real doit CLI."""

import json
import lzma
import uuid
from pathlib import Path

import pytest
import requests
from doit_cli import run_doit
from faultproxy import Fault, FaultProxy

from lambdaimages import mediatypes
from lambdaimages.digest import Digest
from lambdaimages.errors import DigestMismatch
from lambdaimages.reference import Repository
from lambdaimages.registry import layercache
from lambdaimages.registry.client import RegistryClient
from lambdaimages.registry.layercache import Entry, RegistryLayerCache
from lambdaimages.testbed import samples
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


def test_a_blob_tampered_in_the_registry_storage_is_refused(registry, tmp_path):
    cache = RegistryLayerCache(RegistryClient(registry.url), "cache/tampered")
    # Bytes of its own: the registry keeps one blob per digest for every repository, and this test spoils it.
    layer = LAYER_TAR + b"tampered in storage"
    entry = Entry(Digest.of(layer), "xz", 6)
    tarball = _tarball(tmp_path, layer)
    assert cache.store(entry, tarball)
    digest = Digest.of(tarball.read_bytes())
    data = registry.storage / "docker/registry/v2/blobs/sha256" / digest.hex[:2] / digest.hex / "data"
    spoiled = bytearray(data.read_bytes())
    spoiled[len(spoiled) // 2] ^= 0xFF
    data.write_bytes(bytes(spoiled))
    with pytest.raises(DigestMismatch, match=f"blob {digest} of .* hashes to "):
        cache.fetch(entry, tmp_path / "fetched")
    assert not cache.is_off(layercache.READ)  # one bad entry does not turn the cache off


def test_an_entry_whose_blob_is_gone_is_a_miss(registry, tmp_path):
    cache = RegistryLayerCache(RegistryClient(registry.url), "cache/gone")
    tarball = _tarball(tmp_path)
    assert cache.store(Entry(DIFF_ID, "xz", 6), tarball)
    digest = Digest.of(tarball.read_bytes())
    assert requests.delete(f"{registry.url}/v2/cache/gone/blobs/{digest}", timeout=5).status_code == 202
    assert not cache.fetch(Entry(DIFF_ID, "xz", 6), tmp_path / "x")
    assert not cache.is_off(layercache.READ)
    assert cache.store(Entry(Digest.of(b"other"), "xz", 6), _tarball(tmp_path, b"other", "o.tar.xz"))


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


@pytest.mark.parametrize("status", [401, 403])
def test_a_cache_refusing_writes_is_still_read_and_noted_once(registry, tmp_path, capsys, status):
    entry = Entry(DIFF_ID, "xz", 6)
    tarball = _tarball(tmp_path)
    assert RegistryLayerCache(RegistryClient(registry.url), f"cache/denied{status}").store(entry, tarball)
    with FaultProxy(registry.url) as proxy:
        proxy.add("/blobs/uploads/", Fault("status", status=status, method="POST"))
        cache = RegistryLayerCache(RegistryClient(proxy.url), f"cache/denied{status}")
        for n in range(3):
            assert not cache.store(Entry(Digest.of(b"%d" % n), "xz", 6), _tarball(tmp_path, b"%d" % n, f"{n}.tar.xz"))
        assert cache.fetch(entry, tmp_path / "hit")
        assert (tmp_path / "hit").read_bytes() == tarball.read_bytes()
        assert len(proxy.requests("/blobs/uploads/", "POST")) == 1  # refused once, not asked again
    notes = _notes(capsys)
    assert len(notes) == 1
    assert "not written to (reads go on)" in notes[0] and f"({status})" in notes[0]


def test_a_cache_that_keeps_failing_is_given_up_for_the_run(registry, tmp_path, capsys):
    with FaultProxy(registry.url) as proxy:
        proxy.add("/manifests/", Fault("status", status=503))
        cache = RegistryLayerCache(RegistryClient(proxy.url, retries=1, backoff=0.01), "cache/failing")
        for n in range(3):
            assert not cache.fetch(Entry(Digest.of(b"%d" % n), "xz", 6), tmp_path / "x")
        assert not cache.store(Entry(DIFF_ID, "xz", 6), _tarball(tmp_path))
        assert len(proxy.requests("/manifests/")) == 2  # the first fetch and its one retry; nothing after
    notes = _notes(capsys)
    assert len(notes) == 1
    assert "not used for the rest of this run" in notes[0] and "503" in notes[0]


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


# -- the cache between machines: doit runs in two out directories standing for two CI jobs ----------------


def _records(out: Path) -> dict[str, dict]:
    """diff_id hex -> the local cache record of each xz tarball (`source` when taken, `seconds` when compressed)."""
    return {
        path.name.split(".")[0]: json.loads(path.read_bytes())
        for path in (out / ".cache" / "xz6").glob("*.tar.xz.json")
    }


def _compressed(out: Path) -> set[str]:
    return {hex_ for hex_, record in _records(out).items() if "source" not in record}


def _taken(out: Path, source: str = layercache.NAME) -> set[str]:
    return {hex_ for hex_, record in _records(out).items() if record.get("source") == source}


def _snapshot(out: Path, name: str) -> dict[str, bytes]:
    folder = out / name
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _hexes(image) -> set[str]:
    return {Digest(layer.diff_id).hex for layer in image.layers}


@pytest.fixture(scope="module")
def shards(registry, tmp_path_factory):
    """Two runtimes sharing their base layers; job one snapshots the first, job two both, through one cache;
    and a run without the cache, for reference."""
    prefix = f"s{uuid.uuid4().hex[:6]}"
    client = RegistryClient(registry.url)
    names = {"a": f"{prefix}.a", "b": f"{prefix}.b"}
    images = {key: samples.lambda_like_image(name, "x86_64") for key, name in names.items()}
    for key, name in names.items():
        samples.push_image(client, f"lambda/{name}", "1", {"x86_64": images[key]})
    tmp = tmp_path_factory.mktemp("shards")
    catalog = tmp / "runtimes.yaml"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64]\nruntimes:\n"
        + "".join(f"  {name}:\n    image: lambda/{name}:1\n" for name in names.values())
    )
    cache = f"{registry.url}/cache/{prefix}"
    world = {"registry": registry, "names": names, "images": images, "catalog": catalog, "cache": cache, "tmp": tmp}
    world["one"] = run_doit(catalog, tmp / "one", f"cache={cache}", f"snapshot:{names['a']}")
    world["two"] = run_doit(catalog, tmp / "two", f"cache={cache}", "snapshot")
    run_doit(catalog, tmp / "alone", "snapshot")
    return world


def test_the_second_job_compresses_nothing_the_first_did(shards):
    tmp, images = shards["tmp"], shards["images"]
    first, second = _compressed(tmp / "one"), _compressed(tmp / "two")
    assert first == _hexes(images["a"])
    assert second == _hexes(images["b"]) - _hexes(images["a"])  # its own layers only
    assert _taken(tmp / "two") == _hexes(images["a"])
    assert not first & second
    summary = shards["two"].stdout
    assert f"compressed {len(second)} layers" in summary
    assert f"from {layercache.NAME} {len(first)} layers" in summary
    # What job two compressed is in the cache now: a third job would compress nothing.
    client = RegistryClient(shards["registry"].url)
    repository = shards["cache"].split("/", 3)[3]
    for hex_ in first | second:
        assert client.manifest_digest(repository, f"xz6-{hex_}") is not None


def test_snapshots_from_the_cache_are_byte_identical(shards):
    tmp = shards["tmp"]
    for name in shards["names"].values():
        assert _snapshot(tmp / "two", name) == _snapshot(tmp / "alone", name), name
    name = shards["names"]["a"]
    assert _snapshot(tmp / "one", name) == _snapshot(tmp / "alone", name)


def test_a_cache_that_is_down_makes_the_run_slower_not_failed(shards):
    tmp, name = shards["tmp"], shards["names"]["a"]
    done = run_doit(shards["catalog"], tmp / "down", f"cache=http://127.0.0.1:{_free_port()}/cache", f"snapshot:{name}")
    notes = [line for line in done.stdout.splitlines() if "registry cache" in line and "unreachable" in line]
    assert len(notes) == 1, done.stdout
    assert _compressed(tmp / "down") == _hexes(shards["images"]["a"])
    assert _snapshot(tmp / "down", name) == _snapshot(tmp / "alone", name)


def test_a_blob_tampered_in_the_cache_is_reported_and_rebuilt(shards):
    tmp, registry, name = shards["tmp"], shards["registry"], shards["names"]["a"]
    base = shards["images"]["a"].layers[0]
    tarball = (tmp / "alone" / name / "x86_64" / f"{Digest(base.diff_id).hex}.tar.xz").read_bytes()
    digest = Digest.of(tarball)
    data = registry.storage / "docker/registry/v2/blobs/sha256" / digest.hex[:2] / digest.hex / "data"
    spoiled = bytearray(data.read_bytes())
    spoiled[len(spoiled) // 2] ^= 0xFF
    data.write_bytes(bytes(spoiled))
    try:
        done = run_doit(shards["catalog"], tmp / "tampered", f"cache={shards['cache']}", f"snapshot:{name}")
    finally:
        data.write_bytes(tarball)
    assert (
        f"layer 1/4 {Digest(base.diff_id).hex[:12]}: the tarball from {layercache.NAME} is wrong, blob" in done.stdout
    )
    assert f"wrong from {layercache.NAME} 1 layer" in done.stdout
    assert _compressed(tmp / "tampered") == {Digest(base.diff_id).hex}
    assert _snapshot(tmp / "tampered", name) == _snapshot(tmp / "alone", name)


def test_a_wrong_tarball_under_a_layers_tag_is_reported_and_rebuilt(shards):
    tmp, name = shards["tmp"], shards["names"]["a"]
    own, other = shards["images"]["a"].layers[1], shards["images"]["b"].layers[1]  # the two runtime layers
    location = Repository.parse(shards["cache"])
    cache = RegistryLayerCache(RegistryClient(location.registry), location.repository)
    # A well-formed entry for a's runtime layer whose tarball is b's (a valid xz file, its digest right).
    assert cache.store(Entry(own.diff_id, "xz", 6), tmp / "alone" / shards["names"]["b"] / "x86_64" /
                       f"{Digest(other.diff_id).hex}.tar.xz")  # fmt: skip
    done = run_doit(shards["catalog"], tmp / "wrong", f"cache={shards['cache']}", f"snapshot:{name}")
    assert f"the tarball from {layercache.NAME} is wrong" in done.stdout
    assert _compressed(tmp / "wrong") == {Digest(own.diff_id).hex}
    assert _snapshot(tmp / "wrong", name) == _snapshot(tmp / "alone", name)


def test_the_command_line_names_the_cache_else_the_catalog(tmp_path):
    from lambdaimages import catalog
    from lambdaimages.errors import UsageError
    from lambdaimages.tasks import actions

    with_cache = catalog.parse(
        "cache:\n  to: cache.example.com/c\nruntimes:\n  a:\n    image: x:1\n", tmp_path / "c.yaml"
    )
    assert actions.registry_cache(None, with_cache) == Repository("cache.example.com", "c")
    assert actions.registry_cache("http://127.0.0.1:5000/mine", with_cache) == Repository(
        "http://127.0.0.1:5000", "mine"
    )
    assert actions.registry_cache("", with_cache) is None  # `cache=` alone: none for this run
    with pytest.raises(UsageError, match=r"^cache=127.0.0.1:5000: expected \[http://\]HOST\[:PORT\]/REPOSITORY"):
        actions.registry_cache("127.0.0.1:5000", with_cache)
