"""Export layers as `<hex>.tar.xz` (or the upstream `.tar.gz`) named by diff_id, through a shared cache.

Each layer is streamed once: download -> gunzip -> sha256 (the diff_id) -> xz (xzblocks: blocks
spooled to disk and compressed by a pool of threads, byte for byte what `xz -T+N` writes, whatever N
is), so the tarballs are byte-identical on any number of cores and with any doit `-n`. A cache entry
is published (renamed) only after the blob digest and the diff_id matched.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

from . import layout, xzblocks
from .catalog import Runtime
from .errors import DigestMismatch, OutputError, ProjectError, RegistryError
from .files import atomic_file, link_or_copy, locked
from .registry import RegistryClient
from .resolve import GZIP_TYPES, layer_hex

PROGRESS_EVERY = 2.0
PROGRESS_MIN_BYTES = 8 << 20
UNPACK_LIMIT = 4 << 20
_print_lock = threading.Lock()


def codec_name(runtime: Runtime) -> str:
    return f"xz{runtime.level}" if runtime.compression == "xz" else "gzip"


def layer_label(runtime: Runtime, arch: str, state: dict, number: int) -> str:
    """How messages name a layer: runtime, architecture, upstream reference, position and diff_id."""
    layer = state["layers"][number - 1]
    return f"{runtime.name} {arch} ({runtime.image}) layer {number}/{len(state['layers'])} {layer_hex(layer)[:12]}"


def fetch(runtime: Runtime, arch: str, state: dict, out: Path, client: RegistryClient) -> None:
    """Put every layer of `state` into the cache only; the snapshot in `<out>/<rt>` is not touched."""
    for number, layer in enumerate(state["layers"], 1):
        cached_layer(runtime, layer, out, client, layer_label(runtime, arch, state, number))


def export(runtime: Runtime, arch: str, state: dict, out: Path, client: RegistryClient) -> list[Path]:
    """Put every layer of `state` into `<out>/<rt>/<arch>/`, drop tarballs upstream no longer has."""
    folder = layout.arch_dir(out, runtime.name, arch)
    wanted = []
    layers = state["layers"]
    for number, layer in enumerate(layers, 1):
        label = layer_label(runtime, arch, state, number)
        cached = cached_layer(runtime, layer, out, client, label)
        dest = folder / f"{layer_hex(layer)}.{runtime.extension}"
        try:
            link_or_copy(cached, dest)
        except OutputError as exc:
            raise OutputError(f"{label}: {exc}") from None
        wanted.append(dest)
    for stale in folder.glob("*.tar.*"):
        if stale not in wanted:
            stale.unlink()
    return wanted


def fingerprint(paths: list[Path]) -> list:
    """Cheap identity of files (no hashing): a changed, replaced or missing file changes it."""
    result = []
    for path in paths:
        try:
            st = os.stat(path)
            result.append([str(path), st.st_size, st.st_mtime_ns, st.st_ino])
        except FileNotFoundError:
            result.append([str(path), None])
    return result


def cached_layer(runtime: Runtime, layer: dict, out: Path, client: RegistryClient, label: str) -> Path:
    """The cache entry of a layer, made once however many runtimes and architectures share it."""
    folder = layout.cache_dir(out, codec_name(runtime))
    path = folder / f"{layer_hex(layer)}.{runtime.extension}"
    record = path.with_name(path.name + ".json")
    with locked(folder / f"{layer_hex(layer)}.lock"):
        if _intact(path, record):
            return path
        try:
            with atomic_file(path) as f:
                stats = _fetch(runtime, layer, client, f, label, spool=folder)
        except OSError as exc:
            raise OutputError(f"{label}: cannot write {path}: {exc.strerror}") from None
        except OutputError as exc:  # a full or read-only disk: say which layer it stopped
            raise exc if str(exc).startswith(label) else OutputError(f"{label}: {exc}") from None
        st = path.stat()
        record_data = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, **stats}
        with atomic_file(record) as f:
            f.write(json.dumps(record_data).encode())
    return path


def _intact(path: Path, record: Path) -> bool:
    """The cache entry is the file we wrote (not replaced or edited in place since)."""
    try:
        data = json.loads(record.read_bytes())
        st = path.stat()
    except (FileNotFoundError, ValueError):
        return False
    return data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns


def _fetch(runtime: Runtime, layer: dict, client: RegistryClient, dest, label: str, spool: Path) -> dict:
    """Stream one blob into `dest` in the runtime's format; verify blob digest and diff_id."""
    gzipped = layer["media_type"] in GZIP_TYPES
    diff_hasher = hashlib.sha256()
    unpack = zlib.decompressobj(wbits=31) if gzipped else None
    progress = _Progress(label, layer["size"])
    start = time.monotonic()
    raw = 0
    xz = None
    if runtime.compression == "xz":
        xz = xzblocks.XzWriter(dest, runtime.level, spool)
    elif not gzipped:
        gz = zlib.compressobj(runtime.level, zlib.DEFLATED, 31)

    def consume(data: bytes) -> None:
        nonlocal raw
        raw += len(data)
        diff_hasher.update(data)
        if xz is not None:
            xz.write(data)
        elif not gzipped:
            dest.write(gz.compress(data))

    blob = _labelled(client.iter_blob(runtime.repository, layer["digest"], layer["size"]), label)
    try:
        for chunk in blob:
            progress.update(len(chunk))
            if runtime.compression == "gzip" and gzipped:
                dest.write(chunk)
            if unpack is None:
                consume(chunk)
                continue
            # Bounded output per call: a chunk of a sparse file may inflate a thousandfold.
            pending = chunk
            while True:
                data = unpack.decompress(pending, UNPACK_LIMIT)
                consume(data)
                if unpack.eof:
                    # A gzip blob may hold several members; each starts a new decompressor.
                    pending = unpack.unused_data
                    if not pending:
                        break
                    unpack = zlib.decompressobj(wbits=31)
                    continue
                pending = unpack.unconsumed_tail
                if not pending and len(data) < UNPACK_LIMIT:
                    break
        if unpack is not None and not unpack.eof:
            raise DigestMismatch(f"{label}: gzip stream of {layer['digest']} ends early")
        if xz is not None:
            xz.close()
        elif not gzipped:
            dest.write(gz.flush())
    except lzma.LZMAError as exc:
        raise OutputError(f"{label}: xz compression failed: {exc}") from None
    except zlib.error as exc:
        for _ in blob:
            pass  # a download corrupted on the way fails the digest check: say that, not "not gzip"
        raise RegistryError(f"{label}: blob {layer['digest']} is not valid gzip: {exc}") from None
    finally:
        if xz is not None and not xz.closed:
            xz.abort()
    diff_id = "sha256:" + diff_hasher.hexdigest()
    if diff_id != layer["diff_id"]:
        raise DigestMismatch(f"{label}: uncompressed layer hashes to {diff_id}, the config says {layer['diff_id']}")
    seconds = time.monotonic() - start
    progress.done(raw, dest.tell(), seconds, runtime.compression)
    return {"uncompressed": raw, "seconds": round(seconds, 3)}


def _labelled(chunks: Iterator[bytes], label: str) -> Iterator[bytes]:
    """The chunks; a registry error names the runtime, architecture and layer it stopped."""
    try:
        yield from chunks
    except ProjectError as exc:
        raise type(exc)(f"{label}: {exc}", cause=exc.cause) from None


class _Progress:
    """A line on stderr every few seconds for big layers: bytes in, total, MB/s."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.seen = 0
        self.start = self.last = time.monotonic()
        self.loud = total >= PROGRESS_MIN_BYTES

    def update(self, n: int) -> None:
        self.seen += n
        now = time.monotonic()
        if self.loud and now - self.last >= PROGRESS_EVERY:
            self.last = now
            rate = self.seen / (now - self.start) / 1e6
            self._say(f"{self.label}: {self.seen / 1e6:.1f}/{self.total / 1e6:.1f} MB downloaded, {rate:.1f} MB/s")

    def done(self, raw: int, written: int, seconds: float, codec: str) -> None:
        if self.loud:
            rate = raw / max(seconds, 1e-6) / 1e6
            sizes = f"{raw / 1e6:.1f} MB -> {written / 1e6:.1f} MB {codec}"
            self._say(f"{self.label}: {sizes} in {seconds:.1f} s ({rate:.1f} MB/s)")

    @staticmethod
    def _say(line: str) -> None:
        with _print_lock:
            print(line, file=sys.stderr, flush=True)
