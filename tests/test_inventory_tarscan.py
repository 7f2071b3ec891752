"""The push tar parser against Python's tarfile: formats, chunking, whiteouts, captures, limits, broken streams."""

import io
import random
import tarfile
import time

import pytest
from inventory_samples import feed, make_jar, rpm_sample, run, tar_of

from lambdaimages.inventory import tarscan
from lambdaimages.inventory.facts import Entry, LayerFacts
from lambdaimages.inventory.tarscan import LayerScanner, classify

LONG = "var/lang/lib/python3.12/site-packages/" + "deep/" * 40


def _tarfile_view(data: bytes) -> dict[str, Entry]:
    """What tarfile reads of the same tar, in the scanner's terms."""
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink"}
    kinds[tarfile.GNUTYPE_SPARSE] = "file"
    found = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            path = tarscan.normalize_path(member.name)
            kind = kinds.get(member.type, "other")
            link = "" if kind in ("file", "dir") else member.linkname
            found[path] = Entry(kind, member.size if kind == "file" else 0, link)
    return found


def _sample_tar(tar_format: int) -> bytes:
    files: dict = {
        "etc/os-release": b'NAME="Amazon Linux"\nVERSION_ID="2"\nID="amzn"\n',
        "usr/bin/big": random.Random(1).randbytes(700_000),
        "usr/bin/empty": b"",
        "lib64": ("symlink", "usr/lib64"),
        "usr/bin/also-big": ("hardlink", "usr/bin/big"),
        "var/task": rpm_sample().root,  # a folder, recursively
    }
    if tar_format != tarfile.USTAR_FORMAT:  # ustar cannot name these
        files[LONG + "boto3-1.35.0.dist-info/METADATA"] = b"Metadata-Version: 2.1\nName: boto3\nVersion: 1.35.0\n\n"
        files["opt/" + "l" * 150] = ("symlink", "/" + "t" * 140)
        files["opt/ünïcødé"] = b"x"
    return tar_of(files, tar_format)


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_entries_match_tarfile_whatever_the_chunks(tar_format):
    data = _sample_tar(tar_format)
    for seed in range(3):
        facts = feed(data, seed=seed)
        assert facts.notes == {}
        assert facts.entries == _tarfile_view(data)
        assert facts.size == len(data)
    assert facts.texts["etc/os-release"].startswith("NAME=")
    if tar_format != tarfile.USTAR_FORMAT:
        assert [p.name for p in facts.packages[LONG + "boto3-1.35.0.dist-info/METADATA"]] == ["boto3"]


def test_whiteouts_and_opaque_directories_are_recorded_not_listed():
    data = tar_of({"opt/.wh.gone": b"", "var/runtime/.wh..wh..opq": b"", "var/runtime/x": b"1", ".wh.top": b""})
    facts = feed(data)
    assert facts.whiteouts == ["opt/gone", "top"]
    assert facts.opaques == ["var/runtime"]
    assert set(facts.entries) == {"var/runtime/x"}


@pytest.mark.parametrize("tar_format", ["gnu", "pax"])
def test_sparse_files_as_gnu_tar_writes_them(tmp_path, tar_format):
    with open(tmp_path / "sparse", "wb") as sparse:  # holes in 12 places: more than a GNU header's 4 segments
        for n in range(12):
            sparse.seek(n * 1_000_000)
            sparse.write(b"x" * 100)
        sparse.truncate(13_000_000)
    (tmp_path / "after").write_text("after")
    run("tar", f"--format={tar_format}", "--sparse", "-cf", tmp_path / "out.tar", "-C", tmp_path, "sparse", "after")
    data = (tmp_path / "out.tar").read_bytes()
    assert len(data) < 1_000_000
    facts = feed(data)
    assert facts.entries == _tarfile_view(data) == {"sparse": Entry("file", 13_000_000), "after": Entry("file", 5)}
    assert facts.notes == {}


def test_a_stream_cut_short_or_corrupt_keeps_what_came_before():
    data = tar_of({"a": b"1" * 2000, "b": b"2" * 2000, "c": b"3"})
    cut = feed(data[:1500])
    assert list(cut.entries) == ["a"] and "ends inside 'a'" in cut.notes[""][0]
    broken = bytearray(data)
    second = data.index(b"b\0")  # the second member's header
    broken[second + 200] ^= 0xFF
    facts = feed(bytes(broken))
    assert list(facts.entries) == ["a"]
    assert "checksum" in facts.notes[""][0]
    assert feed(data[:300]).notes[""] == ["the tar ends inside a header"]


def test_files_over_their_limit_are_noted_not_read(monkeypatch):
    monkeypatch.setitem(tarscan.LIMITS, "npm", tarscan.Limit(100))
    monkeypatch.setitem(tarscan.LIMITS, "python", tarscan.Limit(60, prefix=True))
    metadata = b"Metadata-Version: 2.1\nName: big\nVersion: 2.0\n\n" + b"long description " * 50
    data = tar_of(
        {
            "node_modules/big/package.json": b'{"name": "big", "version": "1.0.0", "x": "' + b"y" * 200 + b'"}',
            "lib/big-2.0.dist-info/METADATA": metadata,
        }
    )
    facts = feed(data)
    assert "not read" in facts.notes["node_modules/big/package.json"][0]
    assert "node_modules/big/package.json" not in facts.packages
    assert [(p.name, p.version) for p in facts.packages["lib/big-2.0.dist-info/METADATA"]] == [("big", "2.0")]


def test_databases_and_big_jars_are_spooled_and_parsed(tmp_path):
    sample = rpm_sample()
    jar = tmp_path / "big.jar"
    make_jar(jar, {"groupId": "com.amazonaws", "artifactId": "aws-lambda-java-core", "version": "1.2.3"}, 3 << 20)
    (tmp_path / "broken.jar").write_bytes(b"PK not really a zip")
    data = tar_of(
        {
            "var/lib/rpm/rpmdb.sqlite": sample.sqlite,
            "usr/lib/sysimage/rpm/Packages": sample.bdb["4321"] / "Packages",
            "var/runtime/lib/big.jar": jar,
            "var/runtime/lib/broken.jar": tmp_path / "broken.jar",
        }
    )
    facts = feed(data)
    assert len(facts.packages["var/lib/rpm/rpmdb.sqlite"]) == len(sample.expected)
    assert len(facts.packages["usr/lib/sysimage/rpm/Packages"]) == len(sample.expected)
    assert set(facts.owned["var/lib/rpm/rpmdb.sqlite"]) == {path.rpartition("/")[0] for path in sample.owned}
    [artifact] = facts.packages["var/runtime/lib/big.jar"]
    assert (artifact.group, artifact.name, artifact.version) == ("com.amazonaws", "aws-lambda-java-core", "1.2.3")
    assert "not a readable jar" in facts.notes["var/runtime/lib/broken.jar"][0]


def test_a_later_member_of_the_same_path_replaces_what_was_read():
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for content in (b'{"name": "a", "version": "1.0.0"}', b"not json"):
            info = tarfile.TarInfo("node_modules/a/package.json")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    facts = feed(out.getvalue())
    assert "node_modules/a/package.json" not in facts.packages
    assert "not JSON" in facts.notes["node_modules/a/package.json"][0]


def test_layer_facts_survive_a_json_file(tmp_path):
    data = tar_of(
        {
            "etc/os-release": b"ID=amzn\n",
            "opt/.wh.x": b"",
            "var/lib/rpm/rpmdb.sqlite": rpm_sample().sqlite,
            "l": ("symlink", "etc"),
            "bad\udcff": b"invalid UTF-8 in a name",
        }
    )
    facts = feed(data, name="sha256:abc")
    assert tarscan.scan_stream(io.BytesIO(data), name="sha256:abc") == facts
    facts.save(tmp_path / "facts.json")
    assert LayerFacts.load(tmp_path / "facts.json") == facts
    (tmp_path / "other.json").write_text('{"format": 0}')
    with pytest.raises(ValueError):
        LayerFacts.load(tmp_path / "other.json")


def test_classify():
    assert classify("var/lang/lib/node_modules/npm/node_modules/@npmcli/arborist/package.json") == "npm"
    assert classify("var/lang/lib/node_modules/npm/node_modules/x/lib/package.json") is None
    assert classify("var/runtime/boto3-1.35.0.dist-info/METADATA") == "python"
    assert classify("usr/lib/python3.9/site-packages/yum-3.4.3-py2.7.egg-info") == "python"
    assert classify("var/lang/lib/ruby/gems/3.2.0/specifications/default/json-2.6.3.gemspec") == "gem"
    assert classify("var/lang/lib/ruby/gems/3.2.0/gems/json-2.6.3/json.gemspec") is None
    assert classify("var/lib/rpm/Packages") == "rpm-bdb"
    assert classify("var/lang/include/python3.12/patchlevel.h") == "text"
    assert classify("usr/share/doc/README") is None


def test_feeding_costs_little_next_to_xz():
    # Mostly small files, the scanner's worst case (a header per few kB); xz decompresses at about 60 MB/s here.
    rnd = random.Random(2)
    content = rnd.randbytes(64 << 10)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for n in range(6000):
            info = tarfile.TarInfo(f"usr/share/d{n % 50}/file-{n}.txt")
            info.size = rnd.choice((100, 3000, 8000, 40000))
            archive.addfile(info, io.BytesIO(content[: info.size]))
    data = out.getvalue()
    scanner = LayerScanner()
    start = time.perf_counter()
    for pos in range(0, len(data), 1 << 20):
        scanner.feed(data[pos : pos + (1 << 20)])
    facts = scanner.close()
    rate = len(data) / (time.perf_counter() - start) / 1e6
    assert len(facts.entries) == 6000
    assert rate > 150, f"{rate:.0f} MB/s"
