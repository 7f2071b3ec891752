"""The identity of a runtime's snapshot files, as the up-to-date checks of export, build and verify compare it.

Build and verify trust the files they read, so their identity is content: the sha256 of every byte, read each
time (compressed tarballs hash at ~1.7 GB/s here, on every core), never a size, mtime or inode, which
`touch -r` and an in-place edit keep. Export only rewrites what it made, so a cheap stat identity does for it.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.tools.dockerfile import add_instructions

CHUNK = 1 << 20
_HASHERS = max(1, min(4, os.cpu_count() or 1))  # hashlib releases the GIL: files hash in parallel


def files(paths: list[Path]) -> list:
    """Cheap identity of files (no hashing): a changed, replaced or missing file changes it; an in-place edit
    with its mtime put back does not (export's check only, see the module docstring)."""
    result = []
    for path in paths:
        try:
            st = os.stat(path)
            result.append([str(path), st.st_size, st.st_mtime_ns, st.st_ino])
        except FileNotFoundError:
            result.append([str(path), None])
    return result


def contents(paths: list[Path]) -> list:
    """The identity of files by content: `[path, sha256 hex]` each, `[path, None]` for a file not there."""
    with ThreadPoolExecutor(_HASHERS) as pool:
        return [[str(path), digest] for path, digest in zip(paths, pool.map(_sha256_or_none, paths), strict=True)]


def _sha256_or_none(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


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
    """What a build reads, by content: its Dockerfile and the tarballs that Dockerfile ADDs."""
    text = (context / dockerfile).read_bytes()
    tarballs = [context / add.source for add in add_instructions(text.decode())]
    return {"dockerfile": hashlib.sha256(text).hexdigest(), "tarballs": contents(tarballs)}


def snapshot_digest(out: Path, runtime: Runtime) -> str:
    """One digest of the whole snapshot's content: state files, every tarball and document present in its
    folders, the Dockerfiles and .dockerignore. Any byte changed anywhere changes it."""
    view = SnapshotView(out, runtime)
    paths = _present(view.folder, _is_document)
    for arch in runtime.architectures:
        folder = view.arch_folder(arch)
        paths += [view.state_path(arch), *_present(folder, _is_tarball), *_present(folder, _is_document)]
    paths += [*view.dockerfiles(), view.dockerignore]
    return hashlib.sha256(json.dumps(contents(paths)).encode()).hexdigest()


def _is_tarball(path: Path) -> bool:
    return layout.split_tarball_name(path.name) is not None


def _is_document(path: Path) -> bool:
    return layout.split_document_name(path.name) is not None


def _present(folder: Path, wanted) -> list[Path]:
    """The files of `folder` that `wanted` accepts, sorted; [] when there is no folder."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and wanted(p)) if folder.is_dir() else []
