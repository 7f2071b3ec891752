"""What the engine made of each snapshot: the diff_ids of a runtime's `<rt>:local` builds, by upstream manifest.

`ADD` re-tars every layer, so a Dockerfile build's diff_ids are not upstream's, and an image built `FROM <rt>:local`
shares no layer id with the snapshot it came from. The build records them in `<out>/.state/<rt>/local-builds.json`
(`{manifest digest: [diff_id, ...]}`, the last `KEEP` builds) so that `check_base` can name that snapshot too.
"""

from __future__ import annotations

import json
from pathlib import Path

from lambdaimages import layout
from lambdaimages.tools.files import write_if_changed

KEEP = 8  # builds remembered per runtime: the current snapshot's and a few before it


def read(out: Path, runtime: str) -> dict[str, tuple[str, ...]]:
    """manifest digest -> diff_ids of the `<rt>:local` built from it, oldest first; empty when none is recorded."""
    try:
        data = json.loads(layout.builds_path(out, runtime).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        digest: tuple(ids)
        for digest, ids in data.items()
        if isinstance(ids, list) and all(isinstance(i, str) for i in ids)
    }


def record(out: Path, runtime: str, manifest_digest: str, diff_ids: tuple[str, ...]) -> bool:
    """Remember the diff_ids of the build of `manifest_digest` (the newest last); True when the file changed."""
    found = read(out, runtime)
    found.pop(manifest_digest, None)
    found[manifest_digest] = tuple(diff_ids)
    kept = dict(list(found.items())[-KEEP:])
    text = json.dumps({digest: list(ids) for digest, ids in kept.items()}, indent=2) + "\n"
    return write_if_changed(layout.builds_path(out, runtime), text.encode())


def of_manifest(found: dict[str, tuple[str, ...]], manifest_digest: str) -> tuple[tuple[str, ...], ...]:
    """The recorded builds (`read`'s) of one upstream manifest: its diff_ids, or none."""
    return (found[manifest_digest],) if manifest_digest in found else ()


def recorded(out: Path, runtime: str, manifest_digest: str) -> bool:
    return manifest_digest in read(out, runtime)
