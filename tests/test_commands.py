"""Read-only doit commands take no lock and write nothing; two spellings of `out` are one folder."""

import json
import os
import uuid

import pytest
from doit_cli import run_doit

from lambdaimages.registry.client import RegistryClient
from lambdaimages.tasks import commands
from lambdaimages.testbed import ROOT, samples
from lambdaimages.tools import files

EVENT = {"hello": "world"}


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["doit"], "run"),
        (["doit", "build:python3.12"], "run"),
        (["doit", "list"], "list"),
        (["doit", "-f", "dodo.py", "out=build-demo", "list", "--all"], "list"),
        (["doit", "catalog=x.yaml", "info", "build:python3.12"], "info"),
        (["doit", "--file", "dodo.py", "help", "list"], "help"),
        (["doit", "clean"], "clean"),
        (["doit", "run", "list"], "run"),  # the task named after a command
    ],
)
def test_the_command_is_read_as_doit_reads_it(argv, command):
    assert commands.command(argv) == command
    assert commands.read_only(argv) == (command in ("list", "info", "help"))


def test_list_info_and_help_write_nothing_in_a_new_output_folder(tmp_path):
    out = tmp_path / "out"
    for args, shown in (
        (["list", "--all"], "build:python3.12"),
        (["info", "build:python3.12"], "image_current(python3.12)"),
        (["help", "build"], "Build <rt>:local"),
        (["help"], "Commands"),
    ):
        proc = run_doit(ROOT / "runtimes.yaml", out, *args, check=False)
        assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # info: 1 when the task is not up to date
        assert shown in proc.stdout, proc.stdout
        assert not out.exists(), args  # no folder, no .lock, no doit database


def test_list_and_info_work_while_another_run_holds_the_output_folder(tmp_path):
    out = tmp_path / "out"
    lock = files.hold_output(out)  # as a running `doit build` holds it
    try:
        before = sorted(os.listdir(out))
        listing = run_doit(ROOT / "runtimes.yaml", out, "list")
        assert "build" in listing.stdout.split() and "in use by another doit run" not in listing.stderr
        info = run_doit(ROOT / "runtimes.yaml", out, "info", "build:python3.12", check=False)
        assert info.returncode == 1 and "image_current(python3.12)" in info.stdout, info.stdout + info.stderr
        refused = run_doit(ROOT / "runtimes.yaml", out, "render:python3.12", check=False)
        assert refused.returncode != 0 and "in use by another doit run" in refused.stdout + refused.stderr
        assert sorted(os.listdir(out)) == before
    finally:
        lock.close()


def test_two_spellings_of_out_are_one_folder(registry, docker_client, tmp_path):
    name = f"o{uuid.uuid4().hex[:6]}"
    by_arch = {"x86_64": samples.lambda_like_image(name, "x86_64")}
    samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", by_arch)
    catalog = tmp_path / "runtimes.yaml"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64]\nruntimes:\n  {name}:\n"
        f"    image: lambda/{name}:1\n    smoke:\n      handler: function.handler\n"
        f"      event: {json.dumps(EVENT)}\n"
        f"      expect: {json.dumps({'echo': EVENT, 'runtime': name, 'version': '1'})}\n      timeout: 60\n"
    )
    out = tmp_path / "out"
    relative = os.path.relpath(out, ROOT)  # run_doit runs in ROOT, as doit runs in the dodo's folder
    assert not os.path.isabs(relative)
    try:
        first = run_doit(catalog, relative, f"build:{name}", f"verify:{name}")
        assert f"start  build:{name}" in first.stdout and f"start  verify:{name}" in first.stdout
        report = out / ".reports" / "verify.json"
        written = report.stat().st_mtime_ns
        for spelling in (out, tmp_path / "." / "out", relative):
            again = run_doit(catalog, spelling, f"build:{name}", f"verify:{name}")
            started = [line for line in again.stdout.splitlines() if line.startswith("start  ")]
            assert started == [f"start  resolve:{name}"], again.stdout  # resolve polls upstream on every run
            assert report.stat().st_mtime_ns == written
        table = run_doit(catalog, out, "verify")  # the table of every runtime's last verification
        assert f"start  verify:{name}" not in table.stdout
        assert "verify: 1 runtimes: 1 passed, 0 failed, 0 not verified" in table.stdout, table.stdout
        assert not (ROOT / relative / ".." / "out" / "out").exists()
    finally:
        docker_client.images.remove(f"{name}:local", force=True)
        docker_client.images.remove(f"{name}:x86_64", force=True)


def test_a_listing_piped_into_head_ends_as_pipes_expect(tmp_path):
    """`doit list --all | head -1`: head gets its line, doit ends by SIGPIPE (141) with no traceback (issue 21)."""
    import shlex
    import subprocess
    import sys

    doit = shlex.join([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "list", "--all", f"out={tmp_path}"])
    script = f'{doit} 2>{tmp_path / "stderr"} | head -1; echo "doit=${{PIPESTATUS[0]}} head=${{PIPESTATUS[1]}}"'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "build", proc.stdout
    # The listing may fit in the pipe before head exits (then doit ends 0); never a traceback or doit's 3.
    assert lines[1] in ("doit=141 head=0", "doit=0 head=0")
    assert (tmp_path / "stderr").read_text() == ""
    # A reader that is gone before doit writes: the write meets the closed pipe, and doit ends by SIGPIPE.
    script = f'{doit} 2>{tmp_path / "stderr"} | {{ exec 0<&-; sleep 2; }}; echo "doit=${{PIPESTATUS[0]}}"'
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.stdout.splitlines() == ["doit=141"]
    assert (tmp_path / "stderr").read_text() == ""


def test_a_run_piped_into_head_finishes_its_work_quietly(registry, tmp_path):
    """`doit snapshot | head -1`: head gets its line; the run goes on to its end, no traceback, exit 0 (issue 21)."""
    import shlex
    import subprocess
    import sys

    name = f"p{uuid.uuid4().hex[:6]}"
    images = {"x86_64": samples.lambda_like_image(name, "x86_64")}
    samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", images)
    catalog = tmp_path / "runtimes.yaml"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64]\nruntimes:\n"
        f"  {name}:\n    image: lambda/{name}:1\n"
    )
    out = tmp_path / "out"
    doit = shlex.join([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), f"catalog={catalog}", f"out={out}"])
    status = 'echo "doit=${PIPESTATUS[0]} head=${PIPESTATUS[1]}"'
    script = f"{doit} snapshot 2>{tmp_path / 'stderr'} | head -1; {status}"
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("start  "), proc.stdout
    assert lines[1] == "doit=0 head=0"
    assert (tmp_path / "stderr").read_text() == ""
    snapshot = list((out / name / "x86_64").glob("*.tar.xz"))
    assert len(snapshot) == len(images["x86_64"].layers)  # every layer exported although nobody read the lines
