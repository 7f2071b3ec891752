"""The test bed, never imported by the product: local registry, sample images, the demo, the benchmark."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the project checkout: dodo.py, runtimes.yaml, templates/


def doit_command(catalog: Path, out: Path, *tasks: str) -> list[str]:
    """The project's doit run as a user types it (`doit catalog=... out=... TASKS`), in a child process."""
    return [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), f"catalog={catalog}", f"out={out}", *tasks]
