"""An image's inventory, merged from its layers' facts in layer order, whiteouts honored."""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lambdaimages.inventory import dotnet
from lambdaimages.inventory.facts import Entry, LayerFacts, Package
from lambdaimages.inventory.tarscan import RPM_DATABASES
from lambdaimages.inventory.versions import OS_RELEASE, os_release_fields, runtime_versions
from lambdaimages.tools.layers import apply_layer, resolve

# Which rpm database counts when an image has several: sqlite before Berkeley DB, /var/lib/rpm first.
RPM_PREFERENCE = (
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
    "var/lib/rpm/Packages",
    "usr/lib/sysimage/rpm/Packages",
)
TOP_DEPTH = 2  # "files no rpm owns" are counted per directory of this many components ("/var/runtime")


@dataclass(frozen=True)
class DirCount:
    """Files (every non-directory entry) and bytes of file content in one directory and below."""

    files: int = 0
    bytes: int = 0


@dataclass(frozen=True)
class Inventory:
    """What an image holds: packages of every kind, OS release and runtime versions, what no rpm owns, notes.

    `unowned` is None when the image has no rpm database; else the files rpm does not list, per top directory.
    """

    packages: tuple[Package, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    os_release: dict[str, str] = field(default_factory=dict)
    unowned: dict[str, DirCount] | None = None
    files: int = 0
    bytes: int = 0
    notes: tuple[str, ...] = ()

    def of_kind(self, kind: str) -> list[Package]:
        """The packages of one kind (rpm, deb, pypi, npm, gem, maven)."""
        return [p for p in self.packages if p.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """The inventory as JSON-ready data."""
        data = dataclasses.asdict(self)
        data["packages"] = [p.to_dict() for p in self.packages]
        if self.unowned is not None:
            data["unowned"] = {top: [count.files, count.bytes] for top, count in self.unowned.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inventory:
        """An inventory from `to_dict` data.

        Raises:
            ValueError: the data is not an inventory.
        """
        try:
            unowned = data.get("unowned")
            return cls(
                packages=tuple(Package(**p) for p in data["packages"]),
                versions=dict(data["versions"]),
                os_release=dict(data["os_release"]),
                unowned=None if unowned is None else {top: DirCount(*count) for top, count in unowned.items()},
                files=data["files"],
                bytes=data["bytes"],
                notes=tuple(data["notes"]),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError(f"malformed inventory: {error!r}") from error


class _Merged:
    """The image's view so far: entries, and what was read from files (by file path) that are still visible."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.packages: dict[str, list[Package]] = {}
        self.owned: dict[str, dict[str, list[str]]] = {}
        self.texts: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}

    def apply(self, layer: LayerFacts) -> None:
        # What was read from a file goes with it: deleted or replaced by a later layer, it is no longer counted.
        found = (self.packages, self.owned, self.texts, self.notes)
        apply_layer(self.entries, layer.entries, layer.whiteouts, layer.opaques, _is_dir, attached=found)
        self.packages.update(layer.packages)
        self.owned.update(layer.owned)
        self.texts.update(layer.texts)
        self.notes.update((path, notes) for path, notes in layer.notes.items() if path)

    def resolve(self, path: str) -> str:
        """`path` with every symlink followed through the image, as `tools.layers.resolve` means it."""
        return resolve(self.entries, path, _symlink)

    def text(self, path: str) -> str | None:
        return self.texts.get(self.resolve(path))


def _is_dir(entry: Entry) -> bool:
    return entry.kind == "dir"


def _symlink(entry: Entry) -> str | None:
    return entry.link if entry.kind == "symlink" else None


def merge(layers: Iterable[LayerFacts]) -> Inventory:
    """The inventory of an image from the facts of its layers, lowest first.

    A later layer's file replaces an earlier one's (a later rpm database replaces the earlier list), a
    whiteout deletes a path and what was read from it. Of several rpm databases the first of
    `RPM_PREFERENCE` counts; its file lists give `unowned`.
    """
    merged = _Merged()
    layer_notes: list[str] = []
    for index, layer in enumerate(layers):
        merged.apply(layer)
        layer_notes += [f"layer {layer.name or index + 1}: {note}" for note in layer.notes.get("", ())]
    databases = [path for path in RPM_PREFERENCE if path in merged.packages or path in merged.owned]
    notes = [*layer_notes]
    for path in databases[1:]:
        notes.append(f"/{path}: another rpm database than /{databases[0]}, not counted")
    packages = [
        package
        for path, found in merged.packages.items()
        if path not in RPM_DATABASES or (databases and path == databases[0])
        for package in found
    ]
    packages += dotnet.shared_frameworks(merged.entries)  # directories, not files: found in the merged view
    notes += [f"/{path}: {note}" for path, found in sorted(merged.notes.items()) for note in found]
    os_release = next(filter(None, map(merged.text, OS_RELEASE)), None)
    files = [(path, entry) for path, entry in merged.entries.items() if entry.kind != "dir"]
    return Inventory(
        packages=tuple(sorted(packages, key=_order)),
        versions=runtime_versions(sorted(merged.entries, key=lambda path: path.split("/")), merged.text),
        os_release=os_release_fields(os_release) if os_release else {},
        unowned=_unowned(merged, files, merged.owned.get(databases[0], {})) if databases else None,
        files=len(files),
        bytes=sum(entry.size for _, entry in files),
        notes=tuple(sorted(notes)),
    )


def _order(package: Package) -> tuple:
    return (package.kind, package.group, package.name, package.arch, package.version, package.path)


def _unowned(merged: _Merged, files: list[tuple[str, Entry]], owned: dict[str, list[str]]) -> dict[str, DirCount]:
    # rpm names paths as the package was built (/lib64/x); the image may hold them under a symlinked directory
    # (lib64 -> usr/lib64): a package's directory is resolved through the image once.
    paths = set()
    for directory, bases in owned.items():
        real = merged.resolve(directory) if directory else ""
        paths.update(posixpath.join(real, base) if real else base for base in bases)
    counts: dict[str, list[int]] = {}
    for path, entry in files:
        if path not in paths:
            top = "/" + "/".join(path.split("/")[:-1][:TOP_DEPTH])
            row = counts.setdefault(top, [0, 0])
            row[0] += 1
            row[1] += entry.size
    return {top: DirCount(*counts[top]) for top in sorted(counts)}
