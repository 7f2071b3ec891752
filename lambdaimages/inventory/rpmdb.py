"""rpm databases: header blobs, the sqlite `Packages` table and the Berkeley DB hash `Packages` file, bounded."""

from __future__ import annotations

import posixpath
import sqlite3
import struct
import sys
import urllib.parse
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lambdaimages.inventory.facts import Package

# Header tags (rpmtag.h) and types.
NAME, VERSION, RELEASE, EPOCH, LICENSE, ARCH, SOURCERPM = 1000, 1001, 1002, 1003, 1014, 1022, 1044
OLDFILENAMES, DIRINDEXES, BASENAMES, DIRNAMES = 1027, 1116, 1117, 1118
INT32, STRING, STRING_ARRAY, I18NSTRING = 4, 6, 8, 9
HEADER_MAGIC = b"\x8e\xad\xe8\x01\x00\x00\x00\x00"  # before the index count in package files, not in databases
MAX_TAGS = 0x10000
MAX_DATA = 64 << 20  # rpm allows 256 MB; real headers are below 10 MB

# Berkeley DB (db_page.h): page types, hash item types, the hash magic.
P_HASH_UNSORTED, P_OVERFLOW, P_HASHMETA, P_HASH = 2, 7, 8, 13
H_KEYDATA, H_OFFPAGE = 1, 3
HASH_MAGIC = 0x061561
PAGE_HEADER = 26
MAX_VALUES = 1 << 20
MAX_NOTES = 20  # per database: a badly broken file says so a few times, not once per page

Note = Callable[[str], None]


class HeaderError(ValueError):
    """An rpm header blob that cannot be parsed."""


@dataclass(frozen=True)
class Header:
    """The tags of an rpm header an inventory needs; `files` are (directory, basename) pairs, dirs with "/"."""

    name: str
    version: str = ""
    release: str = ""
    epoch: int | None = None
    arch: str = ""
    license: str = ""
    sourcerpm: str = ""
    files: tuple[tuple[str, str], ...] = ()


@dataclass
class Database:
    """What an rpm database yields: its packages, the paths they own (dir -> basenames, no leading slash), notes."""

    packages: list[Package] = field(default_factory=list)
    owned: dict[str, set[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, message: str) -> None:
        """Record a problem; after `MAX_NOTES` of them, only that there were more."""
        if len(self.notes) < MAX_NOTES:
            self.notes.append(message)
        elif len(self.notes) == MAX_NOTES:
            self.notes.append("more problems not listed")

    def add(self, blob: bytes, path: str, label: str) -> None:
        """Parse one header blob into a package of the database at `path`; a bad blob becomes a note."""
        try:
            header = parse_header(blob)
        except HeaderError as error:
            self.note(f"{label}: {error}")
            return
        self.packages.append(
            Package(
                "rpm", header.name, header.version, path, header.epoch, header.release, header.arch,
                header.license, header.sourcerpm,
            )
        )  # fmt: skip
        for directory, base in header.files:
            self.owned.setdefault(directory.strip("/"), set()).add(base)


def parse_header(blob: bytes) -> Header:
    """The tags of one rpm header blob: big-endian index count and data length, 16-byte entries, then the data.

    Raises:
        HeaderError: the blob is truncated, claims absurd counts, or a needed tag points outside its data.
    """
    if blob.startswith(HEADER_MAGIC):
        blob = blob[len(HEADER_MAGIC) :]
    if len(blob) < 8:
        raise HeaderError(f"header of {len(blob)} bytes")
    count, length = struct.unpack_from(">II", blob)
    if count > MAX_TAGS or length > MAX_DATA:
        raise HeaderError(f"header claims {count} tags and {length} bytes of data")
    start = 8 + 16 * count
    if len(blob) < start + length:
        raise HeaderError(f"header truncated: {len(blob)} bytes, {start + length} announced")
    data = blob[start : start + length]
    tags = {}
    for tag, kind, offset, items in struct.iter_unpack(">iiii", blob[8:start]):
        if tag in _WANTED:
            tags[tag] = (kind, offset, items)
    reader = _Tags(tags, data)
    name = reader.string(NAME)
    if not name:
        raise HeaderError("header without a name")
    epochs = reader.ints(EPOCH)
    return Header(
        name=name,
        version=reader.string(VERSION),
        release=reader.string(RELEASE),
        epoch=epochs[0] if epochs else None,
        arch=reader.string(ARCH),
        license=reader.string(LICENSE),
        sourcerpm=reader.string(SOURCERPM),
        files=reader.files(),
    )


_WANTED = {NAME, VERSION, RELEASE, EPOCH, LICENSE, ARCH, SOURCERPM, OLDFILENAMES, DIRINDEXES, BASENAMES, DIRNAMES}


class _Tags:
    def __init__(self, tags: dict[int, tuple[int, int, int]], data: bytes) -> None:
        self.tags, self.data = tags, data

    def _where(self, tag: int, kinds: tuple[int, ...]) -> tuple[int, int] | None:
        if tag not in self.tags:
            return None
        kind, offset, count = self.tags[tag]
        if kind not in kinds:
            raise HeaderError(f"tag {tag} has type {kind}")
        if not 0 <= offset < len(self.data) or not 0 < count <= len(self.data):
            raise HeaderError(f"tag {tag}: offset {offset}, count {count} outside {len(self.data)} bytes of data")
        return offset, count

    def string(self, tag: int) -> str:
        found = self._strings(tag, (STRING, I18NSTRING, STRING_ARRAY), first=True)
        return found[0] if found else ""

    def _strings(self, tag: int, kinds: tuple[int, ...], first: bool = False) -> list[str]:
        where = self._where(tag, kinds)
        if where is None:
            return []
        offset, count = where
        if first:
            count = 1
        strings = self.data[offset:].split(b"\0", count)
        if len(strings) <= count:  # rpm's own check: the strings end inside the data
            raise HeaderError(f"tag {tag}: {count} strings run past the data")
        return [item.decode("utf-8", "surrogateescape") for item in strings[:count]]

    def ints(self, tag: int) -> list[int]:
        where = self._where(tag, (INT32,))
        if where is None:
            return []
        offset, count = where
        if offset + 4 * count > len(self.data):
            raise HeaderError(f"tag {tag}: {count} integers run past the data")
        values = array("i", self.data[offset : offset + 4 * count])
        if sys.byteorder == "little":
            values.byteswap()
        return values.tolist()

    def files(self) -> tuple[tuple[str, str], ...]:
        bases = self._strings(BASENAMES, (STRING_ARRAY,))
        if not bases:
            return tuple(posixpath.split(path) for path in self._strings(OLDFILENAMES, (STRING_ARRAY,)))
        dirs = self._strings(DIRNAMES, (STRING_ARRAY,))
        indexes = self.ints(DIRINDEXES)
        if len(indexes) != len(bases) or any(not 0 <= i < len(dirs) for i in indexes):
            raise HeaderError(f"{len(bases)} basenames, {len(indexes)} dir indexes into {len(dirs)} dirnames")
        return tuple(zip((dirs[i] for i in indexes), bases, strict=True))


def read_sqlite(database: Path, path: str) -> Database:
    """The packages of an rpm sqlite database (rpm >= 4.16: table `Packages(hnum, blob)`), opened read-only.

    Args:
        database: the file on disk (a temporary copy of the image's file).
        path: the file's path in the image, for the packages and the notes.
    """
    found = Database()
    uri = f"file:{urllib.parse.quote(str(database))}?mode=ro&immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as error:
        found.note(f"not a readable sqlite database: {error}")
        return found
    try:
        for hnum, blob in connection.execute("SELECT hnum, blob FROM Packages"):
            if isinstance(blob, bytes) and len(found.packages) < MAX_VALUES:
                found.add(blob, path, f"package {hnum}")
    except sqlite3.Error as error:  # a truncated file fails part way: keep the rows read before
        found.note(f"sqlite database unreadable after {len(found.packages)} packages: {error}")
    finally:
        connection.close()
    return found


def read_bdb(stream: BinaryIO, path: str) -> Database:
    """The packages of a Berkeley DB hash `Packages` file (rpm < 4.16, Amazon Linux 2).

    Args:
        stream: the file (seekable); read a page at a time, never whole.
        path: the file's path in the image, for the packages and the notes.
    """
    found = Database()
    for label, blob in bdb_values(stream, found.note):
        found.add(blob, path, label)
    return found


def bdb_values(stream: BinaryIO, note: Note) -> Iterator[tuple[str, bytes]]:
    """The values of a Berkeley DB hash file, each with a label for notes, after db_page.h's page layout.

    Page 0 is the hash metadata page (magic, page size, last page number; its byte order gives the file's);
    every hash page lists key/data item offsets after its 26-byte header; a data item is inline (H_KEYDATA) or
    names the first of a chain of overflow pages (H_OFFPAGE) and the total length. Every page number is checked
    against the file, each page is used once, chains must end where the total length says; what does not fit
    becomes a note and the rest is still read.
    """
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    meta = stream.read(512)
    if len(meta) < 512:
        note(f"Berkeley DB file of {size} bytes")
        return
    order = next((o for o in "<>" if struct.unpack_from(o + "I", meta, 12)[0] == HASH_MAGIC), None)
    if order is None:
        note("not a Berkeley DB hash file (magic)")
        return
    pagesize, last = struct.unpack_from(order + "I", meta, 20)[0], struct.unpack_from(order + "I", meta, 32)[0]
    if pagesize not in {512 << n for n in range(8)} or meta[25] != P_HASHMETA:
        note(f"Berkeley DB metadata page: page size {pagesize}, type {meta[25]}")
        return
    if meta[26] & 1:  # DBMETA_CHKSUM shifts every page's content; rpm's own bdb_ro does not read such files either
        note("Berkeley DB file with page checksums: not read")
        return
    pages = _Pages(stream, pagesize, size // pagesize, order)
    if last >= pages.count:
        note(f"Berkeley DB file truncated: {pages.count} pages of {last + 1}")
        last = pages.count - 1
    values = 0
    for pgno in range(1, last + 1):
        page = pages.read(pgno)
        if page[25] not in (P_HASH, P_HASH_UNSORTED):
            continue
        for index, item in _hash_items(page, pagesize, order, note, pgno):
            if values >= MAX_VALUES:
                note(f"more than {MAX_VALUES} values: the rest is not read")
                return
            label = f"page {pgno} item {index}"
            if item[0] == H_KEYDATA:
                values += 1
                yield label, item[1:]
            elif item[0] == H_OFFPAGE and len(item) >= 12:
                first, length = struct.unpack_from(order + "II", item, 4)
                if (value := pages.chain(first, length, note, label)) is not None:
                    values += 1
                    yield label, value
            else:
                note(f"{label}: item type {item[0]} is not read")


def _hash_items(page: bytes, pagesize: int, order: str, note: Note, pgno: int) -> Iterator[tuple[int, bytes]]:
    """The data items of a hash page (odd indexes; even ones are keys), each as bytes from its type byte on."""
    entries = struct.unpack_from(order + "H", page, 20)[0]
    if PAGE_HEADER + 2 * entries > pagesize:
        note(f"page {pgno}: {entries} entries do not fit a page")
        return
    offsets = struct.unpack_from(f"{order}{entries}H", page, PAGE_HEADER)
    top = PAGE_HEADER + 2 * entries
    for index in range(1, entries, 2):
        # Items fill the page from its end, in index order: an item ends where the one before it starts.
        start, end = offsets[index], offsets[index - 1]
        key = offsets[index - 2] if index > 1 else pagesize
        if not top <= start < end < key <= pagesize:
            note(f"page {pgno} item {index}: offsets {start}..{end} outside the page")
            continue
        if page[end] == H_KEYDATA and page[end + 1 : key] == b"\0\0\0\0":
            continue  # rpm keeps its next header number under key 0: not a header
        yield index, page[start:end]


class _Pages:
    """The pages of a Berkeley DB file, read one at a time; each overflow page is handed out once."""

    def __init__(self, stream: BinaryIO, pagesize: int, count: int, order: str) -> None:
        self.stream, self.pagesize, self.count, self.order = stream, pagesize, count, order
        self.used: set[int] = set()

    def read(self, pgno: int) -> bytes:
        self.stream.seek(pgno * self.pagesize)
        return self.stream.read(self.pagesize)

    def chain(self, pgno: int, length: int, note: Note, label: str) -> bytes | None:
        if length > MAX_DATA:
            note(f"{label}: value of {length} bytes is not read")
            return None
        parts: list[bytes] = []
        got = 0
        while got < length:
            if not 0 < pgno < self.count:
                note(f"{label}: overflow page {pgno} is outside the file ({self.count} pages)")
                return None
            if pgno in self.used:
                note(f"{label}: overflow page {pgno} is used twice (a loop, or two chains)")
                return None
            self.used.add(pgno)
            page = self.read(pgno)
            used = struct.unpack_from(self.order + "H", page, 22)[0]
            if page[25] != P_OVERFLOW or used > self.pagesize - PAGE_HEADER or used == 0:
                note(f"{label}: page {pgno} is not an overflow page (type {page[25]}, {used} bytes)")
                return None
            parts.append(page[PAGE_HEADER : PAGE_HEADER + used])
            got += used
            pgno = struct.unpack_from(self.order + "I", page, 16)[0]
        if got != length:
            note(f"{label}: overflow chain holds {got} bytes, {length} announced")
            return None
        return b"".join(parts)
