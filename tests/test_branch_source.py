"""The published branches as a layer source: real git, real git-lfs over file://, the real doit CLI and engine."""

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
from doit_cli import run_doit

from lambdaimages import layout
from lambdaimages.publish import git as publish_git
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import samples

ARCHS = ("x86_64", "arm64")
EXTRA = {"/var/lang/lib/extra/new.txt": b"a file the moved tag adds\n"}


def git(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    environment = {**os.environ, "LC_ALL": "C", **(env or {})}
    proc = subprocess.run(["git", *args], input=stdin, capture_output=True, text=True, env=environment)
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def summary_count(stdout: str, kind: str) -> int:
    """How many layers the run's summary line `<kind> N layers, ...` counts (0 without such a line)."""
    match = re.search(rf"^{re.escape(kind)} (\d+) layers?\b", stdout, re.M)
    return int(match[1]) if match else 0


def records(out: Path, codec: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(layout.cache_dir(out, codec).glob("*.json"))]


@pytest.fixture(scope="module")
def world(registry, docker_client, tmp_path_factory):
    """Runtimes a (xz, two architectures) and b (gzip), published from out1 to remote.git."""
    tmp = tmp_path_factory.mktemp("branchsource")
    (tmp / "home").mkdir()
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("HOME", str(tmp / "home"))
        environment.setenv("GIT_CONFIG_NOSYSTEM", "1")
        environment.setenv("GIT_TERMINAL_PROMPT", "0")
        prefix = f"s{uuid.uuid4().hex[:6]}"
        client = RegistryClient(registry.url)
        names = {"a": f"{prefix}.a", "b": f"{prefix}.b"}
        for name in names.values():
            samples.push_image(client, f"lambda/{name}", "1", {a: samples.lambda_like_image(name, a) for a in ARCHS})
        catalog = tmp / "runtimes.yaml"
        catalog.write_text(
            f"publish:\n  repo: remote.git\ndefaults:\n  registry: {registry.url}\n  architectures: [x86_64, arm64]\n"
            f"runtimes:\n  {names['a']}:\n    image: lambda/{names['a']}:1\n"
            f"  {names['b']}:\n    image: lambda/{names['b']}:1\n    compression: gzip\n"
        )
        out1 = tmp / "out1"
        first = run_doit(catalog, out1, "publish")
        yield {"tmp": tmp, "client": client, "names": names, "catalog": catalog, "out1": out1, "first": first,
               "bare": tmp / "remote.git"}  # fmt: skip
        for name in names.values():
            for arch in ARCHS:
                for tag in (layout.loaded_tag(name, arch), f"{name}:local"):
                    try:
                        docker_client.images.remove(tag, force=True)
                    except Exception:  # not made by this test
                        pass


def test_a_fresh_machine_takes_every_layer_from_the_branches(world, docker_client):
    out1, out2 = world["out1"], world["tmp"] / "out2"
    assert summary_count(world["first"].stdout, "compressed") > 0  # the publishing run compressed them
    proc = run_doit(world["catalog"], out2, "snapshot", "load")
    assert summary_count(proc.stdout, "compressed") == 0 and summary_count(proc.stdout, "downloaded") == 0
    taken = summary_count(proc.stdout, "from published branches")
    tarballs = {p.name for name in world["names"].values() for p in (out1 / name).rglob("*.tar.*")}
    assert taken == len(tarballs)
    # Byte for byte the publishing machine's snapshot: tarballs, Dockerfiles, documents and the SBOMs (made from
    # the facts of every layer, which the check gathered as it decompressed each tarball).
    for name in world["names"].values():
        assert files_of(out2 / name) == files_of(out1 / name)
    facts = {p.name.split(".")[0] for p in layout.facts_cache(out2).glob("*.json")}
    assert facts == {name.split(".")[0] for name in tarballs}
    assert {r["source"] for codec in ("xz6", "gzip") for r in records(out2, codec)} == {"published branches"}
    # Only the tip was fetched (no work tree), and the LFS store gave its objects up to the layer cache.
    bare = layout.branch_cache(out2, world["names"]["a"])
    assert (bare / "shallow").is_file() and not list((bare / "lfs" / "objects").rglob("*.tar.*"))
    # The load from the snapshot is upstream's image, for every architecture.
    for name in world["names"].values():
        for arch in ARCHS:
            state = json.loads((out2 / ".state" / name / f"{arch}.json").read_text())
            assert docker_client.images.get(layout.loaded_tag(name, arch)).id == state["config_digest"]


def test_a_tampered_lfs_object_is_reported_and_rebuilt(world):
    out1, out3 = world["out1"], world["tmp"] / "out3"
    name = world["names"]["a"]
    tarball = next((out1 / name / "x86_64").glob("*.tar.xz"))
    oid, _ = publish_git.lfs_pointer(tarball)
    stored = world["bare"] / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    original = stored.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    # A new file in its place: the remote's objects are hard links to out1's cache.
    (stored.parent / "tampered").write_bytes(bytes(damaged))
    os.replace(stored.parent / "tampered", stored)
    try:
        proc = run_doit(world["catalog"], out3, f"snapshot:{name}")
    finally:
        (stored.parent / "restored").write_bytes(original)
        os.replace(stored.parent / "restored", stored)
    hex_digest = tarball.name.split(".")[0]
    reported = [line for line in proc.stdout.splitlines() if "the tarball from published branches is wrong" in line]
    assert len(reported) == 1 and f"{name} x86_64" in reported[0] and hex_digest[:12] in reported[0]
    assert summary_count(proc.stdout, "compressed") == 1
    assert files_of(out3 / name) == files_of(out1 / name)


def test_a_branch_file_of_another_layer_is_refused(world):
    # A consistent LFS object (git-lfs sees nothing wrong) holding another layer than its name says.
    out1, out4, bare = world["out1"], world["tmp"] / "out4", world["bare"]
    name = world["names"]["a"]
    tip = git("--git-dir", str(bare), "rev-parse", f"refs/heads/{name}").strip()
    first, second = sorted((out1 / name / "arm64").glob("*.tar.xz"))[:2]
    tree = {}
    for line in git("--git-dir", str(bare), "ls-tree", "-r", tip).splitlines():
        info, path = line.split("\t")
        tree[path] = info.split()[2]
    tree[f"arm64/{first.name}"] = tree[f"arm64/{second.name}"]
    index = {"GIT_INDEX_FILE": str(world["tmp"] / "forged.index")}
    lines = "".join(f"100644 {blob}\t{path}\n" for path, blob in sorted(tree.items()))
    git("--git-dir", str(bare), "update-index", "--add", "--index-info", stdin=lines, env=index)
    forged_tree = git("--git-dir", str(bare), "write-tree", env=index).strip()
    who = ["-c", "user.name=forger", "-c", "user.email=forger@localhost"]
    forged = git(*who, "--git-dir", str(bare), "commit-tree", forged_tree, "-m", "forged").strip()
    git("--git-dir", str(bare), "update-ref", f"refs/heads/{name}", forged)
    try:
        proc = run_doit(world["catalog"], out4, f"snapshot:{name}")
    finally:
        git("--git-dir", str(bare), "update-ref", f"refs/heads/{name}", tip)
    reported = [line for line in proc.stdout.splitlines() if "the tarball from published branches is wrong" in line]
    assert len(reported) == 1 and reported[0].startswith(f"{name} ") and first.name[:12] in reported[0]
    assert "hashes to sha256:" + second.name.split(".")[0] in reported[0]
    assert summary_count(proc.stdout, "compressed") == 1
    assert files_of(out4 / name) == files_of(out1 / name)


def test_a_repository_that_is_down_makes_the_run_slower_not_failed(world):
    out5 = world["tmp"] / "out5"
    missing = world["tmp"] / "no-such-remote.git"
    proc = run_doit(world["catalog"], out5, "snapshot", f"repo={missing}")
    notes = [line for line in proc.stdout.splitlines() if "published branches:" in line]
    assert notes == [f"published branches: {missing} does not exist (layers it lacks are compressed here)"]
    assert summary_count(proc.stdout, "from published branches") == 0
    assert summary_count(proc.stdout, "compressed") > 0
    for name in world["names"].values():
        assert files_of(out5 / name) == files_of(world["out1"] / name)
    # A repository without the runtime's branch: one note per runtime, no failure.
    empty = world["tmp"] / "empty.git"
    git("init", "--quiet", "--bare", str(empty))
    proc = run_doit(world["catalog"], world["tmp"] / "out6", f"snapshot:{world['names']['b']}", f"repo={empty}")
    assert [line for line in proc.stdout.splitlines() if "no branch" in line] == [
        f"{world['names']['b']}: no branch {world['names']['b']} in {empty}: its layers come from upstream"
    ]


def test_one_moved_tag_compresses_only_its_new_layer(world, docker_client):
    # Last: the tag moves for good. A fresh machine compresses only the new layers, loads x86_64 as export
    # downloads them (the rest of the image from the branches' tarballs; the new layers are shared, so arm64 is
    # left to load:<rt>, from the snapshot), and ends byte-identical to the publishing machine.
    name = world["names"]["a"]
    moved = {arch: samples.lambda_like_image(name, arch, version="2", extra_files=EXTRA) for arch in ARCHS}
    samples.push_image(world["client"], f"lambda/{name}", "1", moved)
    out7 = world["tmp"] / "out7"
    proc = run_doit(world["catalog"], out7, f"snapshot:{name}", f"load:{name}")
    assert summary_count(proc.stdout, "compressed") == 2 and summary_count(proc.stdout, "downloaded") == 2
    # Both new layers (the function, the extra files) are the same on both architectures: 2 compressed, and
    # the two base layers, the runtime and the quirks layer from the branches.
    assert summary_count(proc.stdout, "from published branches") == 4
    for arch in ARCHS:
        state = json.loads((out7 / ".state" / name / f"{arch}.json").read_text())
        assert docker_client.images.get(layout.loaded_tag(name, arch)).id == state["config_digest"]
    export_log = (out7 / ".logs" / f"export:{name}.log").read_text()
    assert f"loaded {layout.loaded_tag(name, 'x86_64')} {moved['x86_64'].config_digest}" in export_log
    run_doit(world["catalog"], world["out1"], f"snapshot:{name}")
    assert files_of(out7 / name) == files_of(world["out1"] / name)
