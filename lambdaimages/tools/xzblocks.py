""".xz compression in parallel blocks, byte for byte what `xz -z -<level> -T+N` writes, for any N.

xz 5.4's multi-threaded mode cuts the input into blocks of 3 x the dictionary size (24 MiB at level
6), compresses each block on its own, and writes every block header with both sizes; its output is
therefore the same for every N. This module writes that same format, but keeps memory flat:

- the producer spools each block's input to a file next to the output (no block is held in memory);
- one pool of worker threads per process (`threads()` of them, shared by every writer, so two doit
  tasks exporting at once still run at most that many compressors) compresses blocks with Python's
  liblzma binding, which releases the GIL; each compressor costs about 100 MB, nothing else grows;
- the pool takes blocks in order of `ordered()` sections (an export task's, then the next task's), first
  come first within one: the first task's files complete while the next task's blocks keep every core
  busy, instead of all tasks finishing together and the pool idling while their builds run;
- `close()` assembles stream header, blocks in order, index and footer into the destination.

A block comes out of liblzma as a one-block .xz stream (which also gives its CRC64); its header is
rewritten the way the multi-threaded encoder writes it (space reserved for the largest sizes, both
sizes filled in), and a block that does not compress is stored as LZMA2 uncompressed chunks when
xz's multi-threaded encoder would do so (its output outgrew the buffer reserved for the block).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import lzma
import os
import shutil
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lambdaimages import output
from lambdaimages.errors import OutputError

MiB = 1 << 20
DICT_SIZES = {0: MiB // 4, 1: MiB, 2: 2 * MiB, 3: 4 * MiB, 4: 4 * MiB, 5: 8 * MiB, 6: 8 * MiB, 7: 16 * MiB,
              8: 32 * MiB, 9: 64 * MiB}  # fmt: skip
STREAM_FLAGS = b"\x00\x04"  # check type CRC64, xz's default
CHECK_SIZE = 8
LZMA2_CHUNK_MAX = 1 << 16  # uncompressed LZMA2 chunks hold at most 64 KiB
HEADERS_BOUND = 92  # liblzma's bound on block header + padding + check (block_buffer_encoder.c)
READ_SIZE = MiB
SPOOL_FOLDER = ".spool"

_pools: dict[int, _Pool] = {}
_pool_lock = threading.Lock()
_cleaned: set[Path] = set()
_orders = itertools.count()
_local = threading.local()


def threads() -> int:
    """Compressor threads: the number of cores, or LAMBDAIMAGES_XZ_THREADS (the output is the same)."""
    return max(1, int(os.environ.get("LAMBDAIMAGES_XZ_THREADS", os.cpu_count() or 1)))


def block_size(level: int) -> int:
    """xz's default block size in multi-threaded mode: 3 x the preset's dictionary, at least 1 MiB."""
    return max(3 * DICT_SIZES[level], MiB)


@contextlib.contextmanager
def ordered() -> Iterator[None]:
    """Blocks written by this thread inside the section go to the pool after those of earlier sections."""
    before = getattr(_local, "order", None)
    _local.order = next(_orders)
    try:
        yield
    finally:
        _local.order = before


def _current_order() -> int:
    order = getattr(_local, "order", None)
    return next(_orders) if order is None else order


class _Pool:
    """Compressor threads taking work by (order, arrival): a priority queue, where ThreadPoolExecutor is FIFO."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.queue: list[tuple[int, int, Future, Callable, tuple]] = []
        self.arrivals = itertools.count()
        self.ready = threading.Condition()
        self.workers = 0

    def submit(self, order: int, fn: Callable, *args) -> Future:
        future: Future = Future()
        with self.ready:
            heapq.heappush(self.queue, (order, next(self.arrivals), future, fn, args))
            if self.workers < self.count:
                self.workers += 1
                threading.Thread(target=self._work, name=f"xz-{self.workers}", daemon=True).start()
            self.ready.notify()
        return future

    def _work(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                _, _, future, fn, args = heapq.heappop(self.queue)
            if not future.set_running_or_notify_cancel():
                continue  # cancelled by an abort
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to whoever waits for the block
                future.set_exception(exc)
            else:
                future.set_result(result)


def _executor() -> _Pool:
    """The process's pool of compressor threads (one per thread count, in practice one)."""
    count = threads()
    with _pool_lock:
        if count not in _pools:
            _pools[count] = _Pool(count)
        return _pools[count]


# -- the container format (xz file format 1.1.0) --------------------------------------------------


def _vli(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_vli(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return n, pos


def _pad4(n: int) -> int:
    return -n % 4


def _lzma2_bound(size: int) -> int:
    """Size of `size` bytes stored as uncompressed LZMA2 chunks (3-byte header each, end marker)."""
    return size + (size + LZMA2_CHUNK_MAX - 1) // LZMA2_CHUNK_MAX * 3 + 1


def _buffer_bound(size: int) -> int:
    """liblzma's lzma_block_buffer_bound64: the output buffer the multi-threaded encoder gives a block."""
    bound = _lzma2_bound(size)
    return HEADERS_BOUND + bound + _pad4(bound)


def _header_size(filter_flags: bytes, compressed: int, uncompressed: int) -> int:
    size = 1 + 1 + len(_vli(compressed)) + len(_vli(uncompressed)) + len(filter_flags) + 4
    return size + _pad4(size)


def _block_header(filter_flags: bytes, header_size: int, compressed: int, uncompressed: int) -> bytes:
    """A block header with both sizes, padded to `header_size` (lzma_block_header_encode)."""
    nfilters = 1  # one filter (LZMA2) is all a preset uses
    body = bytes([header_size // 4 - 1, 0x40 | 0x80 | (nfilters - 1)]) + _vli(compressed) + _vli(uncompressed)
    body += filter_flags
    body += b"\0" * (header_size - 4 - len(body))
    return body + struct.pack("<I", zlib.crc32(body))


def stream_header() -> bytes:
    return b"\xfd7zXZ\x00" + STREAM_FLAGS + struct.pack("<I", zlib.crc32(STREAM_FLAGS))


def stream_tail(records: list[tuple[int, int]]) -> bytes:
    """Index (unpadded size, uncompressed size per block) and stream footer."""
    index = b"\0" + _vli(len(records)) + b"".join(_vli(u) + _vli(s) for u, s in records)
    index += b"\0" * _pad4(len(index))
    index += struct.pack("<I", zlib.crc32(index))
    backward = struct.pack("<I", len(index) // 4 - 1) + STREAM_FLAGS
    return index + struct.pack("<I", zlib.crc32(backward)) + backward + b"YZ"


# -- one block --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """A compressed block ready to copy: header, then `length` bytes of `path` from `offset`, then trailer."""

    path: Path
    header: bytes
    offset: int
    length: int
    trailer: bytes
    uncompressed: int

    @property
    def unpadded(self) -> int:
        return len(self.header) + self.length + CHECK_SIZE


def _compress_block(spool: Path, size: int, level: int, max_block: int) -> _Block:
    """Compress one spooled block the way xz's multi-threaded encoder does; the spool file is removed."""
    raw = spool.with_name(spool.name + ".xz")
    compressor = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=level)
    with open(spool, "rb") as src, open(raw, "w+b") as dst:
        while chunk := src.read(READ_SIZE):
            dst.write(compressor.compress(chunk))
        dst.write(compressor.flush())
        dst.flush()
        end = dst.tell()
        dst.seek(12)  # after the stream header
        head = dst.read(1024)
        dst.seek(end - 12)
        footer = dst.read(12)
        index_size = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
        dst.seek(end - 12 - index_size)
        index = dst.read(index_size)
    header_size = (head[0] + 1) * 4
    flags = head[1]
    if flags != 0:  # liblzma's stream encoder writes no sizes and one filter
        raise OutputError(f"unexpected block flags {flags:#x} from liblzma")
    _, pos = _read_vli(head, 2)  # filter ID (LZMA2)
    props, pos = _read_vli(head, pos)
    filter_flags = head[2 : pos + props]
    _, pos = _read_vli(index, 1)  # number of records: 1
    unpadded, pos = _read_vli(index, pos)
    uncompressed, _ = _read_vli(index, pos)
    if uncompressed != size:
        raise OutputError(f"block of {size} bytes came out of liblzma as {uncompressed}")
    data_offset = 12 + header_size
    data_length = unpadded - header_size - CHECK_SIZE
    with open(raw, "rb") as f:
        f.seek(data_offset + data_length + _pad4(data_length))
        check = f.read(CHECK_SIZE)

    allocated = _buffer_bound(max_block)
    reserved = _header_size(filter_flags, allocated, max_block)
    if reserved + data_length + _pad4(data_length) + CHECK_SIZE <= allocated:
        header = _block_header(filter_flags, reserved, data_length, size)
        spool.unlink()
        return _Block(raw, header, data_offset, data_length, b"\0" * _pad4(data_length) + check, size)
    # Incompressible: liblzma's lzma_block_uncomp_encode, with the smallest dictionary (4 KiB).
    stored = _lzma2_bound(size)
    plain_filter = b"\x21\x01\x00"
    header = _block_header(plain_filter, _header_size(plain_filter, stored, size), stored, size)
    with open(spool, "rb") as src, open(raw, "wb") as dst:
        control = b"\x01"  # the first chunk resets the dictionary
        while chunk := src.read(LZMA2_CHUNK_MAX):
            dst.write(control + struct.pack(">H", len(chunk) - 1) + chunk)
            control = b"\x02"
        dst.write(b"\x00")
    spool.unlink()
    return _Block(raw, header, 0, stored, b"\0" * _pad4(stored) + check, size)


# -- the writer -----------------------------------------------------------------------------------


class XzWriter:
    """Write a stream as .xz into `dest`, blocks compressed in parallel; `close()` finishes the file.

    Args:
        dest: an open binary file, written only by `close()`.
        level: xz preset 0-9.
        spool: folder for the block files (on the same disk as `dest`); a `.spool` folder inside it
            is used, and emptied the first time this process writes there.
    """

    def __init__(self, dest: BinaryIO, level: int, spool: Path) -> None:
        self.dest = dest
        self.level = level
        self.block = block_size(level)
        self.folder = Path(spool) / SPOOL_FOLDER
        _clean_once(self.folder)
        self.blocks: list[tuple[Path, Future]] = []
        self.current: BinaryIO | None = None
        self.current_path: Path | None = None
        self.filled = 0
        self.written = 0
        self.closed = False
        self.order = _current_order()

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if self.current is None:
                fd, name = tempfile.mkstemp(prefix=".tmp-block-", dir=self.folder)
                self.current, self.current_path, self.filled = os.fdopen(fd, "wb"), Path(name), 0
            take = min(len(view), self.block - self.filled)
            self.current.write(view[:take])
            self.filled += take
            view = view[take:]
            if self.filled == self.block:
                self._submit()

    def _submit(self) -> None:
        self.current.close()
        future = _executor().submit(self.order, _compress_block, self.current_path, self.filled, self.level, self.block)
        self.blocks.append((self.current_path, future))
        self.current = self.current_path = None

    def close(self) -> int:
        """Compress what is left, write the whole stream to `dest`; the number of bytes written."""
        if self.current is not None:
            self._submit()
        out = self.dest
        out.write(stream_header())
        total = 12
        records = []
        for _, future in self.blocks:
            block = _result(future)
            out.write(block.header)
            with open(block.path, "rb") as src:
                src.seek(block.offset)
                remaining = block.length
                while remaining:
                    chunk = src.read(min(READ_SIZE, remaining))
                    out.write(chunk)
                    remaining -= len(chunk)
            out.write(block.trailer)
            block.path.unlink()
            total += len(block.header) + block.length + len(block.trailer)
            records.append((block.unpadded, block.uncompressed))
        tail = stream_tail(records)
        out.write(tail)
        self.written = total + len(tail)
        self.blocks = []
        self.closed = True
        return self.written

    def abort(self) -> None:
        """Drop everything (after a failure): cancel queued blocks, wait for running ones, remove files."""
        if self.current is not None:
            self.current.close()
            _unlink(self.current_path)
            self.current = None
        for _, future in self.blocks:
            future.cancel()
        for spool, future in self.blocks:
            if not future.cancelled():
                with contextlib.suppress(Exception):
                    future.result()
            _unlink(spool)
            _unlink(spool.with_name(spool.name + ".xz"))
        self.blocks = []
        self.closed = True


def _result(future: Future) -> _Block:
    """A block's result; Ctrl-C (lambdaimages.output.check) stops the wait, and the caller aborts the stream."""
    while True:
        try:
            return future.result(timeout=0.25)
        except TimeoutError:
            output.check()


def _clean_once(folder: Path) -> None:
    """Empty the spool folder the first time this process uses it (leftovers of a killed run)."""
    with _pool_lock:
        if folder not in _cleaned:
            shutil.rmtree(folder, ignore_errors=True)
            _cleaned.add(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create folder {folder}: {exc.strerror}") from exc


def _unlink(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def compress_file(source: Path, dest: BinaryIO, level: int = 6, spool: Path | None = None) -> int:
    """Compress a whole file (tests, benchmark); the number of bytes written to `dest`."""
    writer = XzWriter(dest, level, Path(spool or Path(source).parent))
    try:
        with open(source, "rb") as src:
            while chunk := src.read(READ_SIZE):
                writer.write(chunk)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


# -- checking a file against this format ------------------------------------------------------------


PLAIN_FILTER = b"\x21\x01\x00"  # LZMA2 with the smallest dictionary: the filter of an incompressible block


def lzma2_filter_flags(level: int) -> bytes:
    """The filter flags liblzma writes for a preset: LZMA2 (0x21), one property byte, the dictionary size's code."""
    size = DICT_SIZES[level]
    code = next(p for p in range(41) if (2 | (p & 1)) << (p // 2 + 11) >= size)
    return bytes([0x21, 0x01, code])


def layout_problem(f: BinaryIO, level: int) -> str | None:
    """What makes an .xz file other than what `XzWriter` writes at `level`, read from its headers only; None if
    nothing does.

    Checked: one stream with CRC64 checks; every block but the last of `block_size(level)` bytes; each block's
    header as the writer reserves and fills it (both sizes), with the preset's LZMA2 dictionary, or stored as
    uncompressed chunks; the index and footer matching the blocks and the file's end. Costs a few reads per
    block (one per 24 MiB at level 6), not the data: the data's digest is the caller's check.
    """
    end = f.seek(0, os.SEEK_END)
    if end < 24:
        return f"{end} bytes, shorter than an .xz stream"
    f.seek(0)
    if f.read(12) != stream_header():
        return "no .xz stream header with CRC64 checks"
    f.seek(end - 12)
    footer = f.read(12)
    footer_crc = struct.pack("<I", zlib.crc32(footer[4:10]))
    if footer[10:] != b"YZ" or footer[8:10] != STREAM_FLAGS or footer_crc != footer[:4]:
        return "no .xz stream footer with CRC64 checks at the file's end"
    index_size = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
    if index_size > end - 24:
        return "the footer's index size runs past the file's start"
    f.seek(end - 12 - index_size)
    index = f.read(index_size)
    if index[0] != 0 or struct.pack("<I", zlib.crc32(index[:-4])) != index[-4:]:
        return "the index is damaged"
    try:
        count, pos = _read_vli(index, 1)
        records = []
        for _ in range(count):
            unpadded, pos = _read_vli(index, pos)
            uncompressed, pos = _read_vli(index, pos)
            records.append((unpadded, uncompressed))
    except IndexError:
        return "the index is damaged"
    block = block_size(level)
    if any(size != block for _, size in records[:-1]) or (records and not 0 < records[-1][1] <= block):
        sizes = sorted({size for _, size in records})
        return f"blocks of {sizes} bytes, not of {block} (level {level})"
    offset = 12
    for unpadded, size in records:
        problem = _block_problem(f, offset, unpadded, size, level)
        if problem:
            return f"block at byte {offset}: {problem}"
        offset += unpadded + _pad4(unpadded)
    if offset + index_size + 12 != end:
        return "the blocks and the index do not fill the file (a second stream or padding)"
    return None


def _block_problem(f: BinaryIO, offset: int, unpadded: int, size: int, level: int) -> str | None:
    f.seek(offset)
    first = f.read(1)
    if not first or first == b"\0":
        return "no block header"
    header_size = (first[0] + 1) * 4
    header = first + f.read(header_size - 1)
    if len(header) != header_size or struct.pack("<I", zlib.crc32(header[:-4])) != header[-4:]:
        return "damaged block header"
    if header[1] != 0xC0:
        return "the block header does not hold both sizes (not written by the parallel encoder)"
    try:
        compressed, pos = _read_vli(header, 2)
        uncompressed, pos = _read_vli(header, pos)
    except IndexError:
        return "damaged block header"
    if uncompressed != size or compressed != unpadded - header_size - CHECK_SIZE:
        return "the block header's sizes differ from the index"
    filters = header[pos : pos + 3]
    if filters == PLAIN_FILTER:
        expected = _header_size(PLAIN_FILTER, _lzma2_bound(size), size)
        if compressed != _lzma2_bound(size):
            return "a stored block of another size than uncompressed chunks give"
    elif filters == lzma2_filter_flags(level):
        max_block = block_size(level)
        expected = _header_size(filters, _buffer_bound(max_block), max_block)
    else:
        return f"filter flags {filters.hex()}, not LZMA2 of preset {level} ({lzma2_filter_flags(level).hex()})"
    if header_size != expected:
        return f"a block header of {header_size} bytes, not the {expected} the encoder reserves"
    return None
