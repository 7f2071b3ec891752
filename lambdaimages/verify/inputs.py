"""What a verification depends on: when it changes, `doit verify` reruns."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from lambdaimages import engine, layout
from lambdaimages.catalog import Runtime, Smoke
from lambdaimages.image import plan
from lambdaimages.snapshot import fingerprint

VERSION = 2  # part of every verification's inputs: a change of what the checks prove reruns them all


def gather(out: Path, runtime: Runtime) -> dict:
    """Everything a verification of `runtime` reads, condensed: when it changes, the verification reruns.

    The image id of `<rt>:local` (if the engine builds one of its architectures) and of every `<rt>:<arch>`,
    the snapshot (state files, documents, Dockerfiles, the identity of every tarball), the smoke test and its files.
    """
    image_id = plan.built_image_id(runtime)
    loaded = {arch: engine.image_id(layout.loaded_tag(runtime.name, arch)) for arch in runtime.architectures}
    return {
        "version": VERSION,
        "image_id": image_id,
        "loaded": loaded,
        "snapshot": fingerprint.snapshot_digest(out, runtime),
        "smoke": _smoke_fingerprint(runtime.smoke),
    }


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
