"""Where else a layer's tarball may already be than the local cache, and the one check every such tarball passes.

Before export compresses a layer the local cache (`LayerCache`) lacks, it asks its `Sources` in order (the
registry cache, then the published branches; the task glue builds the list): each source may write a candidate
tarball, which is used only when `check_tarball` passed. A candidate that fails is reported in one line and
dropped, and the layer is compressed as if no source had it; a source that is down or errs says so once for
the run and gives nothing. A layer compressed here is offered to every source that stores (`store`).
"""

from __future__ import annotations

import contextlib
import gzip
import lzma
import os
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from lambdaimages import mediatypes, output
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Verifier
from lambdaimages.errors import DigestMismatch, ProjectError, cause_chain, label
from lambdaimages.state import Layer
from lambdaimages.tools import xzblocks
from lambdaimages.tools.files import TMP_PREFIX

CHUNK = 1 << 20


@runtime_checkable
class LayerSource(Protocol):
    """A place a layer's tarball (as the catalog's codec and level make it) may already be.

    `name` is how the summary and the notes say it ("published branches", "registry cache"). `fetch` writes a
    candidate at `dest`, a temp path the caller owns, and says whether it did: False when the source does not
    have the layer; DigestMismatch when it found its own copy wrong (reported like a candidate that failed the
    check). A source that is down may raise or return False; either way `Sources` says so once for the run and
    goes on without it. A source may also have:

    - `want(runtime, layers)`: told, once per export and before any `fetch`, every layer it may be asked for
      (to fetch them in one request);
    - `store(runtime, layer, tarball)`: given a tarball this machine compressed (a cache that accepts writes).
    """

    name: str

    def fetch(self, runtime: Runtime, layer: Layer, dest: Path) -> bool: ...


# -- the check -----------------------------------------------------------------------------------------


def check_tarball(path: Path, runtime: Runtime, layer: Layer, tar_sink: BinaryIO | None = None) -> int:
    """Check a candidate tarball of `layer` in `runtime`'s codec; the layer's uncompressed size.

    Its decompressed bytes must hash to the diff_id (streamed, memory flat in the size; `tar_sink` receives
    them as they pass), and it must be what export writes: for gzip, upstream's blob stored as-is (the file
    hashes to the blob digest) or, for a layer upstream did not gzip, a gzip stream of the catalog's level; for
    xz, the block layout and LZMA2 dictionary of `tools.xzblocks` at the catalog's level (its headers only).

    Raises:
        DigestMismatch: it is not that tarball (the detail says what differs).
    """
    with open(path, "rb") as f:
        problem = _format_problem(f, runtime, layer)
    if problem:
        raise DigestMismatch(problem)
    verifier = Verifier(layer.diff_id, what="the decompressed tarball", claimed_by="the config")
    opener = lzma.open if runtime.compression == "xz" else gzip.open
    try:
        with opener(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                verifier.update(chunk)
                if tar_sink is not None:
                    tar_sink.write(chunk)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise DigestMismatch(f"cannot decompress it: {exc}") from exc
    verifier.finish()
    return verifier.received


def _format_problem(f: BinaryIO, runtime: Runtime, layer: Layer) -> str | None:
    """Why the file is not in the catalog's codec and level as export writes it, or None."""
    if runtime.compression == "xz":
        problem = xzblocks.layout_problem(f, runtime.level)
        return f"not xz level {runtime.level} as export writes it: {problem}" if problem else None
    if mediatypes.layer_compression(layer.media_type) == "gzip":
        verifier = Verifier()
        while chunk := f.read(CHUNK):
            verifier.update(chunk)
        actual = verifier.finish()
        return None if actual == layer.digest else f"hashes to {actual}, not upstream's gzip blob {layer.digest}"
    head = f.read(10)
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08" or head[8] != _gzip_xfl(runtime.level):
        return f"not a gzip stream of level {runtime.level}"
    return None


def _gzip_xfl(level: int) -> int:
    """The extra-flags byte zlib writes in a gzip header for `level` (deflate.c)."""
    return 2 if level == 9 else 4 if level < 2 else 0


# -- the sources, in order -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Taken:
    """A checked tarball at the caller's temp path: which source gave it, and the layer's uncompressed size."""

    source: str
    uncompressed: int


class Sources:
    """The sources export asks, in order, for a layer the local cache lacks (none: every layer is compressed).

    Every call is best effort: a source that raises is said once for the run (`output.say_once`, its cause chain
    in the task's log) and counts as not having the layer; the run never fails for a source.
    """

    def __init__(self, sources: Sequence[LayerSource] = ()) -> None:
        self.sources = list(sources)

    def __bool__(self) -> bool:
        return bool(self.sources)

    def want(self, runtime: Runtime, layers: Sequence[Layer]) -> None:
        """Tell every source with a `want` the layers it may be asked for (those the local cache lacks)."""
        if not layers:
            return
        for source in self.sources:
            hook = getattr(source, "want", None)
            if hook is not None:
                self._guarded(source, runtime, lambda h=hook: h(runtime, list(layers)))

    def take(
        self,
        runtime: Runtime,
        layer: Layer,
        dest: Path,
        context: dict[str, str],
        tar_sink: Callable[[], BinaryIO | None] | None = None,
    ) -> Taken | None:
        """Ask each source in turn for `layer`; the first candidate that passes `check_tarball` is left at `dest`.

        A candidate that fails is reported in one line (source, runtime, layer and what differs) and removed.
        `tar_sink` may give a writer for the decompressed bytes of a candidate (closed once it passed; one that
        failed is dropped unclosed). None when no source had it: `dest` does not exist then.
        """
        for source in self.sources:
            began = time.monotonic()
            _unlink(dest)
            try:
                if not self._guarded(source, runtime, lambda s=source: s.fetch(runtime, layer, dest)):
                    _unlink(dest)
                    continue
                sink = tar_sink() if tar_sink is not None else None
                uncompressed = check_tarball(dest, runtime, layer, sink)
            except DigestMismatch as exc:
                _unlink(dest)
                output.say(f"{label(**context)}: the tarball from {source.name} is wrong, {exc.detail}; "
                           "compressing it here", show=True)  # fmt: skip
                output.count(f"wrong from {source.name}", layers=1)
                continue
            except FileNotFoundError:
                continue  # the source said yes and wrote nothing: it does not have it
            if sink is not None:
                sink.close()
            ended = time.monotonic()
            output.count(f"from {source.name}", layers=1, bytes=os.path.getsize(dest))
            output.span(f"from {source.name}", began, ended)
            return Taken(source.name, uncompressed)
        return None

    def store(self, runtime: Runtime, layer: Layer, tarball: Path) -> None:
        """Give a tarball compressed here to every source that stores (best effort)."""
        for source in self.sources:
            hook = getattr(source, "store", None)
            if hook is not None:
                self._guarded(source, runtime, lambda h=hook: h(runtime, layer, tarball))

    @staticmethod
    def _guarded(source: LayerSource, runtime: Runtime, call: Callable[[], object]) -> bool:
        try:
            return bool(call())
        except DigestMismatch:
            raise  # the source found its own candidate wrong: reported as one, per layer
        except Exception as exc:  # never fails the run: say it once, go on without the source
            detail = exc.detail if isinstance(exc, ProjectError) else f"{type(exc).__name__}: {exc}"
            output.note(cause_chain(exc) or repr(exc))
            output.say_once(f"source {source.name}", f"{source.name}: {detail} (layers it lacks are compressed here)")
            return False


def candidate_path(tarball: Path) -> Path:
    """A temp path beside a cache entry for a source's candidate (removed by the next run if left behind)."""
    return tarball.with_name(f"{TMP_PREFIX}{tarball.name}.{os.getpid()}.{threading.get_ident()}")


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
