"""The identity of a runtime's snapshot files, as the up-to-date checks of export, build and verify compare it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lambdaimages import layout
from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.tools.dockerfile import add_instructions


def files(paths: list[Path]) -> list:
    """Cheap identity of files (no hashing): a changed, replaced or missing file changes it."""
    result = []
    for path in paths:
        try:
            st = os.stat(path)
            result.append([str(path), st.st_size, st.st_mtime_ns, st.st_ino])
        except FileNotFoundError:
            result.append([str(path), None])
    return result


def named_tarballs(out: Path, runtime: Runtime) -> list[Path]:
    """The tarballs the state files name, architecture by architecture in layer order; [] while a state is missing."""
    paths = []
    for arch in runtime.architectures:
        try:
            state = states_on_disk.read(out, runtime.name, arch)
        except (FileNotFoundError, ValueError):
            return []
        folder = layout.arch_dir(out, runtime.name, arch)
        paths += [folder / layer.tarball(runtime.extension) for layer in state.layers]
    return paths


def build_context(context: Path, dockerfile: str) -> dict:
    """What a build reads: its Dockerfile's bytes (hashed) and the tarballs that Dockerfile ADDs."""
    text = (context / dockerfile).read_bytes()
    tarballs = [context / add.source for add in add_instructions(text.decode())]
    return {"dockerfile": hashlib.sha256(text).hexdigest(), "tarballs": files(tarballs)}


def snapshot_digest(out: Path, runtime: Runtime) -> str:
    """One digest of the whole snapshot: state files, Dockerfiles and every tarball present in its folders."""
    snapshot = hashlib.sha256()
    dockerfiles = [layout.dockerfile(out, runtime.name)]
    for arch in runtime.architectures:
        dockerfiles.append(layout.dockerfile(out, runtime.name, arch))
        snapshot.update(_digest_or_missing(layout.state_path(out, runtime.name, arch)))
        folder = layout.arch_dir(out, runtime.name, arch)
        tarballs = (
            sorted(p for p in folder.glob(layout.TARBALL_GLOB) if not p.name.startswith(".")) if folder.is_dir() else []
        )
        snapshot.update(json.dumps(files(tarballs)).encode())
    for path in dockerfiles:
        snapshot.update(_digest_or_missing(path))
    return snapshot.hexdigest()


def _digest_or_missing(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return b"missing"
