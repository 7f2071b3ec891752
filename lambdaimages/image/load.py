"""Load each architecture of a snapshot into the engine as `<rt>:<arch>`, identical to upstream's image.

The image is assembled from upstream's config file and the layer tarballs of `<out>/<rt>/<arch>/`, streamed
to the engine (no second copy of the layers on disk). Its ID is the sha256 of the config's bytes, so it
equals upstream's config digest.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lambdaimages import engine, layout, mediatypes, output
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest
from lambdaimages.errors import EngineError, OutputError
from lambdaimages.image.archive import archive_end, docker_archive, file_member, member_header, padding
from lambdaimages.snapshot import documents
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import Layer, State


def archive_files(out: Path, runtime: Runtime, state: State) -> tuple[Path, list[Path]]:
    """The config file and the tarballs, in layer order, that the image of `state` is loaded from.

    Raises:
        OutputError: one of them is not in the snapshot (export has not run since it was resolved).
    """
    snapshot = SnapshotView(out, runtime)
    config, tarballs = snapshot.config_file(state), snapshot.tarballs(state)
    snapshot.require([config, *tarballs])
    return config, tarballs


def load(out: Path, runtime: Runtime, arch: str) -> str:
    """Load one architecture from the snapshot on disk; the loaded image's ID (= upstream's config digest).

    Raises:
        OutputError: the snapshot lacks a file.
        EngineError: the engine refused the archive, or gave the image another ID.
    """
    state = SnapshotView(out, runtime).state(arch)
    config, tarballs = archive_files(out, runtime, state)
    tag = layout.loaded_tag(runtime.name, arch)
    engine.load(docker_archive(config.read_bytes(), config.name, tarballs, [tag]), runtime=runtime.name, arch=arch)
    found = engine.image_id(tag)
    if found != state.config_digest:
        raise EngineError(
            f"loaded {tag} has ID {found}, not upstream's config digest {state.config_digest}",
            runtime=runtime.name,
            arch=arch,
        )
    return found


def is_loaded(out: Path, runtime: Runtime, arch: str) -> bool:
    """`<rt>:<arch>` is in the engine with the ID of the snapshot's config digest (so it is that image)."""
    current = SnapshotView(out, runtime).state_or_none(arch)
    return current is not None and engine.image_id(layout.loaded_tag(runtime.name, arch)) == current.config_digest


class StreamedLoad:
    """A load of one architecture fed with the layers' blobs while export downloads them.

    The archive's members come in any order (the engine reads the whole archive before it loads it), so each
    downloaded layer is sent as its blob arrives (gzip, which the engine unpacks at a fraction of xz's cost),
    then the layers that were not downloaded (cached) follow from their tarballs, then the config and
    manifest.json: at `complete_early`, from the layer and documents caches as soon as every blob is downloaded
    (the engine then loads while export still compresses), else at `finish`, from the snapshot. The engine
    reads from a bounded queue: memory stays flat in the layer size. `abort` cuts a stream not complete yet,
    so the engine loads nothing.
    """

    QUEUE = 2  # chunks of 1 MiB waiting for the engine: a few loads run at once, each costs at most this

    def __init__(self, out: Path, runtime: Runtime, state: State) -> None:
        self.out, self.runtime, self.state = out, runtime, state
        self.names: dict[int, str] = {}
        self.completed = False
        self.queue: queue.Queue = queue.Queue(self.QUEUE)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"load-{runtime.name}-{state.architecture}", daemon=True)
        self.thread.start()

    def layer(self, number: int, layer) -> BinaryIO:
        """A writer for the blob of layer `number` (1-based); `close` after its last byte."""
        name = f"{number}/{Digest(layer.digest).hex}.blob"
        self.names[number] = name
        return _Member(self, name, layer.size)

    def complete_early(self) -> bool:
        """Complete the archive now from the caches, when each layer not downloaded and the config are there
        (every blob has been sent); False, and nothing sent, when one is not (`finish` completes it then).

        Raises:
            EngineError: the archive could not be completed (a file unreadable); the load is aborted.
        """
        config, tarballs = _cache_files(self.out, self.runtime, self.state)
        rest = [path for number, path in enumerate(tarballs, 1) if number not in self.names]
        if self.completed or config is None or not all(path.is_file() for path in rest):
            return False
        name = SnapshotView(self.out, self.runtime).config_file(self.state).name  # as `finish` would name it
        try:
            self._complete(config.read_bytes(), name, tarballs)
        except OSError as exc:
            about = {"runtime": self.runtime.name, "arch": self.state.architecture}
            raise EngineError(f"cannot send the archive to docker load: {exc}", **about) from exc
        return True

    def finish(self) -> str:
        """Send the rest, unless `complete_early` did, and wait for the engine; the loaded image's ID (upstream's
        config digest).

        Raises:
            OutputError: the snapshot lacks a file.
            EngineError: the engine refused the archive or gave the image another ID.
        """
        if not self.completed:
            try:
                config, tarballs = archive_files(self.out, self.runtime, self.state)
                data = config.read_bytes()
            except BaseException:
                self.abort()
                raise
            self._complete(data, config.name, tarballs)
        self.thread.join()
        if self.error is not None:
            raise self.error
        tag = layout.loaded_tag(self.runtime.name, self.state.architecture)
        found = engine.image_id(tag)
        if found != self.state.config_digest:
            raise EngineError(f"loaded {tag} has ID {found}", runtime=self.runtime.name, arch=self.state.architecture)
        return found

    def _complete(self, config: bytes, config_name: str, tarballs: list[Path]) -> None:
        """Send the layers not downloaded (from `tarballs`, in layer order), the config and manifest.json, and
        end the stream: the engine loads from here on."""
        self.completed = True
        try:
            for number, path in enumerate(tarballs, 1):
                if number not in self.names:
                    self.names[number] = f"{number}/{path.name}"
                    for chunk in file_member(self.names[number], path):
                        self._put(chunk)
            names = [self.names[n] for n in range(1, len(tarballs) + 1)]
            tag = layout.loaded_tag(self.runtime.name, self.state.architecture)
            for chunk in archive_end(config, config_name, names, [tag]):
                self._put(chunk)
        except BaseException:
            self.abort()
            raise
        self._put(None)

    def abort(self) -> None:
        """Cut the stream: the engine discards the partial archive and loads nothing (a complete one it loads)."""
        if self.thread.is_alive():
            self._put(_ABORT)
            self.thread.join()

    def _put(self, item) -> None:
        """Queue an item for the engine; dropped once the load has ended (finish reports why)."""
        while self.thread.is_alive():
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def _chunks(self) -> Iterator[bytes]:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if item is _ABORT:
                raise _Aborted()
            yield item

    def _run(self) -> None:
        about = {"runtime": self.runtime.name, "arch": self.state.architecture}
        try:
            engine.load(self._chunks(), **about)
        except _Aborted:
            pass
        except EngineError as exc:  # reported by finish, on the task's thread; writers' items are dropped
            self.error = exc
        except BaseException as exc:
            self.error = EngineError(f"docker load failed: {exc}", **about)
            self.error.__cause__ = exc  # raised by finish on another thread: the cause for the log


def _cache_files(out: Path, runtime: Runtime, state: State) -> tuple[Path | None, list[Path]]:
    """Where the documents and layer caches keep the config (None when not kept) and the tarballs of `state`."""
    cache = LayerCache(out)
    return documents.cached(out, state.config_digest), [cache.tarball(runtime, layer) for layer in state.layers]


def _cached(out: Path, runtime: Runtime, state: State) -> bool:
    """The caches hold the config and every tarball of `state`: its image can be loaded from them."""
    config, tarballs = _cache_files(out, runtime, state)
    return config is not None and all(path.is_file() for path in tarballs)


class _Aborted(Exception):
    pass


_ABORT = object()


class _Member:
    """One archive member of a known size, written in pieces: the header first, the padding at `close`.

    Export checked the blob's size and digest before it closes the member; a member that is not closed
    (a failed download) is never followed by `finish`, only by `abort`.
    """

    def __init__(self, load: StreamedLoad, name: str, size: int) -> None:
        self.load, self.size = load, size
        self.load._put(member_header(name, size))

    def write(self, data: bytes) -> None:
        self.load._put(data)

    def close(self) -> None:
        self.load._put(padding(self.size))


class FromDownloads:
    """The loads that run during export: one per architecture not loaded yet, fed with the blobs as export
    downloads them, and completed from the caches once every blob is downloaded (`downloaded`) or at `finish`.

    Best effort: an engine that is down or refuses leaves the image to `load:<rt>`, which says why.
    """

    def __init__(self, out: Path, runtime: Runtime, states: dict) -> None:
        self.out, self.runtime, self.states = out, runtime, states
        self.started: dict[str, StreamedLoad] = {}
        self.skipped: set[str] = set()
        self.failed: set[str] = set()
        self.from_cache: set[str] = set()  # loads that downloaded nothing

    def sink(self, arch: str, number: int, layer: Layer) -> BinaryIO | None:
        """export.fetch's `blob_sink`: a writer for the blob of `layer`, or None when that architecture is loaded.

        None too for a zstd blob (engines before Docker 23 cannot load one): that layer follows from its tarball.
        """
        if arch in self.skipped or mediatypes.layer_compression(layer.media_type) == "zstd":
            return None
        if arch not in self.started:
            try:
                if engine.image_id(layout.loaded_tag(self.runtime.name, arch)) == self.states[arch].config_digest:
                    self.skipped.add(arch)
                    return None
                self.started[arch] = StreamedLoad(self.out, self.runtime, self.states[arch])
            except EngineError:
                self.skipped.add(arch)
                return None
        return self.started[arch].layer(number, layer)

    def downloaded(self) -> None:
        """export.fetch's `downloaded`: every blob is sent, so each load whose other layers are cached completes
        now, and so does the load of an architecture that downloaded nothing (its config alone changed): the
        engine loads while the layers compress (on a second core, when one layer is one block).

        An image so loaded is upstream's (the engine checks every layer against the config's diff_ids) even if
        the export fails later. A load that cannot complete now waits for `finish` (one not started is left to
        `load:<rt>`); one that fails is left to `load:<rt>`, as there.
        """
        for arch, state in self.states.items():
            if arch in self.skipped or arch in self.started or not _cached(self.out, self.runtime, state):
                continue
            try:
                if engine.image_id(layout.loaded_tag(self.runtime.name, arch)) == state.config_digest:
                    self.skipped.add(arch)
                    continue
                self.started[arch] = StreamedLoad(self.out, self.runtime, state)
                self.from_cache.add(arch)
            except EngineError:
                self.skipped.add(arch)
        for arch, streamed in self.started.items():
            try:
                streamed.complete_early()
            except EngineError as exc:
                output.say(f"{self.runtime.name}: {exc} (load:{self.runtime.name} tries again)")
                self.failed.add(arch)

    def finish(self) -> None:
        """Complete every load (after export succeeded); a load that fails is left to `load:<rt>`."""
        for arch, streamed in self.started.items():
            if arch in self.failed:
                continue
            try:
                image = streamed.finish()
            except (EngineError, OutputError) as exc:
                output.say(f"{self.runtime.name}: {exc} (load:{self.runtime.name} tries again)")
                continue
            tag = layout.loaded_tag(self.runtime.name, arch)
            source = "its cached tarballs" if arch in self.from_cache else "the download"
            output.say(f"{self.runtime.name}: loaded {tag} {image} (upstream's config digest), from {source}")
            output.count("loaded", images=1)

    def abort(self) -> None:
        """Cut every load (export failed): the engine loads nothing."""
        for streamed in self.started.values():
            streamed.abort()
