"""Faults and bad input, through the real doit CLI, a real local registry behind a fault-injecting proxy
and the real engine: each ends in one clear line, leaves no partial file and loses nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import lzma
import os
import random
import signal
import socket
import subprocess
import tarfile
import threading
import time
import uuid
import zlib
from pathlib import Path

import docker.errors
import psutil
import pytest
from faultproxy import Fault, FaultProxy

from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import doit_command, samples
from lambdaimages.tools import tree

ROOT = Path(__file__).resolve().parent.parent
# Small retry settings, so that persistent faults fail in seconds.
FAST = {
    "LAMBDAIMAGES_RETRIES": "2",
    "LAMBDAIMAGES_BACKOFF": "0.05",
    "LAMBDAIMAGES_MAX_WAIT": "5",
    "LAMBDAIMAGES_CONNECT_TIMEOUT": "2",
    "LAMBDAIMAGES_READ_TIMEOUT": "1",
}


# -- helpers -------------------------------------------------------------------------------


def doit_env(extra: dict[str, str] | None = None, docker_config: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMBDAIMAGES_")}
    env.update(FAST)
    env["PYTHONFAULTHANDLER"] = "1"  # a crash of the child shows where
    # Never the user's own Docker credentials: a folder without config.json unless a test gives one.
    env["DOCKER_CONFIG"] = str(docker_config or "/nonexistent/lambdaimages-tests")
    env.update(extra or {})
    return env


def doit(catalog: Path, out: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The doit CLI in a child process, as a user runs it; never raises on failure."""
    return subprocess.run(
        doit_command(catalog, out, *args), capture_output=True, text=True, cwd=ROOT, timeout=600, env=env or doit_env()
    )


def failed_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.startswith("FAILED ")]


def catalog_text(entries: dict[str, dict]) -> str:
    """A catalog with one block per runtime: image, registry and any other key given."""
    lines = ["runtimes:"]
    for name, fields in entries.items():
        lines.append(f"  {name}:")
        lines += [f"    {key}: {value}" for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def tree_state(folder: Path) -> dict[str, tuple[str, int]]:
    """(sha256, mtime_ns) of every file below `folder`: equal only if nothing was rewritten."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temps(out: Path) -> list[str]:
    return [str(p) for p in out.rglob("*") if p.name.startswith(".tmp-")]


def assert_tarballs_intact(out: Path) -> int:
    """Every tarball under a final name is complete: its uncompressed bytes hash to its name."""
    count = 0
    for path in out.rglob("*.tar.*"):
        if path.name.endswith(".json"):
            continue
        digest = hashlib.sha256()
        if path.name.endswith(".tar.xz"):
            unpack = lzma.LZMADecompressor()
        else:
            unpack = zlib.decompressobj(wbits=31)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(unpack.decompress(chunk))
        assert digest.hexdigest() == path.name.split(".")[0], f"{path} is not the layer its name says"
        count += 1
    return count


def remove_images(docker_client, names) -> None:
    for name in names:
        try:
            docker_client.images.remove(f"{name}:local", force=True)
        except docker.errors.ImageNotFound:
            pass


def with_env(image: samples.SampleImage, entry: str) -> samples.SampleImage:
    config = json.loads(json.dumps(image.config))
    config["config"]["Env"].append(entry)
    return samples.SampleImage(image.layers, config)


def listen_without_accepting(port: int) -> list[socket.socket]:
    """A port that takes no connection: its one-place accept queue is full, so a connect gets no answer."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(0)
    queued = socket.create_connection(("127.0.0.1", port), timeout=5)
    return [server, queued]


def moved_image(name: str, arch: str, size: int = 64 << 10) -> samples.SampleImage:
    """Version 2 of a sample image, with an extra last layer of `size` incompressible bytes unique to `name`."""
    data = random.Random(name).randbytes(size)
    return samples.lambda_like_image(name, arch, "2", extra_files={f"/opt/{name}.bin": data})


# -- registry faults -----------------------------------------------------------------------

# name -> (expected text in its one FAILED line, or None: the run recovers and the runtime completes)
REGISTRY_CASES = {
    "refused": "unreachable (connection refused)",
    "blackhole": "unreachable (no answer to connect within 2 s)",
    "timeout": "unreachable (read timed out, 3 attempts)",
    "p429": "answered 429",
    "p500": "answered 500",
    "p503": "asks to retry after '3600', longer than LAMBDAIMAGES_MAX_WAIT (5 s)",
    "cut": "cut off 3 times, the last after 0 bytes: connection closed mid-answer (1000 bytes read",
    "stall": "cut off 3 times, the last after 0 bytes: read timed out",
    "badblob": "hashes to sha256:",
    "badman": "hashes to sha256:",
    "badtag": "registry says sha256:",
    "noauth": "(401) without a usable auth challenge",
    "notag": "not found on registry",
    "badconfig": "config Env cannot be expressed in a Dockerfile: it contains a line break",
    "recovers": None,  # a 429 twice, a 503 twice and a cut: retried, resumed, and it completes
    "ok": None,
}


@pytest.fixture(scope="module")
def faults(registry, docker_client, tmp_path_factory):
    """Every registry fault at once in one catalog: a good snapshot first, then a run with the faults on.

    Each runtime has its own repository, so a fault on one path hits one runtime. `refused` and
    `timeout` have their own proxies: a registry that is down is remembered as down for the run.
    """
    prefix = f"f{uuid.uuid4().hex[:6]}"
    names = {case: f"{prefix}.{case}" for case in REGISTRY_CASES}
    client = RegistryClient(registry.url)
    main, down, slow, hole = (FaultProxy(registry.url) for _ in range(4))
    for proxy in (main, down, slow, hole):
        proxy.start()
    blackhole = []
    tmp = tmp_path_factory.mktemp("faults")
    out = tmp / "out"

    def push(version: str) -> dict[str, dict[str, samples.SampleImage]]:
        images = {}
        for case, name in names.items():
            if version == "1":
                images[case] = {arch: samples.lambda_like_image(name, arch) for arch in ("x86_64", "arm64")}
            else:
                # The last layer of `recovers` is over one read (1 MiB): what arrived before its cut is kept.
                size = (3 << 19) if case == "recovers" else (64 << 10)
                images[case] = {arch: moved_image(name, arch, size) for arch in ("x86_64", "arm64")}
                if case == "badconfig":
                    images[case] = {arch: with_env(image, "BAD=two\nlines") for arch, image in images[case].items()}
            tag = "2" if case == "notag" and version == "2" else "1"
            if not (case == "notag" and version == "2"):
                samples.push_image(client, f"lambda/{name}", tag, images[case])
        return images

    def write_catalog(notag_tag: str) -> Path:
        entries = {}
        for case, name in names.items():
            proxy = {"refused": down, "timeout": slow, "blackhole": hole}.get(case, main)
            tag = notag_tag if case == "notag" else "1"
            entries[name] = {"image": f"lambda/{name}:{tag}", "registry": proxy.url}
        path = tmp / f"runtimes-{notag_tag}.yaml"
        path.write_text(catalog_text(entries))
        return path

    try:
        push("1")
        first = doit(write_catalog("1"), out, "snapshot")
        assert first.returncode == 0, first.stdout + first.stderr
        before = {case: tree_state(out / name) for case, name in names.items()}
        images = push("2")
        down.stop()
        hole.stop()
        blackhole = listen_without_accepting(hole.port)
        repo = {case: f"/v2/lambda/{name}" for case, name in names.items()}
        blob = {case: f"{repo[case]}/blobs/{images[case]['x86_64'].layers[-1].digest}" for case in names}
        arch_manifest = {case: f"{repo[case]}/manifests/sha256:" for case in names}
        tag = {case: f"{repo[case]}/manifests/1" for case in names}
        slow.add(tag["timeout"], Fault("hang", seconds=30))
        main.add(tag["p429"], Fault("status", status=429, headers={"Retry-After": "1"}))
        main.add(tag["p500"], Fault("status", status=500))
        main.add(tag["p503"], Fault("status", status=503, headers={"Retry-After": "3600"}))
        main.add(blob["cut"], Fault("cut", after=1000))
        main.add(blob["stall"], Fault("stall", after=2000, seconds=30))
        main.add(blob["badblob"], Fault("corrupt"))
        main.add(arch_manifest["badman"], Fault("corrupt"))
        main.add(tag["badtag"], Fault("body", transform=lambda body: body + b"\n"))
        main.add(tag["noauth"], Fault("status", status=401))
        main.add(tag["recovers"], Fault("status", times=2, status=429, headers={"Retry-After": "1"}))
        function_blob = f"{repo['recovers']}/blobs/{images['recovers']['x86_64'].layers[2].digest}"
        main.add(function_blob, Fault("status", times=2, status=503))
        main.add(blob["recovers"], Fault("cut", times=1, after=5 << 18))
        started, mark = time.monotonic(), len(main.log)
        # strict=1: upstream unreachable is a failure here too (without it the run goes on from the snapshot).
        second = doit(write_catalog("2"), out, "strict=1")
        seconds = time.monotonic() - started
        yield {
            "names": names,
            "out": out,
            "before": before,
            "run": second,
            "seconds": seconds,
            "mark": mark,
            "images": images,
            "main": main,
            "slow": slow,
            "down": down,
            "hole": hole,
            "blackhole": blackhole,
            "blob": blob,
            "function_blob": function_blob,
            "tag": tag,
            "client": client,
            "catalog": write_catalog,
            "docker": docker_client,
        }
    finally:
        for proxy in (main, down, slow, hole):
            proxy.stop()
        for sock in blackhole:
            sock.close()
        remove_images(docker_client, names.values())


@pytest.mark.parametrize("case", [c for c, text in REGISTRY_CASES.items() if text])
def test_registry_fault_is_one_line_and_keeps_the_previous_snapshot(faults, case):
    name, run, out = faults["names"][case], faults["run"], faults["out"]
    mine = [line for line in failed_lines(run) if f"{name}:" in line]
    assert len(mine) == 1, run.stdout
    line = mine[0]
    reference = f"lambda/{name}:{'2' if case == 'notag' else '1'}"
    assert f" {name} x86_64 (" in line and reference in line, line
    assert REGISTRY_CASES[case] in line, line
    # The runtime's snapshot is the one of the last good run, file for file, untouched.
    assert tree_state(out / name) == faults["before"][case]
    with pytest.raises(docker.errors.ImageNotFound):
        faults["docker"].images.get(f"{name}:local")


def test_registry_faults_fail_the_run_but_not_the_other_runtimes(faults):
    run, out, names = faults["run"], faults["out"], faults["names"]
    assert run.returncode != 0
    assert "Traceback" not in run.stdout + run.stderr
    assert temps(out) == []
    assert assert_tarballs_intact(out) > 0
    for case in ("ok", "recovers"):
        name = names[case]
        assert f"sample-{name}-2" in (out / name / f"Dockerfile.{name}").read_text(), case
        assert faults["docker"].images.get(f"{name}:local"), case
    assert faults["seconds"] < 60


def test_retries_are_bounded_and_honour_retry_after(faults):
    main, tag, blob, mark = faults["main"], faults["tag"], faults["blob"], faults["mark"]

    def outcomes(path: str) -> list[str]:
        return [entry.outcome for entry in main.requests(path, since=mark)]

    # Persistent: the first try and LAMBDAIMAGES_RETRIES=2 more, no more.
    assert outcomes(tag["p429"]) == ["status"] * 3
    assert outcomes(tag["p500"]) == ["status"] * 3
    # A Retry-After beyond LAMBDAIMAGES_MAX_WAIT is not waited for: one request.
    assert outcomes(tag["p503"]) == ["status"]
    # Retry-After: 1 is waited for, each time; then the runtime completes (both architectures).
    assert outcomes(tag["recovers"]) == ["status", "status", "200", "200"]
    tries = [entry.at for entry in main.requests(tag["recovers"], since=mark)][:3]
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(tries))
    assert outcomes(faults["function_blob"]) == ["status", "status", "200"]
    # A blob cut off once resumes where it stopped, with a Range request.
    resumed = main.requests(blob["recovers"], since=mark)
    assert [(e.outcome, e.range) for e in resumed] == [("cut", None), ("206", f"bytes={1 << 20}-")]
    assert outcomes(blob["cut"]) == ["cut"] * 3
    assert outcomes(blob["stall"]) == ["stall"] * 3
    # A registry that timed out three times in a row is down: asked no more in this run. (The first run
    # read the tag once for both architectures; the second polled it with HEAD, three attempts.)
    assert [e.method for e in faults["slow"].requests(tag["timeout"], since=0)] == ["GET"] + ["HEAD"] * 3


def test_after_the_faults_the_next_run_completes(faults):
    names, out, main = faults["names"], faults["out"], faults["main"]
    main.clear()
    faults["slow"].clear()
    faults["down"].start()  # the same port again
    for sock in faults["blackhole"]:
        sock.close()
    faults["hole"].start()
    samples.push_image(faults["client"], f"lambda/{names['notag']}", "2", faults["images"]["notag"])
    run = doit(faults["catalog"]("2"), out, "snapshot")
    # Only the runtime whose upstream config is still inexpressible fails again, and still keeps version 1.
    failed = failed_lines(run)
    assert len(failed) == 1 and failed[0].startswith(f"FAILED resolve:{names['badconfig']}: "), run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert temps(out) == []
    for case, name in names.items():
        version = "1" if case == "badconfig" else "2"
        assert f"sample-{name}-{version}" in (out / name / f"Dockerfile.{name}").read_text()
    assert assert_tarballs_intact(out) > 0


# -- interruption, environment -------------------------------------------------------------

BIG = 6 << 20  # incompressible: xz takes seconds, long enough to be killed in the middle


def snapshot_bytes(out: Path, names) -> dict[str, str]:
    """sha256 of every file a run owns: snapshots, states, cached tarballs (not the cache's timing records)."""
    result = {}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out)
        top = relative.parts[0]
        if path.is_file() and (
            top in names or top == ".state" or (top == ".cache" and not path.name.endswith(".json"))
        ):
            result[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


@pytest.fixture(scope="module")
def big(registry, docker_client, tmp_path_factory):
    """A runtime with a big incompressible layer and a small one, behind a proxy, and an uninterrupted run of both."""
    prefix = f"k{uuid.uuid4().hex[:6]}"
    names = {"big": f"{prefix}.big", "small": f"{prefix}.small"}
    client = RegistryClient(registry.url)
    images = {
        "big": moved_image(names["big"], "x86_64", BIG),
        "small": samples.lambda_like_image(names["small"], "x86_64"),
    }
    for key, name in names.items():
        samples.push_image(client, f"lambda/{name}", "1", {"x86_64": images[key]})
    tmp = tmp_path_factory.mktemp("big")
    with FaultProxy(registry.url) as proxy:
        entries = {
            name: {"image": f"lambda/{name}:1", "registry": proxy.url, "architectures": "[x86_64]"}
            for name in names.values()
        }
        catalog = tmp / "runtimes.yaml"
        catalog.write_text(catalog_text(entries))
        small_catalog = tmp / "small.yaml"
        small_catalog.write_text(catalog_text({names["small"]: entries[names["small"]]}))
        reference = tmp / "reference"
        started = time.monotonic()
        run = doit(catalog, reference)
        assert run.returncode == 0, run.stdout + run.stderr
        try:
            yield {
                "names": names,
                "proxy": proxy,
                "catalog": catalog,
                "small_catalog": small_catalog,
                "tmp": tmp,
                "reference": snapshot_bytes(reference, names.values()),
                "seconds": time.monotonic() - started,
                "rootfs": docker_client.images.get(f"{names['big']}:local").attrs["RootFS"]["Layers"],
                "blob": f"/v2/lambda/{names['big']}/blobs/{images['big'].layers[-1].digest}",
                "big_hex": images["big"].layers[-1].diff_id.removeprefix("sha256:"),
                "docker": docker_client,
            }
        finally:
            remove_images(docker_client, names.values())


def kill_doit_when(catalog: Path, out: Path, ready, timeout: float = 60) -> list[psutil.Process]:
    """Run doit and SIGKILL it as soon as `ready(process, output lines so far)` holds; its children at that moment."""
    proc = subprocess.Popen(
        doit_command(catalog, out),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=doit_env(),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    try:
        while not ready(me, lines):
            assert proc.poll() is None, "doit ended before the moment to kill it:\n" + "".join(lines)
            assert time.monotonic() < deadline, "the moment to kill doit never came:\n" + "".join(lines)
            time.sleep(0.05)
        children = me.children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
    return children


def assert_rerun_equals_reference(big, out: Path, children: list[psutil.Process]) -> None:
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], f"left running after the kill: {alive}"
    run = doit(big["catalog"], out)
    assert run.returncode == 0, run.stdout + run.stderr
    assert temps(out) == []
    assert snapshot_bytes(out, big["names"].values()) == big["reference"]
    assert big["docker"].images.get(f"{big['names']['big']}:local").attrs["RootFS"]["Layers"] == big["rootfs"]


def cached_big_layer(big, out: Path) -> bool:
    return any(out.glob(f".cache/*/{big['big_hex']}.tar.xz"))


def test_sigkill_during_download_then_rerun_is_identical(big, tmp_path):
    proxy, out = big["proxy"], tmp_path / "out"
    proxy.add(big["blob"], Fault("throttle", rate=1 << 20))  # 6 s for the big layer
    mark, done = len(proxy.log), len(proxy.completed)

    def downloading(process, lines) -> bool:
        started = proxy.requests(big["blob"], since=mark)
        return bool(started) and time.monotonic() - started[0].at > 1.0

    try:
        children = kill_doit_when(big["catalog"], out, downloading)
        assert big["blob"] not in [path for _, path in proxy.completed[done:]], "killed too late"
    finally:
        proxy.clear()
    assert temps(out), "the kill should have left temp files behind, for the next run to remove"
    assert_rerun_equals_reference(big, out, children)


def test_sigkill_during_compression_then_rerun_is_identical(big, tmp_path):
    proxy, out = big["proxy"], tmp_path / "out"
    mark = len(proxy.completed)

    def compressing(process, lines) -> bool:
        # The whole layer is downloaded: half a second into its compression.
        done = [at for at, path in proxy.completed[mark:] if path == big["blob"]]
        return bool(done) and time.monotonic() - done[0] > 0.5

    children = kill_doit_when(big["catalog"], out, compressing)
    assert not cached_big_layer(big, out), "killed too late: the layer was already compressed"
    assert temps(out), "the kill should have left temp files behind, for the next run to remove"
    assert_rerun_equals_reference(big, out, children)


def test_sigkill_during_build_then_rerun_is_identical(big, tmp_path):
    name = big["names"]["big"]
    remove_images(big["docker"], [name])  # no cached steps: the build really runs when it is killed
    before = {c.id for c in big["docker"].containers.list(all=True)}

    log = tmp_path / "out" / ".logs" / f"build:{name}.log"  # the build's full output goes to its log

    def building(process, lines) -> bool:
        try:
            return f"{name}: Step 6/" in log.read_text()  # the ADD of the big layer
        except FileNotFoundError:
            return False

    children = kill_doit_when(big["catalog"], tmp_path / "out", building)
    assert_rerun_equals_reference(big, tmp_path / "out", children)
    # The engine cleaned up after the interrupted build: no container left behind.
    assert {c.id for c in big["docker"].containers.list(all=True)} - before == set()


def test_second_run_on_the_same_output_is_refused_and_the_first_completes(big, tmp_path):
    proxy, out = big["proxy"], tmp_path / "out"
    proxy.add(big["blob"], Fault("throttle", rate=2 << 20))
    mark = len(proxy.log)
    try:
        first = subprocess.Popen(
            doit_command(big["catalog"], out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env=doit_env(),
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not proxy.requests(big["blob"], since=mark):  # the first run is downloading
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.05)
        started = time.monotonic()
        second = doit(big["catalog"], out)
        assert time.monotonic() - started < 20
        stdout, stderr = first.communicate(timeout=120)
    finally:
        proxy.clear()
    assert second.returncode != 0
    assert second.stderr.strip() == (
        f"error: output folder {out} is in use by another doit run (pid {first.pid}); try again when it ends"
    )
    assert second.stdout == ""
    assert first.returncode == 0, stdout + stderr
    assert snapshot_bytes(out, big["names"].values()) == big["reference"]


@pytest.mark.parametrize("engine", ["tcp://127.0.0.1:{port}", "unix:///nonexistent/docker.sock"])
def test_engine_down_fails_the_load_in_one_line_and_the_snapshot_completes(big, tmp_path, engine):
    with FaultProxy(big["proxy"].url) as closed:
        port = closed.port
    host = engine.format(port=port)
    name = big["names"]["small"]
    run = doit(big["small_catalog"], tmp_path / "out", env=doit_env({"DOCKER_HOST": host}))
    assert run.returncode != 0
    assert failed_lines(run) == [
        line for line in failed_lines(run) if line.startswith(f"FAILED load:{name}: Docker engine at {host} does not")
    ]
    assert len(failed_lines(run)) == 1, run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert (tmp_path / "out" / name / f"Dockerfile.{name}").is_file()


@pytest.fixture
def mount_point(tmp_path):
    """A folder to mount a tmpfs on; unmounted afterwards."""
    folder = tmp_path / "mnt"
    folder.mkdir()
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True, check=False)


def mount_tmpfs(folder: Path, options: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)


def test_output_folder_not_writable_is_one_line(big, mount_point):
    mount_tmpfs(mount_point, "ro,size=1m")
    for out, expected in (
        (mount_point, f"error: cannot write in output folder {mount_point}: Read-only file system"),
        (mount_point / "out", f"error: cannot create folder {mount_point / 'out'}: Read-only file system"),
    ):
        run = doit(big["small_catalog"], out)
        assert run.returncode != 0
        assert run.stderr.strip() == expected
        assert run.stdout == ""


def test_disk_full_fails_one_runtime_in_one_line_and_loses_nothing(big, mount_point):
    mount_tmpfs(mount_point, "size=4m")
    names = big["names"]
    # One task at a time: whether the small runtime also finds the disk full must not depend on how its export
    # and the big one's spooled blocks overlap in time.
    run = doit(big["catalog"], mount_point, "-n", "1")
    assert run.returncode != 0
    assert "Traceback" not in run.stdout + run.stderr
    failed = failed_lines(run)
    assert len(failed) == 1, run.stdout
    assert failed[0].startswith(f"FAILED export:{names['big']}: {names['big']} x86_64 (")
    assert "No space left on device" in failed[0]
    assert temps(mount_point) == []
    assert assert_tarballs_intact(mount_point) > 0
    assert big["docker"].images.get(f"{names['small']}:local")
    # Room again: the next run completes, with what an uninterrupted run makes.
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)
    run = doit(big["catalog"], mount_point)
    assert run.returncode == 0, run.stdout + run.stderr
    assert snapshot_bytes(mount_point, names.values()) == big["reference"]


def test_disk_full_while_doit_saves_its_record_keeps_it_usable(big, mount_point):
    mount_tmpfs(mount_point, "size=8k")  # room for the lock and the states, not for a layer or the record
    run = doit(big["small_catalog"], mount_point, "snapshot")
    assert run.returncode != 0
    assert "Traceback" not in run.stdout + run.stderr
    assert len(failed_lines(run)) == 1 and "No space left on device" in failed_lines(run)[0]
    assert run.stderr.strip() == (
        f"warning: doit's record of this run is not saved (cannot write {mount_point / '.doit.json'}: "
        "No space left on device); the next run rechecks"
    )
    assert temps(mount_point) == []
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount_point)], check=True)
    run = doit(big["small_catalog"], mount_point, "snapshot")
    assert run.returncode == 0, run.stdout + run.stderr
    json.loads((mount_point / ".doit.json").read_text())


# -- hostile or odd upstream content -------------------------------------------------------


def raw_layer(entries) -> samples.Layer:
    """A layer tar of (name, type, data, linkname, devmajor, devminor) written as given, nothing cleaned."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data, linkname, major, minor in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.devmajor, info.devminor = kind, linkname, major, minor
            info.mtime, info.mode = samples.MTIME, 0o644
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return samples.Layer(buf.getvalue())


def with_layer(image: samples.SampleImage, layer: samples.Layer) -> samples.SampleImage:
    config = json.loads(json.dumps(image.config))
    config["rootfs"]["diff_ids"].append(layer.diff_id)
    config["history"].append({"created": samples.CREATED, "created_by": "odd layer"})
    return samples.SampleImage((*image.layers, layer), config)


def test_hostile_layers_are_stored_as_bytes_never_extracted(registry, tmp_path):
    marker = f"lambdaimages-escape-{uuid.uuid4().hex[:8]}"
    f = tarfile.REGTYPE
    hostile = raw_layer(
        [
            (f"../../../../../../../../tmp/{marker}-dotdot", f, b"escaped with ../\n", "", 0, 0),
            (f"/tmp/{marker}-absolute", f, b"escaped with an absolute path\n", "", 0, 0),
            (f"opt/{marker}-link", tarfile.SYMTYPE, b"", f"/tmp/{marker}-linked", 0, 0),
            (f"opt/{marker}-link/through", f, b"written through a symlink\n", "", 0, 0),
            (f"opt/{marker}-passwd", tarfile.LNKTYPE, b"", "/etc/passwd", 0, 0),
            ("dev/evil-null", tarfile.CHRTYPE, b"", "", 1, 3),
            ("dev/evil-disk", tarfile.BLKTYPE, b"", "", 8, 0),
            ("opt/evil-fifo", tarfile.FIFOTYPE, b"", "", 0, 0),
        ]
    )
    name = f"h{uuid.uuid4().hex[:6]}.hostile"
    image = with_layer(samples.lambda_like_image(name, "x86_64"), hostile)
    samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", {"x86_64": image})
    catalog = tmp_path / "runtimes.yaml"
    catalog.write_text(
        catalog_text({name: {"image": f"lambda/{name}:1", "registry": registry.url, "architectures": "[x86_64]"}})
    )
    out = tmp_path / "out"
    run = doit(catalog, out, "snapshot")
    assert run.returncode == 0, run.stdout + run.stderr
    tarball = out / name / "x86_64" / f"{hostile.diff_id.removeprefix('sha256:')}.tar.xz"
    assert lzma.decompress(tarball.read_bytes()) == hostile.tar
    # The one reader of layer tars (the tree a verification compares) reads them as streams, too, and
    # refuses the hardlink to a file outside the image.
    with pytest.raises(ValueError, match=f"hardlink opt/{marker}-passwd to /etc/passwd, which is not in the tree"):
        tree.merge_layers([tarball])
    escaped = [*Path("/tmp").glob(f"{marker}*"), *Path("/").glob(f"{marker}*"), *ROOT.rglob(f"{marker}*")]
    escaped += [p for p in tmp_path.rglob(f"*{marker}*")]
    assert escaped == []


def test_a_layer_of_hundreds_of_thousands_of_entries(registry, tmp_path):
    count = 200_000
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo()
        info.mtime = samples.MTIME
        for i in range(count):
            info.name = f"many/{i // 1000}/{i}"
            tar.addfile(info)
    many = samples.Layer(buf.getvalue())  # 100 MB of tar headers
    name = f"m{uuid.uuid4().hex[:6]}.many"
    image = with_layer(samples.lambda_like_image(name, "x86_64"), many)
    samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", {"x86_64": image})
    catalog = tmp_path / "runtimes.yaml"
    entry = {"image": f"lambda/{name}:1", "registry": registry.url, "architectures": "[x86_64]", "level": 0}
    catalog.write_text(catalog_text({name: entry}))
    run = doit(catalog, tmp_path / "out", "snapshot")
    assert run.returncode == 0, run.stdout + run.stderr
    assert assert_tarballs_intact(tmp_path / "out") == len(image.layers) * 2  # snapshot and cache


# -- bad catalog ---------------------------------------------------------------------------

BAD_CATALOGS = [
    ("syntax", "runtimes:\n  a:\n    image: [unclosed\n", 4, "YAML syntax error"),
    ("type", "runtimes:\n  a:\n    image: x:1\n    level: high\n", 4, "runtime a: level must be a whole number"),
    ("type-list", "runtimes:\n  a:\n    image: x:1\n    architectures: x86_64\n", 4, "must be a non-empty list"),
    ("unknown-key", "runtimes:\n  a:\n    imgae: x:1\n", 3, "runtime a: unknown key 'imgae'"),
    ("unknown-arch", "runtimes:\n  a:\n    image: x:1\n    architectures: [mips]\n", 4, "unknown architecture 'mips'"),
    (
        "duplicate",
        "runtimes:\n  a:\n    image: x:1\n  a:\n    image: y:1\n",
        4,
        "duplicate runtime 'a' (first on line 2)",
    ),
    ("empty", "", 1, "empty catalog"),
    ("no-runtimes", "runtimes: {}\n", 1, "empty catalog: 'runtimes' lists no runtime"),
    ("dotdot", "runtimes:\n  ../x:\n    image: x:1\n", 2, "runtime '../x': unsafe runtime name"),
    ("space", "runtimes:\n  'a b':\n    image: x:1\n", 2, "runtime 'a b': unsafe runtime name"),
    ("colon", "runtimes:\n  'a:b':\n    image: x:1\n", 2, "runtime 'a:b': unsafe runtime name"),
    ("upper", "runtimes:\n  Python3:\n    image: x:1\n", 2, "runtime 'Python3': unsafe runtime name"),
    ("git-dots", "runtimes:\n  a..b:\n    image: x:1\n", 2, "runtime 'a..b': unsafe runtime name"),
    ("git-lock", "runtimes:\n  a.lock:\n    image: x:1\n", 2, "runtime 'a.lock': unsafe runtime name"),
    ("git-tilde", "runtimes:\n  a~1:\n    image: x:1\n", 2, "runtime 'a~1': unsafe runtime name"),
]


@pytest.mark.parametrize(("text", "line", "expected"), [c[1:] for c in BAD_CATALOGS], ids=[c[0] for c in BAD_CATALOGS])
def test_bad_catalog_is_one_line_naming_file_and_line(tmp_path, text, line, expected):
    catalog = tmp_path / "runtimes.yaml"
    catalog.write_text(text)
    run = doit(catalog, tmp_path / "out")
    assert run.returncode != 0
    assert run.stdout == ""
    assert len(run.stderr.splitlines()) == 1, run.stderr
    assert run.stderr.startswith(f"error: {catalog}:{line}: ")
    assert expected in run.stderr
    assert not (tmp_path / "out").exists()


# -- credentials ---------------------------------------------------------------------------

USER, PASSWORD = "robot", f"pw-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def private(registry, tmp_path_factory):
    """A runtime on a private mirror (the proxy demands credentials), and the secrets to look for."""
    name = f"p{uuid.uuid4().hex[:6]}.private"
    samples.push_image(
        RegistryClient(registry.url), f"lambda/{name}", "1", {"x86_64": samples.lambda_like_image(name, "x86_64")}
    )
    tmp = tmp_path_factory.mktemp("private")
    with FaultProxy(registry.url) as proxy:
        catalog = tmp / "runtimes.yaml"
        entry = {"image": f"lambda/{name}:1", "registry": proxy.url, "architectures": "[x86_64]"}
        catalog.write_text(catalog_text({name: entry}))
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        config = tmp / "docker"
        config.mkdir()
        (config / "config.json").write_text(json.dumps({"auths": {proxy.host: {"auth": auth}}}))
        wrong = tmp / "wrong"
        wrong.mkdir()
        bad_auth = base64.b64encode(f"{USER}:{PASSWORD}-wrong".encode()).decode()
        (wrong / "config.json").write_text(json.dumps({"auths": {f"http://{proxy.host}": {"auth": bad_auth}}}))
        yield {"name": name, "proxy": proxy, "catalog": catalog, "config": config, "wrong": wrong, "tmp": tmp}


def assert_no_secret(texts: list[str], out: Path, secrets: list[str]) -> None:
    """No secret in the given texts, nor in any file below `out` (snapshots, states, the doit database)."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == ".doit.json" for p in files)
    for secret in secrets:
        for text in texts:
            assert secret not in text
        for path in files:
            assert secret.encode() not in path.read_bytes(), path


def test_private_mirror_with_docker_config_bearer_token(private, tmp_path):
    private["proxy"].require_auth("bearer", USER, PASSWORD)
    run = doit(private["catalog"], tmp_path / "out", "snapshot", env=doit_env(docker_config=private["config"]))
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "out" / private["name"] / f"Dockerfile.{private['name']}").is_file()
    tokens = list(private["proxy"].tokens)
    assert tokens
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert_no_secret([run.stdout, run.stderr], tmp_path / "out", [PASSWORD, auth, *tokens])


def test_private_mirror_with_environment_basic_auth(private, tmp_path):
    private["proxy"].require_auth("basic", USER, PASSWORD)
    env = doit_env({"LAMBDAIMAGES_REGISTRY_USER": USER, "LAMBDAIMAGES_REGISTRY_PASSWORD": PASSWORD})
    run = doit(private["catalog"], tmp_path / "out", "snapshot", env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert_no_secret([run.stdout, run.stderr], tmp_path / "out", [PASSWORD, basic])


@pytest.mark.parametrize("auth", ["bearer", "basic"])
def test_wrong_or_missing_credentials_are_one_line_without_the_secret(private, tmp_path, auth):
    proxy, name = private["proxy"], private["name"]
    proxy.require_auth(auth, USER, PASSWORD)
    wrong = doit(private["catalog"], tmp_path / "wrong", "snapshot", env=doit_env(docker_config=private["wrong"]))
    config_file = private["wrong"] / "config.json"
    expected = f"rejected the credentials from {config_file} (auths 'http://{proxy.host}') for "
    missing = doit(private["catalog"], tmp_path / "missing", "snapshot")
    for run, text in ((wrong, expected), (missing, "requires credentials for ")):
        assert run.returncode != 0
        assert "Traceback" not in run.stdout + run.stderr
        failed = failed_lines(run)
        assert len(failed) == 1 and failed[0].startswith(f"FAILED resolve:{name}: {name} x86_64 ("), run.stdout
        assert text in failed[0], failed[0]
    bad = base64.b64encode(f"{USER}:{PASSWORD}-wrong".encode()).decode()
    assert_no_secret([wrong.stdout, wrong.stderr], tmp_path / "wrong", [PASSWORD, bad])


@pytest.mark.parametrize(
    "signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)], ids=["sigint-twice", "sigterm"]
)
def test_signals_during_compression_end_with_one_line_and_leave_nothing(big, tmp_path, signals):
    """Ctrl-C twice or SIGTERM half a second into the big layer's compression (issue 21, item 3)."""
    proxy, out = big["proxy"], tmp_path / "out"
    mark = len(proxy.completed)
    proc = subprocess.Popen(
        doit_command(big["catalog"], out),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=doit_env(),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    try:
        while not [at for at, path in proxy.completed[mark:] if path == big["blob"] and time.monotonic() - at > 0.5]:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.05)
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.05)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
    text = "".join(lines)
    assert proc.returncode == -signals[0], text  # the shell's 130 / 143
    assert text.rstrip().splitlines()[-1].startswith(f"interrupted ({signal.Signals(signals[0]).name}): "), text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text and "\ntasks:" not in text, text
    assert temps(out) == []  # nothing half-written: temp files and spooled blocks removed by the run itself
    assert not [p for p in out.rglob(".spool/*")]
    assert not cached_big_layer(big, out), "interrupted too late: the layer was already compressed"
    assert_rerun_equals_reference(big, out, [])
