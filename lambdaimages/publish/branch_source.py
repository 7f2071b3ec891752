"""The published branches as a layer source: the tarballs a previous run published, fetched with git-lfs by name.

For each runtime, the branch's tip alone (depth 1, no work tree, so nothing is smudged) is fetched into a bare
repository under the layer cache (`layout.branch_cache`); the LFS pointers of the `<arch>/<hex>.<ext>` files
export asks for are read from it, and `git lfs fetch` downloads only those objects, never the tarball history.
A repository that cannot be reached, or a runtime without a branch, is said once and gives nothing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from lambdaimages import layout, output
from lambdaimages.catalog import Runtime
from lambdaimages.errors import DigestMismatch, PublishError
from lambdaimages.publish import branches, git
from lambdaimages.state import Layer
from lambdaimages.tools.files import link_or_copy


@dataclass
class _Branch:
    """A runtime's published tip in the source's bare repository: its tarballs by diff_id hex -> branch path."""

    repo: git.PrivateRepo
    tip: str
    paths: dict[str, str]
    batched: bool = False  # `want` fetched the objects: a layer still missing is not fetched again alone
    pointers: dict[str, tuple[str, int] | None] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # oid -> the hash git-lfs found its bytes had
    uses: dict[str, int] = field(default_factory=dict)  # oid -> layers `want` asked for that point to it

    def download(self, paths: list[str]) -> None:
        self.refused.update(self.repo.lfs_fetch_some(self.tip, paths))

    def oid(self, hex_digest: str) -> str | None:
        """The LFS object id the branch's file of a layer points to (None: no such file, or not a pointer)."""
        path = self.paths.get(hex_digest)
        if path is None:
            return None
        if path not in self.pointers:
            self.pointers[path] = git.parse_pointer(self.repo.show(self.tip, path) or "")
        pointer = self.pointers[path]
        return pointer[0] if pointer else None


class PublishedBranches:
    """`LayerSource` of the branches in `repo` (the catalog's `publish.repo` or `repo=`); they take no writes."""

    name = "published branches"

    def __init__(self, out: Path, repo: str) -> None:
        self.out, self.repo = Path(out), repo
        self.url = branches.remote_url(repo)
        self._branches: dict[str, _Branch | None] = {}
        self._down: PublishError | None = None
        self._lock = threading.Lock()

    def want(self, runtime: Runtime, layers: list[Layer]) -> None:
        """Fetch, in one `git lfs fetch`, the objects of every layer the branch has of those asked for."""
        branch = self._branch(runtime)
        if branch is None:
            return
        needed = []
        for layer in layers:
            oid = branch.oid(layer.hex)
            if oid is None:
                continue
            branch.uses[oid] = branch.uses.get(oid, 0) + 1
            if not branch.repo.lfs_object(oid).is_file():
                needed.append(branch.paths[layer.hex])
        branch.batched = True
        if needed:
            branch.download(needed)

    def fetch(self, runtime: Runtime, layer: Layer, dest: Path) -> bool:
        """Move the layer's LFS object to `dest` (fetching it first unless `want` did); False when the branch
        has no such tarball.

        Raises:
            DigestMismatch: the remote's object does not hash to its oid (git-lfs refused it).
        """
        branch = self._branch(runtime)
        oid = branch.oid(layer.hex) if branch is not None else None
        if oid is None:
            return False
        found = branch.repo.lfs_object(oid)
        if not found.is_file() and not branch.batched:
            branch.download([branch.paths[layer.hex]])
        if oid in branch.refused:
            raise DigestMismatch(f"its LFS object {oid[:12]} in {self.repo} hashes to {branch.refused[oid][:12]}")
        if not found.is_file():
            return False
        link_or_copy(found, dest)
        # The layer cache is where tarballs live, the LFS store only passes them on: an object goes once the
        # last layer that points to it has taken it (a branch may hold one object under two names).
        branch.uses[oid] = branch.uses.get(oid, 1) - 1
        if branch.uses[oid] <= 0:
            found.unlink()
        return True

    def _branch(self, runtime: Runtime) -> _Branch | None:
        """The runtime's published tip, fetched once per run; None without a branch.

        Raises:
            PublishError: the repository cannot be reached (raised again, unchanged, for every later runtime).
        """
        with self._lock:
            if self._down is not None:
                raise self._down
            if runtime.name in self._branches:
                return self._branches[runtime.name]
            local = branches.local_path(self.url)
            if local is not None and not local.exists():
                self._down = PublishError(f"{self.repo} does not exist")
                raise self._down
            repo = git.PrivateRepo(self.out, runtime.name, self.url, layout.branch_cache(self.out, runtime.name))
            try:
                tip = repo.remote_tip(shallow=True)
            except PublishError as exc:
                self._down = PublishError(f"{self.repo} cannot be reached: {exc.detail}")
                raise self._down from exc
            branch = None
            if tip is None:
                output.say_once(
                    f"{self.name} {runtime.name}",
                    f"{runtime.name}: no branch {runtime.name} in {self.repo}: its layers come from upstream",
                )
            else:
                branch = _Branch(repo, tip, _tarballs(repo, tip, runtime.extension))
            self._branches[runtime.name] = branch
            return branch


def _tarballs(repo: git.PrivateRepo, commit: str, extension: str) -> dict[str, str]:
    """diff_id hex -> the path of its tarball in an architecture folder of `commit` (the first, by path)."""
    found: dict[str, str] = {}
    for path in sorted(repo.files(commit)):
        folder, _, name = path.rpartition("/")
        parts = layout.split_tarball_name(name)
        if folder and parts is not None and parts[1] == extension:
            found.setdefault(parts[0], path)
    return found
