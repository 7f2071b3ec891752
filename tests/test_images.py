"""Identical images for every architecture: upstream's documents kept, loaded images, offline verify, branch
clones, push to a mirror, and an engine over TCP (real engine, real local registries)."""

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from doit_cli import run_doit, smoke_catalog

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest
from lambdaimages.errors import ProjectError, UsageError
from lambdaimages.image import push
from lambdaimages.mediatypes import OCI_INDEX, OCI_MANIFEST
from lambdaimages.registry.client import RegistryClient
from lambdaimages.tasks import actions
from lambdaimages.testbed import ROOT, doit_command, samples
from lambdaimages.testbed.localregistry import LocalRegistry
from lambdaimages.verify import emulation

ARCHES = ("x86_64", "arm64")
EVENT = {"hello": "world"}


def _catalog(registry_url: str, names: dict[str, str], extra: str = "") -> str:
    return smoke_catalog(registry_url, names, EVENT, ARCHES, extra)


# -- pure logic ----------------------------------------------------------------------------------


def test_push_targets():
    runtime = Runtime("python3.12", "public.ecr.aws", "lambda/python", "3.12", ARCHES)
    assert str(push.parse_target("reg:5000/m/py:1", runtime)) == "reg:5000/m/py:1"
    assert push.parse_target("reg:5000/m/py", runtime) == push.Target("reg:5000", "m/py", "3.12")
    assert push.parse_target("http://127.0.0.1:5000/py", runtime).registry == "http://127.0.0.1:5000"
    assert push.parse_target("reg/mirror", runtime, mirror=True) == push.Target("reg", "mirror/lambda/python", "3.12")
    assert push.parse_target("reg", runtime, mirror=True) == push.Target("reg", "lambda/python", "3.12")
    for bad in ("reg", "/repo", ""):
        with pytest.raises(ProjectError, match="expected HOST"):
            push.parse_target(bad, runtime)
    for bad, why in (
        ("reg/Mirror/py:1", "component 'Mirror' has uppercase letters"),
        ("reg/m/py:-1", "tag '-1' is not allowed"),
        (f"reg/m/py@sha256:{'a' * 64}", "name a tag to push under, not a digest"),
    ):
        with pytest.raises(UsageError, match=re.escape(f"push target {bad!r}: ") + ".*" + re.escape(why)):
            push.parse_target(bad, runtime)
    with pytest.raises(UsageError, match=re.escape("push target 'reg/UP': repository 'UP/lambda/python'")):
        push.parse_target("reg/UP", runtime, mirror=True)


def test_sbom_switch_takes_one_and_zero_and_refuses_anything_else():
    assert actions.switch("sbom", "1") and actions.switch("sbom", " Yes ") and actions.switch("sbom", True)
    assert not actions.switch("sbom", "0") and not actions.switch("sbom", "off")
    with pytest.raises(UsageError, match="sbom=maybe: expected 1 or 0"):
        actions.switch("sbom", "maybe")


def test_verify_waits_for_pipeline_tasks_only_when_they_are_asked_for_too():
    assert not actions.requested_with_pipeline(["doit", "verify"])
    assert not actions.requested_with_pipeline(["doit", "-n", "2", "out=x", "verify:python3.12"])
    assert actions.requested_with_pipeline(["doit", "build", "verify"])
    assert actions.requested_with_pipeline(["doit", "snapshot:python3.12", "verify:python3.12"])


def test_the_probe_program_is_a_real_static_executable(tmp_path):
    program = tmp_path / "exit0"
    program.write_bytes(emulation.exit_program("x86_64"))  # this machine's architecture (x86_64 here)
    program.chmod(0o755)
    assert subprocess.run([str(program)]).returncode == 0
    assert emulation.exit_program("arm64")[18] == 0xB7  # e_machine EM_AARCH64, run under qemu by the tests below


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two runtimes (xz and gzip, both architectures) built and published; the source registry is then stopped."""
    tmp = tmp_path_factory.mktemp("images")
    tag = uuid.uuid4().hex[:6]
    names = {f"i{tag}.xz": "xz", f"i{tag}.gz": "gzip"}
    images = {name: {arch: samples.lambda_like_image(name, arch) for arch in ARCHES} for name in names}
    source = LocalRegistry().start()
    try:
        for name, by_arch in images.items():
            samples.push_image(RegistryClient(source.url), f"lambda/{name}", "1", by_arch)
        catalog, out = tmp / "runtimes.yaml", tmp / "out"
        catalog.write_text(_catalog(source.url, names))
        repo = tmp / "branches.git"
        build = run_doit(catalog, out, "build", "publish", f"repo={repo}")
    finally:
        source.stop()
    yield {
        "tmp": tmp,
        "catalog": catalog,
        "out": out,
        "names": names,
        "images": images,
        "repo": repo,
        "build": build,
        "source_url": source.url,
    }


def _xz(world) -> str:
    return next(name for name, codec in world["names"].items() if codec == "xz")


def _gz(world) -> str:
    return next(name for name, codec in world["names"].items() if codec == "gzip")


def _image_id(tag: str) -> str | None:
    found = subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else None


def test_snapshot_keeps_upstreams_documents_named_by_their_digests(world):
    for name, by_arch in world["images"].items():
        folder = world["out"] / name
        index = samples.image_index(by_arch)
        assert (folder / layout.document_name(Digest.of(index), "index")).read_bytes() == index
        for arch, image in by_arch.items():
            manifest = image.manifest()
            kept = folder / arch / layout.document_name(Digest.of(manifest), "manifest")
            assert kept.read_bytes() == manifest
            config = folder / arch / layout.document_name(image.config_digest, "config")
            assert config.read_bytes() == image.config_bytes
            assert "sha256:" + hashlib.sha256(config.read_bytes()).hexdigest() == image.config_digest


def test_loaded_image_id_is_upstreams_config_digest_for_both_architectures(world):
    for name, by_arch in world["images"].items():
        for arch, image in by_arch.items():
            assert _image_id(f"{name}:{arch}") == image.config_digest
        assert _image_id(f"{name}:local") is not None  # the Dockerfile build (the engine's architecture)
    inspect = json.loads(subprocess.run(["docker", "image", "inspect", f"{_xz(world)}:arm64"], capture_output=True,
                                        text=True, check=True).stdout)[0]  # fmt: skip
    config = world["images"][_xz(world)]["arm64"].config
    assert inspect["Architecture"] == "arm64"
    assert inspect["Config"]["Env"] == config["config"]["Env"]  # upstream's order, not the builder's


def test_verify_is_offline_and_passes_for_every_architecture(world):
    states = sorted((world["out"] / layout.STATE).rglob("*.json"))
    before = {p: p.stat().st_mtime_ns for p in states}
    run = run_doit(world["catalog"], world["out"], "verify", check=False)  # the source registry is stopped
    assert run.returncode == 0, run.stdout + run.stderr
    summary = json.loads((world["out"] / ".reports" / "verify.json").read_text())
    for runtime in summary["runtimes"]:
        for arch in runtime["architectures"]:
            statuses = {c["name"]: c["status"] for c in arch["checks"]}
            assert statuses == dict.fromkeys(("tarballs", "identity", "tree", "config", "invoke"), "pass"), arch
    assert {p: p.stat().st_mtime_ns for p in states} == before
    assert "unreachable" not in run.stdout


def test_arm64_image_answers_its_smoke_test_under_emulation(world):
    assert emulation.cannot_run("arm64") is None, "scripts/setup registers qemu-aarch64"
    result = json.loads((world["out"] / ".reports" / "verify" / f"{_xz(world)}.json").read_text())["result"]
    arm64 = next(a for a in result["architectures"] if a["arch"] == "arm64")
    invoke = next(c for c in arm64["checks"] if c["name"] == "invoke")
    assert invoke["status"] == "pass" and "answered as expected" in invoke["summary"]
    assert arm64["image"] == f"{_xz(world)}:arm64"


@pytest.fixture
def copy(world, tmp_path):
    """A copy of the output folder (real copies, not links), to tamper with."""
    out = tmp_path / "out"
    shutil.copytree(world["out"], out, symlinks=True, ignore=shutil.ignore_patterns(".doit.json*", ".lock"))
    return out


def _verify_failure(world, out: Path, name: str) -> str:
    run = run_doit(world["catalog"], out, f"verify:{name}", check=False)
    assert run.returncode != 0, run.stdout
    line = next(line for line in run.stdout.splitlines() if line.startswith(f"FAILED verify:{name}"))
    return line


def test_verify_names_a_truncated_tarball_and_does_not_restore_it(world, copy):
    name = _xz(world)
    tarball = sorted((copy / name / "arm64").glob("*.tar.xz"))[0]
    tarball.write_bytes(tarball.read_bytes()[:100])
    line = _verify_failure(world, copy, name)
    assert f"arm64/{tarball.name}" in line and "tarballs" in line
    assert tarball.stat().st_size == 100  # not silently restored from the cache or the registry


def test_verify_names_an_edited_config(world, copy):
    name = _xz(world)
    config = next((copy / name / "x86_64").glob("*.config.json"))
    config.write_bytes(config.read_bytes().replace(b'"os":"linux"', b'"os":"linux" '))
    line = _verify_failure(world, copy, name)
    assert f"x86_64/{config.name}" in line and "identity" in line


def test_verify_names_a_retagged_image(world, copy):
    name = _gz(world)
    other = world["images"][_xz(world)]["arm64"].config_digest
    subprocess.run(["docker", "tag", other, f"{name}:arm64"], check=True)
    try:
        line = _verify_failure(world, copy, name)
        assert f"{name}:arm64 has ID {other}" in line
    finally:
        subprocess.run(["docker", "tag", world["images"][name]["arm64"].config_digest, f"{name}:arm64"], check=True)


# -- a clone of a published branch ----------------------------------------------------------------


@pytest.fixture
def clone(world, tmp_path):
    name = _xz(world)
    folder = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--branch", name, "--single-branch", f"file://{world['repo']}", str(folder)], check=True
    )
    subprocess.run(["git", "lfs", "pull"], cwd=folder, check=True, capture_output=True)
    return folder


def _verify_branch(clone: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = doit_command(ROOT / "runtimes.yaml", clone.parent / "scratch", "verify_branch", f"clone={clone}", *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_branch_clone_verifies_offline(world, clone):
    run = _verify_branch(clone)
    assert run.returncode == 0, run.stdout + run.stderr
    name = _xz(world)
    manifests = [Digest.of(world["images"][name][arch].manifest()) for arch in ARCHES]
    assert f"branch {name} is upstream's image" in run.stdout
    assert all(digest in run.stdout for digest in manifests)
    assert "identity pass" in run.stdout and "tree pass" in run.stdout


def test_branch_clone_must_be_the_manifest_the_user_names(world, clone):
    run = _verify_branch(clone, "manifest=sha256:" + "0" * 64)
    assert run.returncode != 0 and "is not upstream's manifest" in run.stdout


def test_branch_clone_of_ours_says_which_layout_and_refuses_image(world, clone):
    run = _verify_branch(clone, "image=127.0.0.1:1/lambda/x:1")
    assert run.returncode != 0 and "image= is for AWS's layout" in run.stdout, run.stdout
    run = _verify_branch(clone)
    assert f"{clone}: this project's branch layout; upstream's documents from the branch" in run.stdout


@pytest.mark.parametrize("tamper", ["swapped", "truncated", "extra", "dockerfile", "config"])
def test_tampered_branch_clone_fails_naming_the_file(world, clone, tamper):
    arch = "x86_64"
    tarballs = sorted((clone / arch).glob("*.tar.xz"))
    if tamper == "swapped":
        a, b = tarballs[0], tarballs[1]
        data = a.read_bytes()
        a.write_bytes(b.read_bytes())
        b.write_bytes(data)
        named = (a.name, b.name)  # the line names the first of the two in layer order, the details both
    elif tamper == "truncated":
        tarballs[-1].write_bytes(tarballs[-1].read_bytes()[:-10])
        named = tarballs[-1].name
    elif tamper == "extra":
        extra = clone / arch / ("ab" * 32 + ".tar.xz")
        shutil.copy(tarballs[0], extra)
        named = extra.name
    elif tamper == "dockerfile":
        dockerfile = clone / arch / f"Dockerfile.{_xz(world)}"
        dockerfile.write_text(dockerfile.read_text().replace('ENV LANG="en_US.UTF-8"', 'ENV LANG="C"'))
        named = f"{arch}/Dockerfile.{_xz(world)}"
    else:
        config = next((clone / arch).glob("*.config.json"))
        config.write_bytes(config.read_bytes() + b"\n")
        named = config.name
    run = _verify_branch(clone)
    assert run.returncode != 0, run.stdout
    failed = next(line for line in run.stdout.splitlines() if line.startswith("FAILED verify_branch"))
    assert any(name in failed for name in ((named,) if isinstance(named, str) else named)), failed


# -- push to a mirror ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirror(world):
    """The source registry again (same samples), and an empty second registry to push to."""
    source = LocalRegistry(port=int(world["source_url"].rsplit(":", 1)[1])).start()
    target = LocalRegistry().start()
    try:
        for name, by_arch in world["images"].items():
            samples.push_image(RegistryClient(source.url), f"lambda/{name}", "1", by_arch)
        yield source, target
    finally:
        target.stop()
        source.stop()


def test_push_with_gzip_keeps_every_digest_and_a_second_push_uploads_nothing(world, mirror):
    _, target = mirror
    name = _gz(world)
    to = f"http://{target.host}/mirror/{name}:1"
    first = run_doit(world["catalog"], world["out"], f"push:{name}", f"to={to}")
    client = RegistryClient(target.url)
    index = client.get_manifest(f"mirror/{name}", "1")
    assert index.body == samples.image_index(world["images"][name])  # upstream's index, byte for byte
    for image in world["images"][name].values():
        manifest = client.get_manifest(f"mirror/{name}", Digest.of(image.manifest()))
        assert manifest.body == image.manifest()
        assert client.get_blob(f"mirror/{name}", image.config_digest) == image.config_bytes
    assert "upstream's index" in first.stdout
    since = len(target.requests_log())
    again = run_doit(world["catalog"], world["out"], f"push:{name}", f"to={to}")
    assert "0 blob(s) uploaded" in again.stdout
    assert target.count("POST", "/blobs/uploads", since=since) == 0
    assert target.count("PUT", "", since=since) == 0


def test_push_with_xz_keeps_config_digests_and_mounts_across_repositories(world, mirror):
    _, target = mirror
    name = _xz(world)
    run_doit(world["catalog"], world["out"], f"push:{name}", f"to=http://{target.host}/mirror/{name}:1")
    client = RegistryClient(target.url)
    index = client.get_manifest(f"mirror/{name}", "1").json()
    assert {m["platform"]["architecture"] for m in index["manifests"]} == {"amd64", "arm64"}
    for entry in index["manifests"]:
        manifest = client.get_manifest(f"mirror/{name}", entry["digest"]).json()
        arch = "x86_64" if entry["platform"]["architecture"] == "amd64" else "arm64"
        assert manifest["config"]["digest"] == world["images"][name][arch].config_digest
        assert all(layer["mediaType"].endswith("gzip") for layer in manifest["layers"])
    since = len(target.requests_log())
    other = run_doit(world["catalog"], world["out"], f"push:{name}", f"to=http://{target.host}/copy/{name}:1")
    # "10 mounted" contains "0 mounted": read the count.
    assert "0 blob(s) uploaded" in other.stdout and int(re.search(r"(\d+) mounted", other.stdout).group(1)) > 0
    assert target.count("PUT", "/blobs/uploads", since=since) == 0


def _fallback(client: RegistryClient, repository: str, subject: str):
    """The referrers index of `subject` under the spec's fallback tag, or None."""
    return client.find_manifest(repository, "sha256-" + subject.removeprefix("sha256:"))


def test_push_attaches_each_sbom_as_a_referrer_by_the_fallback_tag_and_leaves_the_index_alone(world, mirror):
    _, target = mirror
    name, repository = _xz(world), f"signed/{_xz(world)}"
    to = f"http://{target.host}/{repository}:1"
    client = RegistryClient(target.url)
    run_doit(world["catalog"], world["out"], f"push:{name}", f"to={to}", "sbom=0")
    plain = client.get_manifest(repository, "1")
    subjects = {entry["digest"]: entry for entry in plain.json()["manifests"]}
    assert all(_fallback(client, repository, digest) is None for digest in subjects)  # sbom=0 attaches nothing
    # Someone else's referrer of the x86_64 manifest, listed by the fallback tag before we push ours.
    arch_of = {d: "x86_64" if e["platform"]["architecture"] == "amd64" else "arm64" for d, e in subjects.items()}
    x86 = next(digest for digest, arch in arch_of.items() if arch == "x86_64")
    empty = client.push_blob(repository, b"{}")
    signature = client.push_blob(repository, b"not really a signature")
    other = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.example.signature",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": signature, "size": 22}],
            "subject": {k: subjects[x86][k] for k in ("mediaType", "digest", "size")},
        }
    ).encode()
    other_digest = client.push_manifest(repository, Digest.of(other), OCI_MANIFEST, other)
    other_entry = {"mediaType": OCI_MANIFEST, "digest": other_digest, "size": len(other)}
    theirs = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [other_entry]}).encode()
    client.push_manifest(repository, "sha256-" + x86.removeprefix("sha256:"), OCI_INDEX, theirs)

    pushed = run_doit(world["catalog"], world["out"], f"push:{name}", f"to={to}")
    assert client.get_manifest(repository, "1").body == plain.body  # the index is byte for byte the one without
    fallbacks = {}
    for digest, entry in subjects.items():
        fallback = _fallback(client, repository, digest)
        assert fallback is not None and fallback.media_type == OCI_INDEX
        listed = fallback.json()["manifests"]
        ours = [m for m in listed if m.get("artifactType") == "application/vnd.cyclonedx+json"]
        assert len(ours) == 1
        assert listed[:-1] == ([other_entry] if digest == x86 else [])  # an entry already there is kept, first
        referrer = client.get_manifest(repository, ours[0]["digest"])
        assert referrer.media_type == OCI_MANIFEST and len(referrer.body) == ours[0]["size"]
        body = referrer.json()
        assert body["artifactType"] == "application/vnd.cyclonedx+json"
        assert body["subject"] == {k: entry[k] for k in ("mediaType", "digest", "size")}
        assert body["config"] == {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2}
        assert client.get_blob(repository, empty, 2) == b"{}"
        (layer,) = body["layers"]
        assert layer["mediaType"] == "application/vnd.cyclonedx+json"
        sbom = layout.sbom_path(world["out"], name, arch_of[digest]).read_bytes()
        assert client.get_blob(repository, layer["digest"], layer["size"]) == sbom  # the SBOM, byte for byte
        tag = "sha256-" + digest.removeprefix("sha256:")
        assert f"{arch_of[digest]} SBOM referrer {referrer.digest} ({tag})" in pushed.stdout
        fallbacks[digest] = fallback.body

    since = len(target.requests_log())
    run_doit(world["catalog"], world["out"], f"push:{name}", f"to={to}")
    assert target.count("PUT", "", since=since) == 0  # nothing added: no blob, manifest or tag written
    assert client.get_manifest(repository, "1").body == plain.body
    for digest, body in fallbacks.items():
        assert _fallback(client, repository, digest).body == body


def test_load_reruns_only_for_an_image_that_is_gone(world, mirror):
    name = _xz(world)
    again = run_doit(world["catalog"], world["out"], f"build:{name}")
    assert "tasks: 1 done, 5 up to date" in again.stdout and "1 load, 1 build)" in again.stdout
    subprocess.run(["docker", "rmi", f"{name}:arm64"], check=True, capture_output=True)
    after = run_doit(world["catalog"], world["out"], f"build:{name}")
    assert "loaded 1 image" in after.stdout and "built" not in after.stdout
    log = (world["out"] / ".logs" / f"load:{name}.log").read_text()
    loaded = world["images"][name]["arm64"].config_digest
    assert f"{name}: loaded {name}:arm64 {loaded} (upstream's config digest)" in log


def test_an_old_snapshot_gains_its_documents_without_fetching_a_layer_again(world, mirror, copy):
    source, _ = mirror
    name = _xz(world)
    documents = [p for p in (copy / name).rglob("*.json") if layout.split_document_name(p.name)]
    assert len(documents) == 5  # the index, and a manifest and a config per architecture
    for path in documents:
        path.unlink()
    shutil.rmtree(copy / ".cache" / "documents")
    since = len(source.requests_log())
    run_doit(world["catalog"], copy, f"snapshot:{name}")
    assert sorted(p.name for p in (copy / name).rglob("*.json") if layout.split_document_name(p.name)) == sorted(
        p.name for p in documents
    )
    layers = {layer.digest for image in world["images"][name].values() for layer in image.layers}
    fetched = [path for method, path, _ in source.requests_log()[since:] if method == "GET" and "/blobs/" in path]
    assert fetched and not [path for path in fetched if any(digest in path for digest in layers)]


def test_push_target_names_one_image(world, mirror):
    _, target = mirror
    run = run_doit(world["catalog"], world["out"], "push", f"to=http://{target.host}/x/y:1", check=False)
    assert run.returncode != 0 and "names one image" in run.stdout


def test_push_to_a_loopback_registry_without_scheme_suggests_plain_http_at_once(world, mirror):
    _, target = mirror  # a real plain-HTTP registry on 127.0.0.1
    name = _gz(world)
    began = time.monotonic()
    run = run_doit(world["catalog"], world["out"], f"push:{name}", f"to={target.host}/mirror/{name}:2", check=False)
    seconds = time.monotonic() - began
    assert run.returncode != 0
    assert f"registry {target.host}: HTTPS failed" in run.stdout
    assert f"plain HTTP? use http://{target.host}/..." in run.stdout
    assert "unreachable" not in run.stdout and "doit demo" not in run.stdout  # not the no-network hint
    assert seconds < 8, f"{seconds:.1f} s: an SSL error was retried"
    assert RegistryClient(target.url).manifest_digest(f"mirror/{name}", "2") is None


def test_push_refuses_an_uppercase_repository_naming_the_target(world, mirror):
    _, target = mirror
    name = _gz(world)
    to = f"http://{target.host}/Mirror/{name}:1"
    run = run_doit(world["catalog"], world["out"], f"push:{name}", f"to={to}", check=False)
    assert run.returncode != 0
    assert f"push target {to!r}: repository 'Mirror/{name}': component 'Mirror' has uppercase letters" in run.stdout


# -- an engine that is not on this machine's filesystem -------------------------------------------


class _TcpToUnix:
    """The local engine's socket offered on a TCP port of 127.0.0.1, as a remote engine would be reached."""

    def __init__(self, path: str = "/var/run/docker.sock") -> None:
        self.path = path
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.path)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(1 << 16):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def test_load_build_and_verify_through_docker_host_tcp(world, copy):
    name = _gz(world)
    for tag in (f"{name}:local", f"{name}:x86_64", f"{name}:arm64"):
        subprocess.run(["docker", "rmi", tag], capture_output=True)
    proxy = _TcpToUnix()
    try:
        env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{proxy.port}"}
        cmd = doit_command(world["catalog"], copy, f"verify:{name}")
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    finally:
        proxy.close()
    assert run.returncode == 0, run.stdout + run.stderr
    for arch, image in world["images"][name].items():
        assert _image_id(f"{name}:{arch}") == image.config_digest
    assert _image_id(f"{name}:local") is not None


@pytest.mark.parametrize("edit", ["env", "user", "run"])
def test_an_edited_top_level_dockerfile_fails_verify_branch_naming_file_and_line(world, clone, edit):
    name = _xz(world)
    dockerfile = clone / f"Dockerfile.{name}"
    lines = dockerfile.read_text().splitlines(keepends=True)
    if edit == "env":
        at = next(i for i, line in enumerate(lines) if line.startswith("ENV TZ="))
        lines[at] = 'ENV TZ="UTC"\n'
    elif edit == "user":
        at = len(lines)
        lines.append("USER nobody\n")
    else:
        at = next(i for i, line in enumerate(lines) if line.startswith("ENTRYPOINT "))
        lines.insert(at, "RUN rm -rf /var/task\n")
    dockerfile.write_text("".join(lines))
    run = _verify_branch(clone)
    assert run.returncode != 0, run.stdout
    failed = next(line for line in run.stdout.splitlines() if line.startswith("FAILED verify_branch"))
    assert f"x86_64 tarballs: Dockerfile.{name}:{at + 1}: " in failed, failed
    if edit != "run":  # the top-level Dockerfile is the one built and compared (a RUN line does not build FROM scratch)
        assert f"x86_64 config: Dockerfile.{name} builds another config: " in failed, failed
