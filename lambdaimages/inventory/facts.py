"""What one layer tar holds for an inventory (paths, whiteouts, packages, version files, notes), as plain JSON data."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lambdaimages.tools.files import atomic_file

FORMAT = 1  # of the JSON file; a cached file of another format is read again from the layer


@dataclass(frozen=True, slots=True)
class Package:
    """One package found in an image.

    `kind` is the ecosystem: rpm, deb, pypi, npm, gem or maven. `version` is the upstream version (an rpm's
    epoch and release are apart; a deb's version is whole, as dpkg writes it). `path` is the file it was read
    from, in the image without a leading slash: the rpm database, the METADATA, the package.json, the jar.
    """

    kind: str
    name: str
    version: str
    path: str
    epoch: int | None = None
    release: str = ""
    arch: str = ""
    license: str = ""
    source: str = ""  # the source package: an rpm's SOURCERPM, a deb's Source
    group: str = ""  # a maven groupId

    @property
    def full_version(self) -> str:
        """The version as its package manager prints it: rpm `[epoch:]version-release`, else `version`."""
        if self.kind != "rpm":
            return self.version
        evr = f"{self.version}-{self.release}" if self.release else self.version
        return f"{self.epoch}:{evr}" if self.epoch is not None else evr

    @property
    def key(self) -> tuple[str, str, str, str]:
        """What identifies the package across two images, whatever its version: kind, group, name, arch."""
        return (self.kind, self.group, self.name, self.arch)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from their defaults."""
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) != f.default}


class Entry(NamedTuple):
    """One path of a layer: kind (file, dir, symlink, hardlink, other), content size, link target."""

    kind: str
    size: int = 0
    link: str = ""


Found = tuple[list[Package], list[str]]  # what a file reader gives: packages, notes


def json_object(data: bytes) -> tuple[dict | None, list[str]]:
    """A JSON file's top-level object, or None and the note an inventory records for a file that is not one."""
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        return None, [f"not JSON: {error}"]
    if not isinstance(document, dict):
        return None, ["not a JSON object"]
    return document, []


@dataclass
class LayerFacts:
    """What an inventory needs of one layer, so that an image's inventory is merged without reading tars again.

    `packages`, `owned` (an rpm database's files, dir -> basenames), `texts` (version files) and `notes` are keyed
    by the path of the file they were read from, so that a later layer replacing or deleting that file drops them.
    A note keyed "" is about the layer tar itself.
    """

    name: str = ""
    entries: dict[str, Entry] = field(default_factory=dict)
    whiteouts: list[str] = field(default_factory=list)  # paths deleted from lower layers, with what is below
    opaques: list[str] = field(default_factory=list)  # directories whose lower content is hidden
    packages: dict[str, list[Package]] = field(default_factory=dict)
    owned: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)
    size: int = 0  # bytes of tar read

    def note(self, path: str, message: str) -> None:
        """Record that something of `path` ("" for the tar itself) could not be read."""
        self.notes.setdefault(path, []).append(message)

    def to_dict(self) -> dict[str, Any]:
        """The facts as JSON-ready data."""
        return {
            "format": FORMAT,
            "name": self.name,
            "size": self.size,
            "entries": {path: list(entry) for path, entry in self.entries.items()},
            "whiteouts": self.whiteouts,
            "opaques": self.opaques,
            "packages": {path: [p.to_dict() for p in found] for path, found in self.packages.items()},
            "owned": self.owned,
            "texts": self.texts,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerFacts:
        """Facts from `to_dict` data.

        Raises:
            ValueError: the data is of another format, or not facts at all.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not layer facts of format {FORMAT}")
        try:
            return cls(
                name=data["name"],
                size=data["size"],
                entries={path: Entry(*entry) for path, entry in data["entries"].items()},
                whiteouts=list(data["whiteouts"]),
                opaques=list(data["opaques"]),
                packages={path: [Package(**p) for p in found] for path, found in data["packages"].items()},
                owned=data["owned"],
                texts=data["texts"],
                notes=data["notes"],
            )
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"malformed layer facts: {error!r}") from error

    def save(self, path: Path) -> None:
        """Write the facts as JSON, atomically."""
        with atomic_file(path) as out:
            out.write(
                json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")
            )

    @classmethod
    def load(cls, path: Path) -> LayerFacts:
        """Facts written by `save`.

        Raises:
            ValueError: the file is not facts of this format (read the layer again).
            OSError: the file cannot be read.
        """
        try:
            data = json.loads(Path(path).read_bytes().decode("utf-8", "surrogateescape"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not JSON: {error}") from error
        return cls.from_dict(data)
