"""rpm database readers against rpm's own answers: sqlite, Berkeley DB in both byte orders, and broken inputs."""

import io
import random
import struct
import time

import pytest
from inventory_samples import BIG, make_bdb, rpm_sample

from lambdaimages.inventory import rpmdb


def _rows(database: rpmdb.Database) -> list[tuple[str, ...]]:
    """The reader's packages in the form of `inventory_samples.QUERY`."""
    return sorted(
        (p.name, "(none)" if p.epoch is None else str(p.epoch), p.version, p.release, p.arch, p.license, p.source)
        for p in database.packages
    )


def _owned(database: rpmdb.Database) -> set[str]:
    return {f"{d}/{base}" if d else base for d, bases in database.owned.items() for base in bases}


def _bdb(path) -> bytes:
    return (path / "Packages").read_bytes()


def test_sqlite_reader_matches_rpm():
    sample = rpm_sample()
    found = rpmdb.read_sqlite(sample.sqlite, "var/lib/rpm/rpmdb.sqlite")
    assert found.notes == []
    assert _rows(found) == sample.expected
    assert _owned(found) == sample.owned
    assert {p.path for p in found.packages} == {"var/lib/rpm/rpmdb.sqlite"}


@pytest.mark.parametrize("order", ["1234", "4321"])
def test_berkeley_db_reader_matches_rpm_bdb_ro(order):
    sample = rpm_sample()
    data = _bdb(sample.bdb[order])
    assert struct.unpack_from("<I" if order == "1234" else ">I", data, 12)[0] == rpmdb.HASH_MAGIC
    found = rpmdb.read_bdb(io.BytesIO(data), "var/lib/rpm/Packages")
    assert found.notes == []
    assert _rows(found) == sample.bdb_expected[order]
    assert _owned(found) == sample.owned
    big = max(sample.blobs, key=len)
    pagesize = struct.unpack_from("<I" if order == "1234" else ">I", data, 20)[0]
    assert len(big) > 10 * pagesize  # so the long file list really came through a chain of overflow pages
    assert sum(d.endswith(BIG) for d in found.owned) == 1


def test_header_of_a_package_file_with_its_magic():
    blob = rpm_sample().blobs[0]
    assert rpmdb.parse_header(rpmdb.HEADER_MAGIC + blob) == rpmdb.parse_header(blob)


def _tag_entry(blob: bytes, tag: int) -> int:
    count = struct.unpack_from(">I", blob)[0]
    return next(8 + 16 * i for i in range(count) if struct.unpack_from(">i", blob, 8 + 16 * i)[0] == tag)


def test_headers_with_absurd_counts_or_offsets_are_errors():
    blob = bytearray(rpm_sample().blobs[0])
    absurd = bytes(struct.pack(">I", 0xFFFFFF) + blob[4:])
    with pytest.raises(rpmdb.HeaderError, match="claims"):
        rpmdb.parse_header(absurd)
    with pytest.raises(rpmdb.HeaderError, match="truncated"):
        rpmdb.parse_header(bytes(blob[: len(blob) // 2]))
    outside = bytearray(blob)
    struct.pack_into(">i", outside, _tag_entry(blob, rpmdb.NAME) + 8, 1 << 30)
    with pytest.raises(rpmdb.HeaderError, match="outside"):
        rpmdb.parse_header(bytes(outside))
    many = bytearray(blob)
    struct.pack_into(">i", many, _tag_entry(blob, rpmdb.BASENAMES) + 12, 1 << 20)
    with pytest.raises(rpmdb.HeaderError):
        rpmdb.parse_header(bytes(many))


def test_truncated_sqlite_database_keeps_what_it_can_and_says_so(tmp_path):
    sample = rpm_sample()
    broken = tmp_path / "rpmdb.sqlite"
    data = sample.sqlite.read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    found = rpmdb.read_sqlite(broken, "var/lib/rpm/rpmdb.sqlite")
    assert found.notes
    assert set(_rows(found)) <= set(sample.expected)
    broken.write_bytes(b"not a database at all" * 100)
    assert rpmdb.read_sqlite(broken, "x").notes


def test_truncated_berkeley_db_keeps_the_pages_before_the_cut():
    sample = rpm_sample()
    data = _bdb(sample.bdb["1234"])
    found = rpmdb.read_bdb(io.BytesIO(data[: len(data) * 2 // 3]), "var/lib/rpm/Packages")
    assert any("truncated" in note for note in found.notes)
    assert 0 < len(found.packages) < len(sample.expected)
    assert set(_rows(found)) <= set(sample.expected)


def _overflow_pages(data: bytes, pagesize: int = 4096) -> list[int]:
    return [n for n in range(len(data) // pagesize) if data[n * pagesize + 25] == rpmdb.P_OVERFLOW]


def _with_next_page(data: bytes, pgno: int, next_pgno: int, pagesize: int = 4096) -> bytes:
    changed = bytearray(data)
    struct.pack_into("<I", changed, pgno * pagesize + 16, next_pgno)
    return bytes(changed)


def test_overflow_chain_that_loops_or_leaves_the_file_becomes_a_note():
    sample = rpm_sample()
    data = _bdb(sample.bdb["1234"])
    chained = [n for n in _overflow_pages(data) if struct.unpack_from("<I", data, n * 4096 + 16)[0]]
    assert chained
    for next_pgno, message in ((chained[0], "used twice"), (10**6, "outside the file")):
        found = rpmdb.read_bdb(io.BytesIO(_with_next_page(data, chained[0], next_pgno)), "var/lib/rpm/Packages")
        assert any(message in note for note in found.notes), found.notes
        assert len(found.packages) == len(sample.expected) - 1  # only the header of that chain is lost


def test_not_a_berkeley_db_file():
    assert "magic" in rpmdb.read_bdb(io.BytesIO(b"\0" * 8192), "x").notes[0]
    assert rpmdb.read_bdb(io.BytesIO(b"short"), "x").notes


def test_fuzzed_berkeley_db_and_headers_never_raise():
    sample = rpm_sample()
    files = [_bdb(sample.bdb[order]) for order in ("1234", "4321")]
    rnd = random.Random(5)
    deadline = time.monotonic() + 4
    runs = 0
    while time.monotonic() < deadline and runs < 400:
        runs += 1
        data = rnd.choice(files)
        mutated = bytearray(data[: rnd.randrange(len(data))] if rnd.random() < 0.3 else data)
        for _ in range(rnd.choice((1, 4, 32))):
            if mutated:
                mutated[rnd.randrange(len(mutated))] ^= 1 << rnd.randrange(8)
        found = rpmdb.read_bdb(io.BytesIO(bytes(mutated)), "var/lib/rpm/Packages")
        assert all(isinstance(p.name, str) for p in found.packages)
        assert len(found.notes) <= rpmdb.MAX_NOTES + 1
        blob = bytearray(rnd.choice(sample.blobs))
        blob = blob[: rnd.randrange(len(blob))] if rnd.random() < 0.3 else blob
        for _ in range(rnd.choice((1, 8, 64))):
            if blob:
                blob[rnd.randrange(min(len(blob), 2048))] ^= 1 << rnd.randrange(8)  # mostly the index
        try:
            rpmdb.parse_header(bytes(blob))
        except rpmdb.HeaderError:
            pass
    assert runs >= 50


def test_large_database_reads_page_by_page(tmp_path):
    # Many copies of the sample's headers: a Packages file of some MB, read from a file a page at a time.
    blobs = rpm_sample().blobs
    rows = [(n + 1, blobs[n % len(blobs)]) for n in range(400)]
    make_bdb(tmp_path / "Packages", rows)
    with open(tmp_path / "Packages", "rb") as stream:
        found = rpmdb.read_bdb(stream, "var/lib/rpm/Packages")
    assert found.notes == [] and len(found.packages) == 400
