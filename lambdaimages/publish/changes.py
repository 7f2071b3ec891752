"""What changed between two snapshots of a runtime: layers, files, versions, packages and config, as CHANGES.md."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from lambdaimages.errors import OutputError
from lambdaimages.inventory import images as inventories
from lambdaimages.inventory import report
from lambdaimages.inventory.merge import Inventory
from lambdaimages.publish.snapshots import ArchSnapshot, Layer, Snapshot
from lambdaimages.tools.templates import TEMPLATES, render_template
from lambdaimages.tools.tree import DirSummary, Entry, TreeDiff, diff_trees, merge_layers, summarize_by_top_dir

CHANGES_TEMPLATE = "CHANGES.md.j2"
LISTED = 500  # file lines per kind (added, removed, changed) and architecture; the rest is counted


# -- the changelog --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileLine:
    path: str
    text: str


@dataclass(frozen=True)
class ArchChanges:
    """What changed on one architecture; `files` is None when the previous layers could not be read."""

    arch: str
    old_manifest: str | None
    new_manifest: str | None
    layers_added: tuple[Layer, ...]
    layers_removed: tuple[Layer, ...]
    layers_kept: int
    versions: tuple[tuple[str, str | None, str | None], ...]
    packages: dict[str, tuple] | None
    config: tuple[str, ...]
    files: TreeDiff | None
    by_dir: dict[str, DirSummary]
    listed: dict[str, tuple[tuple[FileLine, ...], int]]
    note: str | None = None
    totals: tuple[int, int] | None = None  # (entries, bytes) of a first snapshot's tree

    @property
    def changed(self) -> bool:
        return bool(
            self.old_manifest != self.new_manifest
            or self.layers_added
            or self.layers_removed
            or self.config
            or (self.files is not None and self.files)
        )


@dataclass(frozen=True)
class Changelog:
    runtime: str
    reference: str | None
    old_label: str | None
    new_label: str
    archs: tuple[ArchChanges, ...]

    @property
    def changed(self) -> bool:
        return self.old_label is None or any(arch.changed for arch in self.archs)


def compare(old: Snapshot | None, new: Snapshot, listed: int = LISTED) -> Changelog:
    """The changelog from `old` (None: a first snapshot) to `new`, every architecture of `new` in order."""
    archs = []
    for arch, now in new.archs.items():
        before = old.archs.get(arch) if old else None
        archs.append(_compare_arch(before, now, listed))
    return Changelog(new.runtime, new.reference, old.label if old else None, new.label, tuple(archs))


def _compare_arch(before: ArchSnapshot | None, now: ArchSnapshot, listed: int) -> ArchChanges:
    new_tree, new_inventory = _read_layers(now)
    if before is None:
        sizes = sum(e.size for e in new_tree.values() if e.type == "file" and e.hardlinks[:1] in ((), (e.path,)))
        return ArchChanges(
            now.arch, None, now.manifest_digest, now.layers, (), 0,
            tuple((name, None, value) for name, value in new_inventory.versions.items()),
            None, (), None, {}, {}, None, (len(new_tree), sizes),
        )  # fmt: skip
    old_names = {layer.hex for layer in before.layers}
    new_names = {layer.hex for layer in now.layers}
    added = tuple(layer for layer in now.layers if layer.hex not in old_names)
    removed = tuple(layer for layer in before.layers if layer.hex not in new_names)
    kept = len(now.layers) - len(added)
    config = _config_diff(before.dockerfile, now.dockerfile)
    note = None
    old_tree = old_inventory = None
    if [layer.hex for layer in before.layers] == [layer.hex for layer in now.layers]:  # the same filesystem
        old_tree, old_inventory = new_tree, before.inventory if before.inventory is not None else new_inventory
    elif missing := [layer.hex for layer in before.layers if layer.source is None]:
        note = (
            f"the previous layers {', '.join(h[:12] for h in missing)} are not available here "
            "(neither in the layer cache nor fetched): no file-level comparison"
        )
    else:
        old_tree, old_inventory = _read_layers(before)
    new_versions = new_inventory.versions
    if old_tree is None or old_inventory is None:
        return ArchChanges(
            now.arch, before.manifest_digest, now.manifest_digest, added, removed, kept,
            tuple((name, None, value) for name, value in new_versions.items()),
            None, config, None, {}, {}, note,
        )  # fmt: skip
    diff = diff_trees(old_tree, new_tree)
    old_versions = old_inventory.versions
    if before.inventory is not None and now.inventory is not None:
        # Both SBOMs known: every kind of package (rpm of every database format, dpkg, language packages).
        package_rows = _inventory_changes(before.inventory, now.inventory)
    else:
        package_rows = _package_changes(report.package_versions(old_inventory), report.package_versions(new_inventory))
    version_rows = tuple(
        (name, old_versions.get(name), new_versions.get(name)) for name in sorted(old_versions.keys() | new_versions)
    )
    return ArchChanges(
        now.arch, before.manifest_digest, now.manifest_digest, added, removed, kept, version_rows,
        package_rows, config, diff, summarize_by_top_dir(diff), _listed(diff, listed), note,
    )  # fmt: skip


def _read_layers(snapshot: ArchSnapshot) -> tuple[dict[str, Entry], Inventory]:
    """The merged tree of a snapshot's layers, and its inventory: its SBOM's, else read from the same layers."""
    missing = [layer.hex for layer in snapshot.layers if layer.source is None]
    if missing:
        raise OutputError(f"layer tarballs {', '.join(h[:12] for h in missing)} are not available", arch=snapshot.arch)
    tarballs = [layer.source for layer in snapshot.layers]
    try:
        if snapshot.inventory is not None:
            return merge_layers(tarballs), snapshot.inventory
        return inventories.tree_and_inventory(tarballs)
    except ValueError as exc:
        raise OutputError(str(exc), arch=snapshot.arch) from exc


def _inventory_changes(old: Inventory, new: Inventory) -> dict[str, tuple]:
    """Packages added, removed and changed, each named with its kind (`pypi: boto3`)."""
    found = report.diff(old, new)
    return {
        "added": tuple((f"{c.kind}: {c.name}", c.new) for c in found.added),
        "removed": tuple((f"{c.kind}: {c.name}", c.old) for c in found.removed),
        "changed": tuple((f"{c.kind}: {c.name}", c.old, c.new) for c in found.changed),
        "count": len(new.packages),
    }


def _package_changes(old: dict[str, str] | None, new: dict[str, str] | None) -> dict[str, tuple] | None:
    if old is None and new is None:
        return None
    old, new = old or {}, new or {}
    return {
        "added": tuple((name, new[name]) for name in sorted(new.keys() - old.keys())),
        "removed": tuple((name, old[name]) for name in sorted(old.keys() - new.keys())),
        "changed": tuple(
            (name, old[name], new[name]) for name in sorted(old.keys() & new.keys()) if old[name] != new[name]
        ),
        "count": len(new),
    }


def _config_diff(old: str | None, new: str | None) -> tuple[str, ...]:
    """Dockerfile lines that differ other than ADD lines and comments (ENV, LABEL, ENTRYPOINT...), as -/+ lines."""
    if old is None or new is None:
        return ()

    def settings(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip() and not line.startswith(("#", "ADD "))]

    return tuple(
        line
        for line in difflib.unified_diff(settings(old), settings(new), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def _listed(diff: TreeDiff, limit: int) -> dict[str, tuple[tuple[FileLine, ...], int]]:
    kinds = {
        "added": [FileLine(e.path, _entry_size(e)) for e in diff.added],
        "removed": [FileLine(e.path, _entry_size(e)) for e in diff.removed],
        "changed": [FileLine(a.path, _what_changed(a, b)) for a, b in diff.changed],
    }
    return {kind: (tuple(lines[:limit]), max(0, len(lines) - limit)) for kind, lines in kinds.items()}


def _entry_size(entry: Entry) -> str:
    if entry.type == "file":
        return human_size(entry.size)
    if entry.type == "symlink":
        return f"symlink to {entry.linkname}"
    return entry.type


def _what_changed(a: Entry, b: Entry) -> str:
    parts = []
    if a.type != b.type:
        parts.append(f"{a.type} → {b.type}")
    if a.type == b.type == "file":
        if a.size != b.size:
            parts.append(f"{human_size(a.size)} → {human_size(b.size)}")
        elif a.sha256 != b.sha256:
            parts.append(f"{human_size(b.size)}, content")
    if a.linkname != b.linkname and b.type == "symlink":
        parts.append(f"target {a.linkname or '-'} → {b.linkname}")
    if a.mode != b.mode:
        parts.append(f"mode {a.mode:04o} → {b.mode:04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        parts.append(f"owner {a.uid}:{a.gid} → {b.uid}:{b.gid}")
    if (a.devmajor, a.devminor) != (b.devmajor, b.devminor):
        parts.append(f"device {a.devmajor},{a.devminor} → {b.devmajor},{b.devminor}")
    if a.hardlinks != b.hardlinks:
        parts.append("hardlinks " + (" ".join("/" + p for p in b.hardlinks) or "none"))
    return ", ".join(parts)


def human_size(size: int | None) -> str:
    """Bytes as people read them: `812 B`, `12.3 kB`, `117.0 MB` (SI units)."""
    if size is None:
        return "?"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def signed_size(size: int) -> str:
    return ("+" if size > 0 else "-" if size < 0 else "±") + human_size(abs(size))


def code(text: str) -> str:
    """Markdown inline code that holds any text (a fence longer than its longest run of backticks)."""
    runs = [len(run) for run in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def render_markdown(changelog: Changelog, templates: Path = TEMPLATES) -> str:
    """CHANGES.md for a changelog, from templates/CHANGES.md.j2."""
    filters = {"size": human_size, "signed": signed_size, "code": code, "cell": cell}
    return render_template(CHANGES_TEMPLATE, {"log": changelog}, templates, filters).rstrip("\n") + "\n"
