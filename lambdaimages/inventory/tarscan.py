"""A push tar parser for layer streams: every path, and the package and version files an inventory reads."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from lambdaimages.inventory import dotnet, dpkg, golang, languages, rpmdb
from lambdaimages.inventory.facts import Entry, Found, LayerFacts
from lambdaimages.inventory.versions import TEXT_FILES
from lambdaimages.tools.layers import WHITEOUT, member_role, normalize_path

BLOCK = 512
MEMORY_LIMIT = 1 << 20  # a captured file up to this size stays in memory, a bigger one goes to a temp file
META_LIMIT = 1 << 20  # pax headers and GNU long names
RPM_DATABASES = {
    "var/lib/rpm/Packages": "rpm-bdb",
    "var/lib/rpm/rpmdb.sqlite": "rpm-sqlite",
    "usr/lib/sysimage/rpm/Packages": "rpm-bdb",
    "usr/lib/sysimage/rpm/rpmdb.sqlite": "rpm-sqlite",
}


@dataclass(frozen=True)
class Limit:
    """How much of a kind of file is captured; `prefix`: a bigger file is read in part (its start suffices)."""

    size: int
    prefix: bool = False


LIMITS = {
    "text": Limit(1 << 20),
    "python": Limit(256 << 10, prefix=True),  # the header part of METADATA comes first
    "npm": Limit(4 << 20),
    "gem": Limit(1 << 20),
    "dpkg": Limit(64 << 20),
    "rpm-bdb": Limit(1 << 30),
    "rpm-sqlite": Limit(1 << 30),
    "jar": Limit(256 << 20),
    "dotnet": Limit(16 << 20),
}
# How a new kind of file is read (the plug-in point): `classify` names the kind from the path, `LIMITS` says how
# much of such a file is captured, and a parser of `_STREAM_PARSERS` (given a stream: the file may be big, so it is
# spooled to a temp file above MEMORY_LIMIT) or of `_PARSERS` (given the bytes) returns its (packages, notes).
# rpm databases are read apart: they also give the files each package owns.
_STREAM_PARSERS = {"jar": languages.maven_packages}
_SPOOLED = {"rpm-bdb", "rpm-sqlite", *_STREAM_PARSERS}  # kinds whose parser reads a file; the others get bytes
# Tar entry type flags: what each makes in the image; the header-only ones carry no data whatever their size.
_TYPES = {"0": "file", "\0": "file", "7": "file", "S": "file", "1": "hardlink", "2": "symlink", "5": "dir"}
_TYPES.update(dict.fromkeys("346", "other"))
_META_TYPES = {"L", "K", "x", "g"}  # GNU long name and link, pax extended and global headers


def classify(path: str) -> str | None:
    """The kind of file an inventory reads at `path` (a key of `LIMITS`), or None for any other file."""
    base = path.rpartition("/")[2]
    if base == "package.json":
        return "npm" if languages.NPM_PACKAGE.search(path) else None
    if base.endswith(".jar"):
        return "jar"
    if base.endswith(".deps.json"):
        return "dotnet"
    if base.endswith(".gemspec"):
        return "gem" if languages.GEMSPEC.search(path) else None
    if base in ("METADATA", "PKG-INFO") or base.endswith(".egg-info"):
        return "python" if languages.is_python_metadata(path) else None
    if path in RPM_DATABASES:
        return RPM_DATABASES[path]
    if path == dpkg.STATUS:
        return "dpkg"
    if path.startswith(("etc/", "usr/lib/os-release", "var/lang/")) and TEXT_FILES.match(path):
        return "text"
    return None


class _Capture:
    """The content of one tar member as it streams by, up to a limit: in memory, or in a temp file."""

    def __init__(self, kind: str, path: str, size: int, tmpdir: str | None) -> None:
        self.kind, self.path, self.size = kind, path, size
        self.want = min(size, LIMITS[kind].size) if kind in LIMITS else min(size, META_LIMIT)
        self.got = 0
        self.file: BinaryIO | None = None
        self.buffer = bytearray()
        if kind in _SPOOLED and (size > MEMORY_LIMIT or kind == "rpm-sqlite"):  # sqlite opens a named file
            self.file = tempfile.NamedTemporaryFile(prefix="layerscan-", dir=tmpdir)

    def write(self, data: memoryview) -> None:
        if self.got < self.want:
            part = data[: self.want - self.got]
            if self.file is not None:
                self.file.write(part)
            else:
                self.buffer += part
            self.got += len(part)

    def data(self) -> bytes:
        return bytes(self.buffer)

    def stream(self) -> BinaryIO:
        if self.file is None:
            return io.BytesIO(self.buffer)
        self.file.flush()
        self.file.seek(0)
        return self.file

    def filename(self) -> Path:
        if self.file is None:
            raise ValueError("not spooled to a file")
        self.file.flush()
        return Path(self.file.name)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.buffer = bytearray()


class ContentReader(Protocol):
    """Reads one file picked by its first bytes, fed from its first byte on; `finish` says what it found."""

    def feed(self, data: memoryview) -> bool:
        """The next bytes; False once the reader wants no more of the file."""

    def finish(self, path: str) -> Found:
        """The packages and notes of the whole file (called only when the file was complete)."""


# Files picked by their first bytes, not their path: magic -> reader of a file of that size.
CONTENT_READERS: dict[bytes, Callable[[int], ContentReader]] = {golang.ELF_MAGIC: golang.BuildInfoReader}
SNIFF = 4  # bytes of a file's start that pick its reader
MIN_CONTENT = 64  # smaller files are not offered to content readers


class _Sniff:
    """A file of no kind `classify` knows, offered to `CONTENT_READERS` by its first bytes as it streams by."""

    kind = "content"

    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size
        self.got, self.want = 0, size
        self.start = b""
        self.reader: ContentReader | None = None
        self.active = True

    def write(self, data: memoryview) -> None:
        self.got = min(self.want, self.got + len(data))
        if not self.active:
            return
        if self.reader is None:
            before = len(self.start)
            self.start += data[: SNIFF - before]
            if len(self.start) < SNIFF:
                return
            make = CONTENT_READERS.get(self.start)
            if make is None:
                self.active = False
                return
            self.reader = make(self.size)
            self.active = self.reader.feed(memoryview(self.start)) and self.reader.feed(data[SNIFF - before :])
            return
        self.active = self.reader.feed(data)

    def close(self) -> None:
        self.reader = None


class LayerScanner:
    """Reads a layer tar pushed in chunks of any size and keeps what an inventory needs, as `LayerFacts`.

    Handles ustar, GNU (long names and links, base-256 sizes, old sparse files) and pax (path, linkpath, size)
    headers. Member contents stream past without copies, except the few files `classify` names: those are
    captured up to their `LIMITS` (small ones in memory, databases and jars in temp files) and parsed when
    complete. Anything unreadable becomes a note naming the file; nothing raises. A bad header checksum ends
    the scan with a note (the rest of the stream is counted, not parsed).
    """

    def __init__(self, name: str = "", tmpdir: str | None = None) -> None:
        self._facts = LayerFacts(name=name)
        self._tmpdir = tmpdir
        self._pending = bytearray()  # a header split across chunks
        self._skip = 0  # bytes of the current member's data and padding still to come
        self._capture: _Capture | _Sniff | None = None
        self._member = ""  # the path whose data is streaming, for notes
        self._state = "header"  # header, sparse (GNU sparse extension blocks), end, broken
        self._overrides: dict[str, str] = {}  # from a pax header or GNU long name/link, for the next member
        self._sparse: tuple[int, _Capture | _Sniff | None] = (0, None)  # the data to start after the extension blocks
        self._closed = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Parse the next bytes of the tar stream."""
        view = memoryview(chunk).cast("B")
        self._facts.size += len(view)
        pos, end = 0, len(view)
        while pos < end:
            if self._skip:
                take = min(self._skip, end - pos)
                if self._capture is not None:
                    self._capture.write(view[pos : pos + take])
                pos += take
                self._skip -= take
                if not self._skip:
                    self._finish_member()
                continue
            if self._state in ("end", "broken"):
                return
            if self._pending or end - pos < BLOCK:
                take = min(BLOCK - len(self._pending), end - pos)
                self._pending += view[pos : pos + take]
                pos += take
                if len(self._pending) < BLOCK:
                    return
                block = bytes(self._pending)
                self._pending.clear()
            else:
                block = bytes(view[pos : pos + BLOCK])
                pos += BLOCK
            self._block(block)

    def close(self) -> LayerFacts:
        """The facts of the layer; notes say if the stream ended early. The scanner is done after this."""
        if not self._closed:
            self._closed = True
            if self._skip or self._capture is not None:
                self._facts.note("", f"the tar ends inside {self._member!r}")
                self._finish_member()  # parsed if its content is whole (only the padding is missing)
            elif self._pending or self._state == "sparse":
                self._facts.note("", "the tar ends inside a header")
                if self._sparse[1] is not None:
                    self._sparse[1].close()
        return self._facts

    # -- headers ----------------------------------------------------------------------------------

    def _block(self, block: bytes) -> None:
        if self._state == "sparse":
            if not block[504]:  # the last extension block: the data follows
                self._state = "header"
                self._start_data(*self._sparse)
                self._sparse = (0, None)
            return
        if not any(block):  # end of archive; what follows (more zeros, usually) is not read
            self._state = "end"
            return
        try:
            self._header(block)
        except ValueError as error:
            self._state = "broken"
            self._facts.note("", f"unreadable tar header after {self._member!r}: {error}; the rest is not read")

    def _header(self, block: bytes) -> None:
        checksum = _number(block[148:156])
        if checksum != sum(block) - sum(block[148:156]) + 8 * 32:
            raise ValueError("bad header checksum")
        flag = chr(block[156])
        size = _number(block[124:136])
        if flag in _META_TYPES:
            self._member = f"<{flag} header>"
            if size > META_LIMIT:
                self._facts.note("", f"a {flag!r} header of {size} bytes is not read")
            self._start_data(size, _Capture(flag, "", size, None) if size <= META_LIMIT else None)
            return
        overrides, self._overrides = self._overrides, {}
        name = block[0:100].split(b"\0", 1)[0]
        if block[257:263] == b"ustar\0":  # POSIX: a prefix; GNU keeps other fields there
            prefix = block[345:500].split(b"\0", 1)[0]
            name = prefix + b"/" + name if prefix else name
        raw = overrides.get("path") or name.decode("utf-8", "surrogateescape")
        link = overrides.get("linkpath") or block[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        if "size" in overrides:
            size = int(overrides["size"])
        # A sparse file stores less than it holds: the image sees its real size (GNU header field, or pax).
        sparse = flag == "S" or "GNU.sparse.realsize" in overrides or "GNU.sparse.size" in overrides
        real = _number(block[483:495]) if flag == "S" else size
        real = int(overrides.get("GNU.sparse.realsize") or overrides.get("GNU.sparse.size") or real)
        path = normalize_path(raw)
        self._member = path
        kind = _TYPES.get(flag)
        data = size if kind in ("file", None) else 0
        if kind is None:
            self._facts.note(path, f"tar entry type {flag!r} is not a file: not read")
        else:
            self._record(path, kind, real, link)
        capture = None
        if kind == "file" and not sparse and not path.rpartition("/")[2].startswith(WHITEOUT):
            capture = self._capture_for(path, size)
        if flag == "S" and block[482]:  # old GNU sparse: more map blocks before the data
            self._state, self._sparse = "sparse", (data, capture)
            return
        self._start_data(data, capture)

    def _record(self, path: str, kind: str, size: int, link: str) -> None:
        role, path = member_role(path)
        if role == "opaque":
            self._facts.opaques.append(path)
        elif role == "whiteout":
            self._facts.whiteouts.append(path)
        elif role == "entry":
            if path in self._facts.entries:  # a later member of the same path replaces the earlier one
                for found in (self._facts.packages, self._facts.owned, self._facts.texts, self._facts.notes):
                    found.pop(path, None)
            if kind == "hardlink":
                link = normalize_path(link)
            self._facts.entries[path] = Entry(kind, size if kind == "file" else 0, link if kind != "file" else "")

    def _capture_for(self, path: str, size: int) -> _Capture | _Sniff | None:
        kind = classify(path)
        if kind is None:
            if path.endswith("rpmdb.sqlite-wal") and path.removesuffix("-wal") in RPM_DATABASES and size:
                self._facts.note(path, "not empty: changes rpm keeps in it are not read")
            return _Sniff(path, size) if size >= MIN_CONTENT else None
        limit = LIMITS[kind]
        if size > limit.size and not limit.prefix:
            self._facts.note(path, f"{size} bytes, more than the {limit.size} read of such a file: not read")
            return None
        return _Capture(kind, path, size, self._tmpdir)

    def _start_data(self, size: int, capture: _Capture | _Sniff | None) -> None:
        self._capture = capture
        self._skip = -(-size // BLOCK) * BLOCK
        if not self._skip:
            self._finish_member()

    # -- contents ---------------------------------------------------------------------------------

    def _finish_member(self) -> None:
        capture, self._capture = self._capture, None
        if capture is None:
            return
        try:
            if capture.got < capture.want:
                return  # the tar ended early; close() says so
            if capture.kind in _META_TYPES:
                self._meta(capture.kind, capture.data())
            else:
                self._parse(capture)
        except Exception as error:  # a parser's bug must cost one file, not the snapshot
            self._facts.note(capture.path, f"cannot read: {error!r}")
        finally:
            capture.close()

    def _meta(self, kind: str, data: bytes) -> None:
        if kind == "L":
            self._overrides["path"] = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == "K":
            self._overrides["linkpath"] = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        elif kind == "x":
            records = _pax_records(data)
            wanted = ("path", "linkpath", "size", "GNU.sparse.size", "GNU.sparse.realsize")
            self._overrides.update({k: v for k, v in records.items() if k in wanted})
            if "GNU.sparse.name" in records:
                self._overrides["path"] = records["GNU.sparse.name"]

    def _parse(self, capture: _Capture | _Sniff) -> None:
        kind, path = capture.kind, capture.path
        if isinstance(capture, _Sniff):
            if capture.reader is None:
                return
            packages, notes = capture.reader.finish(path)
        elif kind == "text":
            self._facts.texts[path] = capture.data().decode("utf-8", "replace")
            return
        elif kind in ("rpm-bdb", "rpm-sqlite"):
            if kind == "rpm-bdb":
                database = rpmdb.read_bdb(capture.stream(), path)
            else:
                database = rpmdb.read_sqlite(capture.filename(), path)
            packages, notes = database.packages, database.notes
            self._facts.owned[path] = {d: sorted(bases) for d, bases in sorted(database.owned.items())}
        elif kind in _STREAM_PARSERS:
            packages, notes = _STREAM_PARSERS[kind](path, capture.stream())
        else:
            packages, notes = _PARSERS[kind](path, capture.data())
        if packages:
            self._facts.packages[path] = packages
        for message in notes:
            self._facts.note(path, message)


def _dpkg(path: str, data: bytes) -> Found:
    return dpkg.status_packages(data.decode("utf-8", "replace"), path), []


_PARSERS = {
    "dpkg": _dpkg,
    "python": languages.python_package,
    "npm": languages.npm_package,
    "gem": languages.gem_package,
    "dotnet": dotnet.deps_packages,
}


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU's base-256 (first byte 0x80 or 0xff)."""
    if field[:1] in (b"\x80", b"\xff"):
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field[1:]))) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _pax_records(data: bytes) -> dict[str, str]:
    """The `<length> <key>=<value>\\n` records of a pax extended header."""
    records = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos)
        length = int(data[pos:space]) if space > pos else 0
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n"):
            raise ValueError(f"malformed pax record at byte {pos}")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "replace")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


def scan_stream(stream: BinaryIO, name: str = "", chunk: int = 1 << 20) -> LayerFacts:
    """Facts of a layer tar read from a binary stream (already decompressed), in chunks."""
    scanner = LayerScanner(name)
    while data := stream.read(chunk):
        scanner.feed(data)
    return scanner.close()
