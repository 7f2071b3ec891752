"""The identity of a runtime's snapshot files, as the up-to-date checks of export, build and verify compare it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.snapshot.view import SnapshotView
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


def exported_files(out: Path, runtime: Runtime) -> list[Path]:
    """What export writes for the state files: per architecture the tarballs in layer order, then upstream's
    documents; [] while a state is missing."""
    snapshot = SnapshotView(out, runtime)
    try:
        states = snapshot.states()
    except (FileNotFoundError, ValueError):
        return []
    paths = [path for state in states.values() for path in snapshot.tarballs(state)]
    for state in states.values():
        paths += snapshot.documents(state)
    return paths


def build_context(context: Path, dockerfile: str) -> dict:
    """What a build reads: its Dockerfile's bytes (hashed) and the tarballs that Dockerfile ADDs."""
    text = (context / dockerfile).read_bytes()
    tarballs = [context / add.source for add in add_instructions(text.decode())]
    return {"dockerfile": hashlib.sha256(text).hexdigest(), "tarballs": files(tarballs)}


def snapshot_digest(out: Path, runtime: Runtime) -> str:
    """One digest of the whole snapshot: state files, Dockerfiles and every tarball present in its folders."""
    view = SnapshotView(out, runtime)
    snapshot = hashlib.sha256()
    dockerfiles = [view.dockerfile()]
    snapshot.update(json.dumps(files(_present(view.folder, _is_document))).encode())
    for arch in runtime.architectures:
        dockerfiles.append(view.dockerfile(arch))
        snapshot.update(_digest_or_missing(view.state_path(arch)))
        folder = view.arch_folder(arch)
        snapshot.update(json.dumps(files(_present(folder, _is_tarball) + _present(folder, _is_document))).encode())
    for path in dockerfiles:
        snapshot.update(_digest_or_missing(path))
    return snapshot.hexdigest()


def _digest_or_missing(path: Path) -> bytes:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return b"missing"


def _is_tarball(path: Path) -> bool:
    return layout.split_tarball_name(path.name) is not None


def _is_document(path: Path) -> bool:
    return layout.split_document_name(path.name) is not None


def _present(folder: Path, wanted) -> list[Path]:
    """The files of `folder` that `wanted` accepts, sorted; [] when there is no folder."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and wanted(p)) if folder.is_dir() else []
