"""Run the project's doit CLI the way a user does, in a child process."""

import json
import subprocess
from pathlib import Path

from lambdaimages.testbed import ROOT, doit_command


def run_doit(catalog: Path, out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = doit_command(catalog, out, *args)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"doit {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def smoke_catalog(
    registry_url: str,
    names: dict[str, str],
    event: dict,
    architectures: tuple[str, ...] = ("x86_64", "arm64"),
    extra: str = "",
) -> str:
    """A catalog of the sample images `lambda/<name>:1`, each with its compression and a smoke test echoing `event`."""
    defaults = f"defaults:\n  registry: {registry_url}\n  architectures: [{', '.join(architectures)}]"
    lines = [defaults, extra, "runtimes:"]
    for name, compression in names.items():
        expect = {"echo": event, "runtime": name, "version": "1"}
        lines += [
            f"  {name}:",
            f"    image: lambda/{name}:1",
            f"    compression: {compression}",
            "    smoke:",
            "      handler: function.handler",
            f"      event: {json.dumps(event)}",
            f"      expect: {json.dumps(expect)}",
            "      timeout: 60",
        ]
    return "\n".join(line for line in lines if line) + "\n"
