"""Which snapshot an image is built on, and what it misses: its first layers against every snapshot known here.

An image built `FROM` one of our runtimes starts with that snapshot's layers: upstream's diff_ids when it was built
on upstream's image or the loaded `<rt>:<arch>`, the recorded ids of a `<rt>:local` build (`image.builds`) when it
was built on that. `check` finds, for each image, the longest known snapshot whose layers are its first layers
(the way `regctl image check-base` compares a base's layers), counts the layers added on top, and compares that
snapshot with its runtime's current one: same manifest, the image is on a current base; another, it is behind, and
the two inventories say which packages changed. The bases are plain values (`Base`), gathered from the states on
disk here (`local_bases`) and from published branches (`publish.branches.published_bases`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lambdaimages import engine
from lambdaimages.catalog import Runtime
from lambdaimages.errors import ImageError
from lambdaimages.image import archive, builds
from lambdaimages.inventory import images as inventories
from lambdaimages.inventory import report
from lambdaimages.inventory.merge import Inventory
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State

CURRENT, BEHIND, UNKNOWN, UNREADABLE = "current", "behind", "no known base", "not readable"
EXIT_STATUS = {CURRENT: 0, BEHIND: 1, UNKNOWN: 2, UNREADABLE: 2}  # of a check: the worst of its images
SHOWN_CHANGES = 5  # package changes on an image's line; the log lists them all


@dataclass(frozen=True)
class Base:
    """A snapshot an image may be built on: one runtime's architecture at one upstream manifest.

    `current` says whether it is the runtime's current snapshot (the newest known). Its inventory comes from
    `sbom_text` (a published branch's SBOM), else the `sbom` file, else the facts of `layers` (diff_id, tarball).
    """

    runtime: str
    arch: str
    manifest_digest: str
    diff_ids: tuple[str, ...]
    label: str  # "the current snapshot", "the previous snapshot", "published commit 1a2b3c4d5e6f"
    current: bool
    built: tuple[tuple[str, ...], ...] = ()  # the diff_ids of `<rt>:local` builds of it
    sbom: Path | None = None
    sbom_text: str | None = field(default=None, repr=False, compare=False)
    layers: tuple[tuple[str, Path | None], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return self.runtime, self.arch


@dataclass(frozen=True)
class Subject:
    """An image to check: how the user named it, and its layers' diff_ids, lowest first."""

    name: str
    diff_ids: tuple[str, ...]


@dataclass(frozen=True)
class Verdict:
    """What `check` found for one image."""

    image: str
    status: str  # CURRENT, BEHIND, UNKNOWN or UNREADABLE
    layers: int  # the image's
    base: Base | None = None  # the snapshot it is built on
    newest: Base | None = None  # its runtime's current snapshot (the base itself when current)
    via_build: bool = False  # built on `<rt>:local` (matched by the build's recorded ids)
    changes: report.InventoryDiff | None = None  # from base to newest; None when an inventory is not known here
    reason: str | None = None  # why an UNREADABLE image could not be read

    @classmethod
    def unreadable(cls, image: str, reason: str) -> Verdict:
        return cls(image, UNREADABLE, 0, reason=reason)

    @property
    def added(self) -> int:
        """Layers on top of the base."""
        return self.layers - len(self.base.diff_ids) if self.base is not None else self.layers

    def line(self) -> str:
        """One line: the verdict, the base, the layers added and, when behind, what changed since."""
        if self.status == UNREADABLE:
            return f"{self.image}: {UNREADABLE}: {self.reason}"
        if self.base is None:
            return f"{self.image}: {UNKNOWN} ({_count(self.layers)}; no snapshot known here is under it)"
        base = self.base
        on = f"{base.runtime} {base.arch} {_short(base.manifest_digest)} ({base.label}"
        on += f", via {base.runtime}:local)" if self.via_build else ")"
        added = f"{_count(self.added)} added"
        if self.status == CURRENT:
            return f"{self.image}: {CURRENT}: {on}; {added}"
        moved = f"upstream moved to {_short(self.newest.manifest_digest)} ({self.newest.label})"
        return f"{self.image}: {BEHIND}: {on}; {added}; {moved}; {self.changes_text()}"

    def changes_text(self, shown: int = SHOWN_CHANGES) -> str:
        if self.changes is None:
            return "package changes not known here (an inventory is missing)"
        found = [*self.changes.versions, *self.changes.changed, *self.changes.added, *self.changes.removed]
        if not found:
            return "no package changes"
        listed = ", ".join(str(change) for change in found[:shown])
        more = f" (+{len(found) - shown} more)" if len(found) > shown else ""
        return f"{len(found)} package change{'s' if len(found) != 1 else ''}: {listed}{more}"


def _short(digest: str) -> str:
    return digest[: len("sha256:") + 12]


def _count(layers: int) -> str:
    return f"{layers} layer{'s' if layers != 1 else ''}"


# -- matching --------------------------------------------------------------------------------------


def distinct(bases: Iterable[Base]) -> list[Base]:
    """The bases without repeats of a runtime, architecture and manifest (the first is kept: list current first)."""
    seen: set[tuple[str, str, str]] = set()
    found = []
    for base in bases:
        key = (base.runtime, base.arch, base.manifest_digest)
        if key not in seen:
            seen.add(key)
            found.append(base)
    return found


def match(diff_ids: tuple[str, ...], bases: list[Base]) -> tuple[Base, bool] | None:
    """The base whose layers are the longest run of `diff_ids`' first layers, and whether its `<rt>:local` ids
    matched; None when no base is under the image. Between equally long ones a current base wins, then the first."""
    best: tuple[int, bool, int, Base, bool] | None = None
    for order, base in enumerate(bases):
        for ids, via_build in ((base.diff_ids, False), *((built, True) for built in base.built)):
            if ids and tuple(diff_ids[: len(ids)]) == ids:
                rank = (len(ids), base.current, -order)
                if best is None or rank > best[:3]:
                    best = (*rank, base, via_build)
    return None if best is None else (best[3], best[4])


def check(
    subjects: Iterable[Subject], bases: Iterable[Base], inventory_of: Callable[[Base], Inventory | None]
) -> list[Verdict]:
    """A verdict per image, in order; `inventory_of` is asked only for the bases of images that are behind."""
    known = distinct(bases)
    newest = {}
    for base in known:
        if base.current:
            newest.setdefault(base.key, base)
    inventories_found: dict[tuple[str, str, str], Inventory | None] = {}

    def inventory(base: Base) -> Inventory | None:
        key = (base.runtime, base.arch, base.manifest_digest)
        if key not in inventories_found:
            inventories_found[key] = inventory_of(base)
        return inventories_found[key]

    verdicts = []
    for subject in subjects:
        found = match(subject.diff_ids, known)
        if found is None:
            verdicts.append(Verdict(subject.name, UNKNOWN, len(subject.diff_ids)))
            continue
        base, via_build = found
        current = newest.get(base.key, base)  # a runtime known only by older snapshots: the newest is unknown
        if current.manifest_digest == base.manifest_digest:
            verdicts.append(Verdict(subject.name, CURRENT, len(subject.diff_ids), base, current, via_build))
            continue
        old, new = inventory(base), inventory(current)
        changes = report.diff(old, new) if old is not None and new is not None else None
        verdicts.append(Verdict(subject.name, BEHIND, len(subject.diff_ids), base, current, via_build, changes))
    return verdicts


def exit_status(verdicts: Iterable[Verdict]) -> int:
    """0 when every image is on a current base, 1 when one is behind, 2 when one is on no known base."""
    return max((EXIT_STATUS[v.status] for v in verdicts), default=0)


def summary(verdicts: list[Verdict]) -> str:
    counts = {status: sum(v.status == status for v in verdicts) for status in EXIT_STATUS}
    images = f"{len(verdicts)} image{'s' if len(verdicts) != 1 else ''}"
    text = (
        f"check_base: {images}: {counts[CURRENT]} on a current base, {counts[BEHIND]} behind, "
        f"{counts[UNKNOWN]} on no known base"
    )
    return text + (f", {counts[UNREADABLE]} {UNREADABLE}" if counts[UNREADABLE] else "")


# -- the bases known here --------------------------------------------------------------------------


def subjects(images: Iterable[str], archives: Iterable[Path]) -> tuple[list[Subject], list[Verdict]]:
    """The images to check: local images of the engine by name, and every image of each docker-archive.

    What cannot be read (no such image, not an archive) is a verdict of its own, `not readable`.
    """
    found, unreadable = [], []
    for name in images:
        diff_ids = engine.image_diff_ids(name)
        if diff_ids is None:
            unreadable.append(Verdict.unreadable(name, f"no such image in the engine at {engine.engine_name()}"))
        else:
            found.append(Subject(name, diff_ids))
    for path in archives:
        try:
            found += [Subject(f"{name} ({path})", ids) for name, ids in archive.saved_images(path)]
        except ImageError as exc:
            unreadable.append(Verdict.unreadable(str(path), exc.detail))
    return found, unreadable


def local_bases(out: Path, runtimes: Iterable[Runtime]) -> list[Base]:
    """Every runtime's current snapshot and the previous one kept (`<arch>.previous.json`), current ones first,
    each with the recorded ids of its `<rt>:local` builds. Offline: only files under `out` are read."""
    current, previous = [], []
    cache = LayerCache(out)
    for runtime in runtimes:
        snapshot = SnapshotView(out, runtime)
        built = builds.read(out, runtime.name)
        for arch in runtime.architectures:
            state = snapshot.state_or_none(arch)
            if state is not None:
                tarballs = tuple(zip(_ids(state), snapshot.tarballs(state), strict=True))
                current.append(
                    _base(state, "the current snapshot", True, built, sbom=snapshot.sbom(arch), layers=tarballs)
                )
            old = snapshot.previous_state(arch)
            if old is not None:
                cached = tuple((layer.diff_id, cache.find(layer.hex)) for layer in old.layers)
                previous.append(_base(old, "the previous snapshot", state is None, built, layers=cached))
    return current + previous


def _ids(state: State) -> tuple[str, ...]:
    return tuple(layer.diff_id for layer in state.layers)


def _base(state: State, label: str, current: bool, built: dict[str, tuple[str, ...]], **inventory) -> Base:
    local = builds.of_manifest(built, state.manifest_digest)
    return Base(
        state.runtime, state.architecture, state.manifest_digest, _ids(state), label, current, local, **inventory
    )


def inventory_reader(out: Path) -> Callable[[Base], Inventory | None]:
    """How `check` gets a base's inventory: its SBOM (a branch's text or the snapshot's file), else its layers'
    facts (cached by export, or read from a tarball still in the layer cache); None when none is here."""

    def inventory_of(base: Base) -> Inventory | None:
        if base.sbom_text is not None:
            return inventories.parse(base.sbom_text)
        if base.sbom is not None and (found := inventories.read(base.sbom)) is not None:
            return found
        if not base.layers:
            return None
        layers = [(diff_id, path if path is not None and path.is_file() else None) for diff_id, path in base.layers]
        try:
            return inventories.of_layers(out, layers)
        except (OSError, ValueError):
            return None

    return inventory_of
