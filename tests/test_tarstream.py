"""The one tar stream reader against Python's tarfile, on archives tarfile writes and on hand-made headers, and the
tree and the inventory reading the same members through it."""

import bz2
import gzip
import hashlib
import io
import lzma
import random
import struct
import tarfile
import zlib

import pytest
from inventory_samples import feed, run

from lambdaimages.inventory.facts import Entry as FactEntry
from lambdaimages.tools import tarstream
from lambdaimages.tools.tarstream import REGULAR, TarError, TarReader, read_stream
from lambdaimages.tools.tree import merge_layers

FIELDS = ("name", "type", "mode", "uid", "gid", "size", "mtime", "linkname", "uname", "gname", "devmajor", "devminor")
CHUNKS = (1, 3, 100, 511, 512, 513, 4096, 65536, 1 << 20)
MTIME = 1_600_000_000


# -- what tarfile reads, and what tarstream reads ---------------------------------------------------------


def _tarfile(data: bytes) -> tuple[list[dict], str | None]:
    """Every member tarfile reads (stream mode, as the tree read layers), with its content's sha256; the error."""
    found: list[dict] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|*") as archive:
            while (member := archive.next()) is not None:
                row = {name: getattr(member, name) for name in FIELDS}
                if member.isreg():
                    row["sha256"] = hashlib.sha256(archive.extractfile(member).read()).hexdigest()
                found.append(row)
    except (tarfile.TarError, EOFError, zlib.error) as error:
        return found, str(error) or type(error).__name__
    return found, None


class _Record:
    """A visitor that keeps every member's fields and its content's sha256."""

    def __init__(self) -> None:
        self.members: list[dict] = []

    def member(self, member: tarstream.Member):
        self._row = {name: getattr(member, name) for name in FIELDS}
        self.members.append(self._row)
        if member.type in REGULAR:
            self._digest = hashlib.sha256()
            return self._digest.update
        return None

    def content_end(self) -> None:
        self._row["sha256"] = self._digest.hexdigest()

    def whole(self) -> list[dict]:
        """The members read to their end (tarfile lists a member only once its content was read)."""
        members = self.members
        if members and members[-1]["type"] in REGULAR and "sha256" not in members[-1]:
            return members[:-1]
        return members


def _tarstream(data: bytes, seed: int | None = None) -> tuple[list[dict], str | None, TarReader | None]:
    """What tarstream reads: pulled with `read_stream` (seed None) or pushed in chunks of random sizes."""
    record = _Record()
    reader = None
    try:
        if seed is None:
            reader = read_stream(io.BytesIO(data), record)
        else:
            rnd = random.Random(seed)
            reader = TarReader(record)
            pos = 0
            while pos < len(data) and not reader.done:
                size = rnd.choice(CHUNKS)
                reader.feed(data[pos : pos + size])
                pos += size
            reader.close()
    except TarError as error:
        return record.whole(), str(error), reader
    return record.whole(), None, reader


def assert_reads_as_tarfile(data: bytes, seeds=(None, 0, 1, 2)) -> tuple[list[dict], str | None]:
    expected, error = _tarfile(data)
    for seed in seeds:
        members, mine, _ = _tarstream(data, seed)
        assert members == expected, seed
        assert (mine is None) == (error is None), (seed, mine, error)
    return expected, error


# -- archives ---------------------------------------------------------------------------------------------


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mtime, info.mode = kind, MTIME, 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _member(info: tarfile.TarInfo, data: bytes = b"", tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """One member's headers (pax or GNU ones included) and its data, padded."""
    if info.isreg():
        info.size = len(data)
    return info.tobuf(tar_format, "utf-8", "surrogateescape") + data + bytes(-len(data) % 512)


def _archive(*members: bytes) -> bytes:
    return b"".join(members) + bytes(1024)


def _checksum(data: bytearray, at: int, signed: bool = False) -> None:
    """Write the checksum of the header at `at`, summed over unsigned or signed bytes."""
    block = bytearray(data[at : at + 512])
    block[148:156] = b" " * 8
    total = sum(struct.unpack("512b" if signed else "512B", bytes(block)))
    data[at + 148 : at + 155] = b"%06o\0" % total


def _patch(data: bytes, at: int, offset: int, value: bytes, signed: bool = False) -> bytes:
    patched = bytearray(data)
    patched[at + offset : at + offset + len(value)] = value
    _checksum(patched, at, signed)
    return bytes(patched)


def _all_kinds(tar_format: int) -> bytes:
    rnd = random.Random(7)
    parts = [_member(_info("etc", tarfile.DIRTYPE, mode=0o755), tar_format=tar_format)]
    for n, size in enumerate((0, 1, 511, 512, 513, 10_000, 300_000)):
        data = rnd.randbytes(size)
        info = _info(f"etc/f{n}", mode=0o100600 + n, uid=1000 + n, gid=2000 + n, uname="u", gname="g")
        parts.append(_member(info, data, tar_format))
    parts += [
        _member(_info("etc/l", tarfile.SYMTYPE, linkname="f1"), tar_format=tar_format),
        _member(_info("etc/h", tarfile.LNKTYPE, linkname="etc/f1"), tar_format=tar_format),
        _member(_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), tar_format=tar_format),
        _member(_info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), tar_format=tar_format),
        _member(_info("dev/fifo", tarfile.FIFOTYPE), tar_format=tar_format),
        _member(_info("etc/cont", tarfile.CONTTYPE), b"contiguous", tar_format),
    ]
    if tar_format != tarfile.USTAR_FORMAT:  # ustar cannot write these
        parts += [
            _member(_info("usr/" + "deep/" * 40 + "ünïcødé", mtime=-86400, uid=8**8), b"long", tar_format),
            _member(_info("opt/" + "l" * 150, tarfile.SYMTYPE, linkname="/" + "t" * 140), tar_format=tar_format),
            _member(_info("bad\udcffname"), b"invalid UTF-8 in a name", tar_format),
        ]
    else:
        parts.append(_member(_info("usr/share/" + "p" * 90 + "/" + "n" * 99), b"prefix", tar_format))
    return _archive(*parts)


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_every_kind_of_member_reads_as_tarfile_reads_it_whatever_the_chunks(tar_format):
    data = _all_kinds(tar_format)
    members, error = assert_reads_as_tarfile(data)
    assert error is None and len(members) == (15 if tar_format == tarfile.USTAR_FORMAT else 17)
    pax = _archive(_member(_info("f", pax_headers={"mtime": "1600000000.25", "uid": "x", "gid": "7"}), b"pax"))
    [member], _ = assert_reads_as_tarfile(pax)
    assert (member["mtime"], member["uid"], member["gid"]) == (1600000000.25, 0, 7)


def test_compressed_streams_read_alike_and_a_cut_one_is_an_error():
    data = _all_kinds(tarfile.PAX_FORMAT)
    expected, _ = _tarfile(data)
    for packed in (gzip.compress(data, mtime=0), bz2.compress(data), lzma.compress(data)):
        assert _tarstream(packed)[:2] == (expected, None)
    cut = gzip.compress(data, mtime=0)[:-200]
    assert _tarstream(cut)[1].startswith("cannot be decompressed")


# -- the seven cases where tree.py (tarfile) and tarscan disagreed ------------------------------------------


def test_a_v7_directory_is_a_directory():
    v7 = _member(_info("olddir/", tarfile.AREGTYPE), tar_format=tarfile.USTAR_FORMAT)
    v7 = _patch(v7, 0, 257, bytes(8))  # no ustar magic, as V7 tar wrote
    data = _archive(v7, _member(_info("olddir/f"), b"x", tarfile.USTAR_FORMAT))
    members, _ = assert_reads_as_tarfile(data)
    assert [(m["name"], m["type"]) for m in members] == [("olddir", tarfile.DIRTYPE), ("olddir/f", tarfile.REGTYPE)]
    assert_tree_and_inventory_agree(data)
    assert feed(data).entries["olddir"] == FactEntry("dir")


def test_the_prefix_field_is_joined_whatever_the_magic():
    gnu = _member(_info("name"), b"in a GNU header", tarfile.GNU_FORMAT)
    gnu = _patch(gnu, 0, 345, b"usr/share")
    members, _ = assert_reads_as_tarfile(_archive(gnu))
    assert members[0]["name"] == "usr/share/name"
    assert_tree_and_inventory_agree(_archive(gnu))
    assert set(feed(_archive(gnu)).entries) == {"usr/share/name"}


def test_a_checksum_summed_over_signed_bytes_is_good():
    header = _member(_info("sïgnéd"), b"old tars summed signed chars", tarfile.USTAR_FORMAT)
    data = _archive(_patch(header, 0, 0, b"", signed=True))
    assert bytes(data[148:155]) != bytes(header[148:155])  # the name's high bytes make the two sums differ
    members, error = assert_reads_as_tarfile(data)
    assert error is None and members[0]["name"] == "sïgnéd"
    assert_tree_and_inventory_agree(data)


def test_pax_global_headers_apply_to_every_later_member():
    out = io.BytesIO()
    globals_ = {"uname": "everyone", "uid": "4242", "mtime": "1234.5"}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers=globals_) as archive:
        for name, data in (("a", b"1"), ("b", b"22")):
            info = _info(name, size=len(data))
            archive.addfile(info, io.BytesIO(data))
        end = archive.offset
    start = out.getvalue()[:end]  # and one more global header half way, then a member with its own uid
    later = tarfile.TarInfo.create_pax_global_header({"gid": "99", "path": "renamed"})
    data = _archive(start, later, _member(_info("c", pax_headers={"uid": "7"}), b"333"))
    members, _ = assert_reads_as_tarfile(data)
    assert [(m["name"], m["uid"], m["gid"], m["uname"], m["mtime"]) for m in members] == [
        ("a", 4242, 0, "everyone", 1234.5),
        ("b", 4242, 0, "everyone", 1234.5),
        ("renamed", 7, 99, "everyone", 1234.5),
    ]
    assert_tree_and_inventory_agree(data)


def test_a_bad_first_header_is_an_error_a_bad_later_one_ends_the_archive():
    a, b = _member(_info("a"), b"1" * 2000), _member(_info("b"), b"2")
    good = _archive(a, b)
    bad_first = bytearray(good)
    bad_first[200] ^= 0xFF
    assert assert_reads_as_tarfile(bytes(bad_first))[1] is not None
    with pytest.raises(ValueError, match="layer 0: not a readable layer tar: bad checksum"):
        merge_layers([io.BytesIO(bytes(bad_first))])
    assert "bad checksum" in feed(bytes(bad_first)).notes[""][0]
    bad_later = bytearray(good)
    bad_later[len(a) + 200] ^= 0xFF
    members, error = assert_reads_as_tarfile(bytes(bad_later))
    assert error is None and [m["name"] for m in members] == ["a"]
    assert _tarstream(bytes(bad_later))[2].stopped is not None  # the reader says why it ended there
    assert_tree_and_inventory_agree(bytes(bad_later))
    # After a pax header, any bad header is an error, even a zero block; a zero block first is an empty archive.
    pax = _member(_info("p" * 120), b"x")  # a pax header, its data, then the member's header at 1024
    broken = bytearray(pax)
    broken[1024 + 200] ^= 0xFF
    assert assert_reads_as_tarfile(_archive(a, bytes(broken)))[1] is not None
    assert assert_reads_as_tarfile(_archive(a, pax[:1024]))[1] is not None
    assert assert_reads_as_tarfile(bytes(1024)) == ([], None)
    assert merge_layers([io.BytesIO(bytes(1024))]) == {}


def test_truncation_is_an_error_where_tarfile_says_so():
    a = _member(_info("a"), b"1" * 2000)
    pax = _member(_info("b" * 120), b"2")
    data = _archive(a, pax, _member(_info("c"), b"3"))
    cuts = {
        "inside the first header": 300,
        "inside a's data": 1500,
        "inside a's padding": 512 + 2000 + 10,
        "inside the pax header's data": len(a) + 600,
        "after the pax header": len(a) + 1024,
        "at a header boundary": len(a),
        "inside a later header": len(a) + len(pax) + 100,
        "empty": 0,
    }
    outcomes = {}
    for where, cut in cuts.items():
        members, error = assert_reads_as_tarfile(data[:cut])
        outcomes[where] = error is not None
        layer = io.BytesIO(data[:cut])
        if error is not None:
            with pytest.raises(ValueError, match="layer 0: not a readable layer tar"):
                merge_layers([layer])
            assert feed(data[:cut]).notes[""][0].startswith(("the tar ends inside", "unreadable tar header"))
        else:
            assert set(merge_layers([layer])) == {m["name"] for m in members}
    assert outcomes == {
        "inside the first header": True, "inside a's data": True, "inside a's padding": True,
        "inside the pax header's data": True, "after the pax header": True,
        "at a header boundary": False, "inside a later header": False, "empty": True,
    }  # fmt: skip
    assert feed(data[:1500]).notes[""] == ["the tar ends inside 'a'"]
    assert feed(data[: len(a) + len(pax) + 100]).notes[""] == ["the tar ends inside a header"]


@pytest.mark.parametrize(
    "options",
    [["--format=gnu"], ["--format=pax", "--sparse-version=0.0"], ["--format=pax", "--sparse-version=0.1"],
     ["--format=pax", "--sparse-version=1.0"]],
)  # fmt: skip
def test_sparse_members_are_expanded_as_tarfile_expands_them(tmp_path, options):
    content = bytearray(13_000_000)  # data in 12 places: more than a GNU header's 4 map entries
    for n in range(12):
        content[n * 1_000_000 : n * 1_000_000 + 100] = bytes([65 + n]) * 100
    (tmp_path / "sparse").write_bytes(b"")
    with open(tmp_path / "sparse", "r+b") as sparse:
        for n in range(12):
            sparse.seek(n * 1_000_000)
            sparse.write(bytes([65 + n]) * 100)
        sparse.truncate(len(content))
    (tmp_path / "after").write_text("after")
    run("tar", *options, "--sparse", "-cf", tmp_path / "out.tar", "-C", tmp_path, "sparse", "after")
    data = (tmp_path / "out.tar").read_bytes()
    assert len(data) < 1_000_000
    members, _ = assert_reads_as_tarfile(data, seeds=(None, 0))
    assert members[0]["size"] == len(content)
    assert members[0]["sha256"] == hashlib.sha256(content).hexdigest()
    assert_tree_and_inventory_agree(data)
    assert merge_layers([io.BytesIO(data)])["sparse"].sha256 == hashlib.sha256(content).hexdigest()


def test_base256_numbers_as_gnu_tar_writes_them():
    for value in (0, 8**11, 2**40 + 5, -1):
        assert tarstream._number(tarfile.itn(value, 12, tarfile.GNU_FORMAT)) == value


def test_the_checksum_sum_is_exact_for_a_header_half():
    rnd = random.Random(3)
    for data in (b"", b"\xff" * 256, bytes(256), *(rnd.randbytes(rnd.randrange(257)) for _ in range(200))):
        assert tarstream._sum(data) == sum(data)


def test_a_content_that_would_run_into_the_next_header_is_an_error():
    # A global size applies after tarfile has placed the next header: tarfile reads past it, and fails.
    data = _archive(tarfile.TarInfo.create_pax_global_header({"size": "1000"}), _member(_info("f"), b"1" * 100))
    assert _tarfile(data)[1] == "seeking backwards is not allowed"
    with pytest.raises(TarError, match="content of 1000 bytes in 512 bytes of data"):
        read_stream(io.BytesIO(data), _Record())


# -- the tree and the inventory read the same members ---------------------------------------------------------


def assert_tree_and_inventory_agree(data: bytes) -> None:
    """The file tree and the inventory list the same paths, kinds, sizes and link targets of one layer."""
    tree = merge_layers([io.BytesIO(data)])
    facts = feed(data)
    kinds = {"char": "other", "block": "other", "fifo": "other"}
    seen = {}
    for path, entry in tree.items():
        kind = kinds.get(entry.type, entry.type)
        if entry.hardlinks and facts.entries.get(path, FactEntry("")).kind == "hardlink":
            kind = "hardlink"
        link = entry.linkname or ""
        if kind == "hardlink":
            link = next(other for other in entry.hardlinks if facts.entries.get(other, FactEntry("")).kind == "file")
        seen[path] = FactEntry(kind, entry.size if kind == "file" else 0, link)
    implicit = {path for path in seen.keys() - facts.entries.keys() if tree[path].type == "dir"}
    assert {path: seen[path] for path in seen.keys() - implicit} == facts.entries
