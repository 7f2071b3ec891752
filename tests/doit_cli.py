"""Run the project's doit CLI the way a user does, in a child process."""

import subprocess
from pathlib import Path

from lambdaimages.testbed import ROOT, doit_command


def run_doit(catalog: Path, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = doit_command(catalog, out, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc
