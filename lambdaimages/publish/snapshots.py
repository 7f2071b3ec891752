"""A runtime's snapshot as plain data: per architecture, manifest digest, layer tarballs in order, Dockerfile text;
the current one from `<out>`, the previous one kept locally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.errors import OutputError, RenderError
from lambdaimages.inventory import images as inventories
from lambdaimages.inventory.merge import Inventory
from lambdaimages.snapshot import render
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.dockerfile import add_instructions

# -- snapshots -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer tarball of a snapshot: its name (diff_id hex), size, and where its bytes can be read here."""

    hex: str
    size: int | None = None
    source: Path | None = None
    created_by: str | None = None


@dataclass(frozen=True)
class ArchSnapshot:
    arch: str
    manifest_digest: str | None
    layers: tuple[Layer, ...]
    dockerfile: str | None = None
    inventory: Inventory | None = None  # what the image holds (its SBOM), None when not known here


@dataclass(frozen=True)
class Snapshot:
    """A runtime's snapshot; `label` names it in CHANGES.md ("published commit 1a2b3c4d5e6f")."""

    runtime: str
    reference: str | None
    label: str
    archs: dict[str, ArchSnapshot] = field(hash=False)


def current_snapshot(out: Path, runtime: Runtime) -> Snapshot:
    """The snapshot in `<out>/<rt>` and its state files.

    Raises:
        OutputError: the runtime has not been snapshotted (run `doit snapshot:<rt>`).
    """
    snapshot = SnapshotView(out, runtime)
    archs = {}
    reference = None
    for arch in runtime.architectures:
        path = snapshot.state_path(arch)
        try:
            state = snapshot.state(arch)
        except FileNotFoundError:
            raise OutputError(f"{arch} not snapshotted ({path} is missing)", runtime=runtime.name) from None
        reference = state.reference
        layers = []
        for layer, created_by in zip(state.layers, _layer_history(state), strict=True):
            tarball = snapshot.tarball(arch, layer)
            snapshot.require([tarball])
            layers.append(Layer(layer.hex, tarball.stat().st_size, tarball, created_by))
        dockerfile = _read_text(snapshot.dockerfile(arch))
        inventory = inventories.read(snapshot.sbom(arch))
        archs[arch] = ArchSnapshot(arch, state.manifest_digest, tuple(layers), dockerfile, inventory)
    return Snapshot(runtime.name, reference, "this snapshot", archs)


def local_previous(out: Path, runtime: Runtime) -> Snapshot | None:
    """The last snapshot kept locally: per architecture, the state before upstream last moved, or None.

    An architecture that never moved is its current state. Tarballs come from the shared layer cache (any codec),
    which keeps the layers that export removed from `<out>/<rt>`; Dockerfiles are rendered again from the state.
    """
    snapshot = SnapshotView(out, runtime)
    archs = {}
    reference = None
    kept = False
    for arch in runtime.architectures:
        previous = snapshot.previous_state(arch)
        kept |= previous is not None
        state = previous or snapshot.state_or_none(arch)
        if state is None:
            continue
        reference = reference or state.reference
        layers = tuple(
            Layer(layer.hex, *_cached_tarball(out, layer.hex), created_by)
            for layer, created_by in zip(state.layers, _layer_history(state), strict=True)
        )
        try:
            dockerfile = render.render_dockerfile(runtime, state)
        except RenderError:
            dockerfile = None
        pairs = zip(state.layers, layers, strict=True)
        inventory = inventories.of_layers(out, [(layer.diff_id, kept_layer.source) for layer, kept_layer in pairs])
        archs[arch] = ArchSnapshot(arch, state.manifest_digest, layers, dockerfile, inventory)
    if not kept:
        return None
    return Snapshot(runtime.name, reference, "the previous local snapshot", archs)


def _cached_tarball(out: Path, hex_digest: str) -> tuple[int | None, Path | None]:
    path = LayerCache(out).find(hex_digest)
    return (path.stat().st_size, path) if path is not None else (None, None)


def _layer_history(state: State) -> list[str | None]:
    # History entries that made a layer, in order; an image whose history does not add up gets no history.
    history = [h for h in state.config.get("history") or [] if not h.get("empty_layer")]
    if len(history) != len(state.layers):
        return [None] * len(state.layers)
    return [_short(h.get("created_by")) for h in history]


def _short(text: str | None, limit: int = 120) -> str | None:
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dockerfile_layers(text: str) -> list[tuple[str, str]]:
    """(name, extension) of each tarball an `<arch>/Dockerfile.<rt>` ADDs, in order."""
    found = [layout.split_tarball_name(add.source) for add in add_instructions(text) if add.dest == "/"]
    return [name for name in found if name is not None]


def _read_text(path: Path) -> str | None:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None
