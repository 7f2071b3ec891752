"""The inventory of each image of a snapshot: layer facts cached by diff_id, merged into `sbom.cdx.json`.

Export feeds each layer it downloads through a `LayerScanner` (`FactsWriter`), so a cold run reads no layer
twice; a layer whose facts are not cached (a snapshot made before inventories) is read once from its tarball.
The merged inventory is written as CycloneDX 1.6 beside the tarballs, dated by upstream's config `created`,
so the same image always gives the same file.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest
from lambdaimages.inventory.facts import LayerFacts
from lambdaimages.inventory.merge import Inventory, merge
from lambdaimages.inventory.sbom import ImageInfo, parse_sbom, read_sbom, write_sbom
from lambdaimages.inventory.tarscan import LayerScanner, scan_stream
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import Layer, State
from lambdaimages.tools.tree import Entry, merge_layers, open_layer, open_tarball

FORMAT = 2  # of the cached facts: a change of what the scanner keeps makes every layer be read again
SBOM_FORMAT = 2  # of what an SBOM holds: a change rewrites every SBOM
CHUNK = 1 << 20


def facts_path(out: Path, diff_id: str) -> Path:
    return layout.facts_cache(out) / f"{Digest(diff_id).hex}.{FORMAT}.json"


class FactsWriter:
    """Receives a layer's uncompressed tar as export streams it; `close` stores the layer's facts."""

    def __init__(self, out: Path, layer: Layer) -> None:
        self.path = facts_path(out, layer.diff_id)
        self.scanner = LayerScanner(layer.hex, tmpdir=str(layout.facts_cache(out)))
        layout.facts_cache(out).mkdir(parents=True, exist_ok=True)

    def write(self, data: bytes) -> None:
        self.scanner.feed(data)

    def close(self) -> None:
        self.scanner.close().save(self.path)


def layer_facts(out: Path, diff_id: str, tarball: Path) -> LayerFacts:
    """The facts of one layer: cached, or read once from its tarball (and cached)."""
    path = facts_path(out, diff_id)
    try:
        return LayerFacts.load(path)
    except (OSError, ValueError):
        pass
    with open_tarball(tarball) as stream:
        facts = scan_stream(stream, Digest(diff_id).hex, CHUNK)
    facts.save(path)
    return facts


def read_missing(out: Path, runtime: Runtime, states: list[State]) -> None:
    """Read, in parallel (liblzma runs without the GIL), every layer of `states` whose facts are not cached."""
    snapshot = SnapshotView(out, runtime)
    todo = {}
    for state in states:
        for layer in state.layers:
            if not facts_path(out, layer.diff_id).is_file():
                todo[layer.diff_id] = snapshot.tarball(state.architecture, layer)
    if len(todo) > 1:
        # Biggest first, so the threads end together instead of one reading the biggest layer alone at the end.
        biggest_first = sorted(todo.items(), key=lambda item: _size(item[1]), reverse=True)
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1)) as pool:
            for _ in pool.map(lambda item: layer_facts(out, *item), biggest_first):
                pass


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # layer_facts says why it cannot read it


def inventory(out: Path, runtime: Runtime, state: State) -> Inventory:
    """The merged inventory of one architecture's image, from its layers' facts."""
    tarballs = SnapshotView(out, runtime).tarballs(state)
    return of_layers(out, [(layer.diff_id, tarball) for layer, tarball in zip(state.layers, tarballs, strict=True)])


def of_layers(out: Path, layers: list[tuple[str, Path | None]]) -> Inventory | None:
    """The merged inventory of layers given as (diff_id, tarball or None), in order; None when a layer's facts
    are not cached and it has no tarball here."""
    found = []
    for diff_id, tarball in layers:
        if tarball is None:
            try:
                found.append(LayerFacts.load(facts_path(out, diff_id)))
            except (OSError, ValueError):
                return None
        else:
            found.append(layer_facts(out, diff_id, tarball))
    return merge(found)


def tree_and_inventory(tarballs: list[Path]) -> tuple[dict[str, Entry], Inventory]:
    """The merged file tree (`tools.tree.merge_layers`) and the inventory of layer tarballs (xz, gzip or plain),
    lowest first, for a snapshot whose inventory is not known.

    Each tarball is decompressed once: every byte the tree reads is fed to a `LayerScanner` as it passes, and the
    rest after the tar's end as well. Nothing is cached (such layers may come from anywhere).

    Raises:
        ValueError: a tarball is not a readable layer tar.
    """
    facts: list[LayerFacts] = []

    def streams() -> Iterator[BinaryIO]:
        for path in tarballs:
            scanner = LayerScanner(Path(path).name.split(".")[0])
            with open_layer(path) as source:
                yield _Feeding(source, scanner, str(path))
                while chunk := source.read(CHUNK):
                    scanner.feed(chunk)
            facts.append(scanner.close())

    with contextlib.closing(streams()) as layers:
        tree = merge_layers(layers)
    return tree, merge(facts)


class _Feeding:
    """A layer tar stream that feeds what is read from it to a `LayerScanner` too; `name` names it in errors."""

    def __init__(self, source: BinaryIO, scanner: LayerScanner, name: str) -> None:
        self.source, self.scanner, self.name = source, scanner, name

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        if data:
            self.scanner.feed(data)
        return data


def write(out: Path, runtime: Runtime, state: State) -> tuple[Path, Inventory]:
    """Write `<out>/<rt>/<arch>/sbom.cdx.json`; its path and the inventory."""
    found = inventory(out, runtime, state)
    image = ImageInfo(state.reference, state.manifest_digest, state.config_digest, state.architecture, runtime.name)
    path = SnapshotView(out, runtime).sbom(state.architecture)
    write_sbom(path, found, image, _created(state))
    return path, found


def read(path: Path) -> Inventory | None:
    """The inventory an SBOM file holds, or None when there is none (or it is not one of ours)."""
    try:
        return read_sbom(path)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def parse(text: str | None) -> Inventory | None:
    """The inventory of an SBOM's text (as a published branch holds it), or None."""
    if text is None:
        return None
    try:
        return parse_sbom(text)
    except (ValueError, KeyError, TypeError):
        return None


def _created(state: State) -> datetime.datetime:
    text = state.config.get("created")
    try:
        return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
