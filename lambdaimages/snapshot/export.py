"""Export layers as `<hex>.tar.xz` (or the upstream `.tar.gz`) named by diff_id, through a shared cache.

A layer comes from, in order: the local cache (`LayerCache`); the `Sources` (the registry cache, the published
branches: a tarball checked by `sources.check_tarball` is published into the local cache as if compressed
here); else upstream's blob, compressed here (and then offered to the sources that store). Each layer is
streamed once: download -> gunzip (or unzstd) -> sha256 (the diff_id) -> xz (xzblocks: blocks
spooled to disk and compressed by a pool of threads, byte for byte what `xz -T+N` writes, whatever N
is), so the tarballs are byte-identical on any number of cores and with any doit `-n`. A cache entry
is published (renamed) only after the blob digest and the diff_id matched.
"""

from __future__ import annotations

import contextlib
import json
import lzma
import os
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from lambdaimages import layout, mediatypes, output, platforms
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Verifier
from lambdaimages.errors import DigestMismatch, OutputError, ProjectError, RegistryError, label
from lambdaimages.registry.client import RegistryClient
from lambdaimages.snapshot import sources as layer_sources
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.sources import Sources
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import Layer, State
from lambdaimages.tools import xzblocks
from lambdaimages.tools.files import AtomicWrite, atomic_file, link_or_copy, locked

UNPACK_LIMIT = 1 << 20


def layer_context(runtime: Runtime, arch: str, state: State, number: int) -> dict[str, str]:
    """How errors and progress name a layer: runtime, architecture, upstream reference, position and diff_id."""
    where = f"layer {number}/{len(state.layers)} {state.layers[number - 1].hex[:12]}"
    return {"runtime": runtime.name, "arch": arch, "reference": runtime.image, "where": where}


def fetch(
    runtime: Runtime,
    states: dict[str, State],
    out: Path,
    client: RegistryClient,
    blob_sink: BlobSink | None = None,
    tar_sink: BlobSink | None = None,
    sources: Sources | None = None,
    downloaded: Callable[[], None] | None = None,
) -> None:
    """Put every layer of every architecture into the cache only; the snapshot in `<out>/<rt>` is not touched.

    The compressor pool should never wait for this task: each layer is downloaded and spooled while
    the layers before it still compress (their files finish in order afterwards), and a layer that
    another task is writing is waited for last, not in the middle.

    `blob_sink(arch, number, layer)` may give a writer that receives the bytes of that layer's blob as they
    are downloaded (e.g. to load the image from them without reading the layer again); it is closed after the
    blob's last byte, and a download that fails leaves it unclosed. Layers already cached are not downloaded.
    `tar_sink` likewise receives the uncompressed layer tar (e.g. for the layer's inventory), closed after its
    diff_id matched. A layer taken from `sources` feeds `tar_sink` as its check decompresses it, and no blob sink.
    `downloaded()` is called once every blob has been downloaded (and sent to its sinks), while the compressor
    pool still works on them.
    """
    with xzblocks.ordered():  # this task's blocks before those of tasks that started after it
        if sources:
            sources.want(runtime, missing_layers(runtime, states, out))
        started: list[_CacheEntry] = []
        busy: list[_CacheEntry] = []
        try:
            for arch, state in states.items():
                for number, layer in enumerate(state.layers, 1):
                    entry = _CacheEntry(runtime, layer, out, layer_context(runtime, arch, state, number), sources)
                    sinks = [
                        (lambda a=arch, n=number, la=layer, f=factory: f(a, n, la)) if factory else None
                        for factory in (blob_sink, tar_sink)
                    ]
                    status = entry.start(client, wait=False, sinks=sinks)
                    if status == STARTED:
                        started.append(entry)
                    elif status == BUSY:
                        busy.append(entry)
            if downloaded is not None:
                downloaded()
            while started:
                started[0].finish()
                started.pop(0)
        finally:
            for entry in started:
                entry.abort()
        for entry in busy:
            cached_layer(runtime, entry.layer, out, client, entry.context, sources)


def missing_layers(runtime: Runtime, states: dict[str, State], out: Path) -> list[Layer]:
    """The layers of `states` (each once) that the local cache lacks."""
    cache, found = LayerCache(out), {}
    for state in states.values():
        for layer in state.layers:
            path = cache.tarball(runtime, layer)
            if layer.diff_id not in found and not _intact(path, LayerCache.record(path)):
                found[layer.diff_id] = layer
    return list(found.values())


def export(
    runtime: Runtime, arch: str, state: State, out: Path, client: RegistryClient, sources: Sources | None = None
) -> list[Path]:
    """Put every layer of `state` into `<out>/<rt>/<arch>/`, drop tarballs upstream no longer has."""
    snapshot = SnapshotView(out, runtime)
    folder = snapshot.arch_folder(arch)
    wanted = []
    layers = state.layers
    for number, layer in enumerate(layers, 1):
        context = layer_context(runtime, arch, state, number)
        cached = cached_layer(runtime, layer, out, client, context, sources)
        dest = snapshot.tarball(arch, layer)
        try:
            link_or_copy(cached, dest)
        except OutputError as exc:
            exc.within(**context)
            raise  # the same error, its cause kept
        wanted.append(dest)
    for stale in folder.glob(layout.TARBALL_GLOB):
        if stale not in wanted:
            stale.unlink()
    return wanted


def drop_other_architectures(out: Path, runtime: Runtime) -> None:
    """Remove `<out>/<rt>/<arch>/` of architectures the catalog no longer lists: the branch must not publish them."""
    snapshot = SnapshotView(out, runtime)
    for arch in platforms.NAMES:
        if arch not in runtime.architectures:
            shutil.rmtree(snapshot.arch_folder(arch), ignore_errors=True)


def cached_layer(
    runtime: Runtime,
    layer: Layer,
    out: Path,
    client: RegistryClient,
    context: dict[str, str],
    sources: Sources | None = None,
) -> Path:
    """The cache entry of a layer, made once however many runtimes and architectures share it."""
    entry = _CacheEntry(runtime, layer, out, context, sources)
    if entry.start(client, wait=True) == STARTED:
        try:
            entry.finish()
        except BaseException:
            entry.abort()
            raise
    return entry.path


STARTED, CACHED, BUSY = "started", "cached", "busy"
BlobSink = Callable[[str, int, Layer], BinaryIO | None]


class _CacheEntry:
    """One layer's cache entry being written: its lock and temp file are held from `start` to `finish`.

    `start` takes the tarball from a source (checked, published at once: CACHED) or downloads the blob, checks
    both digests and hands the data to the compressor pool; `finish` waits for the compressed blocks,
    publishes the file (rename) and its record, releases the lock and offers the file to the sources that
    store; `abort` drops what `start` made. Between the two the task may start more.
    """

    def __init__(
        self, runtime: Runtime, layer: Layer, out: Path, context: dict[str, str], sources: Sources | None = None
    ) -> None:
        self.runtime, self.layer, self.context, self.sources = runtime, layer, context, sources
        self.path = LayerCache(out).tarball(runtime, layer)
        self.folder = self.path.parent
        self.record = LayerCache.record(self.path)
        self.lock = contextlib.ExitStack()
        self.dest: AtomicWrite | None = None
        self.download: _Download | None = None

    def start(self, client: RegistryClient, *, wait: bool, sinks=(None, None)) -> str:
        """STARTED (call `finish` or `abort` next), CACHED (nothing to do) or BUSY (locked elsewhere).

        `sinks` are (blob, tar) factories, asked for a writer of the blob's bytes and of the uncompressed
        tar once the download starts.
        """
        if not self.lock.enter_context(locked(self.folder / f"{self.layer.hex}.lock", wait=wait)):
            self.lock.close()
            return BUSY
        if _intact(self.path, self.record):
            self.lock.close()
            return CACHED
        try:
            taken = self._from_sources(sinks[1])
        except BaseException:
            self.lock.close()
            raise
        if taken:
            self.lock.close()
            return CACHED
        try:
            with self._named_errors():
                self.dest = AtomicWrite(self.path)
                self.download = _Download(self.runtime, self.layer, self.context, self.dest.file, spool=self.folder)
                self.download.run(client, *(make() if make else None for make in sinks))
        except BaseException:
            self.abort()
            raise
        return STARTED

    def finish(self) -> None:
        with self._named_errors():
            stats = self.download.finish()
            self.dest.commit()
            self.dest = self.download = None
            self._write_record(stats)
        self.lock.close()
        if self.sources:
            self.sources.store(self.runtime, self.layer, self.path)

    def _from_sources(self, tar_sink) -> bool:
        """Whether a source gave a tarball that passed the check; it is then the cache entry, its record written."""
        if not self.sources:
            return False
        candidate = layer_sources.candidate_path(self.path)
        with self._named_errors():
            try:
                taken = self.sources.take(self.runtime, self.layer, candidate, self.context, tar_sink)
                if taken is None:
                    return False
                with open(candidate, "rb") as f:
                    os.fsync(f.fileno())
                os.chmod(candidate, 0o644)
                os.replace(candidate, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(candidate)
            self._write_record({"uncompressed": taken.uncompressed, "source": taken.source})
        return True

    def _write_record(self, stats: dict) -> None:
        st = self.path.stat()
        with atomic_file(self.record) as f:
            f.write(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, **stats}).encode())

    def abort(self) -> None:
        """Drop an unfinished entry (temp file, spooled blocks) and release the lock; a no-op once finished."""
        if self.download is not None:
            self.download.abort()
        if self.dest is not None:
            self.dest.discard()
        self.dest = self.download = None
        self.lock.close()

    @contextlib.contextmanager
    def _named_errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {exc.strerror}", **self.context) from exc
        except OutputError as exc:  # a full or read-only disk: say which layer it stopped
            exc.within(**self.context)
            raise  # the same error, its cause kept


def _intact(path: Path, record: Path) -> bool:
    """The cache entry is the file we wrote (not replaced or edited in place since)."""
    try:
        data = json.loads(record.read_bytes())
        st = path.stat()
    except (FileNotFoundError, ValueError):
        return False
    return data.get("size") == st.st_size and data.get("mtime_ns") == st.st_mtime_ns


class _Download:
    """Stream one blob into `dest` in the runtime's format, checking the blob digest and the diff_id.

    `run` downloads, gunzips (or unzstds), hashes and hands the data to the xz writer (whose blocks compress
    in the pool); `finish` waits for them and completes `dest`; `abort` drops the spooled blocks. A zstd blob
    is always re-encoded (xz, or gzip for a gzip catalog): the legacy builder cannot ADD zstd.
    """

    def __init__(self, runtime: Runtime, layer: Layer, context: dict[str, str], dest: BinaryIO, spool: Path) -> None:
        self.runtime, self.layer, self.context, self.dest = runtime, layer, context, dest
        self.compression = mediatypes.layer_compression(layer.media_type)
        self.gzipped = self.compression == "gzip"
        self.progress = _Progress(label(**context), layer.size)
        self.began = time.monotonic()
        self.raw = 0
        self.xz = xzblocks.XzWriter(dest, runtime.level, spool) if runtime.compression == "xz" else None
        # gzip output: upstream's gzip blob is stored as-is; only an uncompressed blob is gzipped here.
        self.store_blob = runtime.compression == "gzip" and self.gzipped
        self.gz = None
        if runtime.compression == "gzip" and not self.store_blob:
            self.gz = zlib.compressobj(runtime.level, zlib.DEFLATED, 31)

    def run(self, client: RegistryClient, sink: BinaryIO | None = None, tar_sink: BinaryIO | None = None) -> None:
        layer, context = self.layer, self.context
        diff_verifier = Verifier(layer.diff_id, what="uncompressed layer", claimed_by="the config", context=context)
        unpack = zlib.decompressobj(wbits=31) if self.gzipped else None

        def consume(data: bytes) -> None:
            self.raw += len(data)
            diff_verifier.update(data)
            if tar_sink is not None:
                tar_sink.write(data)
            if self.xz is not None:
                self.xz.write(data)
            elif self.gz is not None:
                self.dest.write(self.gz.compress(data))

        # zstd: the writer hands on the output in pieces of at most UNPACK_LIMIT, across frames.
        unzstd = None
        if self.compression == "zstd":
            unzstd = zstandard.ZstdDecompressor().stream_writer(_Consumer(consume), write_size=UNPACK_LIMIT)
        blob = _labelled(client.iter_blob(self.runtime.repository, layer.digest, layer.size), context)
        try:
            for chunk in blob:
                output.check()  # Ctrl-C: stop here; the caller removes what this layer began
                self.progress.update(len(chunk))
                if sink is not None:
                    sink.write(chunk)
                if self.store_blob:
                    self.dest.write(chunk)
                if unzstd is not None:
                    unzstd.write(chunk)
                    continue
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
                raise DigestMismatch(f"gzip stream of {layer.digest} ends early", **context)
        except zlib.error as exc:
            for _ in blob:
                pass  # a download corrupted on the way fails the digest check: say that, not "not gzip"
            raise RegistryError(f"blob {layer.digest} is not valid gzip: {exc}", **context) from exc
        except zstandard.ZstdError as exc:
            for _ in blob:
                pass  # as for gzip: a corrupted download says so
            raise RegistryError(f"blob {layer.digest} is not valid zstd: {exc}", **context) from exc
        self.progress.fetched()
        diff_verifier.finish()
        for done in (sink, tar_sink):
            if done is not None:
                done.close()

    def finish(self) -> dict:
        """Complete `dest` (waiting for the compressor pool); the numbers for the cache record."""
        self.progress.waiting()
        try:
            if self.xz is not None:
                self.xz.close()
            elif self.gz is not None:
                self.dest.write(self.gz.flush())
        except lzma.LZMAError as exc:
            raise OutputError(f"xz compression failed: {exc}", **self.context) from exc
        ended = time.monotonic()
        seconds = ended - self.began
        self.progress.done(self.raw, self.dest.tell(), seconds, self.runtime.compression)
        output.span("compressed", self.began, ended)  # the summary's rate: per second that compression ran
        return {"uncompressed": self.raw, "seconds": round(seconds, 3)}

    def abort(self) -> None:
        """Drop the spooled and compressed blocks of an unfinished stream."""
        if self.xz is not None and not self.xz.closed:
            self.xz.abort()


class _Consumer:
    """A writer that hands each piece to `consume` (zstandard's stream writer writes into it)."""

    def __init__(self, consume: Callable[[bytes], None]) -> None:
        self.consume = consume

    def write(self, data: bytes) -> int:
        self.consume(bytes(data))
        return len(data)


def _labelled(chunks: Iterator[bytes], context: dict[str, str]) -> Iterator[bytes]:
    """The chunks; a registry error names the runtime, architecture and layer it stopped."""
    try:
        yield from chunks
    except ProjectError as exc:
        exc.within(**context)
        raise  # the same error, its cause kept


class _Progress:
    """A layer's live status (bytes in, total, MB/s) for the console, and its numbers for the run's summary."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.seen = 0
        self.start = time.monotonic()
        self.downloaded = 0.0

    def update(self, n: int) -> None:
        self.seen += n
        rate = self.seen / max(time.monotonic() - self.start, 1e-6) / 1e6
        text = f"{self.label}: {self.seen / 1e6:.1f}/{self.total / 1e6:.1f} MB downloaded, {rate:.1f} MB/s"
        output.progress(self.seen / self.total if self.total else None, text)

    def fetched(self) -> None:
        """The blob is in: what is left is the compressor pool's."""
        now = time.monotonic()
        self.downloaded = now - self.start
        output.count("downloaded", layers=1, bytes=self.seen)
        output.span("downloaded", self.start, now)

    def waiting(self) -> None:
        output.progress(None, f"{self.label}: compressing")

    def done(self, raw: int, written: int, seconds: float, codec: str) -> None:
        rate = raw / max(seconds, 1e-6) / 1e6
        sizes = f"{raw / 1e6:.1f} MB -> {written / 1e6:.1f} MB {codec}"
        output.say(f"{self.label}: {sizes} in {seconds:.1f} s ({rate:.1f} MB/s)")
        output.count("compressed", layers=1, bytes=raw)
