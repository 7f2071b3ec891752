"""Publish each runtime's snapshot as one force-pushed git branch (tarballs in Git LFS), with a CHANGES.md.

A branch is one commit without parent whose author, committer and dates come from upstream (the newest image
config's `created`), so the same snapshot gives the same commit id. The commits are made in a private repository
(`git.PrivateRepo`); the tarballs are hard-linked into its LFS store only for `git lfs push`, which works with
any remote git-lfs supports, `file:///` URLs included.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from lambdaimages import layout, output
from lambdaimages.catalog import Catalog, Runtime
from lambdaimages.commit_message import CommitMessage
from lambdaimages.errors import PublishError
from lambdaimages.image import base, builds
from lambdaimages.inventory import images as inventories
from lambdaimages.publish import changes, git, snapshots
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.files import TMP_PREFIX
from lambdaimages.tools.templates import TEMPLATES, render_template

README = "README.md"
CHANGES = "CHANGES.md"
ATTRIBUTES = ".gitattributes"
GENERATED = (README, CHANGES, ATTRIBUTES)
README_TEMPLATE = "branch-README.md.j2"
ATTRIBUTES_TEMPLATE = "gitattributes.j2"


# -- where to publish ------------------------------------------------------------------------------


def target_repo(variable: str | None, catalog: Catalog) -> str | None:
    """`repo=` from the command line, else the catalog's `publish: {repo: ...}` (relative to the catalog's folder)."""
    if variable:
        return variable
    if catalog.publish_repo:
        if _is_url(catalog.publish_repo):
            return catalog.publish_repo
        return str((Path(catalog.path).parent / catalog.publish_repo).absolute())
    return None


def _is_url(value: str) -> bool:
    # scheme://..., or scp-like user@host:path / host:path (a colon before any slash)
    return "://" in value or (bool(re.match(r"^[^/:]+:", value)) and not os.path.exists(value))


def remote_url(repo: str) -> str:
    """The URL git and git-lfs both accept: a local path becomes `file:///abs/path` (git-lfs needs the scheme)."""
    return repo if _is_url(repo) else Path(repo).absolute().as_uri()


def local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return None


# -- the branch's content --------------------------------------------------------------------------


@dataclass(frozen=True)
class BranchFiles:
    """The snapshot as branch files: path -> blob id, and the LFS objects (oid -> tarball) they point to."""

    blobs: dict[str, str]
    lfs: dict[str, Path]


def branch_files(repo: git.PrivateRepo, folder: Path) -> BranchFiles:
    """Every file of `<out>/<rt>` (interrupted writes aside) as blobs, tarballs as LFS pointers."""
    plain: list[tuple[str, Path]] = []
    blobs: dict[str, str] = {}
    lfs: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith(TMP_PREFIX):
            continue
        name = path.relative_to(folder).as_posix()
        if layout.split_tarball_name(path.name) is not None:
            oid, pointer = git.lfs_pointer(path)
            blobs[name] = repo.hash_blob(pointer)
            lfs[oid] = path
        else:
            plain.append((name, path))
    blobs.update(zip([n for n, _ in plain], repo.hash_files([p for _, p in plain]), strict=True))
    return BranchFiles(blobs, lfs)


def commit_time(states: dict[str, State]) -> int:
    """The newest upstream config `created` (seconds since the epoch); 0 when upstream gives none."""
    times = [_epoch(s.config.get("created")) for s in states.values()]
    return max((t for t in times if t is not None), default=0)


def _epoch(created: object) -> int | None:
    if not isinstance(created, str):
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:?\d\d)?$", created.strip())
    if not match:
        return None
    zone = match[2] or "Z"
    zone = "+00:00" if zone == "Z" else zone if ":" in zone else f"{zone[:3]}:{zone[3:]}"
    return int(datetime.datetime.fromisoformat(match[1] + zone).timestamp())


def render_readme(runtime: Runtime, states: dict[str, State], templates: Path = TEMPLATES) -> str:
    top = layout.default_arch(runtime.architectures)
    archs = [{"arch": arch, "manifest": s.manifest_digest, "layers": len(s.layers)} for arch, s in states.items()]
    context = {
        "runtime": runtime.name,
        "reference": next(iter(states.values())).reference,
        "archs": archs,
        "top": top,
        "others": [a for a in runtime.architectures if a != top],
        "extension": runtime.extension,
    }
    return render_template(README_TEMPLATE, context, templates)


def render_attributes(templates: Path = TEMPLATES) -> str:
    suffixes = [f"*.{extension}" for extension in layout.TARBALL_EXTENSIONS]
    return render_template(ATTRIBUTES_TEMPLATE, {"patterns": suffixes}, templates)


# -- the previous snapshot -------------------------------------------------------------------------


def branch_snapshot(repo: git.PrivateRepo, commit: str, runtime: Runtime, out: Path) -> snapshots.Snapshot:
    """The snapshot a published commit holds; tarballs from the layer cache, else fetched with git-lfs."""
    cache = LayerCache(out)
    files = repo.files(commit)
    message = CommitMessage.parse(repo.message(commit))
    plan: dict[str, list[tuple[str, str, int, Path | None]]] = {}
    dockerfiles = {}
    to_fetch = []
    for arch in runtime.architectures:
        dockerfile = repo.show(commit, f"{arch}/Dockerfile.{runtime.name}")
        if dockerfile is None:
            continue
        dockerfiles[arch] = dockerfile
        plan[arch] = []
        for name, ext in snapshots.dockerfile_layers(dockerfile):
            path = f"{arch}/{name}.{ext}"
            pointer = git.parse_pointer(repo.show(commit, path) or "") if path in files else None
            oid, size = pointer if pointer else (None, None)
            source = cache.find(name)
            if source is None and oid is not None:
                source = repo.lfs_object(oid)
                if not source.is_file():
                    to_fetch.append(path)
            plan[arch].append((name, path, size, source))
    if to_fetch:
        try:
            repo.lfs_fetch(commit, to_fetch)
        except PublishError as exc:
            # CHANGES.md then says which layers it could not compare; publishing itself does not need them.
            output.say(f"{runtime.name}: previous layers not fetched, no file-level comparison: {exc}")
    archs = {}
    for arch, layers in plan.items():
        found = tuple(
            snapshots.Layer(name, size, source if source is not None and source.is_file() else None)
            for name, _, size, source in layers
        )
        inventory = inventories.parse(repo.show(commit, f"{arch}/{layout.SBOM}"))
        archs[arch] = snapshots.ArchSnapshot(arch, message.manifests.get(arch), found, dockerfiles[arch], inventory)
    return snapshots.Snapshot(runtime.name, message.reference, f"published commit {commit[:12]}", archs)


def published_bases(out: Path, runtime: Runtime, repo: str) -> list[base.Base]:
    """The snapshot the runtime's published branch holds, per architecture, as a base images may be built on
    (`check_base`): diff_ids from the ADD lines (tarballs are named by them), the manifest digest from the commit
    message, the inventory from its SBOM. Empty when the repository has no such branch.

    The branch's tip is fetched into the private repository; when the repository cannot be reached, the tip
    fetched last (by publish, changes or check_base) is used, and none when there is none.
    """
    url = remote_url(repo)
    path = local_path(url)
    if path is not None and not path.exists():
        return []
    private = git.PrivateRepo(out, runtime.name, url)
    try:
        tip = private.remote_tip()
    except PublishError as exc:
        tip = private.run("rev-parse", "--verify", "--quiet", private.published_ref, check=False).strip() or None
        output.say(f"{runtime.name}: branch not fetched ({exc}); {'the last fetched tip' if tip else 'none'} used")
    if tip is None:
        return []
    digests = CommitMessage.parse(private.message(tip)).manifests
    snapshot = SnapshotView(out, runtime)
    built = builds.read(out, runtime.name)
    found = []
    for arch in runtime.architectures:
        dockerfile = private.show(tip, f"{arch}/Dockerfile.{runtime.name}")
        if dockerfile is None or arch not in digests:
            continue
        diff_ids = tuple(f"sha256:{name}" for name, _ in snapshots.dockerfile_layers(dockerfile))
        local = snapshot.state_or_none(arch)
        current = local is None or local.manifest_digest == digests[arch]
        label = f"published commit {tip[:12]}"
        sbom = private.show(tip, f"{arch}/{layout.SBOM}")
        local_builds = builds.of_manifest(built, digests[arch])
        found.append(
            base.Base(runtime.name, arch, digests[arch], diff_ids, label, current, local_builds, sbom_text=sbom)
        )
    return found


# -- publish ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What `publish` did: `pushed` is False when the branch already held this snapshot."""

    runtime: str
    commit: str
    pushed: bool
    changelog: str


@dataclass
class _Plan:
    repo: git.PrivateRepo
    tip: str | None
    files: BranchFiles
    unchanged: bool


def _plan(out: Path, runtime: Runtime, repo: str | None) -> _Plan:
    url = remote_url(repo) if repo else None
    private = git.PrivateRepo(out, runtime.name, url)
    tip = private.remote_tip() if url else None
    snapshot = SnapshotView(out, runtime)
    files = branch_files(private, snapshot.folder)
    if not files.blobs:
        raise snapshot.empty()
    unchanged = False
    if tip is not None:
        published = {path: blob for path, (_, blob) in private.files(tip).items() if path not in GENERATED}
        unchanged = published == files.blobs
    return _Plan(private, tip, files, unchanged)


def changelog(out: Path, runtime: Runtime, plan: _Plan) -> str:
    """CHANGES.md of the snapshot against the published branch, else the last snapshot kept locally."""
    if plan.tip is not None:
        previous = branch_snapshot(plan.repo, plan.tip, runtime, out)
    else:
        previous = snapshots.local_previous(out, runtime)
    return changes.render_markdown(changes.compare(previous, snapshots.current_snapshot(out, runtime)))


def publish(out: Path, runtime: Runtime, repo: str) -> Outcome:
    """Commit `<out>/<rt>` (plus README.md, CHANGES.md, .gitattributes) and force-push it as branch `<rt>`.

    Nothing is committed or pushed when the branch already holds this snapshot.

    Raises:
        PublishError: git or git-lfs failed (the message names the runtime and the failing command).
    """
    _create_local_target(remote_url(repo))
    plan = _plan(out, runtime, repo)
    try:
        if plan.unchanged:
            return Outcome(runtime.name, plan.tip, False, plan.repo.show(plan.tip, CHANGES) or "")
        text = changelog(out, runtime, plan)
        states = SnapshotView(out, runtime).states()
        blobs = dict(plan.files.blobs)
        blobs[README] = plan.repo.hash_blob(render_readme(runtime, states).encode())
        blobs[CHANGES] = plan.repo.hash_blob(text.encode())
        blobs[ATTRIBUTES] = plan.repo.hash_blob(render_attributes().encode())
        tree = plan.repo.write_tree(blobs)
        commit = plan.repo.commit_tree(tree, CommitMessage.of(runtime.name, states).format(), commit_time(states))
        plan.repo.lfs_push(plan.files.lfs)
        plan.repo.run("push", "--quiet", "--force", git.REMOTE, f"{commit}:refs/heads/{runtime.name}")
        plan.repo.run("update-ref", plan.repo.published_ref, commit)
        return Outcome(runtime.name, commit, True, text)
    finally:
        plan.repo.drop_lfs_store()


def _create_local_target(url: str) -> None:
    """A local target that does not exist yet becomes a new bare repository."""
    path = local_path(url)
    if path is None or path.exists():
        return
    # Made beside it and renamed into place: two publish tasks (threads) may both find it missing.
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}.{threading.get_ident()}")
    git.init_bare(tmp)
    try:
        os.rename(tmp, path)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not path.is_dir():
            raise
        return  # the other task made it
    output.say(f"created bare repository {path}", show=True)


def changes_text(out: Path, runtime: Runtime, repo: str | None) -> str:
    """What `doit changes:<rt>` prints: the CHANGES.md `publish` would write now, or the published one."""
    if repo is not None:
        path = local_path(remote_url(repo))
        if path is not None and not path.exists():
            repo = None  # nothing published there yet
    plan = _plan(out, runtime, repo)
    try:
        if plan.unchanged:
            published = plan.repo.show(plan.tip, CHANGES) or ""
            note = f"<!-- {runtime.name}: unchanged since published commit {plan.tip[:12]}; its {CHANGES}: -->"
            return f"{note}\n{published}"
        return changelog(out, runtime, plan)
    finally:
        plan.repo.drop_lfs_store()
