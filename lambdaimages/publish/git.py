"""Git plumbing for publishing: a private bare repository per runtime, and Git LFS pointers (spec v1).

Commits are made in `<out>/.publish/<rt>.git` with its own index, never in a user's checkout, with the
caller's environment cleaned of variables that would point git elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from lambdaimages import layout
from lambdaimages.digest import Digest, Verifier, is_sha256
from lambdaimages.errors import PublishError
from lambdaimages.tools.files import link_or_copy

AUTHOR_NAME = "lambdaimages"
AUTHOR_EMAIL = "lambdaimages@localhost"
LFS_SPEC = "https://git-lfs.github.com/spec/v1"
PUBLISHED_REF = "refs/published/"
REMOTE = "target"
# Inherited variables that would point git at another repository or work tree than the private one.
FOREIGN_GIT_VARIABLES = (
    "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_COMMON_DIR",
    "GIT_INDEX_FILE", "GIT_DIR", "GIT_LFS_SKIP_PUSH",
)  # fmt: skip


class PrivateRepo:
    """A bare repository with its own index, in which one runtime's branch commits are made and pushed from."""

    def __init__(self, out: Path, runtime: str, url: str | None, git_dir: Path | None = None) -> None:
        self.runtime = runtime
        self.git_dir = (git_dir or layout.publish_dir(out, runtime)).absolute()
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
        proc = self.call(*args, stdin=stdin, env=env)
        if check and proc.returncode != 0:
            raise PublishError(f"git {' '.join(args[:2])} failed: {last_line(proc.stderr)}", runtime=self.runtime)
        return proc.stdout.decode("utf-8", "replace")

    def call(self, *args: str, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """git with the repository's settings, whatever its exit status (stdout and stderr as bytes)."""
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
            raise PublishError(f"git {args[0]} took more than an hour", runtime=self.runtime) from None
        return proc

    def remote_tip(self, *, shallow: bool = False) -> str | None:
        """The commit the target's branch points at (fetched into the private repository), or None.

        `shallow`: the tip only (depth 1), not the commits below it (upstream's branches sit on `main`).
        """
        listing = self.run("ls-remote", REMOTE, f"refs/heads/{self.runtime}")
        if not listing.strip():
            return None
        tip = listing.split()[0]
        depth = ["--depth", "1"] if shallow else []
        self.run("fetch", "--quiet", "--no-tags", *depth, REMOTE, f"+refs/heads/{self.runtime}:{self.published_ref}")
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

    def lfs_fetch_some(self, commit: str, paths: list[str]) -> dict[str, str]:
        """`lfs_fetch`, where objects whose bytes git-lfs found hashing to another oid are no failure: the
        others are fetched, and those come back as oid -> the hash their bytes had.

        Raises:
            PublishError: git-lfs failed for another reason (the remote, the network).
        """
        proc = self.call("lfs", "fetch", REMOTE, commit, "--include", ",".join(paths))
        text = proc.stderr.decode("utf-8", "replace")
        refused = {m[2]: m[1] for m in re.finditer(r"invalid hash ([0-9a-f]{64}), expected ([0-9a-f]{64})", text)}
        if proc.returncode != 0 and not refused:
            raise PublishError(f"git lfs fetch failed: {last_line(proc.stderr)}", runtime=self.runtime)
        return refused

    def drop_lfs_store(self) -> None:
        """The store held only links or downloads for one run: the layer cache is where tarballs live."""
        shutil.rmtree(self.git_dir / "lfs" / "objects", ignore_errors=True)


def last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def lfs_pointer(path: Path) -> tuple[str, bytes]:
    """(oid, pointer text) of a file, as `git lfs pointer --file` writes it."""
    verifier = Verifier(what=str(path))
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            verifier.update(chunk)
    digest = verifier.finish()
    return digest.hex, f"version {LFS_SPEC}\noid {digest}\nsize {verifier.received}\n".encode()


def parse_pointer(text: str) -> tuple[str, int] | None:
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    if fields.get("version") != LFS_SPEC or not is_sha256(fields.get("oid", "")):
        return None
    return Digest(fields["oid"]).hex, int(fields.get("size", "0"))


def init_bare(path: Path) -> None:
    """A new bare repository at `path` (a local publish target that did not exist)."""
    env = {k: v for k, v in os.environ.items() if k not in FOREIGN_GIT_VARIABLES}
    command = ["git", "-c", "init.defaultBranch=main", "init", "--quiet", "--bare", str(path)]
    proc = subprocess.run(command, capture_output=True, env=env)
    if proc.returncode != 0:
        raise PublishError(f"cannot create bare repository {path}: {last_line(proc.stderr)}")
