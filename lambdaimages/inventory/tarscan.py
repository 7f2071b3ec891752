"""What an inventory reads of a layer tar pushed in chunks: every path, and the package and version files."""

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
from lambdaimages.tools.tarstream import Member, TarError, TarReader, Truncated, Writer

MEMORY_LIMIT = 1 << 20  # a captured file up to this size stays in memory, a bigger one goes to a temp file
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
# What each kind of tar member (`tarstream.KINDS`) is in an inventory's entries.
_KINDS = {"file": "file", "hardlink": "hardlink", "symlink": "symlink", "dir": "dir"}
_KINDS.update(dict.fromkeys(("char", "block", "fifo"), "other"))


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
        self.want = min(size, LIMITS[kind].size)
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

    The tar is read by `tools.tarstream` (tarfile's rules, the ones the file tree follows). Member contents
    stream past without copies, except the few files `classify` names: those are captured up to their `LIMITS`
    (small ones in memory, databases and jars in temp files) and parsed when complete, and the files that
    `CONTENT_READERS` pick by their first bytes. Anything unreadable becomes a note naming the file; nothing
    raises. A stream the reader cannot read, or a later header that ends the archive, ends the scan with a note
    (the rest of the stream is counted, not parsed).
    """

    def __init__(self, name: str = "", tmpdir: str | None = None) -> None:
        self._facts = LayerFacts(name=name)
        self._tmpdir = tmpdir
        self._reader = TarReader(self)
        self._capture: _Capture | _Sniff | None = None
        self._member = ""  # the path last read, for notes
        self._closed = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Parse the next bytes of the tar stream."""
        self._facts.size += memoryview(chunk).nbytes
        if self._reader is None:
            return
        try:
            self._reader.feed(chunk)
        except TarError as error:
            self._stop(error)

    def close(self) -> LayerFacts:
        """The facts of the layer; notes say if the stream ended early. The scanner is done after this."""
        if not self._closed:
            self._closed = True
            if self._reader is not None:
                try:
                    self._reader.close()
                except TarError as error:
                    self._stop(error)
                else:
                    if self._reader.stopped is not None:
                        self._stop(self._reader.stopped)
            self._drop_capture()
        return self._facts

    def _stop(self, error: TarError) -> None:
        if isinstance(error, Truncated):
            where = f"inside {self._member!r}" if error.member is not None else "inside a header"
            self._facts.note("", f"the tar ends {where}")
        else:
            self._facts.note("", f"unreadable tar header after {self._member!r}: {error}; the rest is not read")
        self._reader = None
        self._drop_capture()

    def _drop_capture(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None

    # -- the tarstream.Visitor ---------------------------------------------------------------------

    def member(self, member: Member) -> Writer | None:
        """Record one member; the capture its content goes to, if an inventory reads it."""
        path = normalize_path(member.name)
        self._member = path
        kind = _KINDS.get(member.kind)
        if kind is None:
            self._facts.note(path, f"tar entry type {member.type.decode('latin-1')!r} is not a file: not read")
            return None
        self._record(path, kind, member.size, member.linkname)
        if kind == "file" and not path.rpartition("/")[2].startswith(WHITEOUT):
            self._capture = self._capture_for(path, member.size)
            if self._capture is not None:
                return self._capture.write
        return None

    def content_end(self) -> None:
        """The captured member's content is whole: parse it."""
        capture, self._capture = self._capture, None
        try:
            if capture.got >= capture.want:
                self._parse(capture)
        except Exception as error:  # a parser's bug must cost one file, not the snapshot
            self._facts.note(capture.path, f"cannot read: {error!r}")
        finally:
            capture.close()

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


def scan_stream(stream: BinaryIO, name: str = "", chunk: int = 1 << 20) -> LayerFacts:
    """Facts of a layer tar read from a binary stream (already decompressed), in chunks."""
    scanner = LayerScanner(name)
    while data := stream.read(chunk):
        scanner.feed(data)
    return scanner.close()
