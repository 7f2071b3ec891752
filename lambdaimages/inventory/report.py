"""An inventory as people read it: a short summary, and what changed between two inventories (for CHANGES.md)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lambdaimages.inventory import dpkg
from lambdaimages.inventory.facts import Package
from lambdaimages.inventory.merge import Inventory
from lambdaimages.inventory.versions import RUNTIMES

RPM_SQLITE = "var/lib/rpm/rpmdb.sqlite"  # the one database `package_versions` reads, before dpkg's status
KIND_NAMES = {
    "rpm": "rpm",
    "deb": "deb",
    "pypi": "Python",
    "npm": "npm",
    "gem": "gem",
    "maven": "Maven",
    "golang": "Go",
    "nuget": "NuGet",
    "dotnet": ".NET framework",
}


def summary(inventory: Inventory, unowned: int = 5) -> list[str]:
    """A few lines: OS release, runtime, package counts per kind, the biggest directories no rpm owns, notes.

    Args:
        inventory: the image's inventory.
        unowned: at most this many directories of files that no rpm package owns, biggest first.
    """
    lines = [f"OS: {inventory.versions.get('os', 'unknown')}"]
    runtimes = [f"{name} {inventory.versions[name]}" for name in RUNTIMES if name in inventory.versions]
    lines.append("runtime: " + (", ".join(runtimes) or inventory.versions.get("runtime", "unknown")))
    counts = Counter(package.kind for package in inventory.packages)
    listed = ", ".join(f"{counts[kind]} {name}" for kind, name in KIND_NAMES.items() if counts[kind])
    lines.append(f"packages: {listed or 'none found'}")
    if inventory.unowned:
        biggest = sorted(inventory.unowned.items(), key=lambda item: -item[1].bytes)[:unowned]
        shown = ", ".join(f"{top} ({count.files} files, {_size(count.bytes)})" for top, count in biggest)
        lines.append(f"not from rpm: {shown}")
    if inventory.notes:
        lines.append(f"notes: {len(inventory.notes)} (inputs that could not be read), first: {inventory.notes[0]}")
    return lines


def _size(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


@dataclass(frozen=True)
class Change:
    """One package (or runtime) that was added, removed or changed; versions are "" where it is absent."""

    kind: str
    name: str
    old: str
    new: str

    def __str__(self) -> str:
        if not self.old:
            return f"{self.name} {self.new} (new)"
        if not self.new:
            return f"{self.name} {self.old} (removed)"
        return f"{self.name} {self.old} -> {self.new}"


@dataclass(frozen=True)
class InventoryDiff:
    """What changed between two inventories: packages per kind, and the OS and runtime versions."""

    added: tuple[Change, ...]
    removed: tuple[Change, ...]
    changed: tuple[Change, ...]
    versions: tuple[Change, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed or self.versions)

    def lines(self) -> list[str]:
        """One line per change, versions first, then each package kind: `pypi: boto3 1.34.1 -> 1.35.0`."""
        return [f"{change.kind}: {change}" for change in (*self.versions, *self.changed, *self.added, *self.removed)]


def diff(old: Inventory, new: Inventory) -> InventoryDiff:
    """The changes from `old` to `new`. A package is its kind, group, name and arch; its versions are all the
    versions installed under that identity (npm trees often hold several), so a change lists them all."""
    before, after = _versions(old.packages), _versions(new.packages)
    archs = Counter(key[:3] for key in before.keys() | after.keys())

    def name(key: tuple[str, str, str, str]) -> str:  # an rpm's arch only where the name has several
        _, group, base, arch = key
        base = f"{group}:{base}" if group else base
        return f"{base}.{arch}" if arch and archs[key[:3]] > 1 else base

    added = tuple(Change(key[0], name(key), "", after[key]) for key in sorted(after.keys() - before.keys()))
    removed = tuple(Change(key[0], name(key), before[key], "") for key in sorted(before.keys() - after.keys()))
    changed = tuple(
        Change(key[0], name(key), before[key], after[key])
        for key in sorted(before.keys() & after.keys())
        if before[key] != after[key]
    )
    names = sorted(old.versions.keys() | new.versions.keys())
    versions = tuple(
        Change("version", name, old.versions.get(name, ""), new.versions.get(name, ""))
        for name in names
        if old.versions.get(name) != new.versions.get(name)
    )
    return InventoryDiff(added, removed, changed, versions)


def _versions(packages: tuple[Package, ...]) -> dict[tuple[str, str, str, str], str]:
    found: dict[tuple[str, str, str, str], set[str]] = {}
    for package in packages:
        found.setdefault(package.key, set()).add(package.full_version)
    return {key: ", ".join(sorted(versions)) for key, versions in found.items()}


def package_versions(inventory: Inventory) -> dict[str, str] | None:
    """name -> version of the packages of the image's rpm sqlite database, else of its dpkg status; None if neither.

    How CHANGES.md lists packages when a snapshot has no SBOM of its own, sorted by name: an rpm found in several
    architectures is `name.arch`, with rpm's `[epoch:]version-release`; a deb found again in another architecture
    (not `all`) is `name:arch`.
    """
    rpms = [p for p in inventory.packages if p.kind == "rpm" and p.path == RPM_SQLITE]
    if rpms:
        archs = Counter(p.name for p in rpms)
        named = {f"{p.name}.{p.arch}" if archs[p.name] > 1 else p.name: p.full_version for p in rpms}
        return dict(sorted(named.items()))
    debs = [p for p in inventory.packages if p.kind == "deb" and p.path == dpkg.STATUS]
    if not debs:
        return None
    result: dict[str, str] = {}
    for package in debs:
        name = package.name
        if package.arch not in ("all", ""):
            name = f"{name}:{package.arch}" if name in result else name
        result[name] = package.version
    return dict(sorted(result.items()))
