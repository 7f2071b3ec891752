"""The whole pipeline through the real doit CLI, a real local registry and the real engine."""

import hashlib
import json
import lzma
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from doit_cli import run_doit

from lambdaimages.digest import Digest
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import samples


def snapshot_files(out: Path) -> dict[str, int]:
    """mtime of every file doit owns below out (the doit database, the lock and the logs of each run's tasks aside)."""
    result = {}
    for path in sorted(out.rglob("*")):
        if path.is_file() and path.name not in (".doit.json", ".lock") and path.relative_to(out).parts[0] != ".logs":
            result[str(path.relative_to(out))] = path.stat().st_mtime_ns
    return result


@pytest.fixture(scope="module")
def world(registry, docker_client, tmp_path_factory):
    """Two runtimes sharing base layers (one xz, one gzip), pushed once, snapshotted and built once."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    client = RegistryClient(registry.url)
    names = {"a": f"{prefix}.a", "b": f"{prefix}.b"}
    images = {}
    for key, name in names.items():
        images[key] = {arch: samples.lambda_like_image(name, arch) for arch in ("x86_64", "arm64")}
        samples.push_image(client, f"lambda/{name}", "1", images[key])
    tmp = tmp_path_factory.mktemp("pipeline")
    catalog = tmp / "runtimes.yaml"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64, arm64]\nruntimes:\n"
        f"  {names['a']}:\n    image: lambda/{names['a']}:1\n"
        f"  {names['b']}:\n    image: lambda/{names['b']}:1\n    compression: gzip\n"
    )
    out = tmp / "out"
    before = registry.count("GET", "/blobs/")
    first = run_doit(catalog, out)
    world = {
        "registry": registry,
        "client": client,
        "names": names,
        "images": images,
        "catalog": catalog,
        "out": out,
        "first": first,
        "first_blob_gets": registry.count("GET", "/blobs/") - before,
    }
    yield world
    for name in names.values():
        try:
            docker_client.images.remove(f"{name}:local", force=True)
        except Exception:
            pass


def test_tarball_names_are_diff_ids_in_layer_order(world):
    out, name = world["out"], world["names"]["a"]
    for arch in ("x86_64", "arm64"):
        image = world["images"]["a"][arch]
        dockerfile = (out / name / arch / f"Dockerfile.{name}").read_text()
        adds = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("ADD ")]
        assert adds == [f"{layer.diff_id.removeprefix('sha256:')}.tar.xz" for layer in image.layers]
        for add, layer in zip(adds, image.layers, strict=True):
            data = lzma.decompress((out / name / arch / add).read_bytes())
            assert hashlib.sha256(data).hexdigest() == add.removesuffix(".tar.xz")
            assert data == layer.tar
    top = (out / name / f"Dockerfile.{name}").read_text()
    assert [line.split()[1] for line in top.splitlines() if line.startswith("ADD ")] == [
        f"x86_64/{layer.diff_id.removeprefix('sha256:')}.tar.xz" for layer in world["images"]["a"]["x86_64"].layers
    ]


def test_gzip_compression_stores_upstream_blobs_as_is(world):
    out, name = world["out"], world["names"]["b"]
    for layer in world["images"]["b"]["x86_64"].layers:
        path = out / name / "x86_64" / f"{layer.diff_id.removeprefix('sha256:')}.tar.gz"
        assert path.read_bytes() == layer.blob


def test_shared_layers_are_downloaded_once(world):
    # Layers shared between architectures and runtimes are fetched once per codec cache (a is xz, b gzip).
    per_codec = [{layer.digest for img in imgs.values() for layer in img.layers} for imgs in world["images"].values()]
    assert sum(len(imgs) * len(imgs["x86_64"].layers) for imgs in world["images"].values()) > sum(map(len, per_codec))
    configs = {img.config_digest for imgs in world["images"].values() for img in imgs.values()}
    assert world["first_blob_gets"] == sum(map(len, per_codec)) + len(configs)


def test_built_image_runs_and_has_upstream_config(world, docker_client):
    name = world["names"]["a"]
    output = docker_client.containers.run(
        f"{name}:local", ["-c", "cat /etc/arch /var/lang/version"], entrypoint="/bin/sh",
        network_mode="none", remove=True,
    )  # fmt: skip
    assert output.decode().startswith("amd64\n")
    assert name in output.decode()
    config = docker_client.images.get(f"{name}:local").attrs["Config"]
    upstream = world["images"]["a"]["x86_64"].config["config"]
    assert dict(e.split("=", 1) for e in config["Env"]) == dict(e.split("=", 1) for e in upstream["Env"])
    for key in ("Entrypoint", "Cmd", "WorkingDir", "Labels"):
        assert config[key] == upstream[key], key


def test_noop_rerun_fetches_no_blob_and_touches_nothing(world):
    out, registry = world["out"], world["registry"]
    before_files = snapshot_files(out)
    before = registry.count("GET", "/blobs/")
    started = time.monotonic()
    proc = run_doit(world["catalog"], out)
    assert registry.count("GET", "/blobs/") == before
    assert snapshot_files(out) == before_files
    for name in world["names"].values():
        assert f"start  build:{name}" not in proc.stdout  # up to date
        assert f"start  export:{name}" not in proc.stdout  # up to date
    assert time.monotonic() - started < 30


def test_moved_tag_refetches_only_the_changed_layer_and_rebuilds_one_runtime(world, docker_client):
    out, registry, client = world["out"], world["registry"], world["client"]
    name_a, name_b = world["names"]["a"], world["names"]["b"]
    old_b = docker_client.images.get(f"{name_b}:local").id
    moved = {arch: samples.lambda_like_image(name_a, arch, version="2") for arch in ("x86_64", "arm64")}
    samples.push_image(client, f"lambda/{name_a}", "1", moved)
    old = world["images"]["a"]
    changed = {
        layer.digest
        for arch in moved
        for layer in moved[arch].layers
        if layer.digest not in {x.digest for x in old[arch].layers}
    }
    assert len(changed) == 1  # the function layer, shared by both architectures
    before_log = len(registry.requests_log())
    proc = run_doit(world["catalog"], out)
    fetched = [p for m, p, _ in registry.requests_log()[before_log:] if m == "GET" and "/blobs/" in p]
    configs = {img.config_digest for img in moved.values()}
    assert sorted(p.rsplit("/", 1)[1] for p in fetched) == sorted(changed | configs)
    assert f"start  build:{name_a}" in proc.stdout
    assert f"start  build:{name_b}" not in proc.stdout  # up to date
    assert docker_client.images.get(f"{name_b}:local").id == old_b
    # The tarball of the replaced layer is gone from the snapshot, the new one is there.
    files = {p.name for p in (out / name_a / "x86_64").glob("*.tar.xz")}
    assert files == {f"{layer.diff_id.removeprefix('sha256:')}.tar.xz" for layer in moved["x86_64"].layers}
    world["images"]["a"] = moved


def test_single_build_task_and_deleted_image_rebuilds(world, docker_client):
    name = world["names"]["b"]
    docker_client.images.remove(f"{name}:local", force=True)
    proc = run_doit(world["catalog"], world["out"], f"build:{name}")
    assert f"start  build:{name}" in proc.stdout
    assert docker_client.images.get(f"{name}:local")


def test_state_file_records_upstream(world):
    name = world["names"]["b"]
    state = json.loads((world["out"] / ".state" / name / "arm64.json").read_text())
    image = world["images"]["b"]["arm64"]
    assert state["config"] == image.config
    assert [layer["diff_id"] for layer in state["layers"]] == [layer.diff_id for layer in image.layers]


def test_unreachable_registry_fails_fast_with_one_line(tmp_path):
    catalog = tmp_path / "runtimes.yaml"
    catalog.write_text(
        "defaults:\n  registry: http://127.0.0.1:9\nruntimes:\n  x.a:\n    image: a:1\n  x.b:\n    image: b:1\n"
    )
    started = time.monotonic()
    proc = run_doit(catalog, tmp_path / "out", check=False)
    assert time.monotonic() - started < 10
    assert proc.returncode != 0
    failed = [line for line in proc.stdout.splitlines() if line.startswith("FAILED")]
    # doit runs two tasks at a time: either runtime may be the one reported in full.
    first = re.fullmatch(
        r"FAILED resolve:x\.([ab]): x\.\1 x86_64 \(http://127\.0\.0\.1:9/\1:1\): "
        r"registry http://127\.0\.0\.1:9 unreachable \(connection refused\)",
        failed[0],
    )
    assert first, failed
    assert failed[1:] == [
        "FAILED 1 more task(s) for the same reason: registry http://127.0.0.1:9 unreachable (connection refused)"
    ]
    assert "doit demo" in proc.stdout


def test_bad_catalog_runs_no_task(tmp_path):
    catalog = tmp_path / "runtimes.yaml"
    catalog.write_text("runtimes:\n  ok.a:\n    image: a:1\n  ok.a:\n    image: b:1\n")
    proc = run_doit(catalog, tmp_path / "out", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: {catalog}:4: runtimes: duplicate runtime 'ok.a' (first on line 2)"
    assert proc.stdout == ""
    assert not os.path.exists(tmp_path / "out" / "ok.a")


def test_catalog_settings_change_reexports_and_rerenders(registry, tmp_path):
    name = f"t{uuid.uuid4().hex[:6]}.settings"
    images = {arch: samples.lambda_like_image(name, arch) for arch in ("x86_64", "arm64")}
    samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", images)
    catalog, out = tmp_path / "runtimes.yaml", tmp_path / "out"
    folder = out / name

    def snapshot(settings: str) -> None:
        catalog.write_text(
            f"defaults:\n  registry: {registry.url}\nruntimes:\n  {name}:\n    image: lambda/{name}:1\n{settings}"
        )
        run_doit(catalog, out, "snapshot")

    snapshot("    architectures: [x86_64, arm64]\n")
    index = f"{Digest.of(samples.image_index(images)).hex}.index.json"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".dockerignore", index, f"Dockerfile.{name}", "arm64", "x86_64"]
    )

    # Only the xz level changes: every tarball is exported again, as `xz -1` writes it.
    snapshot("    architectures: [x86_64, arm64]\n    level: 1\n")
    for arch, image in images.items():
        for layer in image.layers:
            ours = (folder / arch / f"{layer.diff_id[7:]}.tar.xz").read_bytes()
            xz = subprocess.run(["xz", "-z", "-1", "-T2", "-c"], input=layer.tar, capture_output=True, check=True)
            assert ours == xz.stdout

    # Only the compression changes: the Dockerfiles follow the tarballs' new names.
    snapshot("    architectures: [x86_64, arm64]\n    compression: gzip\n")
    for dockerfile in folder.rglob("Dockerfile.*"):
        adds = [line for line in dockerfile.read_text().splitlines() if line.startswith("ADD ")]
        assert len(adds) == len(images["x86_64"].layers) and all(".tar.gz " in line for line in adds)
    assert all(p.name.endswith(".tar.gz") for p in folder.rglob("*.tar.*"))

    # x86_64 only: the arm64 folder, which the branch would publish, goes.
    snapshot("    architectures: [x86_64]\n    compression: gzip\n")
    assert sorted(p.name for p in folder.iterdir()) == sorted([".dockerignore", index, f"Dockerfile.{name}", "x86_64"])
    assert "arm64" not in (folder / ".dockerignore").read_text()
