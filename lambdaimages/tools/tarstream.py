"""The one reader of tar streams: headers read by Python's tarfile rules, contents pushed in chunks to a visitor.

`TarReader` is fed the bytes of a tar in chunks of any size (a download as it arrives, or a file read in big
blocks) and tells a `Visitor` each member's header; the visitor returns where that member's content goes, and the
content is written there in slices of the chunks, without copies. `read_stream` pulls a stream (plain, gzip, bzip2
or xz, told by its first bytes) through a reader up to the archive's end.

The rules are tarfile's (Python 3.11, which the tree check and the inventory followed before this module), so that
the tree, the inventory and the file diff read the same members from the same bytes:

- ustar, GNU and pax headers: pax extended (`x`, Solaris `X`) and global (`g`) records, GNU long names and link
  names (`L`, `K`), the ustar prefix field joined to the name whatever the magic (GNU headers included) except
  for GNU's own types, a V7 directory (type `\\0`, name ending in `/`), octal or base-256 numbers, a header
  checksum summed with unsigned or signed bytes.
- Sparse members (old GNU `S` with extension blocks, pax 0.0, 0.1 and 1.0): their content is expanded, the
  holes written as zeros, to the member's real size.
- Where an archive ends: at a zero block, or at the end of the stream after a member. A header that cannot be
  read is an error when it is the archive's first one, or follows a pax or GNU header; a later one ends the
  archive (tarfile's rule), and the reader says so in `stopped`. A stream that ends inside a member's data or
  padding, inside a pax or GNU header's data, or inside the archive's first header is an error.

Deliberate limits beyond tarfile's: a pax or GNU header's data above `META_LIMIT` is an error (tarfile would hold
any size in memory), and so is a member whose content would run past its own data (a sparse map or a size that
points into the next header, which tarfile would read as content).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

BLOCK = 512
CHUNK = 1 << 20  # what `read_stream` reads at a time
META_LIMIT = 16 << 20  # bytes of one pax or GNU long-name header held in memory
ENCODING = "utf-8"  # tarfile's default here (the file system encoding), with surrogateescape for other bytes
KINDS = {
    b"0": "file", b"\0": "file", b"7": "file", b"S": "file", b"1": "hardlink", b"2": "symlink", b"5": "dir",
    b"3": "char", b"4": "block", b"6": "fifo",
}  # fmt: skip
REGULAR = {b"0", b"\0", b"7", b"S"}  # the types whose data is content (tarfile's REGULAR_TYPES)
_SUPPORTED = set(KINDS) | {b"L", b"K"}  # a type outside these has data that is skipped
_GNU_TYPES = {b"L", b"K", b"S"}  # their prefix field holds other things
_PAX_TYPES = {b"x", b"X", b"g"}
_META_TYPES = {b"L", b"K", *_PAX_TYPES}  # headers that describe the next member
_PAX_FIELDS = {"path": "name", "linkpath": "linkname", "size": "size", "mtime": "mtime", "uid": "uid", "gid": "gid"}
_PAX_FIELDS.update(uname="uname", gname="gname")
_PAX_NUMBERS = {"mtime": float, "uid": int, "gid": int, "size": int}
_PAX_RECORD = re.compile(rb"(\d+) ([^=]+)=")
_SPARSE_OFFSET = re.compile(rb"\d+ GNU.sparse.offset=(\d+)\n")
_SPARSE_NUMBYTES = re.compile(rb"\d+ GNU.sparse.numbytes=(\d+)\n")
_ZERO_BLOCK = bytes(BLOCK)
# name, mode, uid, gid, size, mtime, checksum, type, linkname, magic and version, uname, gname, devices, prefix
_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_ZEROS = memoryview(bytes(CHUNK))


class TarError(ValueError):
    """A tar stream that cannot be read, as far as it was read; `offset` is where (bytes from its start)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class BadHeader(TarError):
    """A header that is not one: a bad checksum, a number that is not one, a malformed pax record."""


class Truncated(TarError):
    """The stream ends early; `member` is the member whose data was cut, or None when a header was."""

    def __init__(self, message: str, offset: int, member: str | None = None) -> None:
        super().__init__(message, offset)
        self.member = member


@dataclass(slots=True, eq=False)
class Member:
    """One member's header, with tarfile's names for its fields: `size` is the content's size (a sparse file's
    real size), `sparse` its (offset, length) map if it is sparse, `offset` where its first header (a pax or GNU
    one included) starts and `offset_data` where its data does."""

    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int | float
    linkname: str
    uname: str
    gname: str
    devmajor: int
    devminor: int
    offset: int = 0
    offset_data: int = 0
    sparse: list[tuple[int, int]] | None = None

    @property
    def kind(self) -> str | None:
        """file, hardlink, symlink, dir, char, block or fifo; None for a type no image holds."""
        return KINDS.get(self.type)


Writer = Callable[[memoryview], object]


class Visitor(Protocol):
    """What a `TarReader` tells as it reads: each member, and the end of each content it was asked to write."""

    def member(self, member: Member) -> Writer | None:
        """A member's header; where its content goes (called with slices of the stream), or None to skip it.

        Only regular members (`REGULAR`) have content; for the others the return value is not used.
        """

    def content_end(self) -> None:
        """The content of the member whose writer was returned last is whole."""


class TarReader:
    """A push parser of one tar stream: `feed` it chunks, then `close` it; it tells `visitor` what it reads.

    Raises `TarError` from `feed` or `close` as soon as the stream cannot be read (see the module's rules); once
    it has, or once the archive has ended (`done`), further bytes are counted in `received` and not read.
    """

    def __init__(self, visitor: Visitor) -> None:
        self.visitor = visitor
        self.received = 0  # bytes fed
        self.offset = 0  # bytes of the archive parsed
        self.done = False  # the archive has ended; what follows is not read
        self.stopped: TarError | None = None  # the unreadable later header that ended the archive, if one did
        self._failed: TarError | None = None
        self._buffer = bytearray()  # bytes of a header (or other collected part) split across chunks
        self._want = BLOCK  # bytes the current step collects
        self._step: Callable[[bytes], None] = self._header
        self._skip = 0  # bytes of member data (and padding) still to pass
        self._give = 0  # of those, bytes still to write to `_write`
        self._write: Writer | None = None
        self._chain: list[tuple] = []  # the pax and GNU headers read for the next member, first first
        self._chain_start = 0  # offset of the next member's first header
        self._globals: dict[str, str] = {}  # pax global records, for every member that follows
        self._meta: tuple[bytes, int] = (b"", 0)  # the pax or GNU header whose data is being collected
        self._pending: _Pending | None = None  # a member waiting for its sparse extension blocks or map

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        """Read the next bytes of the stream."""
        view = memoryview(chunk).cast("B")
        end = len(view)
        self.received += end
        if self.done or self._failed is not None:
            return
        pos = 0
        try:
            while pos < end:
                if self._skip:
                    take = min(self._skip, end - pos)
                    if self._give:
                        give = min(take, self._give)
                        self._write(view[pos : pos + give])
                        self._give -= give
                        if not self._give:
                            self._content_end()
                    pos += take
                    self.offset += take
                    self._skip -= take
                    continue
                if not self._buffer and end - pos >= self._want:
                    data = bytes(view[pos : pos + self._want])
                    pos += self._want
                    self.offset += self._want
                else:
                    take = min(self._want - len(self._buffer), end - pos)
                    self._buffer += view[pos : pos + take]
                    pos += take
                    self.offset += take
                    if len(self._buffer) < self._want:
                        return
                    data, self._buffer = bytes(self._buffer), bytearray()
                self._step(data)
                if self.done:
                    return
        except TarError as error:
            self._failed = error
            raise

    def close(self) -> None:
        """The stream has ended: raises `Truncated` if it ended where the archive may not."""
        if self._failed is not None or self.done:
            return
        self.done = True
        if self._skip:
            what = self._current.name if self._current is not None else ""
            self._fail(Truncated(f"unexpected end of data in {what!r}", self.offset, what))
        if self._step != self._header or self._chain:
            self._fail(Truncated("unexpected end of data in a pax or GNU header", self.offset))
        start = self.offset - len(self._buffer)
        if self._buffer or start == 0:
            error = Truncated("truncated header" if self._buffer else "empty file", start)
            if start == 0:
                self._fail(error)
            self.stopped = error  # tarfile: a header cut short after a member ends the archive

    def _fail(self, error: TarError) -> None:
        self._failed = error
        raise error

    _current: Member | None = None  # the member whose data is read

    # -- headers ----------------------------------------------------------------------------------

    def _header(self, block: bytes) -> None:
        at = self.offset - BLOCK
        if not self._chain:
            self._chain_start = at
        if block == _ZERO_BLOCK:
            if self._chain:
                raise BadHeader("end of file header after a pax or GNU header", at)
            self.done = True
            return
        fields = _HEADER.unpack(block)
        try:
            numbers = _numbers(block, fields)
        except _Invalid as error:
            self._bad(str(error), at)
            return
        kind = fields[7]
        if kind in _META_TYPES:
            size = numbers[3]
            if size > META_LIMIT:
                raise TarError(f"a {kind.decode()!r} header of {size} bytes, over {META_LIMIT}", at)
            self._meta = (kind, at)
            self._collect(_padded(size), self._meta_data)
            return
        member = _member(fields, numbers)
        member.offset = self._chain_start
        if kind == b"S":
            self._sparse_header(member, block, at)
            return
        # tarfile's _proc_builtin: the data is skipped for regular and unknown types, then the globals apply.
        stored = _padded(member.size) if kind in REGULAR or kind not in _SUPPORTED else 0
        _apply_pax(member, self._globals, at)
        if member.type == b"5":
            member.name = member.name.rstrip("/")
        self._member_ready(_Pending(member, stored))

    def _bad(self, message: str, at: int) -> None:
        # tarfile: an unreadable header ends the archive, unless it is the first or follows a pax or GNU header.
        error = BadHeader(message, at)
        if self._chain or self._chain_start == 0:
            raise error
        self.stopped = error
        self.done = True

    def _collect(self, size: int, step: Callable[[bytes], None]) -> None:
        if size == 0:
            step(b"")
            return
        self._want, self._step = size, step

    def _meta_data(self, data: bytes) -> None:
        kind, at = self._meta
        self._want, self._step = BLOCK, self._header  # the data is read padded, as tarfile reads it
        if kind == b"L":
            self._chain.append(("name", _text(data)))
        elif kind == b"K":
            self._chain.append(("linkname", _text(data)))
        else:
            headers = self._globals if kind == b"g" else dict(self._globals) if self._globals else {}
            try:
                _pax_records(data, headers)
            except _Invalid as error:
                self._bad(str(error), at)
                return
            self._chain.append(("pax" if kind != b"g" else "global", headers, data))

    def _sparse_header(self, member: Member, block: bytes, at: int) -> None:
        # Old GNU sparse: four map entries in the header, more in extension blocks; the stored size is the data's.
        try:
            structs = [(_number(block[p : p + 12]), _number(block[p + 12 : p + 24])) for p in range(386, 482, 24)]
            real = _number(block[483:495])
        except _Invalid as error:
            self._bad(str(error), at)
            return
        pending = _Pending(member, _padded(member.size), sparse=structs, real=real)
        if block[482]:
            self._pending = pending
            self._collect(BLOCK, self._sparse_extension)
        else:
            self._member_ready(pending)

    def _sparse_extension(self, block: bytes) -> None:
        pending = self._pending
        try:
            for p in range(0, 504, 24):
                offset, numbytes = _number(block[p : p + 12]), _number(block[p + 12 : p + 24])
                if offset and numbytes:
                    pending.sparse.append((offset, numbytes))
        except _Invalid as error:
            self._want, self._step = BLOCK, self._header
            self._bad(str(error), self.offset - BLOCK)
            return
        if not block[504]:
            self._want, self._step, self._pending = BLOCK, self._header, None
            self._member_ready(pending)

    def _member_ready(self, pending: _Pending) -> None:
        member = pending.member
        member.offset_data = self.offset
        if pending.real is not None:
            member.size = pending.real
            member.sparse = pending.sparse
        chain, self._chain = self._chain, []
        for entry in reversed(chain):  # the innermost first, as tarfile's recursion applies them
            self._apply(entry, pending)
        if pending.map10:
            self._pending = pending
            self._map = bytearray()
            self._collect(BLOCK, self._sparse_map)
            return
        self._start(pending)

    def _apply(self, entry: tuple, pending: _Pending) -> None:
        member = pending.member
        if entry[0] in ("name", "linkname"):
            setattr(member, entry[0], entry[1])
            if member.type == b"5":
                member.name = member.name.removesuffix("/")
            return
        _, headers, data = entry
        if "GNU.sparse.map" in headers:
            numbers = [int(x) for x in headers["GNU.sparse.map"].split(",")]
            member.sparse = list(zip(numbers[::2], numbers[1::2], strict=False))
        elif "GNU.sparse.size" in headers:
            offsets = [int(m.group(1)) for m in _SPARSE_OFFSET.finditer(data)]
            numbytes = [int(m.group(1)) for m in _SPARSE_NUMBYTES.finditer(data)]
            member.sparse = list(zip(offsets, numbytes, strict=False))
        elif headers.get("GNU.sparse.major") == "1" and headers.get("GNU.sparse.minor") == "0":
            pending.map10 = True
        if entry[0] == "pax":
            _apply_pax(member, headers, self.offset)
            if "size" in headers:
                regular = member.type in REGULAR or member.type not in _SUPPORTED
                pending.stored = _padded(member.size) if regular else 0
                pending.stored_after_map = True

    def _sparse_map(self, block: bytes) -> None:
        # pax sparse 1.0: the map is decimal lines at the start of the data, in whole blocks.
        pending = self._pending
        self._map += block
        lines = self._map.split(b"\n")
        try:
            count = int(lines[0]) if len(lines) > 1 else None
            if count is None or len(lines) - 1 < 1 + 2 * count:
                if len(self._map) >= pending.stored:
                    raise TarError("a sparse map longer than the member's data", self.offset)
                return  # another block
            numbers = [int(line) for line in lines[1 : 1 + 2 * count]]
        except ValueError as error:
            raise TarError(f"a malformed sparse map: {error}", self.offset) from None
        self._want, self._step, self._pending = BLOCK, self._header, None
        used = len(self._map)
        pending.member.sparse = list(zip(numbers[::2], numbers[1::2], strict=False))
        pending.member.offset_data = self.offset
        pending.stored = pending.stored if pending.stored_after_map else pending.stored - used
        self._start(pending)

    def _start(self, pending: _Pending) -> None:
        member = pending.member
        self._current = member
        write = self.visitor.member(member)
        self._skip = pending.stored
        if member.type not in REGULAR or write is None:
            return
        if member.sparse is not None:
            expand = _Expand(write, member.sparse, member.size, self.visitor.content_end)
            stored = expand.stored
            write, self._content_end = expand.write, expand.finish
        else:
            stored = max(member.size, 0)
            self._content_end = self.visitor.content_end
        if stored > self._skip:
            raise TarError(f"{member.name!r}: content of {stored} bytes in {self._skip} bytes of data", self.offset)
        self._write, self._give = write, stored
        if not stored:
            self._content_end()

    _content_end: Callable[[], None]


@dataclass(slots=True)
class _Pending:
    """A member header being completed: its stored data's size, and sparse facts still to come."""

    member: Member
    stored: int
    sparse: list[tuple[int, int]] | None = None
    real: int | None = None
    map10: bool = False
    stored_after_map: bool = False


class _Expand:
    """Writes a sparse member's stored segments to `write` with the holes between them as zeros, to `size`."""

    def __init__(self, write: Writer, sparse: list[tuple[int, int]], size: int, end: Callable[[], None]) -> None:
        self.out, self.size, self.end = write, size, end
        self.segments = [(offset, length) for offset, length in sparse if length > 0]
        self.stored = sum(length for _, length in self.segments)
        self.position = 0  # in the expanded content
        self.index, self.left = 0, self.segments[0][1] if self.segments else 0

    def write(self, data: memoryview) -> None:
        while data:
            offset, length = self.segments[self.index]
            start = offset + length - self.left
            if start < self.position:
                raise TarError("a sparse map out of order", 0)
            self._zeros(start)
            take = min(len(data), self.left)
            self._emit(data[:take])
            data = data[take:]
            self.left -= take
            if not self.left and self.index + 1 < len(self.segments):
                self.index += 1
                self.left = self.segments[self.index][1]

    def finish(self) -> None:
        self._zeros(self.size)
        self.end()

    def _emit(self, data: memoryview) -> None:
        keep = max(0, min(len(data), self.size - self.position))  # tarfile reads no further than the size
        if keep:
            self.out(data[:keep])
        self.position += len(data)

    def _zeros(self, until: int) -> None:
        while self.position < until:
            self._emit(_ZEROS[: min(CHUNK, until - self.position)])


class _Invalid(Exception):
    """A header field that tarfile refuses (its InvalidHeaderError)."""


def _numbers(block: bytes, fields: tuple) -> list[int]:
    """The numeric fields of a header (mode, uid, gid, size, mtime, devmajor, devminor), its checksum checked."""
    _, mode, uid, gid, size, mtime, checksum, _, _, _, _, _, major, minor, _ = fields
    try:  # the usual octal fields, read at once; anything else as `_number` reads it
        numbers = [int(f.split(b"\0", 1)[0] or b"0", 8) for f in (checksum, mode, uid, gid, size, mtime, major, minor)]
    except ValueError:
        numbers = [_number(f) for f in (checksum, mode, uid, gid, size, mtime, major, minor)]
    checksum = numbers[0]
    if checksum != 256 + _sum(block[:256]) + _sum(block[256:]) - _sum(block[148:156]):
        if checksum != 256 + sum(struct.unpack_from("148b8x356b", block)):
            raise _Invalid("bad checksum")
    return numbers[1:]


def _member(fields: tuple, numbers: list[int]) -> Member:
    """tarfile's TarInfo.frombuf: the member a header describes."""
    name, _, _, _, _, _, _, kind, link, _, uname, gname, _, _, prefix = fields
    mode, uid, gid, size, mtime, major, minor = numbers
    member = Member(
        _text(name), kind, mode, uid, gid, size, mtime, _text(link), _text(uname), _text(gname), major, minor
    )
    if kind == b"\0" and member.name.endswith("/"):  # a V7 directory
        member.type = kind = b"5"
    if kind == b"5":
        member.name = member.name.rstrip("/")
    prefix = _text(prefix)
    if prefix and kind not in _GNU_TYPES:
        member.name = prefix + "/" + member.name
    return member


def _sum(data: bytes) -> int:
    """The sum of up to 256 bytes: adler32's low half is 1 + their sum modulo 65521, which 256 bytes cannot reach."""
    return (zlib.adler32(data) & 0xFFFF) - 1


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 (first byte 0x80, or 0xff for a negative number)."""
    if field[0] in (0x80, 0xFF):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
    text = field.split(b"\0", 1)[0]
    if text:
        try:
            return int(text, 8)  # what it accepts, tarfile's reading below accepts and reads alike
        except ValueError:
            pass
    try:
        return int(text.decode("ascii").strip() or "0", 8)
    except ValueError:
        raise _Invalid("invalid header") from None


def _text(field: bytes) -> str:
    text = field.split(b"\0", 1)[0]
    return text.decode(ENCODING, "surrogateescape") if text else ""


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK if size > 0 else 0


def _pax_records(data: bytes, headers: dict[str, str]) -> None:
    """The `<length> <keyword>=<value>\\n` records of a pax header into `headers`, read as tarfile reads them."""
    pos = 0
    while match := _PAX_RECORD.match(data, pos):
        length = int(match.group(1))
        if length == 0:
            raise _Invalid("invalid header")
        value = data[match.end(2) + 1 : match.start(1) + length - 1]
        headers[match.group(2).decode(ENCODING, "surrogateescape")] = value.decode(ENCODING, "surrogateescape")
        pos += length


def _apply_pax(member: Member, headers: dict[str, str], at: int) -> None:
    """tarfile's TarInfo._apply_pax_info: the records that replace header fields, in their order."""
    for keyword, value in headers.items():
        if keyword == "GNU.sparse.name":
            member.name = value
        elif keyword in ("GNU.sparse.size", "GNU.sparse.realsize"):
            try:
                member.size = int(value)
            except ValueError:
                raise TarError(f"{keyword}={value!r} is not a number", at) from None
        elif keyword in _PAX_FIELDS:
            if keyword in _PAX_NUMBERS:
                try:
                    value = _PAX_NUMBERS[keyword](value)
                except ValueError:
                    value = 0
            if keyword == "path":
                value = value.rstrip("/")
            setattr(member, _PAX_FIELDS[keyword], value)


def read_stream(stream: BinaryIO, visitor: Visitor, chunk: int = CHUNK) -> TarReader:
    """Read a tar from `stream` through a `TarReader` telling `visitor`, up to the archive's end (not further).

    The tar may be plain or compressed with gzip, bzip2 or xz, told by its first bytes as tarfile tells them.

    Raises:
        TarError: the stream is not a readable tar, or cannot be decompressed.
    """
    reader = TarReader(visitor)
    first = stream.read(chunk)
    codec = _codec(first)
    if codec is None:
        data = first
        while data:
            reader.feed(data)
            if reader.done:
                return reader
            data = stream.read(chunk)
    else:
        source = codec(_Replay(first, stream))
        try:
            while data := source.read(chunk):
                reader.feed(data)
                if reader.done:
                    return reader
        except (EOFError, OSError, lzma.LZMAError, zlib.error) as error:
            raise TarError(f"cannot be decompressed: {error}", reader.offset) from error
    reader.close()
    return reader


def _codec(start: bytes) -> Callable[[BinaryIO], BinaryIO] | None:
    if start.startswith(b"\x1f\x8b\x08"):
        return lambda raw: gzip.GzipFile(fileobj=raw)
    if start[0:3] == b"BZh" and start[4:10] == b"1AY&SY":
        return bz2.BZ2File
    if start.startswith((b"\x5d\x00\x00\x80", b"\xfd7zXZ")):
        return lzma.LZMAFile
    return None


class _Replay:
    """A stream whose first bytes were already read: gives them again, then the rest."""

    def __init__(self, first: bytes, stream: BinaryIO) -> None:
        self.first, self.stream = first, stream

    def read(self, size: int = -1) -> bytes:
        if self.first:
            data = self.first if size < 0 else self.first[:size]
            self.first = self.first[len(data) :]
            return data
        return self.stream.read(size)
