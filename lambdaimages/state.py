"""The resolved upstream state of one runtime and architecture: the typed model, and its files on disk.

`<out>/.state/<rt>/<arch>.json` is the interface between resolve and everything after it. It is rewritten
only when upstream moved (so doit's file dependencies rerun only then), and the state it replaced is kept
beside it as `<arch>.previous.json`, the last snapshot `doit changes` compares with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lambdaimages import layout
from lambdaimages.digest import Digest
from lambdaimages.tools.files import write_if_changed


@dataclass(frozen=True)
class Layer:
    """One layer as upstream's manifest and config describe it."""

    digest: str  # of the blob in the registry (compressed)
    media_type: str
    size: int  # of the blob
    diff_id: str  # sha256 of the uncompressed layer tar, from the config

    @property
    def hex(self) -> str:
        """The diff_id's hex digits: the name of the layer's tarball."""
        return Digest(self.diff_id).hex

    def tarball(self, extension: str) -> str:
        """The name of the layer's tarball."""
        return layout.tarball_name(self.diff_id, extension)

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "media_type": self.media_type, "size": self.size, "diff_id": self.diff_id}


@dataclass(frozen=True)
class State:
    """What a tag resolved to for one architecture: digests, upstream's whole config, the layers in order."""

    runtime: str
    architecture: str
    reference: str  # registry/repository:tag as the catalog names it
    repository: str
    index_digest: str | None
    manifest_digest: str
    config_digest: str
    config: dict[str, Any]  # upstream's image config, as parsed from its bytes
    layers: tuple[Layer, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        """The state a state file holds; KeyError or TypeError when it is not one."""
        layers = tuple(Layer(**layer) for layer in data["layers"])
        fields = {name: data[name] for name in cls.__dataclass_fields__ if name != "layers"}
        return cls(**fields, layers=layers)

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "layers"}
        return {**data, "layers": [layer.to_json() for layer in self.layers]}

    def file_bytes(self) -> bytes:
        """The state file's bytes: sorted keys, so equal states give equal files."""
        return (json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def read(out: Path, runtime: str, arch: str) -> State:
    """The current state.

    Raises:
        FileNotFoundError: not resolved yet.
        ValueError: the file is not a state file.
    """
    return _read(layout.state_path(out, runtime, arch))


def read_previous(out: Path, runtime: str, arch: str) -> State | None:
    """The state before upstream last moved, or None when it never moved (or the file is unreadable)."""
    try:
        return _read(layout.previous_state_path(out, runtime, arch))
    except (FileNotFoundError, ValueError):
        return None


def read_or_none(out: Path, runtime: str, arch: str) -> State | None:
    """The current state, or None when there is none (or it is unreadable)."""
    try:
        return read(out, runtime, arch)
    except (FileNotFoundError, ValueError):
        return None


def write(out: Path, state: State) -> bool:
    """Store the state; the file is rewritten only when upstream moved, so dependants rerun only then.

    Returns True when the file changed. The state it replaces is kept as the previous one.
    """
    data = state.file_bytes()
    path = layout.state_path(out, state.runtime, state.architecture)
    try:
        old = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None and old != data:
        # The snapshot being replaced stays as the previous one, for `doit changes` (its tarballs stay in the cache).
        write_if_changed(layout.previous_state_path(out, state.runtime, state.architecture), old)
    return write_if_changed(path, data)


def _read(path: Path) -> State:
    try:
        return State.from_json(json.loads(path.read_text()))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a state file ({exc})") from exc
