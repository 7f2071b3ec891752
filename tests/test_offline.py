"""Every task that reads the snapshot works with upstream unreachable, from the state on disk (issue 21, item 1).

Through the real doit CLI: a runtime is snapshotted from its own local registry, which is then stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from doit_cli import run_doit

from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import ROOT, doit_command, samples
from lambdaimages.testbed.localregistry import LocalRegistry

ARCHS = ("x86_64", "arm64")
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"


def snapshot_files(out: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, mtime, size) of every file below out, the doit database, the lock and the logs aside."""
    result = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in (".doit.json", ".lock") and path.relative_to(out).parts[0] != ".logs":
            stat = path.stat()
            result[str(path.relative_to(out))] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return result


@pytest.fixture(scope="module")
def offline(tmp_path_factory, docker_client):
    """A snapshot of one runtime (two architectures) in `out`, made from a registry that is stopped afterwards."""
    tmp = tmp_path_factory.mktemp("offline")
    name = f"o{uuid.uuid4().hex[:6]}.a"
    upstream = LocalRegistry().start()
    try:
        images = {arch: samples.lambda_like_image(name, arch) for arch in ARCHS}
        samples.push_image(RegistryClient(upstream.url), f"lambda/{name}", "1", images)
        catalog = tmp / "runtimes.yaml"
        catalog.write_text(
            f"defaults:\n  registry: {upstream.url}\n  architectures: [x86_64, arm64]\n"
            f"runtimes:\n  {name}:\n    image: lambda/{name}:1\n"
        )
        out = tmp / "out"
        run_doit(catalog, out, f"snapshot:{name}")
    finally:
        upstream.stop()
    yield {"tmp": tmp, "name": name, "catalog": catalog, "out": out, "upstream": upstream.url}
    for tag in (f"{name}:local", *(f"{name}:{arch}" for arch in ARCHS)):
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:
            pass


def _not_polled(proc: subprocess.CompletedProcess, world: dict) -> None:
    """The run said in one line that upstream was not polled, and since when its snapshot is; no failure."""
    line = (
        rf"{re.escape(world['name'])}: upstream not polled: registry {re.escape(world['upstream'])} unreachable "
        rf"\(connection refused\); using the snapshot of {WHEN}"
    )
    assert len(re.findall(rf"^{line}$", proc.stdout, re.M)) == 1, proc.stdout
    assert re.search(r"^not polled 1 runtime$", proc.stdout, re.M), proc.stdout
    assert "FAILED" not in proc.stdout and "Traceback" not in proc.stdout + proc.stderr


def test_inventory_from_the_snapshot_with_upstream_stopped(offline):
    before = snapshot_files(offline["out"])
    proc = run_doit(offline["catalog"], offline["out"], "-a", f"inventory:{offline['name']}")
    assert proc.returncode == 0
    _not_polled(proc, offline)
    for arch in ARCHS:  # the inventory's summary is shown
        assert f"{offline['name']} {arch}: {offline['out'] / offline['name'] / arch / 'sbom.cdx.json'}" in proc.stdout
    assert snapshot_files(offline["out"]) == before  # nothing rewritten: the snapshot is the one on disk


def test_strict_fails_the_run_when_upstream_is_not_polled(offline):
    before = snapshot_files(offline["out"])
    proc = run_doit(offline["catalog"], offline["out"], "strict=1", f"inventory:{offline['name']}", check=False)
    assert proc.returncode != 0  # doit's 2: a task failed and others could not run
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED resolve:{offline['name']}: "), proc.stdout
    assert "unreachable (connection refused)" in failed[0]
    assert "strict=1: a run that cannot poll upstream fails" in proc.stdout
    assert "not polled" not in proc.stdout
    assert snapshot_files(offline["out"]) == before


def test_push_from_the_snapshot_with_upstream_stopped(offline, registry):
    target = f"{registry.host}/offline/{offline['name']}:1"
    proc = run_doit(offline["catalog"], offline["out"], f"push:{offline['name']}", f"to=http://{target}")
    _not_polled(proc, offline)
    assert re.search(rf"^{re.escape(offline['name'])}: pushed http://{re.escape(target)} ", proc.stdout, re.M)
    assert RegistryClient(registry.url).manifest_digest(f"offline/{offline['name']}", "1")


def test_publish_and_changes_from_the_snapshot_with_upstream_stopped(offline):
    bare = offline["tmp"] / "remote.git"
    home = offline["tmp"] / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    for task in ("publish", "changes"):
        cmd = doit_command(offline["catalog"], offline["out"], f"{task}:{offline['name']}", f"repo={bare}")
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        _not_polled(proc, offline)
    assert re.search(rf"pushed [0-9a-f]{{40}} to branch {re.escape(offline['name'])}", proc.stdout) or (
        "# Changes in" in proc.stdout
    )
    assert subprocess.run(["git", "--git-dir", str(bare), "rev-parse", f"refs/heads/{offline['name']}"]).returncode == 0


def test_build_from_the_snapshot_with_upstream_stopped(offline, docker_client):
    proc = run_doit(offline["catalog"], offline["out"], f"build:{offline['name']}")
    _not_polled(proc, offline)
    assert f"done   build:{offline['name']}" in proc.stdout
    for arch in ARCHS:
        assert docker_client.images.get(f"{offline['name']}:{arch}")
    assert docker_client.images.get(f"{offline['name']}:local")


def test_no_snapshot_on_disk_still_fails_naming_the_registry(offline, tmp_path):
    proc = run_doit(offline["catalog"], tmp_path / "out", f"inventory:{offline['name']}", check=False)
    assert proc.returncode != 0  # doit's 2: a task failed and others could not run
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "unreachable (connection refused)" in failed[0], proc.stdout
    assert f"No snapshot in {tmp_path / 'out'} to go on without {offline['upstream']}" in proc.stdout
    assert "catalog=build-demo/runtimes.yaml out=build-demo" in proc.stdout
    assert "not polled" not in proc.stdout
