"""The architecture table: the catalog's names, their OCI platforms and the other names engines and kernels use."""

from __future__ import annotations

import platform as _platform
from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    name: str  # as the catalog, the output folders and Lambda name it
    oci: str  # the OCI platform's architecture (image configs, index entries, `docker --platform linux/<oci>`)
    aliases: tuple[str, ...] = ()  # other names for it (`uname -m`, Go's GOARCH)

    @property
    def platform(self) -> str:
        return f"linux/{self.oci}"


ARCHITECTURES = (
    Architecture("x86_64", "amd64"),
    Architecture("arm64", "arm64", ("aarch64",)),
)
NAMES = tuple(arch.name for arch in ARCHITECTURES)
_BY_ANY_NAME = {alias: arch for arch in ARCHITECTURES for alias in (arch.name, arch.oci, *arch.aliases)}
KNOWN_NAMES = tuple(_BY_ANY_NAME)


def lookup(name: str) -> Architecture | None:
    """The architecture any of its names (x86_64, amd64, arm64, aarch64) stands for, or None."""
    return _BY_ANY_NAME.get(name)


def get(name: str) -> Architecture:
    """The catalog architecture `name` (KeyError for another)."""
    found = lookup(name)
    if found is None or found.name != name:
        raise KeyError(name)
    return found


def catalog_name(name: str) -> str:
    """The catalog's name for any name of an architecture; an unknown name as it is."""
    found = lookup(name)
    return found.name if found else name


def host() -> str:
    """This machine's architecture by the catalog's name (`uname -m`), which a local engine shares."""
    return catalog_name(_platform.machine())
