"""`doit verify`: unit tests of the comparisons and reports, the shipped smoke tests run on the host, and the
checks against real builds (good, and broken in each way a user's rebuild can go wrong)."""

import dataclasses
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest
from doit_cli import ROOT, run_doit
from states import make_state

from lambdaimages import catalog as catalog_module
from lambdaimages.catalog import Smoke
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import demo, samples
from lambdaimages.tools.dockerfile import add_instructions, settings
from lambdaimages.verify import checks, containers, inputs, reports
from lambdaimages.verify.dockerfiles import compare_settings, first_difference
from lambdaimages.verify.results import (
    CANNOT_RUN,
    CHECKS,
    FAIL,
    NO_SMOKE,
    PASS,
    SKIPPED,
    ArchResult,
    Check,
    RuntimeResult,
)
from lambdaimages.verify.runtime_api import RuntimeAPIServer

EVENT = {"hello": "world", "quote": 'it\'s "x"'}

# -- config ---------------------------------------------------------------------------------------

UPSTREAM = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["LANG=en_US.UTF-8", "TZ=:/etc/localtime", "PATH=/var/lang/bin:/usr/bin", "EMPTY="],
        "Entrypoint": ["/lambda-entrypoint.sh"],
        "Cmd": ["function.handler"],
        "WorkingDir": "/var/task",
        "Labels": {"com.amazonaws.lambda.platform.version": "v1"},
        "ExposedPorts": {"8080/tcp": {}},
    },
}


def built_like(upstream: dict) -> dict:
    """What `docker inspect` shows for a FROM-scratch build of `upstream`: PATH first, empty fields as the engine
    writes them."""
    config = dict(upstream["config"])
    env = config["Env"]
    config["Env"] = [e for e in env if e.startswith("PATH=")] + [e for e in env if not e.startswith("PATH=")]
    config.update(User="", Volumes=None, OnBuild=None)
    return {"Architecture": upstream["architecture"], "Os": upstream["os"], "Config": config}


def test_env_order_is_a_note_and_empty_fields_are_unset():
    problems, notes = checks.compare_config(UPSTREAM, built_like(UPSTREAM))
    assert problems == []
    assert notes == [
        "Env order differs (values equal; the builder starts with PATH): upstream LANG TZ PATH EMPTY; "
        "built PATH LANG TZ EMPTY"
    ]
    assert checks.compare_config(UPSTREAM, {"Architecture": "amd64", "Os": "linux", "Config": UPSTREAM["config"]}) == (
        [],
        [],
    )


def test_each_config_difference_is_named_with_both_values():
    built = built_like(UPSTREAM)
    built["Architecture"] = "arm64"
    built["Config"]["Env"] = ["PATH=/var/lang/bin:/usr/bin", "LANG=C", "EXTRA=1"]
    built["Config"]["Entrypoint"] = ["/bin/sh"]
    built["Config"]["Labels"] = {}
    built["Config"]["ExposedPorts"] = {"8080/tcp": {}, "9000/tcp": {}}
    built["Config"]["User"] = "sbx_user1051"
    problems, notes = checks.compare_config(UPSTREAM, built)
    assert problems == [
        "architecture: upstream 'amd64' vs built 'arm64'",
        "Env LANG: upstream 'en_US.UTF-8' vs built 'C'",
        "Env TZ: upstream ':/etc/localtime', built has none",
        "Env EMPTY: upstream '', built has none",
        "Env EXTRA: built '1', upstream has none",
        "Entrypoint: upstream ['/lambda-entrypoint.sh'] vs built ['/bin/sh']",
        "User: upstream None vs built 'sbx_user1051'",
        "Labels: upstream {'com.amazonaws.lambda.platform.version': 'v1'} vs built None",
        "ExposedPorts: upstream ['8080/tcp'] vs built ['8080/tcp', '9000/tcp']",
    ]
    assert notes == []


# -- ADD lines -----------------------------------------------------------------------------------


def test_add_lines_in_order_pass_and_each_kind_of_difference_is_named():
    text = "FROM scratch\n\nADD a.tar.xz /\nADD b.tar.xz /\nADD c.tar.xz /\nENV X=1\n"
    expected = ["a.tar.xz", "b.tar.xz", "c.tar.xz"]
    assert checks.compare_adds("D", add_instructions(text), expected) == []
    swapped = text.replace("ADD a.tar.xz /\nADD b.tar.xz /", "ADD b.tar.xz /\nADD a.tar.xz /")
    assert checks.compare_adds("D", add_instructions(swapped), expected) == [
        "D:3: ADD lines are not in upstream's layer order (2 of 3 misplaced): ADD 1 is b.tar.xz, "
        "upstream's layer 1 is a.tar.xz"
    ]
    changed = text.replace("ADD b.tar.xz /", "ADD x.tar.xz /").replace("ADD c.tar.xz /", "ADD c.tar.xz /opt")
    assert checks.compare_adds("D", add_instructions(changed), expected) == [
        "D:5: ADD c.tar.xz to /opt, not to /",
        "D: no ADD for upstream's layer 2 (b.tar.xz)",
        "D:4: ADD x.tar.xz is not one of upstream's layers",
    ]
    short = "ADD a.tar.xz /\nADD --chown=1:1 b.tar.xz c.tar.xz /\n"
    assert checks.compare_adds("D", add_instructions(short), ["a.tar.xz", "b.tar.xz"]) == [
        "D:2: expected `ADD <tarball> /`, found `ADD --chown=1:1 b.tar.xz c.tar.xz /`",
        "D: no ADD for upstream's layer 2 (b.tar.xz)",
        "D:2: ADD (malformed) is not one of upstream's layers",
    ]


def test_tarballs_missing_unreadable_lfs_pointers_and_strays_are_each_named(tmp_path):
    runtime = catalog_module.parse("runtimes:\n  r.t:\n    image: a:1\n", tmp_path / "c.yaml").runtimes[0]
    layers = [samples.layer_from_files([samples.file(f"/f{i}", b"%d" % i)]) for i in range(5)]
    names = [f"{layer.diff_id.removeprefix('sha256:')}.tar.xz" for layer in layers]
    state = make_state([{"digest": "sha256:0", "media_type": "x", "size": 1, "diff_id": lay.diff_id} for lay in layers])
    for arch in runtime.architectures:
        folder = tmp_path / "r.t" / arch
        folder.mkdir(parents=True)
        (folder / "Dockerfile.r.t").write_text("FROM scratch\n" + "".join(f"ADD {n} /\n" for n in names))
        for layer, name in zip(layers, names, strict=True):
            (folder / name).write_bytes(lzma.compress(layer.tar))
    top = "".join(f"ADD x86_64/{n} /\n" for n in names)
    (tmp_path / "r.t" / "Dockerfile.r.t").write_text(top)
    check, tree, error = checks.check_tarballs(tmp_path, runtime, "x86_64", state, tree=True)
    assert (check.status, error) == (PASS, None)
    assert sorted(tree) == ["f0", "f1", "f2", "f3", "f4"]

    folder = tmp_path / "r.t" / "arm64"
    (folder / names[1]).unlink()
    (folder / names[2]).write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    (folder / names[3]).write_bytes(lzma.compress(layers[3].tar)[:-20])
    (folder / "0000.tar.xz").write_bytes(b"")
    check, tree, error = checks.check_tarballs(tmp_path, runtime, "arm64", state, tree=True)
    assert (check.status, tree, error) == (FAIL, None, None)
    assert check.details == (
        "arm64/0000.tar.xz: not one of upstream's layers",
        f"arm64/{names[1]}: missing (upstream layer 2)",
        f"arm64/{names[2]} (upstream layer 3): a Git LFS pointer, not the tarball: run `git lfs pull`",
        f"arm64/{names[3]} (upstream layer 4): cannot be decompressed: Compressed file ended before the "
        "end-of-stream marker was reached",
    )
    assert check.summary == check.details[0] + " (and 3 more)"


def test_json_values_compare_as_json():
    assert checks.same_json({"a": [1, 2.0, None, "x"]}, {"a": [1.0, 2, None, "x"]})
    assert not checks.same_json({"a": True}, {"a": 1})
    assert not checks.same_json([0], [False])
    assert not checks.same_json({"a": "1"}, {"a": 1})
    assert not checks.same_json({"a": 1}, {"a": 1, "b": 2})
    assert not checks.same_json([1, 2], [2, 1])


# -- reports -------------------------------------------------------------------------------------


def _result(name: str, invoke: Check) -> RuntimeResult:
    x86 = ArchResult(
        name,
        "x86_64",
        (
            Check("tarballs", PASS, "4 layers", seconds=0.5),
            Check("identity", PASS, "r:x86_64 ID = upstream's config digest"),
            Check("tree", PASS, "39 entries", seconds=0.25),
            Check("config", PASS, "equal", seconds=0.0),
            invoke,
        ),
        notes=("Env order differs",),
        image=f"{name}:local",
        image_id="sha256:1",
    )
    passed = [Check(check, PASS, "fine") for check in CHECKS[:4]]
    cannot = Check("invoke", CANNOT_RUN, "the engine cannot run arm64 programs (exit code 1)", seconds=0.5)
    arm = ArchResult(name, "arm64", (*passed, cannot))
    return RuntimeResult(name, (x86, arm))


def test_reports_list_every_runtime_and_check_for_people_and_ci(tmp_path):
    cat = catalog_module.parse(
        "runtimes:\n  r.good:\n    image: a:1\n  r.bad:\n    image: b:1\n  r.none:\n    image: c:1\n"
        "    architectures: [x86_64]\n",
        tmp_path / "runtimes.yaml",
    )
    good = _result("r.good", Check("invoke", NO_SMOKE, "the catalog gives this runtime no smoke test"))
    failure = Check("invoke", FAIL, "the handler answered with an error: boom", ("event: {}", "log: x"), 2.0)
    bad = _result("r.bad", failure)
    assert not good.failed and bad.failed
    assert bad.failure_message() == "x86_64 invoke: the handler answered with an error: boom"
    assert RuntimeResult.from_json(json.loads(json.dumps(bad.to_json()))) == bad
    found = [
        reports.Verdict(cat.by_name["r.good"], good, PASS, verified_at="t"),
        reports.Verdict(cat.by_name["r.bad"], bad, FAIL, verified_at="t"),
        reports.Verdict(cat.by_name["r.none"], None, reports.NOT_VERIFIED, "never verified: run doit verify:r.none"),
    ]
    rows = [line.split() for line in reports.table(found).splitlines()]
    assert rows[0] == ["runtime", "arch", "tarballs", "identity", "tree", "config", "invoke", "seconds"]
    assert rows[1] == ["r.good", "x86_64", "pass", "pass", "pass", "pass", "no", "smoke", "test", "0.8"]
    assert rows[3] == ["r.bad", "x86_64", "pass", "pass", "pass", "pass", "FAIL", "2.8"]
    assert rows[4] == ["r.bad", "arm64", "pass", "pass", "pass", "pass", "cannot", "run", "0.5"]
    assert rows[5] == ["r.none", "x86_64", "not", "verified", "-", "-", "-", "-", "-"]

    summary_path, junit_path = reports.write(tmp_path, found)
    summary = json.loads(summary_path.read_text())
    assert summary["passed"] is False
    assert summary["counts"] == {"runtimes": 3, "passed": 1, "failed": 1, "not_verified": 1}
    [bad_json] = [r for r in summary["runtimes"] if r["runtime"] == "r.bad"]
    invoke = bad_json["architectures"][0]["checks"][4]
    assert invoke == {
        "name": "invoke",
        "status": FAIL,
        "summary": "the handler answered with an error: boom",
        "details": ["event: {}", "log: x"],
        "seconds": 2.0,
    }
    suites = ET.parse(junit_path).getroot()
    assert suites.tag == "testsuites"
    assert {k: suites.get(k) for k in ("tests", "failures", "errors", "skipped")} == {
        "tests": "21",
        "failures": "1",
        "errors": "1",
        "skipped": "3",
    }
    [failure_element] = suites.iter("failure")
    assert failure_element.get("message") == "the handler answered with an error: boom"
    assert failure_element.text == "event: {}\nlog: x"
    case = next(c for c in suites.iter("testcase") if c.find("failure") is not None)
    assert (case.get("classname"), case.get("name")) == ("r.bad", "x86_64 invoke")
    [error] = suites.iter("error")
    assert "never verified" in error.get("message")
    skipped = [c.find("skipped").get("message") for c in suites.iter("testcase") if c.find("skipped") is not None]
    assert "no smoke test: the catalog gives this runtime no smoke test" in skipped


# -- the shipped smoke tests, run on the host ----------------------------------------------------


def _catalog_smoke(family: str) -> Smoke:
    cat = catalog_module.load(ROOT / "runtimes.yaml")
    smokes = {rt.name: rt.smoke for rt in cat.runtimes if rt.name.startswith(family)}
    assert smokes and all(smoke is not None for smoke in smokes.values()), smokes
    first = next(iter(smokes.values()))
    assert all(smoke == first for smoke in smokes.values()), "one smoke test per family"
    return first


def test_catalog_gives_every_interpreted_runtime_a_smoke_test_and_compiled_ones_none():
    cat = catalog_module.load(ROOT / "runtimes.yaml")
    for rt in cat.runtimes:
        interpreted = rt.name.startswith(("python", "nodejs", "ruby", "provided"))
        assert (rt.smoke is not None) == interpreted, rt.name
        if rt.smoke is not None:
            assert Path(rt.smoke.files).is_dir() and Path(rt.smoke.files).parent == ROOT / "smoke"


def test_demo_ends_with_verify_and_gives_every_sample_runtime_a_smoke_test(tmp_path):
    assert demo.TASKS[-1] == "verify"
    cat = catalog_module.parse(demo.catalog_text("http://127.0.0.1:5123"), tmp_path / "runtimes.yaml")
    assert {rt.name for rt in cat.runtimes} == set(demo.RUNTIMES)
    for rt in cat.runtimes:
        assert rt.smoke.handler == "function.handler" and rt.smoke.event == demo.EVENT
        assert rt.smoke.expect == {"echo": demo.EVENT, "runtime": rt.name, "version": "1"}


@pytest.fixture
def api() -> Iterator[RuntimeAPIServer]:
    with RuntimeAPIServer() as server:
        yield server


def _host_runtime(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "_HANDLER", "LAMBDA_"))}
    with open(log, "wb") as out:  # a file, not a pipe that could fill up
        return subprocess.Popen(cmd, cwd=cwd, env={**clean, **env}, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.timeout(60)
def test_python_smoke_test_answers_through_awslambdaric(api, tmp_path):
    smoke = _catalog_smoke("python")
    env = {"AWS_LAMBDA_RUNTIME_API": api.address}
    process = _host_runtime([sys.executable, "-m", "awslambdaric", smoke.handler], Path(smoke.files), env,
                            tmp_path / "log")  # fmt: skip
    try:
        invocation = api.invoke(json.dumps(smoke.event).encode(), timeout=20)
    finally:
        process.kill()
        process.wait()
    assert invocation.outcome == "response", (tmp_path / "log").read_text()
    assert checks.same_json(json.loads(invocation.body), smoke.expect)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_provided_smoke_bootstrap_answers_in_posix_sh_and_bash(api, tmp_path, shell):
    smoke = _catalog_smoke("provided")
    env = {"AWS_LAMBDA_RUNTIME_API": api.address, "_HANDLER": smoke.handler, "LAMBDA_TASK_ROOT": smoke.files}
    process = _host_runtime([shell, str(Path(smoke.files) / "bootstrap")], tmp_path, env, tmp_path / "log")
    try:
        answers = [api.invoke(json.dumps(smoke.event).encode(), timeout=20) for _ in range(2)]
    finally:
        process.kill()
        process.wait()
    for invocation in answers:
        assert invocation.outcome == "response", (tmp_path / "log").read_text()
        assert checks.same_json(json.loads(invocation.body), smoke.expect)
    assert os.stat(Path(smoke.files) / "bootstrap").st_mode & 0o111, "the bootstrap must be executable"


def test_nodejs_and_ruby_smoke_handlers_answer_what_the_catalog_expects():
    arn = "arn:aws:lambda:us-east-1:000000000000:function:f"
    smoke = _catalog_smoke("nodejs")
    node = textwrap.dedent("""
        const mod = require(process.argv[1] + "/" + process.argv[2].split(".")[0] + ".js");
        const context = {awsRequestId: "id-1", invokedFunctionArn: process.argv[4]};
        mod[process.argv[2].split(".")[1]](JSON.parse(process.argv[3]), context)
          .then((r) => console.log(JSON.stringify(r)));
    """)
    out = subprocess.run(["node", "-e", node, smoke.files, smoke.handler, json.dumps(smoke.event), arn],
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert checks.same_json(json.loads(out), smoke.expect)
    smoke = _catalog_smoke("ruby")
    ruby = textwrap.dedent("""
        require "json"
        Context = Struct.new(:aws_request_id, :invoked_function_arn)
        file, method = ARGV[1].split(".")
        load File.join(ARGV[0], file + ".rb")
        puts JSON.generate(send(method, event: JSON.parse(ARGV[2]), context: Context.new("id-1", ARGV[3])))
    """)
    out = subprocess.run(["ruby", "-e", ruby, smoke.files, smoke.handler, json.dumps(smoke.event), arn],
                         capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip
    assert checks.same_json(json.loads(out), smoke.expect)


# -- real builds ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(registry, docker_client, tmp_path_factory):
    """One sample image pushed once and snapshotted twice: `a` (xz, x86_64 + arm64, a smoke test that passes) and
    `b` (gzip, x86_64, an event that makes the handler fail); then `doit build verify`, once."""
    prefix = f"v{uuid.uuid4().hex[:6]}"
    names = {"a": f"{prefix}.a", "b": f"{prefix}.b"}
    images = {arch: samples.lambda_like_image(names["a"], arch) for arch in ("x86_64", "arm64")}
    samples.push_image(RegistryClient(registry.url), f"lambda/{prefix}", "1", images)
    tmp = tmp_path_factory.mktemp("verify")
    expect = {"echo": EVENT, "runtime": names["a"], "version": "1"}
    catalog = tmp / "runtimes.yaml"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\nruntimes:\n"
        f"  {names['a']}:\n    image: lambda/{prefix}:1\n"
        f"    smoke:\n      handler: function.handler\n      event: {json.dumps(EVENT)}\n"
        f"      expect: {json.dumps(expect)}\n      timeout: 20\n"
        f"  {names['b']}:\n    image: lambda/{prefix}:1\n    architectures: [x86_64]\n    compression: gzip\n"
        f'    smoke:\n      handler: function.handler\n      event: {{"please": "fail"}}\n'
        f"      expect: {json.dumps(expect)}\n      timeout: 20\n"
    )
    out = tmp / "out"
    started = time.monotonic()
    first = run_doit(catalog, out, "build", "verify", check=False)
    world = {
        "names": names,
        "images": images,
        "catalog": catalog,
        "runtimes": catalog_module.load(catalog).by_name,
        "out": out,
        "tmp": tmp,
        "first": first,
        "first_seconds": time.monotonic() - started,
        "tags": [f"{name}:local" for name in names.values()],
    }
    yield world
    for tag in reversed(world["tags"]):  # images derived from <a>:local first
        for attempt in range(3):
            try:
                docker_client.images.remove(tag, force=True)
                break
            except docker.errors.ImageNotFound:
                break
            except docker.errors.APIError:  # e.g. a conflict while other tests use the engine: try again
                time.sleep(1 + attempt)


def _leftover_containers(docker_client, runtime: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"{containers.LABEL}={runtime}"})


def _derived_image(world, docker_client, name: str, dockerfile: str, files: dict[str, bytes | tuple[bytes, int]]):
    """Build `FROM <a>:local` plus `dockerfile` with `files` (path -> bytes or (bytes, mode)) in the context."""
    context = world["tmp"] / f"ctx-{name}"
    context.mkdir()
    for path, data in files.items():
        content, mode = data if isinstance(data, tuple) else (data, 0o644)
        (context / path).write_bytes(content)
        os.chmod(context / path, mode)
    (context / "Dockerfile").write_text(f"FROM {world['names']['a']}:local\n{dockerfile}")
    tag = f"{world['names']['a']}-{name}:local"
    world["tags"].append(tag)
    stream = docker_client.api.build(path=str(context), tag=tag, rm=True, forcerm=True, network_mode="none",
                                     decode=True)  # fmt: skip
    for message in stream:
        assert "error" not in message, message
    return tag


def _copy_snapshot(world, name: str) -> Path:
    """A copy of runtime a's snapshot (real files, not links to the layer cache) to break."""
    out = world["tmp"] / f"copy-{name}"
    runtime = world["names"]["a"]
    shutil.copytree(world["out"] / runtime, out / runtime)
    shutil.copytree(world["out"] / ".state" / runtime, out / ".state" / runtime)
    return out


def _table(stdout: str) -> list[list[str]]:
    """The rows of the table `doit verify` prints after every task, cells split where two spaces part them."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("runtime "))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("verify: "))
    return [re.split(r"\s{2,}", line.strip()) for line in lines[start:end]]


def _statuses(result: RuntimeResult) -> dict[str, list[str]]:
    return {arch.arch: [check.status for check in arch.checks] for arch in result.architectures}


def test_doit_verify_prints_the_table_writes_reports_and_fails_naming_runtime_and_check(world):
    proc, a, b = world["first"], world["names"]["a"], world["names"]["b"]
    assert proc.returncode != 0, proc.stdout
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    assert failed == [
        f"FAILED verify:{b}: x86_64 invoke: the handler answered with an error: "
        '{"errorMessage":"handler exited 3: the event asked to fail","errorType":"HandlerError"}'
    ], proc.stdout
    rows = _table(proc.stdout)
    assert rows[0] == ["runtime", "arch", "tarballs", "identity", "tree", "config", "invoke", "seconds"], proc.stdout
    assert [row[:7] for row in rows[1:]] == [
        [a, "x86_64", "pass", "pass", "pass", "pass", "pass"],
        [a, "arm64", "pass", "pass", "pass", "pass", "pass"],  # loaded, and invoked under emulation
        [b, "x86_64", "pass", "pass", "pass", "pass", "FAIL"],
    ]
    closing = next(line for line in proc.stdout.splitlines() if line.startswith("verify: "))
    assert closing.startswith("verify: 2 runtimes: 1 passed, 1 failed, 0 not verified; reports: ")
    summary = json.loads((world["out"] / ".reports" / "verify.json").read_text())
    assert summary["counts"] == {"runtimes": 2, "passed": 1, "failed": 1, "not_verified": 0}
    junit = ET.parse(world["out"] / ".reports" / "verify.xml").getroot()
    assert (junit.get("tests"), junit.get("failures"), junit.get("skipped")) == ("15", "1", "0")
    assert world["first_seconds"] < 120


def test_verify_alone_builds_nothing_and_reruns_only_the_failed(world, docker_client):
    a, b = world["names"]["a"], world["names"]["b"]
    before = {tag: docker_client.images.get(tag).id for tag in world["tags"][:2]}
    results = {name: reports.result_path(world["out"], name) for name in (a, b)}
    recorded = {name: path.stat().st_mtime_ns for name, path in results.items()}
    proc = run_doit(world["catalog"], world["out"], "verify", check=False)
    assert f"build:{a}" not in proc.stdout and f"resolve:{a}" not in proc.stdout  # offline: no pipeline task runs
    assert results[a].stat().st_mtime_ns == recorded[a]  # passed before, nothing changed
    assert results[b].stat().st_mtime_ns != recorded[b]  # failed before: doit reruns a failed task
    assert "Step 1/" not in proc.stdout
    assert {tag: docker_client.images.get(tag).id for tag in world["tags"][:2]} == before
    assert _table(proc.stdout)[1][:7] == [a, "x86_64", "pass", "pass", "pass", "pass", "pass"]  # still current


def test_single_runtime_verify_reruns_when_its_image_changed(world, docker_client):
    a, b = world["names"]["a"], world["names"]["b"]
    docker_client.images.remove(f"{a}:local", force=True)
    proc = run_doit(world["catalog"], world["out"], f"verify:{a}")  # builds the missing image from the snapshot
    assert docker_client.images.get(f"{a}:local") is not None
    log = (world["out"] / ".logs" / f"verify:{a}.log").read_text()  # each runtime's lines go to its log
    assert f"verify {a} x86_64: tarballs pass, identity pass, tree pass, config pass, invoke pass" in log
    assert f"verify:{b}" not in proc.stdout and "verify:_report" not in proc.stdout
    recorded = json.loads((world["out"] / ".reports" / "verify" / f"{a}.json").read_text())
    assert recorded["inputs"]["image_id"] == docker_client.images.get(f"{a}:local").id


def test_inputs_change_with_the_snapshot_the_image_and_the_smoke_test(world, docker_client, tmp_path):
    out, name = _copy_snapshot(world, "inputs"), world["names"]["a"]
    runtime = world["runtimes"][name]
    before = inputs.gather(out, runtime)
    assert inputs.gather(out, runtime) == before
    assert before["image_id"] == docker_client.images.get(f"{name}:local").id
    dockerfile = out / name / "arm64" / f"Dockerfile.{name}"
    dockerfile.write_text(dockerfile.read_text() + "# edited\n")
    edited = inputs.gather(out, runtime)
    assert edited["snapshot"] != before["snapshot"] and edited["image_id"] == before["image_id"]
    (tmp_path / "function.sh").write_text("handler() { echo 1; }\n")
    with_files = dataclasses.replace(runtime, smoke=dataclasses.replace(runtime.smoke, files=str(tmp_path)))
    first = inputs.gather(out, with_files)["smoke"]
    (tmp_path / "function.sh").write_text("handler() { echo 2; }\n")
    assert inputs.gather(out, with_files)["smoke"] != first != edited["smoke"]


def test_good_build_and_loaded_images_pass_every_check_on_both_architectures(world):
    result = checks.verify_runtime(world["out"], world["runtimes"][world["names"]["a"]])
    assert _statuses(result) == {"x86_64": [PASS] * 5, "arm64": [PASS] * 5}
    x86 = result.architectures[0]
    assert x86.check("tree").summary.endswith("entries equal upstream's")
    assert x86.notes and x86.notes[0].startswith("Env order differs")


def test_tampered_tarball_fails_check_one_naming_it_and_skips_the_tree(world):
    out, name = _copy_snapshot(world, "tamper"), world["names"]["a"]
    function_layer = world["images"]["x86_64"].layers[2]
    tarball = out / name / "x86_64" / f"{function_layer.diff_id.removeprefix('sha256:')}.tar.xz"
    tampered = samples.layer_from_files([samples.file("/var/task/function.sh", b"handler() { echo evil; }\n")])
    tarball.write_bytes(lzma.compress(tampered.tar))
    result = checks.verify_runtime(out, world["runtimes"][name])
    x86 = result.architectures[0]
    assert [c.status for c in x86.checks][:3] == [FAIL, PASS, SKIPPED]  # the loaded image is still upstream's
    assert x86.check("tarballs").summary == (
        f"x86_64/{tarball.name} (upstream layer 3): decompresses to sha256 {tampered.diff_id.removeprefix('sha256:')}"
        ", which is not its name and upstream's diff_id"
    )
    assert result.failure_message().startswith(f"x86_64 tarballs: x86_64/{tarball.name} (upstream layer 3)")
    assert _statuses(result)["arm64"][0] == PASS


def test_swapped_add_lines_fail_check_one_on_an_architecture_the_engine_does_not_build(world):
    out, name = _copy_snapshot(world, "swap"), world["names"]["a"]
    dockerfile = out / name / "arm64" / f"Dockerfile.{name}"
    lines = dockerfile.read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("ADD "))
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    dockerfile.write_text("".join(lines))
    result = checks.verify_runtime(out, world["runtimes"][name])
    assert _statuses(result) == {"x86_64": [PASS] * 5, "arm64": [FAIL, PASS, PASS, PASS, PASS]}
    layers = [layer.diff_id.removeprefix("sha256:") + ".tar.xz" for layer in world["images"]["arm64"].layers]
    assert result.failure_message() == (
        f"arm64 tarballs: arm64/Dockerfile.{name}:{first + 1}: ADD lines are not in upstream's layer order "
        f"(2 of 4 misplaced): ADD 1 is {layers[1]}, upstream's layer 1 is {layers[0]}"
    )


def test_image_rebuilt_with_an_extra_file_fails_the_tree_naming_the_file(world, docker_client):
    tag = _derived_image(world, docker_client, "extra", "ADD extra.txt /var/task/extra.txt\n", {"extra.txt": b"x"})
    result = checks.verify_runtime(world["out"], world["runtimes"][world["names"]["a"]], image=tag)
    x86 = result.architectures[0]
    assert [c.status for c in x86.checks] == [PASS, PASS, FAIL, PASS, PASS]
    assert x86.check("tree").summary == "1 difference, first: only built: var/task/extra.txt"
    assert (
        x86.check("tree").details[-1] == "1 differences (upstream vs built): 0 only upstream, 1 only built, 0 changed"
    )
    assert x86.image == tag


def test_changed_env_value_fails_the_config_naming_both_values(world, docker_client):
    tag = _derived_image(world, docker_client, "env", "ENV LANG=C.UTF-8\n", {})
    result = checks.verify_runtime(world["out"], world["runtimes"][world["names"]["a"]], image=tag)
    x86 = result.architectures[0]
    assert [c.status for c in x86.checks] == [PASS, PASS, PASS, FAIL, PASS]
    assert x86.check("config").summary == "Env LANG: upstream 'en_US.UTF-8' vs built 'C.UTF-8'"


def test_changed_file_mode_fails_the_tree_naming_path_and_modes(world, docker_client):
    name = world["names"]["a"]
    content = samples.FUNCTION.format(name=name, version="1").encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("var/task/function.sh")
        info.size, info.mode = len(content), 0o600
        tar.addfile(info, io.BytesIO(content))
    tag = _derived_image(world, docker_client, "mode", "ADD mode.tar /\n", {"mode.tar": archive.getvalue()})
    result = checks.verify_runtime(world["out"], world["runtimes"][name], image=tag)
    tree = result.architectures[0].check("tree")
    assert tree.status == FAIL
    assert tree.summary == "1 difference, first: var/task/function.sh: mode 0644 vs 0600"


def _with_smoke(world, **changes) -> catalog_module.Runtime:
    runtime = world["runtimes"][world["names"]["a"]]
    return dataclasses.replace(runtime, smoke=dataclasses.replace(runtime.smoke, **changes))


def test_handler_error_fails_the_invocation_with_the_error_and_removes_the_container(world, docker_client):
    runtime = _with_smoke(world, event={"please": "fail"})
    check = checks.check_invoke(runtime, f"{runtime.name}:local")
    assert check.status == FAIL
    assert check.summary.startswith("the handler answered with an error: ")
    assert "the event asked to fail" in check.summary
    assert 'event: {"please": "fail"}' in check.details
    assert not _leftover_containers(docker_client, runtime.name)


def test_bootstrap_that_never_answers_times_out_and_its_container_is_removed(world, docker_client, tmp_path):
    (tmp_path / "bootstrap").write_text("#!/bin/sh\necho 'waiting forever' >&2\nexec /usr/bin/busybox sleep 600\n")
    os.chmod(tmp_path / "bootstrap", 0o755)
    runtime = _with_smoke(world, files=str(tmp_path), timeout=2.0)
    started = time.monotonic()
    check = checks.check_invoke(runtime, f"{runtime.name}:local")
    assert check.status == FAIL
    assert check.summary == "no answer within 2 s (container running; removed)"
    assert "log: waiting forever" in check.details
    assert 2 <= time.monotonic() - started < 20
    assert not _leftover_containers(docker_client, runtime.name)


def test_runtime_that_exits_fails_at_once_not_at_the_timeout(world, docker_client, tmp_path):
    (tmp_path / "bootstrap").write_text("#!/bin/sh\necho 'giving up' >&2\nexit 3\n")
    os.chmod(tmp_path / "bootstrap", 0o755)
    runtime = _with_smoke(world, files=str(tmp_path), timeout=60.0)
    check = checks.check_invoke(runtime, f"{runtime.name}:local")
    assert check.status == FAIL
    assert check.summary == (
        'the runtime failed to start: {"errorType": "Runtime.ExitError", "errorMessage": "the container exited '
        'with code 3"}'
    )
    assert "log: giving up" in check.details
    assert check.seconds < 20
    assert not _leftover_containers(docker_client, runtime.name)


def test_smoke_files_are_mounted_at_var_task(world, docker_client, tmp_path):
    (tmp_path / "custom.sh").write_text('custom() { printf \'{"custom": %s}\' "$1"; }\n')
    runtime = _with_smoke(world, files=str(tmp_path), handler="custom.run", event=[1], expect={"custom": [1]})
    assert checks.check_invoke(runtime, f"{runtime.name}:local").status == FAIL  # no function `run` in custom.sh
    runtime = _with_smoke(world, files=str(tmp_path), handler="custom.custom", event=[1], expect={"custom": [1]})
    check = checks.check_invoke(runtime, f"{runtime.name}:local")
    assert check.status == PASS, check
    assert not _leftover_containers(docker_client, runtime.name)


def test_runtime_without_smoke_test_reports_it_and_does_not_fail(world):
    runtime = dataclasses.replace(world["runtimes"][world["names"]["a"]], smoke=None)
    check = checks.check_invoke(runtime, f"{runtime.name}:local")
    assert (check.status, check.summary) == (NO_SMOKE, f"the catalog has no smoke: entry for {runtime.name}")
    assert not check.failed


def test_missing_image_fails_every_engine_check_naming_the_build_task(world):
    runtime = world["runtimes"][world["names"]["a"]]
    result = checks.verify_runtime(world["out"], runtime, image=f"{runtime.name}-gone:local")
    x86 = result.architectures[0]
    assert [c.status for c in x86.checks] == [PASS, PASS, FAIL, FAIL, FAIL]
    assert x86.check("config").summary == f"image {runtime.name}-gone:local not found: run doit build:{runtime.name}"


# -- no snapshot, and doit clean -----------------------------------------------------------------


def test_verify_without_a_snapshot_says_once_per_runtime_which_task_makes_it(world, tmp_path):
    a, b = world["names"]["a"], world["names"]["b"]
    out = tmp_path / "empty"
    proc = run_doit(world["catalog"], out, "verify", check=False)
    assert proc.returncode != 0
    assert "Errno" not in proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    failed = sorted(line for line in lines if line.startswith("FAILED"))
    assert failed == [
        f"FAILED verify:{name}: {name}: no snapshot (no state of {archs} in {out}/.state/{name}): "
        f"run doit build:{name} (or doit snapshot:{name})"
        for name, archs in sorted([(a, "x86_64, arm64"), (b, "x86_64")])
    ], proc.stdout
    at = lines.index(failed[0])
    assert not lines[at + 1].startswith("    "), proc.stdout  # no detail lines, no empty log's path
    summary = json.loads((out / ".reports" / "verify.json").read_text())
    assert summary["counts"]["not_verified"] == 2 and summary["passed"] is False
    reasons = {item["runtime"]: item["reason"] for item in summary["runtimes"]}
    assert [f"FAILED verify:{name}: {reason}" for name, reason in sorted(reasons.items())] == failed


def _copy_out(world, name: str) -> Path:
    """A copy of the whole output folder (snapshots, states, reports, doit's database)."""
    out = world["tmp"] / f"out-{name}"
    shutil.copytree(world["out"], out)
    return out


def _runtime_entry(out: Path, name: str) -> tuple[dict, ET.Element]:
    summary = json.loads((out / ".reports" / "verify.json").read_text())
    junit = ET.parse(out / ".reports" / "verify.xml").getroot()
    return (
        next(item for item in summary["runtimes"] if item["runtime"] == name),
        next(suite for suite in junit if suite.get("name") == name),
    )


def test_clean_of_verify_and_of_a_snapshot_leave_no_report_saying_passed(world):
    a, b = world["names"]["a"], world["names"]["b"]
    out = _copy_out(world, "clean")
    run_doit(world["catalog"], out, "verify", check=False)  # the copy's reports, as a user's last run left them
    assert _runtime_entry(out, a)[0]["status"] == PASS
    run_doit(world["catalog"], out, "clean", f"snapshot:{a}")
    entry, suite = _runtime_entry(out, a)
    assert entry["status"] == reports.NOT_VERIFIED and "its snapshot was removed by doit clean" in entry["reason"]
    assert suite.find("testcase/error") is not None and suite.find("testcase/failure") is None
    assert not reports.result_path(out, a).exists()
    summary = json.loads((out / ".reports" / "verify.json").read_text())
    assert summary["passed"] is False and summary["counts"]["not_verified"] == 1
    assert _runtime_entry(out, b)[0]["status"] == FAIL  # the other runtime's entry stays
    junit = ET.parse(out / ".reports" / "verify.xml").getroot()
    assert (junit.get("tests"), junit.get("errors"), junit.get("failures")) == ("6", "1", "1")
    run_doit(world["catalog"], out, "clean", "verify")
    assert [_runtime_entry(out, n)[0]["status"] for n in (a, b)] == [reports.NOT_VERIFIED] * 2
    assert not reports.result_path(out, b).exists()


# -- content, not timestamps; every Dockerfile proven --------------------------------------------


def _flip_in_place(path: Path, offset: int) -> bytes:
    """Change one byte of `path` in place (same size and inode) and put its mtime back; its old bytes."""
    before = path.stat()
    data = path.read_bytes()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(bytes([data[offset] ^ 0x01]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_ino, after.st_mtime_ns) == (before.st_size, before.st_ino, before.st_mtime_ns)
    return data


def _put_back(path: Path, data: bytes) -> None:
    before = path.stat()
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_in_place_edits_with_the_old_mtime_put_back_rerun_verify_and_fail_naming_the_file(world):
    a = world["names"]["a"]
    out = _copy_out(world, "touch-r")
    run_doit(world["catalog"], out, f"verify:{a}")
    result = reports.result_path(out, a)
    recorded = result.stat().st_mtime_ns
    run_doit(world["catalog"], out, f"verify:{a}")
    assert result.stat().st_mtime_ns == recorded  # up to date: nothing re-checked
    x86 = out / a / "x86_64"
    tarball = x86 / f"{world['images']['x86_64'].layers[2].diff_id.removeprefix('sha256:')}.tar.xz"
    config = next(x86.glob("*.config.json"))
    dockerfile = out / a / f"Dockerfile.{a}"
    for path, offset, named in (
        (tarball, tarball.stat().st_size // 2, f"x86_64 tarballs: x86_64/{tarball.name} (upstream layer 3): "),
        (config, 10, f"x86_64 identity: x86_64/{config.name}: hashes to "),
        (dockerfile, 3, f"x86_64 tarballs: Dockerfile.{a}:1: # Gdnerated by lambdaimages"),
    ):
        old = _flip_in_place(path, offset)
        proc = run_doit(world["catalog"], out, f"verify:{a}", check=False)
        assert proc.returncode != 0, proc.stdout
        failed = next(line for line in proc.stdout.splitlines() if line.startswith(f"FAILED verify:{a}: "))
        assert named in failed, failed
        _put_back(path, old)
        run_doit(world["catalog"], out, f"verify:{a}")  # the same bytes again: passes


def _edit_top_level(dockerfile: Path, edit: str) -> tuple[int, str]:
    """Edit the Dockerfile users build as a user might; the line that differs and what verify says of it."""
    lines = dockerfile.read_text().splitlines(keepends=True)
    if edit == "env":
        at = next(i for i, line in enumerate(lines) if line.startswith("ENV TZ="))
        lines[at] = 'ENV TZ="UTC"\n'
        said = 'ENV TZ="UTC" differs from upstream\'s ENV TZ=":/etc/localtime"'
    elif edit == "user":
        at = len(lines)
        lines.append("USER nobody\n")
        said = f"USER nobody is not in upstream's Dockerfile (which ends at line {at})"
    else:
        at = next(i for i, line in enumerate(lines) if line.startswith("ENTRYPOINT "))
        said = f"RUN rm -rf /var/task differs from upstream's {lines[at].rstrip()}"
        lines.insert(at, "RUN rm -rf /var/task\n")
    dockerfile.write_text("".join(lines))
    return at + 1, said


@pytest.mark.parametrize("edit", ["env", "user", "run"])
def test_an_edited_top_level_dockerfile_fails_verify_naming_file_and_line(world, edit):
    out, name = _copy_snapshot(world, f"edit-{edit}"), world["names"]["a"]
    line, said = _edit_top_level(out / name / f"Dockerfile.{name}", edit)
    result = checks.verify_runtime(out, world["runtimes"][name])
    assert _statuses(result) == {"x86_64": [FAIL, PASS, PASS, PASS, PASS], "arm64": [PASS] * 5}
    assert result.failure_message() == f"x86_64 tarballs: Dockerfile.{name}:{line}: {said}"


def test_every_dockerfile_is_compared_with_its_rendering_line_by_line():
    rendered = 'FROM scratch\n\nADD a.tar.xz /\nENV A="1"\n'
    assert first_difference("D", rendered, rendered) is None
    assert first_difference("D", rendered.replace('"1"', '"2"'), rendered) == (
        'D:4: ENV A="2" differs from upstream\'s ENV A="1"'
    )
    assert first_difference("D", rendered + "USER x\n", rendered) == (
        "D:5: USER x is not in upstream's Dockerfile (which ends at line 4)"
    )
    assert first_difference("D", rendered[:-1], rendered) == (
        "D:4: 'ENV A=\"1\"' differs from upstream's 'ENV A=\"1\"\\n'"
    )
    assert first_difference("D", rendered.replace("\n", "\r\n"), rendered) == (
        "D:1: 'FROM scratch\\r\\n' differs from upstream's 'FROM scratch\\n'"
    )
    assert first_difference("D", "FROM scratch\n", rendered) == (
        "D:2: the file ends where upstream's Dockerfile has '\\n'"
    )


def test_an_aws_dockerfiles_config_lines_are_compared_with_upstreams_rendering_by_meaning():
    want = settings('FROM scratch\nENV A="1"\nENV B="x y"\nLABEL "k"="v"\nWORKDIR /w\nCMD ["a"]\n')
    aws = settings("FROM scratch\nADD x.tar.xz /\nENV B='x y'\nENV A=1\nWORKDIR /w\nCMD [\"a\"]\n")
    problems, notes = compare_settings("D", aws, want)
    assert problems == []
    assert notes == ["D: ENV order B A, upstream's config has A B", "D: no LABEL line: the image it builds lacks "
                     "upstream's labels k"]  # fmt: skip
    edited = settings("FROM busybox\nENV A=2\nLABEL k=w\nWORKDIR /w\nRUN rm -rf /\nUSER nobody\nENV C=3\n")
    problems, _ = compare_settings("D", edited, want)
    assert problems == [
        "D: FROM busybox, upstream's image is FROM scratch",
        "D:5: RUN rm -rf /: upstream's config makes no such line",
        "D:2: ENV A is '2', upstream's config has '1'",
        "D: no ENV B (upstream's config has 'x y')",
        "D:7: ENV C: upstream's config has no C",
        "D:3: LABEL k is 'w', upstream's config has 'v'",
        "D: no line sets Cmd (upstream's config has ['a'])",
        "D:6: sets User 'nobody', upstream's config has none",
    ]


def test_clean_of_a_build_marks_its_runtime_not_verified(world, docker_client):
    """Last in this module: it removes runtime a's images from the engine."""
    a = world["names"]["a"]
    out = _copy_out(world, "clean-build")
    run_doit(world["catalog"], out, f"verify:{a}")
    assert _runtime_entry(out, a)[0]["status"] == PASS
    run_doit(world["catalog"], out, "clean", f"build:{a}")
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.get(f"{a}:local")
    entry, suite = _runtime_entry(out, a)
    assert entry["status"] == reports.NOT_VERIFIED and "its images were removed by doit clean" in entry["reason"]
    assert suite.find("testcase/error") is not None
