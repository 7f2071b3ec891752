"""Publishing branches to a local bare repository with Debian's git-lfs, through the real doit CLI and engine."""

import datetime
import io
import json
import os
import re
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from doit_cli import run_doit
from states import make_state

from lambdaimages.catalog import Catalog
from lambdaimages.publish import branches as publish
from lambdaimages.publish import git as publish_git
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import samples
from lambdaimages.tools import tree

ARCHS = ("x86_64", "arm64")
EXTRA = {"/var/lang/lib/extra/new.txt": b"a file the moved tag adds\n"}


def git(*args: str, cwd: Path | None = None) -> str:
    """git as a user runs it; in the module fixture, HOME is an empty folder and system config is off."""
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def branch_tip(bare: Path, branch: str) -> str:
    return git("--git-dir", str(bare), "rev-parse", f"refs/heads/{branch}").strip()


def show(bare: Path, rev: str) -> str:
    return git("--git-dir", str(bare), "show", rev)


def listed_files(changes_md: str) -> dict[str, dict[str, set[str]]]:
    """arch -> kind (added, removed, changed) -> the paths CHANGES.md lists."""
    result: dict[str, dict[str, set[str]]] = {}
    arch = kind = None
    for line in changes_md.splitlines():
        if line.startswith("## "):
            arch = line[3:].strip()
            result[arch] = {"added": set(), "removed": set(), "changed": set()}
        elif line in ("Added:", "Removed:", "Changed:"):
            kind = line[:-1].lower()
        elif line.startswith("### "):
            kind = None
        elif kind and (match := re.match(r"^- `(/[^`]*)`", line)):
            result[arch][kind].add(match[1])
    return result


def printed_changes(stdout: str, task: str) -> str:
    """What `doit changes:<rt>` printed: from the changelog's title to the task's end line."""
    start = stdout.index("# Changes in")
    return stdout[start : stdout.index(f"done   {task}", start)]


def files_section(changes_md: str) -> list[str]:
    return [re.split(r"\n##+ ", block)[0] for block in changes_md.split("### Files")[1:]]


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    """Runtime a (moves later, xz) and b (never moves, gzip), published once from out1 to remote.git."""
    tmp = tmp_path_factory.mktemp("publish")
    # No global or system git configuration: publishing must not rely on a user's (name, email, LFS filters).
    (tmp / "home").mkdir()
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("HOME", str(tmp / "home"))
        environment.setenv("GIT_CONFIG_NOSYSTEM", "1")
        environment.setenv("GIT_TERMINAL_PROMPT", "0")
        yield _published_world(registry, tmp)


def _published_world(registry, tmp: Path) -> dict:
    prefix = f"p{uuid.uuid4().hex[:6]}"
    client = RegistryClient(registry.url)
    names = {"a": f"{prefix}.a", "b": f"{prefix}.b"}
    images = {}
    for key, name in names.items():
        images[key] = {arch: samples.lambda_like_image(name, arch) for arch in ARCHS}
        samples.push_image(client, f"lambda/{name}", "1", images[key])
    runtimes = (
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64, arm64]\nruntimes:\n"
        f"  {names['a']}:\n    image: lambda/{names['a']}:1\n"
        f"  {names['b']}:\n    image: lambda/{names['b']}:1\n    compression: gzip\n"
    )
    catalog = tmp / "runtimes.yaml"
    catalog.write_text("publish:\n  repo: remote.git\n" + runtimes)  # relative to the catalog's folder
    plain_catalog = tmp / "plain.yaml"
    plain_catalog.write_text(runtimes)
    out = tmp / "out1"
    first = run_doit(catalog, out, "publish")
    return {
        "tmp": tmp,
        "client": client,
        "names": names,
        "images": images,
        "catalog": catalog,
        "plain_catalog": plain_catalog,
        "bare": tmp / "remote.git",
        "out": out,
        "first": first,
        "commits": {key: branch_tip(tmp / "remote.git", name) for key, name in names.items()},
    }


def test_branch_holds_the_snapshot_with_lfs_pointers(world):
    bare, out, name = world["bare"], world["out"], world["names"]["a"]
    assert "created bare repository" in world["first"].stdout
    commit = world["commits"]["a"]
    files = git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", commit).split()
    snapshot = sorted(p.relative_to(out / name).as_posix() for p in (out / name).rglob("*") if p.is_file())
    assert sorted(files) == sorted([*snapshot, "README.md", "CHANGES.md", ".gitattributes"])
    tarballs = [f for f in files if f.endswith(".tar.xz")]
    assert len(tarballs) == 2 * len(world["images"]["a"]["x86_64"].layers)
    for path in tarballs:
        pointer = show(bare, f"{commit}:{path}")
        oid, size = publish_git.parse_pointer(pointer)
        data = (out / name / path).read_bytes()
        assert size == len(data)
        stored = bare / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
        assert stored.read_bytes() == data
    assert "*.tar.xz filter=lfs diff=lfs merge=lfs -text" in show(bare, f"{commit}:.gitattributes")
    readme = show(bare, f"{commit}:README.md")
    assert "git lfs pull" in readme and f"docker build -t {name}:local -f Dockerfile.{name} ." in readme
    # One commit without parent; message names the reference and each manifest digest; dates from upstream.
    header = git("--git-dir", str(bare), "cat-file", "-p", commit)
    assert "\nparent " not in header
    created = int(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC).timestamp())
    assert f"author lambdaimages <lambdaimages@localhost> {created} +0000" in header
    assert f"committer lambdaimages <lambdaimages@localhost> {created} +0000" in header
    message = git("--git-dir", str(bare), "log", "-1", "--format=%B", commit)
    assert message.startswith(f"Update source for {name} image\n")
    for arch in ARCHS:
        state = json.loads((out / ".state" / name / f"{arch}.json").read_text())
        assert f"\nUpstream: {state['reference']}\n" in message
        assert f"\n{arch}: {state['manifest_digest']}\n" in message
    # A first publication: CHANGES.md says so and lists the layers and the versions.
    changes_md = show(bare, f"{commit}:CHANGES.md")
    assert "First snapshot" in changes_md
    assert "| os | - | Lambda Sample Linux 1 |" in changes_md
    # The gzip runtime's tarballs are LFS pointers too.
    other = world["commits"]["b"]
    gz = [
        f for f in git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", other).split() if f.endswith(".tar.gz")
    ]
    assert gz and all(publish_git.parse_pointer(show(bare, f"{other}:{f}")) for f in gz)


def test_fresh_clone_with_lfs_pull_builds_the_upstream_image(world, docker_client):
    bare, name = world["bare"], world["names"]["a"]
    clone = world["tmp"] / "clone"
    git("clone", "--quiet", "--branch", name, "--single-branch", bare.as_uri(), str(clone))
    first_add = next((clone / "x86_64").glob("*.tar.xz"))
    assert first_add.read_text().startswith("version https://git-lfs.github.com/spec/v1\n")  # pointers before the pull
    git("lfs", "install", "--local", cwd=clone)
    git("lfs", "pull", cwd=clone)
    assert first_add.read_bytes().startswith(b"\xfd7zXZ")
    tag = f"{name}:from-clone"
    try:
        docker_client.images.build(path=str(clone), dockerfile=f"Dockerfile.{name}", tag=tag, rm=True)
        with tree.layers_of_docker_save(docker_client.images.get(tag).save()) as layers:
            built = tree.merge_layers(layers)
    finally:
        docker_client.images.remove(tag, force=True)
    upstream = tree.merge_layers(io.BytesIO(layer.tar) for layer in world["images"]["a"]["x86_64"].layers)
    diff = tree.diff_trees(upstream, built)
    assert not diff, "\n".join(diff.describe())


def test_publishing_again_is_a_noop_with_the_same_commits(world):
    proc = run_doit(world["catalog"], world["out"], "publish")
    for key, name in world["names"].items():
        assert branch_tip(world["bare"], name) == world["commits"][key]
        assert f"{name}: unchanged since published commit {world['commits'][key]}; nothing pushed" in proc.stdout
    # With nothing new, `doit changes` shows what the published commit's CHANGES.md says.
    name = world["names"]["a"]
    shown = run_doit(world["catalog"], world["out"], f"changes:{name}").stdout
    assert f"{name}: unchanged since published commit {world['commits']['a'][:12]}" in shown
    assert show(world["bare"], f"{world['commits']['a']}:CHANGES.md") in shown


def test_same_snapshot_gives_the_same_commit_in_another_repository(world):
    other = world["tmp"] / "other.git"
    run_doit(world["plain_catalog"], world["tmp"] / "out2", "publish", f"repo={other}")
    for key, name in world["names"].items():
        assert branch_tip(other, name) == world["commits"][key]


def test_publish_without_repository_fails_with_one_line(world):
    proc = run_doit(world["plain_catalog"], world["tmp"] / "out2", f"publish:{world['names']['b']}", check=False)
    assert proc.returncode != 0
    assert f"FAILED publish:{world['names']['b']}: {world['names']['b']}: no repository to publish to" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_moved_tag_yields_a_new_commit_listing_exactly_the_changed_files(world):
    name_a, name_b = world["names"]["a"], world["names"]["b"]
    moved = {arch: samples.lambda_like_image(name_a, arch, version="2", extra_files=EXTRA) for arch in ARCHS}
    samples.push_image(world["client"], f"lambda/{name_a}", "1", moved)
    preview = run_doit(world["catalog"], world["out"], f"changes:{name_a}")
    proc = run_doit(world["catalog"], world["out"], "publish")
    bare = world["bare"]
    new_a = branch_tip(bare, name_a)
    assert new_a != world["commits"]["a"]
    assert branch_tip(bare, name_b) == world["commits"]["b"]
    assert f"{name_b}: unchanged since published commit" in proc.stdout
    changes_md = show(bare, f"{new_a}:CHANGES.md")
    assert changes_md in preview.stdout  # `doit changes` printed what publish then wrote
    assert f"published commit {world['commits']['a'][:12]}" in changes_md
    expected = {"added": {"/var/lang/lib", "/var/lang/lib/extra", "/var/lang/lib/extra/new.txt"},
                "removed": set(), "changed": {"/var/task/function.sh"}}  # fmt: skip
    assert listed_files(changes_md) == {arch: expected for arch in ARCHS}
    assert "- Layers: 2 added, 1 removed, 3 kept" in changes_md
    assert "| /var/lang | 3 | 0 | 0 | +26 B |" in changes_md
    assert '-LABEL "com.amazonaws.lambda.platform.version"="sample-' in changes_md  # the config's label moved too
    world["moved_changes"] = changes_md
    world["moved_commit"] = new_a


def test_changes_without_repository_compares_with_the_previous_local_snapshot(world):
    # out2 holds the first snapshot and was published elsewhere; with no repository set, the previous
    # local snapshot (kept when resolve replaced the state) is the reference.
    name = world["names"]["a"]
    proc = run_doit(world["plain_catalog"], world["tmp"] / "out2", f"changes:{name}")
    printed = printed_changes(proc.stdout, f"changes:{name}")
    assert "compared with the previous local snapshot" in printed
    assert files_section(printed) == files_section(world["moved_changes"])


def test_previous_layers_come_from_git_lfs_when_not_cached(world):
    # out3 never saw the first snapshot: the replaced layer is fetched from other.git's LFS store, and the
    # same snapshot against the same published commit gives the same commit as from out1.
    out3 = world["tmp"] / "out3"
    other = world["tmp"] / "other.git"
    run_doit(world["plain_catalog"], out3, "publish", f"repo={other}")
    name = world["names"]["a"]
    assert not list((out3 / ".cache").glob(f"*/{world['images']['a']['x86_64'].layers[2].diff_id[7:]}.*"))
    assert show(other, f"{name}:CHANGES.md") == world["moved_changes"]
    assert branch_tip(other, name) == world["moved_commit"]


def test_target_repo_setting_and_urls(tmp_path):
    catalog = Catalog(tmp_path / "runtimes.yaml", (), publish_repo="sub/remote.git")
    assert publish.target_repo(None, catalog) == str(tmp_path / "sub" / "remote.git")
    assert publish.target_repo("/srv/x.git", catalog) == "/srv/x.git"
    assert publish.target_repo(None, Catalog(tmp_path / "r.yaml", ())) is None
    assert publish.remote_url("/srv/x.git") == "file:///srv/x.git"
    assert publish.local_path(publish.remote_url("/srv/a b.git")) == Path("/srv/a b.git")
    assert publish.remote_url("https://example.invalid/x.git") == "https://example.invalid/x.git"
    assert publish.remote_url("git@example.invalid:x.git") == "git@example.invalid:x.git"


def test_lfs_pointer_is_what_git_lfs_writes(tmp_path):
    path = tmp_path / "layer.tar.xz"
    path.write_bytes(os.urandom(70000))
    oid, pointer = publish_git.lfs_pointer(path)
    assert pointer.decode() == git("lfs", "pointer", f"--file={path}", cwd=tmp_path)
    assert publish_git.parse_pointer(pointer.decode()) == (oid, 70000)


def test_commit_time_from_upstream_created():
    states = {
        "x86_64": make_state(config={"created": "2024-10-14T16:21:33.123456789Z"}),
        "arm64": make_state(architecture="arm64", config={"created": "2024-10-14T18:00:00+02:00"}),
    }
    assert publish.commit_time(states) == int(
        datetime.datetime(2024, 10, 14, 16, 21, 33, tzinfo=datetime.UTC).timestamp()
    )
    assert publish.commit_time({"x86_64": make_state(config={})}) == 0


def test_two_publish_tasks_creating_the_same_target_repository_both_succeed(tmp_path):
    target = tmp_path / "new.git"
    errors = []

    def create():
        try:
            publish._create_local_target(publish.remote_url(str(target)))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (target / "HEAD").is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
