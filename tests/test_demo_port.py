"""A second `doit demo` right after the first keeps the demo registry's port and rewrites nothing (issue 21, item 2)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from terminal import clean_env

from lambdaimages.testbed import ROOT, demo


def test_port_in_time_wait_is_free_to_the_demo():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
    server.close()
    client.close()
    assert demo._port_free(port)


def test_port_in_use_is_not_free():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        assert not demo._port_free(held.getsockname()[1])


def _files(out: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime, size) of every file below out except the logs and doit's database (the lock included)."""
    found = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if path.is_file() and rel.parts[0] != ".logs" and not path.name.startswith(".doit.json"):
            stat = path.stat()
            found[str(rel)] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return found


def test_two_demos_back_to_back_the_second_rewrites_no_file(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "demo", f"demo_out={out}"]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=900)
    assert first.returncode == 0, first.stdout + first.stderr
    before = _files(out)
    assert ".lock" in before and "runtimes.yaml" in before
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=900)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "moved upstream" not in second.stdout, second.stdout
    assert "start  export:" not in second.stdout and "start  build:" not in second.stdout, second.stdout
    assert _files(out) == before
