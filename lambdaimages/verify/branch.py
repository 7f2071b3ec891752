"""Prove, offline, that a clone of a published branch is upstream's image: `doit verify_branch clone=PATH`.

From the manifest digests that the branch's commit message and README name (they must agree, and equal
`manifest=` when given), per architecture: the chain of verify.chain; the tarballs against the config's
diff_ids, the Dockerfiles' ADD lines against their order and every Dockerfile (top level and per architecture)
against the template's rendering of upstream's config; the image loaded from the clone's files, whose ID must be
upstream's config digest; and for the engine's own architecture the build of the Dockerfile users build (the
top-level one for the default architecture), whose file tree and config must equal upstream's. No registry is
asked; only the engine is used (with `image=`, the registry is asked which manifests the tag names).

A clone of one of AWS's own branches (no manifest or config on it, tarballs not named by diff_id) is told apart
by `layout_of` and proven by `verify.awsbranch` against upstream's documents named by `manifest=` or `image=`.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lambdaimages import engine, layout
from lambdaimages.catalog import Runtime
from lambdaimages.commit_message import CommitMessage
from lambdaimages.errors import BranchError, EngineError, UsageError
from lambdaimages.image.archive import docker_archive
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import Layer, State
from lambdaimages.verify import awsbranch, checks
from lambdaimages.verify.chain import follow
from lambdaimages.verify.results import CHECKS, FAIL, PASS, SKIPPED, ArchResult, Check, RuntimeResult

TAG_PREFIX = "lambdaimages-branch"
OURS = "this project's"


@dataclass(frozen=True)
class Anchors:
    """What the branch was proven against: runtime name, upstream reference, manifest digest per architecture,
    the branch's layout (OURS or awsbranch.LAYOUT) and where upstream's documents came from."""

    runtime: str
    reference: str
    manifests: dict[str, str]
    layout: str = OURS
    source: str = field(default="the branch")


def layout_of(clone: Path) -> str:
    """OURS when the clone holds upstream's documents or its last commit names manifests (publish's message),
    awsbranch.LAYOUT when it holds only architecture folders with a Dockerfile and tarballs.

    Raises:
        BranchError: neither.
    """
    if any(layout.split_document_name(path.name) for path in clone.glob(f"*/{layout.DOCUMENT_GLOB}")):
        return OURS
    found = subprocess.run(["git", "-C", str(clone), "log", "-1", "--format=%B"], capture_output=True, text=True)
    if found.returncode == 0 and CommitMessage.parse(found.stdout).manifests:
        return OURS
    if awsbranch.aws_clone(clone) is not None:
        return awsbranch.LAYOUT
    raise BranchError(
        "neither a published branch of this project (upstream's documents, a commit naming its manifests) nor "
        "one of AWS's (an architecture folder with a Dockerfile.<rt> and tarballs)",
        where=str(clone),
    )


def anchors(clone: Path) -> Anchors:
    """The runtime and manifest digests named by the clone's last commit message, checked against its README.

    Raises:
        BranchError: not a published branch, or README and commit disagree.
    """
    try:
        message = subprocess.run(
            ["git", "-C", str(clone), "log", "-1", "--format=%B"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BranchError(f"not a git clone of a published branch ({exc})", where=str(clone)) from exc
    named = CommitMessage.parse(message)
    if named.runtime is None:
        raise BranchError(
            "the last commit is not a published snapshot (`Update source for <rt> image`)", where=str(clone)
        )
    from_commit = named.manifests
    try:
        readme = (clone / "README.md").read_text(encoding="utf-8")
    except OSError as exc:
        raise BranchError(f"cannot be read: {exc.strerror}", where=f"{clone}/README.md") from exc
    from_readme = dict(re.findall(r"^\| ([\w.-]+) \| `(sha256:[0-9a-f]{64})` \|", readme, re.M))
    if not from_commit or from_commit != from_readme:
        raise BranchError(
            f"README.md names manifests {from_readme or 'none'}, the commit names {from_commit or 'none'}",
            where=str(clone),
        )
    return Anchors(named.runtime, named.reference or "?", from_commit)


def verify_clone(
    clone: Path, out: Path, manifest: str | None = None, image: str | None = None
) -> tuple[RuntimeResult, Anchors]:
    """Check a clone of a published branch; the result (as `doit verify` shows it) and what it was proven against.

    Args:
        clone: the clone's work tree, after `git lfs pull`.
        out: the output folder whose documents cache (and snapshots) hold upstream's documents; resolve keeps
            what `image` fetched there.
        manifest: a manifest (or index) digest the user got from upstream; on our layout it must be one the
            branch names; on AWS's it names upstream's documents, read from `out`.
        image: `REPOSITORY:TAG`, for AWS's layout: asked of the registry, its documents are the ones checked
            against (our layout names its manifests itself: a UsageError).

    Raises:
        BranchError: the clone is not a published branch, does not name `manifest`, or `out` lacks a document.
        UsageError: an AWS-layout clone and neither `manifest` nor `image`, or our layout and `image`.
        RegistryError: `image` could not be resolved.
        EngineError: the engine does not answer.
    """
    clone = Path(clone).resolve()
    out = Path(out)
    if layout_of(clone) == awsbranch.LAYOUT:
        return _verify_aws(clone, manifest, image, out)
    if image:
        raise UsageError(
            f"image={image}: the branch names upstream's manifests itself (image= is for AWS's layout); "
            "name one with manifest=sha256:... to require it"
        )
    found = anchors(clone)
    if manifest and manifest not in found.manifests.values():
        named = ", ".join(f"{a} {d}" for a, d in found.manifests.items())
        raise BranchError(f"the branch is not upstream's manifest {manifest} (it names {named})", where=str(clone))
    extension = _extension(clone)
    runtime = Runtime(found.runtime, "", "", "", tuple(found.manifests), "xz" if extension == "tar.xz" else "gzip")
    native = engine.native_arch()
    with tempfile.TemporaryDirectory(prefix="lambdaimages-branch-") as tmp:
        out = Path(tmp)  # `<out>/<rt>` is the clone, as check_tarballs expects a snapshot
        (out / found.runtime).symlink_to(clone, target_is_directory=True)
        results = [_verify_arch(out, runtime, arch, digest, found, native) for arch, digest in found.manifests.items()]
    return RuntimeResult(found.runtime, tuple(results)), found


def _verify_aws(clone: Path, manifest: str | None, image: str | None, out: Path) -> tuple[RuntimeResult, Anchors]:
    branch = awsbranch.aws_clone(clone)
    states, source = awsbranch.upstream_states(branch, out, manifest, image)
    result = awsbranch.verify(branch, out, states)
    named = {arch: state.manifest_digest for arch, state in states.items()}
    return result, Anchors(branch.runtime, image or manifest or "?", named, awsbranch.LAYOUT, source)


def _verify_arch(out: Path, runtime: Runtime, arch: str, digest: str, found: Anchors, native: str) -> ArchResult:
    snapshot = SnapshotView(out, runtime)
    chain = follow(snapshot, arch, digest)
    if chain.config is None:
        failed = Check("identity", FAIL, chain.problems[0], tuple(chain.problems))
        skipped = [Check(n, SKIPPED, "upstream's config is not in the clone") for n in CHECKS]
        return ArchResult(runtime.name, arch, (skipped[0], failed, *skipped[2:]))
    state = State(
        runtime=runtime.name,
        architecture=arch,
        reference=found.reference,
        repository="",
        index_digest=None,
        manifest_digest=digest,
        config_digest=chain.config_digest,
        config=chain.config,
        layers=tuple(Layer("", "", 0, diff_id) for diff_id in chain.diff_ids),
    )
    findings = checks.examine_tarballs(snapshot, arch, state, tree=arch == native, rendered=True)
    tarballs, upstream_tree, tree_error = findings.check, findings.upstream_tree, findings.tree_error
    problems = list(chain.problems)
    loaded = None
    if not findings.problems:  # tarballs and ADD lines are upstream's (an edited Dockerfile does not stop a load)
        loaded = _load(snapshot, state, problems)
    if problems:
        identity = Check("identity", FAIL, problems[0], tuple(problems))
    elif loaded is None:
        identity = Check("identity", SKIPPED, "not loaded: the tarballs failed their check")
    else:
        identity = Check("identity", PASS, f"loaded image ID {loaded} = upstream's config digest")
    if arch != native:
        rest = [Check(n, SKIPPED, f"the engine builds {native} only") for n in CHECKS[2:]]
        return ArchResult(runtime.name, arch, (tarballs, identity, *rest))
    if upstream_tree is None:
        why = tree_error or "upstream's tree comes from the tarballs, which failed their check"
        rest = [Check(n, SKIPPED, why) for n in CHECKS[2:]]
        return ArchResult(runtime.name, arch, (tarballs, identity, *rest))
    tag = f"{TAG_PREFIX}/{runtime.name}:{arch}-build"
    dockerfile = snapshot.build_dockerfile(arch)  # the one users build: the top-level one for the default arch
    label = str(dockerfile.relative_to(snapshot.folder))
    try:
        image = engine.build(dockerfile.parent.resolve(), dockerfile.name, tag, runtime=runtime.name, arch=arch)
    except EngineError as exc:
        failed = Check("tree", FAIL, f"the Dockerfile does not build: {exc}")
        return ArchResult(runtime.name, arch, (tarballs, identity, failed, *_skipped("no build")))
    try:
        tree = checks.check_tree(upstream_tree, image)
        config_problems, notes = checks.compare_config(state.config, engine.inspect_image(image) or {})
    finally:
        _remove(tag)
    if config_problems:
        where = f"{label} builds another config: {config_problems[0]}"
        config = Check("config", FAIL, where, tuple(config_problems))
    else:
        config = Check("config", PASS, "equal to upstream's")
    invoke = Check("invoke", SKIPPED, "a branch carries no smoke test")
    return ArchResult(runtime.name, arch, (tarballs, identity, tree, config, invoke), tuple(notes), tag, image)


def _load(snapshot: SnapshotView, state: State, problems: list[str]) -> str | None:
    config = snapshot.config_file(state)
    tag = f"{TAG_PREFIX}/{snapshot.runtime.name}:{state.architecture}"
    try:
        archive = docker_archive(config.read_bytes(), config.name, snapshot.tarballs(state), [tag])
        engine.load(archive, runtime=snapshot.runtime.name)
        loaded = engine.image_id(tag)
    except (EngineError, OSError) as exc:
        problems.append(f"{state.architecture}: the engine did not load the clone's files: {exc}")
        return None
    finally:
        _remove(tag)
    if loaded != state.config_digest:
        problems.append(f"{state.architecture}: loaded image ID {loaded}, upstream's config is {state.config_digest}")
    return loaded


def _skipped(why: str) -> list[Check]:
    return [Check(n, SKIPPED, why) for n in CHECKS[3:]]


def _remove(tag: str) -> None:
    try:
        engine.remove_image(tag)
    except EngineError:
        pass


def _extension(clone: Path) -> str:
    for extension in layout.TARBALL_EXTENSIONS:
        if next(clone.glob(f"*/*.{extension}"), None) is not None:
            return extension
    return layout.TARBALL_EXTENSIONS[0]
