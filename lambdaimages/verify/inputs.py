"""What a verification depends on: when it changes, `doit verify` reruns."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from lambdaimages import engine, layout
from lambdaimages.catalog import Runtime, Smoke
from lambdaimages.errors import SnapshotMissing
from lambdaimages.image import plan
from lambdaimages.snapshot import fingerprint, render
from lambdaimages.snapshot.view import SnapshotView

VERSION = 3  # part of every verification's inputs: a change of what the checks prove reruns them all


def gather(out: Path, runtime: Runtime) -> dict:
    """Everything a verification of `runtime` reads, condensed: when it changes, the verification reruns.

    The image id of `<rt>:local` (if the engine builds one of its architectures) and of every `<rt>:<arch>`,
    the snapshot by content (the sha256 of its state files, tarballs, documents and Dockerfiles, so an in-place
    edit with the old mtime put back reruns it), the Dockerfile template the Dockerfiles are compared with, the
    smoke test and its files.
    """
    image_id = plan.built_image_id(runtime)
    loaded = {arch: engine.image_id(layout.loaded_tag(runtime.name, arch)) for arch in runtime.architectures}
    return {
        "version": VERSION,
        "image_id": image_id,
        "loaded": loaded,
        "snapshot": fingerprint.snapshot_digest(out, runtime),
        "template": hashlib.sha256((render.TEMPLATES / render.DOCKERFILE_TEMPLATE).read_bytes()).hexdigest(),
        "smoke": _smoke_fingerprint(runtime.smoke),
    }


def missing(out: Path, runtime: Runtime) -> SnapshotMissing | None:
    """Why there is no snapshot of `runtime` to verify, as one error for the runtime (not one per file), or None.

    No snapshot: an architecture has no state file (never resolved, or cleaned), or has one but not one of its
    tarballs (never exported). A snapshot that lacks only some files is there, and check 1 names each of them.
    """
    snapshot = SnapshotView(out, runtime)
    unresolved, unexported = [], []
    for arch in runtime.architectures:
        try:
            state = snapshot.state(arch)
        except FileNotFoundError:
            unresolved.append(arch)
        except (OSError, ValueError):
            continue  # there, but unreadable: check 1 says why
        else:
            if not any(path.is_file() for path in snapshot.tarballs(state)):
                unexported.append(arch)
    if unresolved:
        what = f"no state of {', '.join(unresolved)} in {snapshot.state_path(unresolved[0]).parent}"
    elif unexported:
        what = f"no tarball of {', '.join(unexported)} in {snapshot.folder}"
    else:
        return None
    name = runtime.name
    return SnapshotMissing(f"no snapshot ({what}): run doit build:{name} (or doit snapshot:{name})", runtime=name)


def _smoke_fingerprint(smoke: Smoke | None) -> str | None:
    if smoke is None:
        return None
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(smoke), sort_keys=True).encode())
    if smoke.files is not None:
        for path in sorted(Path(smoke.files).rglob("*")):
            if path.is_file():
                digest.update(f"{path.relative_to(smoke.files)} {path.stat().st_mode:o}".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
