"""Publish each runtime's snapshot as one force-pushed git branch (tarballs in Git LFS), with a CHANGES.md.

Commits are made with git plumbing in a private bare repository per runtime (`<out>/.publish/<rt>.git`, its own
index), never in a user's checkout. A branch is one commit without parent whose author, committer and dates come
from upstream (the newest image config's `created`), so the same snapshot gives the same commit id. LFS pointers
are computed here (spec v1); the tarballs are hard-linked into the private repository's LFS store only for
`git lfs push`, which works with any remote git-lfs supports, `file:///` URLs included.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import re
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from lambdaimages import layout
from lambdaimages.catalog import Catalog, Runtime
from lambdaimages.errors import OutputError, PublishError
from lambdaimages.publish import changes
from lambdaimages.snapshot import render, resolve
from lambdaimages.tools.files import TMP_PREFIX, link_or_copy

AUTHOR_NAME = "lambdaimages"
AUTHOR_EMAIL = "lambdaimages@localhost"
README = "README.md"
CHANGES = "CHANGES.md"
ATTRIBUTES = ".gitattributes"
GENERATED = (README, CHANGES, ATTRIBUTES)
README_TEMPLATE = "branch-README.md.j2"
ATTRIBUTES_TEMPLATE = "gitattributes.j2"
LFS_SUFFIXES = (".tar.xz", ".tar.gz")
LFS_SPEC = "https://git-lfs.github.com/spec/v1"
PUBLISHED_REF = "refs/published/"
REMOTE = "target"
# Inherited variables that would point git at another repository or work tree than the private one.
FOREIGN_GIT_VARIABLES = (
    "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR",
    "GIT_INDEX_FILE", "GIT_DIR", "GIT_LFS_SKIP_PUSH",
)  # fmt: skip


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


def _local_path(url: str) -> Path | None:
    if url.startswith("file://"):
        return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
    return None


# -- the private repository ------------------------------------------------------------------------


class PrivateRepo:
    """A bare repository with its own index, in which one runtime's branch commits are made and pushed from."""

    def __init__(self, out: Path, runtime: str, url: str | None) -> None:
        self.runtime = runtime
        self.git_dir = layout.publish_dir(out, runtime).absolute()
        self.url = url
        self.env = {k: v for k, v in os.environ.items() if k not in FOREIGN_GIT_VARIABLES}
        self.env.update(
            GIT_DIR=str(self.git_dir),
            GIT_INDEX_FILE=str(self.git_dir / "publish.index"),
            GIT_TERMINAL_PROMPT="0",
            LC_ALL="C",
        )
        if not (self.git_dir / "HEAD").is_file():
            self.git_dir.parent.mkdir(parents=True, exist_ok=True)
            self.run("init", "--quiet", "--bare", str(self.git_dir))
        if url is not None:
            self.run("config", f"remote.{REMOTE}.url", url)

    def run(self, *args: str, stdin: bytes | None = None, env: dict | None = None, check: bool = True) -> str:
        config = [
            "-c", f"user.name={AUTHOR_NAME}", "-c", f"user.email={AUTHOR_EMAIL}", "-c", "commit.gpgsign=false",
            "-c", "i18n.commitEncoding=UTF-8", "-c", "core.hooksPath=/dev/null", "-c", "lfs.locksverify=false",
            "-c", "init.defaultBranch=main", "-c", "advice.detachedHead=false",
        ]  # fmt: skip
        try:
            proc = subprocess.run(
                ["git", *config, *args],
                input=stdin if stdin is not None else b"",
                capture_output=True,
                env={**self.env, **(env or {})},
                timeout=3600,
            )
        except FileNotFoundError:
            raise PublishError("git is not installed (scripts/setup installs git and git-lfs)") from None
        except subprocess.TimeoutExpired:
            raise PublishError(f"{self.runtime}: git {args[0]} took more than an hour") from None
        if check and proc.returncode != 0:
            raise PublishError(f"{self.runtime}: git {' '.join(args[:2])} failed: {_last_line(proc.stderr)}")
        return proc.stdout.decode("utf-8", "replace")

    def remote_tip(self) -> str | None:
        """The commit the target's branch points at (fetched into the private repository), or None."""
        listing = self.run("ls-remote", REMOTE, f"refs/heads/{self.runtime}")
        if not listing.strip():
            return None
        tip = listing.split()[0]
        self.run("fetch", "--quiet", "--no-tags", REMOTE, f"+refs/heads/{self.runtime}:{self.published_ref}")
        return tip

    @property
    def published_ref(self) -> str:
        return PUBLISHED_REF + self.runtime

    def files(self, commit: str) -> dict[str, tuple[str, str]]:
        """path -> (mode, blob id) of every file of a commit."""
        result = {}
        for line in self.run("ls-tree", "-r", "--full-tree", "-z", commit).split("\0"):
            if line:
                info, _, path = line.partition("\t")
                mode, _, blob = info.split()
                result[path] = (mode, blob)
        return result

    def show(self, commit: str, path: str) -> str | None:
        text = self.run("cat-file", "blob", f"{commit}:{path}", check=False)
        return text or None

    def message(self, commit: str) -> str:
        return self.run("log", "-1", "--format=%B", commit)

    def hash_blob(self, data: bytes) -> str:
        return self.run("hash-object", "-w", "--no-filters", "--stdin", stdin=data).strip()

    def hash_files(self, paths: list[Path]) -> list[str]:
        if not paths:
            return []
        names = "".join(f"{p}\n" for p in paths).encode()
        return self.run("hash-object", "-w", "--no-filters", "--stdin-paths", stdin=names).split()

    def write_tree(self, entries: dict[str, str]) -> str:
        index = Path(self.env["GIT_INDEX_FILE"])
        index.unlink(missing_ok=True)
        lines = "".join(f"100644 {blob}\t{path}\n" for path, blob in sorted(entries.items()))
        self.run("update-index", "--add", "--index-info", stdin=lines.encode())
        tree = self.run("write-tree").strip()
        index.unlink(missing_ok=True)
        return tree

    def commit_tree(self, tree: str, message: str, when: int) -> str:
        date = f"@{when} +0000"
        people = {
            "GIT_AUTHOR_NAME": AUTHOR_NAME, "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL, "GIT_AUTHOR_DATE": date,
            "GIT_COMMITTER_NAME": AUTHOR_NAME, "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL, "GIT_COMMITTER_DATE": date,
        }  # fmt: skip
        return self.run("commit-tree", tree, "-F", "-", stdin=message.encode(), env=people).strip()

    def lfs_object(self, oid: str) -> Path:
        return self.git_dir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid

    def lfs_push(self, objects: dict[str, Path]) -> None:
        """Upload LFS objects (oid -> file) to the target; the remote skips those it has."""
        for oid, path in objects.items():
            link_or_copy(path, self.lfs_object(oid))
        oids = sorted(objects)
        for start in range(0, len(oids), 100):
            self.run("lfs", "push", "--object-id", REMOTE, *oids[start : start + 100])

    def lfs_fetch(self, commit: str, paths: list[str]) -> None:
        self.run("lfs", "fetch", REMOTE, commit, "--include", ",".join(paths))

    def drop_lfs_store(self) -> None:
        """The store held only links or downloads for one run: the layer cache is where tarballs live."""
        shutil.rmtree(self.git_dir / "lfs" / "objects", ignore_errors=True)


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


# -- the branch's content --------------------------------------------------------------------------


@dataclass(frozen=True)
class BranchFiles:
    """The snapshot as branch files: path -> blob id, and the LFS objects (oid -> tarball) they point to."""

    blobs: dict[str, str]
    lfs: dict[str, Path]


def lfs_pointer(path: Path) -> tuple[str, bytes]:
    """(oid, pointer text) of a file, as `git lfs pointer --file` writes it."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    oid = digest.hexdigest()
    return oid, f"version {LFS_SPEC}\noid sha256:{oid}\nsize {size}\n".encode()


def parse_pointer(text: str) -> tuple[str, int] | None:
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    if fields.get("version") != LFS_SPEC or not fields.get("oid", "").startswith("sha256:"):
        return None
    return fields["oid"].removeprefix("sha256:"), int(fields.get("size", "0"))


def branch_files(repo: PrivateRepo, folder: Path) -> BranchFiles:
    """Every file of `<out>/<rt>` (interrupted writes aside) as blobs, tarballs as LFS pointers."""
    plain: list[tuple[str, Path]] = []
    blobs: dict[str, str] = {}
    lfs: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name.startswith(TMP_PREFIX):
            continue
        name = path.relative_to(folder).as_posix()
        if path.name.endswith(LFS_SUFFIXES):
            oid, pointer = lfs_pointer(path)
            blobs[name] = repo.hash_blob(pointer)
            lfs[oid] = path
        else:
            plain.append((name, path))
    blobs.update(zip([n for n, _ in plain], repo.hash_files([p for _, p in plain]), strict=True))
    return BranchFiles(blobs, lfs)


def commit_message(runtime: Runtime, states: dict[str, dict]) -> str:
    """Names the upstream reference and each architecture's manifest digest (read back by `branch_snapshot`)."""
    first = next(iter(states.values()))
    lines = [f"Update source for {runtime.name} image", "", f"Upstream: {first['reference']}"]
    indexes = sorted({s["index_digest"] for s in states.values() if s.get("index_digest")})
    lines += [f"Index: {digest}" for digest in indexes]
    lines += [f"{arch}: {state['manifest_digest']}" for arch, state in states.items()]
    return "\n".join(lines) + "\n"


def commit_time(states: dict[str, dict]) -> int:
    """The newest upstream config `created` (seconds since the epoch); 0 when upstream gives none."""
    times = [_epoch(s["config"].get("created")) for s in states.values()]
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


def render_readme(runtime: Runtime, states: dict[str, dict], templates: Path = render.TEMPLATES) -> str:
    top = layout.default_arch(runtime.architectures)
    archs = [{"arch": arch, "manifest": s["manifest_digest"], "layers": len(s["layers"])} for arch, s in states.items()]
    env = render.environment(templates)
    return env.get_template(README_TEMPLATE).render(
        runtime=runtime.name,
        reference=next(iter(states.values()))["reference"],
        archs=archs,
        top=top,
        others=[a for a in runtime.architectures if a != top],
        extension=runtime.extension,
    )


def render_attributes(templates: Path = render.TEMPLATES) -> str:
    suffixes = [f"*{suffix}" for suffix in LFS_SUFFIXES]
    return render.environment(templates).get_template(ATTRIBUTES_TEMPLATE).render(patterns=suffixes)


# -- the previous snapshot -------------------------------------------------------------------------


def branch_snapshot(repo: PrivateRepo, commit: str, runtime: Runtime, out: Path) -> changes.Snapshot:
    """The snapshot a published commit holds; tarballs from the layer cache, else fetched with git-lfs."""
    files = repo.files(commit)
    message = repo.message(commit)
    digests = dict(re.findall(r"^([A-Za-z0-9_]+): (sha256:[0-9a-f]{64})$", message, re.M))
    reference = (re.search(r"^Upstream: (\S+)$", message, re.M) or [None, None])[1]
    plan: dict[str, list[tuple[str, str, int, Path | None]]] = {}
    dockerfiles = {}
    to_fetch = []
    for arch in runtime.architectures:
        dockerfile = repo.show(commit, f"{arch}/Dockerfile.{runtime.name}")
        if dockerfile is None:
            continue
        dockerfiles[arch] = dockerfile
        plan[arch] = []
        for name, ext in changes.dockerfile_layers(dockerfile):
            path = f"{arch}/{name}.{ext}"
            pointer = parse_pointer(repo.show(commit, path) or "") if path in files else None
            oid, size = pointer if pointer else (None, None)
            source = changes.find_cached(out, name)
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
            print(f"{runtime.name}: previous layers not fetched, no file-level comparison: {exc}")
    archs = {}
    for arch, layers in plan.items():
        found = tuple(
            changes.Layer(name, size, source if source is not None and source.is_file() else None)
            for name, _, size, source in layers
        )
        archs[arch] = changes.ArchSnapshot(arch, digests.get(arch), found, dockerfiles[arch])
    return changes.Snapshot(runtime.name, reference, f"published commit {commit[:12]}", archs)


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
    repo: PrivateRepo
    tip: str | None
    files: BranchFiles
    unchanged: bool


def _plan(out: Path, runtime: Runtime, repo: str | None) -> _Plan:
    url = remote_url(repo) if repo else None
    private = PrivateRepo(out, runtime.name, url)
    tip = private.remote_tip() if url else None
    files = branch_files(private, layout.runtime_dir(out, runtime.name))
    if not files.blobs:
        raise OutputError(f"{runtime.name}: {layout.runtime_dir(out, runtime.name)} is empty: run doit snapshot")
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
        previous = changes.local_previous(out, runtime)
    return changes.render_markdown(changes.compare(previous, changes.current_snapshot(out, runtime)))


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
        states = {arch: resolve.read_state(out, runtime.name, arch) for arch in runtime.architectures}
        blobs = dict(plan.files.blobs)
        blobs[README] = plan.repo.hash_blob(render_readme(runtime, states).encode())
        blobs[CHANGES] = plan.repo.hash_blob(text.encode())
        blobs[ATTRIBUTES] = plan.repo.hash_blob(render_attributes().encode())
        tree = plan.repo.write_tree(blobs)
        commit = plan.repo.commit_tree(tree, commit_message(runtime, states), commit_time(states))
        plan.repo.lfs_push(plan.files.lfs)
        plan.repo.run("push", "--quiet", "--force", REMOTE, f"{commit}:refs/heads/{runtime.name}")
        plan.repo.run("update-ref", plan.repo.published_ref, commit)
        return Outcome(runtime.name, commit, True, text)
    finally:
        plan.repo.drop_lfs_store()


def _create_local_target(url: str) -> None:
    """A local target that does not exist yet becomes a new bare repository."""
    path = _local_path(url)
    if path is None or path.exists():
        return
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_GIT_VARIABLES}
    command = ["git", "-c", "init.defaultBranch=main", "init", "--quiet", "--bare", str(path)]
    proc = subprocess.run(command, capture_output=True, env=env)
    if proc.returncode != 0:
        raise PublishError(f"cannot create bare repository {path}: {_last_line(proc.stderr)}")
    print(f"created bare repository {path}")


def changes_text(out: Path, runtime: Runtime, repo: str | None) -> str:
    """What `doit changes:<rt>` prints: the CHANGES.md `publish` would write now, or the published one."""
    if repo is not None:
        path = _local_path(remote_url(repo))
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
