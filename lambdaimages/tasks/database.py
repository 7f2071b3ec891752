"""doit's dependency file, saved atomically."""

from __future__ import annotations

import sys
from pathlib import Path

from doit.dependency import JsonDB

from lambdaimages.errors import OutputError
from lambdaimages.tools.files import atomic_file


def atomic_doit_db() -> None:
    """Make doit save its JSON dependency file atomically (temp file, fsync, rename).

    doit 0.37 rewrites `.doit.json` in place at the end of a run, so a full disk or a kill at that
    moment leaves it empty, and every later run stops on it until someone deletes it. Saved this
    way, a failed save keeps the previous file and says so in one line; the next run then rechecks
    the tasks this one could not record (all outputs are on disk already).
    """

    def dump(db: JsonDB) -> None:
        try:
            with atomic_file(Path(db.name)) as f:
                f.write(db.codec.encode(db._db).encode())
        except (OutputError, OSError) as exc:
            reason = exc if isinstance(exc, OutputError) else f"cannot write {db.name}: {exc.strerror}"
            sys.stderr.write(f"warning: doit's record of this run is not saved ({reason}); the next run rechecks\n")

    JsonDB.dump = dump
