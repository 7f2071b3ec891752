"""What a user sees of real runs: `doit demo` in plain mode and on a pseudo-terminal, a failed build, Ctrl-C."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import uuid

import pytest
from doit_cli import run_doit
from terminal import HIDE, SHOW, clean_env, run_on_terminal

from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import ROOT, doit_command, samples

DEMO_TASKS = ("resolve", "export", "render", "inventory", "build", "verify")


def _demo(out) -> list[str]:
    return [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "demo", f"demo_out={out}"]


def test_demo_plain_output_line_by_line(tmp_path):
    run = subprocess.run(_demo(tmp_path / "demo"), capture_output=True, text=True, cwd=ROOT, env=clean_env(),
                         timeout=600)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "\x1b" not in run.stdout
    assert not [line for line in lines if "Step " in line or "--->" in line]  # the builder's lines: in the logs
    started = sorted(line.split()[1] for line in lines if line.startswith("start  "))
    ended = sorted(line.split()[1] for line in lines if line.startswith("done   "))
    assert started == ended
    for task in DEMO_TASKS:
        assert {f"{task}:demo.python", f"{task}:demo.nodejs", f"{task}:demo.provided"} <= set(started), task
    assert len([line for line in lines if re.match(r"runtime +arch +tarballs +identity", line)]) == 1
    assert len([line for line in lines if line.startswith("tasks: ")]) == 1
    assert len([line for line in lines if line.startswith("verify: 3 runtimes: 3 passed")]) == 1
    assert "inventoried 5 images" in run.stdout
    assert (tmp_path / "demo" / ".logs" / "build:demo.python.log").read_text().count("Step ") >= 10
    assert len(lines) < 80, run.stdout


def test_demo_on_a_terminal_collapses_finished_tasks_and_ends_with_the_summary(tmp_path):
    data, screen, status = run_on_terminal(_demo(tmp_path / "demo"), ROOT, cols=140, rows=120, timeout=600)
    assert status == 0, screen
    assert "✔ export:demo.python  done" in screen and "✔ verify:demo.provided  done" in screen, screen
    assert "Step " not in screen and "--->" not in screen
    assert len(re.findall(r"^runtime +arch +tarballs +identity", screen, re.M)) == 1
    assert len(re.findall(r"^tasks: ", screen, re.M)) == 1
    assert data.rfind(SHOW) > data.rfind(HIDE) > -1


@pytest.fixture
def sample(registry, tmp_path):
    name = f"r{uuid.uuid4().hex[:6]}.broken"
    images = {"x86_64": samples.lambda_like_image(name, "x86_64")}
    samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", images)
    catalog = tmp_path / "runtimes.yaml"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64]\nruntimes:\n  {name}:\n"
        f"    image: lambda/{name}:1\n"
    )
    yield name, catalog, tmp_path / "out"
    for tag in (f"{name}:local", f"{name}:x86_64"):
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def test_a_failed_build_shows_its_error_the_last_lines_of_its_log_and_the_log_path(sample):
    name, catalog, out = sample
    run_doit(catalog, out, f"build:{name}")
    dockerfile = out / name / f"Dockerfile.{name}"
    dockerfile.write_text(dockerfile.read_text() + "RUN /bin/false\n")  # a user's edit: the build breaks
    run = run_doit(catalog, out, f"build:{name}", check=False)
    assert run.returncode != 0
    lines = run.stdout.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith(f"FAILED build:{name}: "))
    assert "returned a non-zero code: 1" in lines[failed]
    log = out / ".logs" / f"build:{name}.log"
    tail = [line for line in lines[failed + 1 :] if line.startswith("    ")]
    assert tail[-1] == f"    log: {log}"
    assert any("RUN /bin/false" in line for line in tail[:-1])
    assert "RUN /bin/false" in log.read_text()
    assert not [line for line in lines[:failed] if "Step " in line]


def test_ctrl_c_during_export_restores_the_terminal_and_leaves_no_temp_files(registry, tmp_path):
    name = f"r{uuid.uuid4().hex[:6]}.big"
    big = samples.lambda_like_image(name, "x86_64", extra_files={"/var/lang/big.bin": _noise(24 << 20)})
    samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", {"x86_64": big})
    catalog, out = tmp_path / "runtimes.yaml", tmp_path / "out"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64]\nruntimes:\n  {name}:\n"
        f"    image: lambda/{name}:1\n"
    )
    cmd = doit_command(catalog, out, f"snapshot:{name}")
    data, screen, _ = run_on_terminal(cmd, ROOT, cols=240, interrupt_on=b": compress", timeout=300)
    assert b": compress" in data, screen  # it was interrupted while the big layer compressed
    assert "tasks: 4 done" not in screen
    assert data.rfind(SHOW) > data.rfind(HIDE) > -1
    assert "━" not in screen  # no live row left on the screen
    assert [str(p) for p in out.rglob("*") if p.name.startswith(".tmp-")] == []
    for tag in (f"{name}:local", f"{name}:x86_64"):
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


def _noise(size: int) -> bytes:
    """Bytes that xz compresses slowly and little (a few seconds of compression for 24 MB)."""
    rng = random.Random(7)
    words = [bytes(rng.getrandbits(8) for _ in range(rng.randint(3, 12))) for _ in range(4096)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words)
    return bytes(out[:size])
