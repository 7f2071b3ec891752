"""Go binaries' build information (what `go version -m` prints), read from an ELF file as it streams past."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from lambdaimages.inventory.facts import Found, Package

ELF_MAGIC = b"\x7fELF"
MAGIC = b"\xff Go buildinf:"  # then pointer size and flags: 16 bytes, then 16 more, then the strings
HEADER = 32
ALIGN = 16
HEAD_LIMIT = 64 << 10  # the ELF and program headers must lie in this much of the file's start
SEARCH_LIMIT = 64 << 20  # how far into the data segment the build info is looked for
BLOB_LIMIT = 1 << 20  # the build info blob read from its magic on (Go's own reader takes 64 KiB)
# cmd/go's sentinels around the module information (modload.infoStart, infoEnd): 16 bytes each.
FRAME = 16
PT_LOAD, PF_X, PF_W = 1, 1, 2
_VERSION = re.compile(r"^go([0-9]+(?:\.[0-9]+)*(?:(?:rc|beta)[0-9]+)?)")


@dataclass(frozen=True)
class Module:
    """A module line of the build info: path, version, sum, and what replaced it (`=>`)."""

    path: str
    version: str = ""
    sum: str = ""
    replace: Module | None = None


@dataclass(frozen=True)
class BuildInfo:
    """A Go binary's build information: toolchain version, main package path, main module, dependencies."""

    go_version: str
    path: str = ""
    main: Module | None = None
    deps: tuple[Module, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()


class NotGo(ValueError):
    """The file holds no Go build information (not a Go binary, or one built without it)."""


@dataclass(frozen=True)
class _Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int


def _elf_segments(head: bytes) -> tuple[list[_Segment] | None, int]:
    """The program headers of an ELF file from its first bytes, or (None, bytes needed) if `head` is too short.

    Raises:
        NotGo: not an ELF file this reader knows (class, byte order, header sizes).
    """
    if len(head) < 64:
        return None, 64
    bits, order = head[4], head[5]
    if bits not in (1, 2) or order not in (1, 2):
        raise NotGo("unknown ELF class or byte order")
    end = "<" if order == 1 else ">"
    if bits == 2:
        (phoff,) = struct.unpack_from(end + "Q", head, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
        layout, minimum = end + "IIQQQQ", 56
    else:
        (phoff,) = struct.unpack_from(end + "I", head, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
        layout, minimum = end + "IIIIIIII", 32
    if phentsize < minimum or phnum in (0, 0xFFFF):
        raise NotGo("no program headers")
    need = phoff + phentsize * phnum
    if need > HEAD_LIMIT:
        raise NotGo("program headers beyond the file's start")
    if len(head) < need:
        return None, need
    segments = []
    for index in range(phnum):
        fields = struct.unpack_from(layout, head, phoff + index * phentsize)
        if bits == 2:
            kind, flags, offset, vaddr, _paddr, filesz = fields
        else:
            kind, offset, vaddr, _paddr, filesz, _memsz, flags, _align = fields
        segments.append(_Segment(kind, flags, offset, vaddr, filesz))
    return segments, need


class BuildInfoReader:
    """Finds a Go binary's build info in an ELF file fed from its first byte, with bounded memory.

    As Go's `debug/buildinfo` does without section headers, the blob is looked for in the writable,
    non-executable loaded segments (in file order), at a 16-byte aligned address: so only the headers (a few
    KB) and the blob (from its magic, at most `BLOB_LIMIT`) are kept, whatever the binary's size. Section
    headers, at the end of the file, are never needed. `feed` returns False once nothing more of the file is wanted.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.head = bytearray()
        self.need = 64
        self.pos = 0  # file offset of the next byte fed
        self.cursor = 0  # file offset up to which the segment was searched or the blob captured
        self.state = "head"  # head, search, blob, done
        self.segments: list[_Segment] = []
        self.segment: _Segment | None = None
        self.candidates: list[_Segment] = []
        self.tail = b""  # the end of the searched bytes, for a magic split between chunks
        self.blob = bytearray()
        self.blob_start = 0
        self.error = ""

    def feed(self, data: bytes | memoryview) -> bool:
        """The next bytes of the file; False when the reader needs no more."""
        view = memoryview(data)
        base, self.pos = self.pos, self.pos + len(view)
        while self.state == "head":  # the ELF header says how much more the program headers need
            self.head += view[len(self.head) - base : self.need - base]
            if len(self.head) < self.need:
                return True
            self._start_search()
        if self.state == "search" and self.cursor < len(self.head):  # the segment starts inside the head
            self._region(memoryview(self.head), 0)
        if self.state in ("search", "blob"):
            self._region(view, base)
        return self.state != "done"

    def _start_search(self) -> None:
        try:
            segments, self.need = _elf_segments(bytes(self.head))
        except (NotGo, struct.error):
            self.state = "done"
            return
        if segments is None:
            if self.need > self.size:
                self.state = "done"
            return  # more of the head to come
        self.segments = segments
        self.candidates = sorted(
            (s for s in segments if s.type == PT_LOAD and s.flags & (PF_X | PF_W) == PF_W and s.filesz),
            key=lambda s: s.offset,
        )
        self._next_segment()

    def _next_segment(self) -> None:
        """Search the next writable segment (a PIE's first one is its relro data, the build info is in the next)."""
        while self.candidates:
            self.segment = self.candidates.pop(0)
            if self.segment.offset < self.size and self.segment.offset >= self.cursor:
                self.state, self.cursor, self.tail = "search", self.segment.offset, b""
                return
        self.state = "done"

    def _region(self, buf: memoryview, base: int) -> None:
        while self.state in ("search", "blob"):
            segment = self.segment
            assert segment is not None
            segment_end = min(segment.offset + segment.filesz, self.size)
            if self.state == "search":
                lo = max(self.cursor, base)
                search_end = min(segment_end, segment.offset + SEARCH_LIMIT)
                hi = min(search_end, base + len(buf))
                if lo >= hi:
                    if self.cursor >= search_end:
                        self._next_segment()
                        continue
                    return
                window = self.tail + bytes(buf[lo - base : hi - base])
                start = lo - len(self.tail)
                found = window.find(MAGIC)
                while found >= 0 and (start + found - segment.offset + segment.vaddr) % ALIGN:  # at an aligned address
                    found = window.find(MAGIC, found + 1)
                self.cursor = hi
                if found < 0:
                    self.tail = window[-(len(MAGIC) - 1) :]
                    continue
                self.blob_start, self.blob, self.tail = start + found, bytearray(window[found:]), b""
                self.state = "blob"
            end = min(segment_end, self.blob_start + BLOB_LIMIT)
            lo, hi = max(self.cursor, base), min(end, base + len(buf))
            if lo < hi:
                self.blob += buf[lo - base : hi - base]
                self.cursor = hi
            if max(self.cursor, self.blob_start + len(self.blob)) >= end:
                self.state = "done"
            return

    def finish(self, path: str) -> Found:
        """The packages of the file at `path` (see `packages`), or a note when its build info is damaged."""
        try:
            info = self.info()
        except ValueError as error:
            return [], [f"Go build info not readable: {error}"]
        return (packages(path, info), []) if info is not None else ([], [])

    def info(self) -> BuildInfo | None:
        """The build info found, or None when the file is not a Go binary with build info.

        Raises:
            ValueError: the binary has a build info blob that cannot be read (damaged, or cut short).
        """
        if not self.blob:
            return None
        return decode(bytes(self.blob), self._read_data)

    def _read_data(self, address: int, size: int) -> bytes | None:
        # The pointer format (before Go 1.18) points at strings elsewhere in the file: found only when they lie
        # in what was kept (the headers, the blob), as a stream cannot go back.
        for segment in self.segments:
            if segment.vaddr <= address < segment.vaddr + segment.filesz:
                offset = segment.offset + address - segment.vaddr
                size = min(size, segment.vaddr + segment.filesz - address)
                for start, kept in ((0, self.head), (self.blob_start, self.blob)):
                    if start <= offset and offset + size <= start + len(kept):
                        return bytes(kept[offset - start : offset - start + size])
                return None
        return None


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for index in range(pos, min(len(data), pos + 10)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, index + 1
        shift += 7
    return -1, pos


def _decode_string(data: bytes, pos: int) -> tuple[str, int]:
    length, start = _uvarint(data, pos)
    if length < 0 or length >= len(data) - start:  # as Go's decodeString: the string must not end the data
        return "", len(data)
    return data[start : start + length].decode("utf-8", "surrogateescape"), start + length


def decode(blob: bytes, read_data=None) -> BuildInfo:
    """The build info of a blob starting with `MAGIC` (Go 1.18+ inline strings, or the older pointer format).

    Args:
        blob: the bytes from the magic on.
        read_data: `(virtual address, size) -> bytes or None`, for the pointer format.

    Raises:
        NotGo: no Go version in it (as `go version` says "not a Go executable").
        ValueError: the module information cannot be parsed.
    """
    if len(blob) < HEADER or not blob.startswith(MAGIC):
        raise NotGo("the Go build info is cut short")
    pointer, flags = blob[14], blob[15]
    if flags & 2:
        version, pos = _decode_string(blob, HEADER)
        modinfo, _ = _decode_string(blob, pos)
    else:
        if pointer not in (4, 8):
            raise NotGo(f"pointer size {pointer} in the Go build info")
        order = ">" if flags else "<"
        code = order + ("I" if pointer == 4 else "Q")
        version = _pointed_string(read_data, code, pointer, struct.unpack_from(code, blob, 16)[0])
        modinfo = _pointed_string(read_data, code, pointer, struct.unpack_from(code, blob, 16 + pointer)[0])
        if not version:
            raise NotGo("Go build info in the pointer format (before Go 1.18) whose strings lie outside what is read")
    if not version:
        raise NotGo("no Go version in the build info")
    if len(modinfo) >= 2 * FRAME + 1 and modinfo[-FRAME - 1] == "\n":
        modinfo = modinfo[FRAME:-FRAME]
    else:
        modinfo = ""
    return parse_modinfo(version, modinfo)


def _pointed_string(read_data, code: str, pointer: int, address: int) -> str:
    header = read_data(address, 2 * pointer) if read_data else None
    if header is None or len(header) < 2 * pointer:
        return ""
    start, length = struct.unpack_from(code, header, 0)[0], struct.unpack_from(code, header, pointer)[0]
    data = read_data(start, length)
    if data is None or len(data) < length:
        return ""
    return data.decode("utf-8", "surrogateescape")


def parse_modinfo(go_version: str, text: str) -> BuildInfo:
    """The build info from the module information text (`path`, `mod`, `dep`, `=>`, `build` lines), as Go's
    `debug.ParseBuildInfo` reads it.

    Raises:
        ValueError: a line has the wrong number of columns, or a replacement follows no module.
    """
    path, main = "", None
    deps: list[Module] = []
    settings: list[tuple[str, str]] = []
    last: str | None = None  # "main" or "dep": what a `=>` line replaces
    lines = text.split("\n")[:-1]  # as Go: a last line without its newline is not read
    for number, line in enumerate(lines, 1):
        word, _, rest = line.partition("\t")
        if word == "path":
            path = rest
        elif word in ("mod", "dep"):
            module = _module(rest.split("\t"), number)
            if word == "mod":
                main, last = module, "main"
            else:
                deps.append(module)
                last = "dep"
        elif word == "=>":
            columns = rest.split("\t")
            if len(columns) != 3:
                raise ValueError(f"line {number}: expected 3 columns for a replacement, got {len(columns)}")
            replace = Module(*columns)
            if last == "main" and main is not None:
                main = Module(main.path, main.version, main.sum, replace)
            elif last == "dep":
                deps[-1] = Module(deps[-1].path, deps[-1].version, deps[-1].sum, replace)
            else:
                raise ValueError(f"line {number}: a replacement with no module on the line before")
            last = None
        elif word == "build":
            key, _, value = rest.partition("=")
            settings.append((key, value))
    return BuildInfo(go_version, path, main, tuple(deps), tuple(settings))


def _module(columns: list[str], number: int) -> Module:
    if len(columns) not in (2, 3):
        raise ValueError(f"line {number}: expected 2 or 3 columns, got {len(columns)}")
    return Module(columns[0], columns[1], columns[2] if len(columns) == 3 else "")


def packages(path: str, info: BuildInfo) -> list[Package]:
    """The components of one Go binary at `path`: the standard library as syft and grype name it
    (`stdlib`, version without `go`), the main module and every dependency.

    A dependency replaced by another module version is that version (it is what was compiled in); one
    replaced by a local directory keeps its declared path and version. Either way `source` names the
    replacement.
    """
    found = []
    if match := _VERSION.match(info.go_version):
        found.append(Package("golang", "stdlib", match[1], path, source=info.go_version))
    for module in (info.main, *info.deps):
        if module is None or not module.path:
            continue
        name, version, source = module.path, module.version, ""
        if module.replace is not None:
            replace = module.replace
            local = replace.path.startswith(("./", "../", "/")) or replace.path in (".", "..")
            source = replace.path if local else f"{replace.path}@{replace.version}"
            if not local:
                name, version = replace.path, replace.version
        found.append(Package("golang", name, version, path, source=source))
    return found
