"""Typed upstream states for tests, with placeholder digests for the fields a test does not look at."""

import json
import subprocess
import sys
from pathlib import Path

from lambdaimages.state import Layer, State


def make_state(layers: list[dict] | None = None, **fields) -> State:
    """A State; `layers` as dicts with digest, media_type, size and diff_id."""
    defaults = {
        "runtime": "python3.12",
        "architecture": "x86_64",
        "reference": "public.ecr.aws/lambda/python:3.12",
        "repository": "lambda/python",
        "index_digest": None,
        "manifest_digest": "sha256:" + "d" * 64,
        "config_digest": "sha256:" + "c" * 64,
        "config": {},
    }
    return State(**{**defaults, **fields}, layers=tuple(Layer(**layer) for layer in layers or []))


def export_peak_mb(registry_url: str, repository: str, state: State, out) -> float:
    """Export `state` (a gzip catalog) in a fresh process; its peak RSS in MB (VmHWM: ru_maxrss would include the
    forking parent's)."""
    script = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from lambdaimages.snapshot import export\n"
        "from lambdaimages.catalog import Runtime\n"
        "from lambdaimages.state import State\n"
        "from lambdaimages.registry.client import RegistryClient\n"
        "rt = Runtime('t', sys.argv[1], sys.argv[4], 'latest', ('x86_64',), compression='gzip')\n"
        "state = State.from_json(json.loads(sys.argv[2]))\n"
        "export.fetch(rt, {'x86_64': state}, Path(sys.argv[3]), RegistryClient(sys.argv[1]))\n"
        "print([line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:')][0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, registry_url, json.dumps(state.to_json()), str(out), repository],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        check=True,
    )
    return int(done.stdout.split()[-1]) / 1024
