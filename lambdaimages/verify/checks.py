"""Prove that the images are upstream's (tarballs, identity, file tree, config) and that they answer an invocation.

Five checks per runtime and architecture, on what is on disk and in the engine (no registry is asked):

1. tarballs: every tarball decompresses to bytes whose sha256 is its name and the upstream diff_id at its position,
   and every Dockerfile ADDs exactly upstream's layers in upstream's order.
2. identity: upstream's manifest file hashes to the manifest digest resolved upstream, names the config file's
   digest, the config file hashes to its name, and the loaded image `<rt>:<arch>` has that digest as its ID.
3. tree: the merged filesystem of the image equals the merged filesystem of the tarballs, entry by entry.
4. config: Env (as name -> value), Entrypoint, Cmd, WorkingDir, User, Labels, ExposedPorts, Volumes, StopSignal,
   architecture and os equal upstream's.
5. invoke: the image, run the way Lambda runs it against our Runtime API server, answers the catalog's smoke test.

Checks 3-5 run on the Dockerfile build `<rt>:local` for the engine's own architecture, and on the loaded
`<rt>:<arch>` for the others (whose invocation runs under emulation when the engine can run them).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import lzma
import time
import zlib
from pathlib import Path

from lambdaimages import engine, layout, output
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest, Reader, Verifier
from lambdaimages.errors import DigestMismatch, EngineError
from lambdaimages.image import plan
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.dockerfile import Add, add_instructions
from lambdaimages.tools.tree import CHUNK, Entry, diff_trees, layers_of_docker_save, merge_layers, open_tarball
from lambdaimages.verify import containers, dockerfiles, emulation
from lambdaimages.verify.chain import follow
from lambdaimages.verify.results import (
    CANNOT_RUN,
    CHECKS,
    FAIL,
    NO_SMOKE,
    PASS,
    SKIPPED,
    ArchResult,
    Check,
    RuntimeResult,
)
from lambdaimages.verify.runtime_api import RuntimeAPIServer

DETAILS = 20  # at most this many difference lines per check
BODY_CHARS = 400
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
CONFIG_KEYS = ("Entrypoint", "Cmd", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes", "StopSignal")
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError)


def verify_runtime(out: Path, runtime: Runtime, image: str | None = None) -> RuntimeResult:
    """Run every check of `runtime` against its snapshot in `out`, for each of its architectures.

    Args:
        out: the output folder.
        runtime: the catalog entry; its `smoke` is the invocation test.
        image: the image to check for the engine's architecture (default `<rt>:local`).

    Raises:
        EngineError: the engine does not answer.
    """
    built = plan.built_arch(runtime)
    results = []
    for arch in runtime.architectures:
        subject = plan.checked_image(runtime, arch, image)
        results.append(_verify_arch(out, runtime, arch, subject, emulated=arch != built))
    return RuntimeResult(runtime.name, tuple(results))


def _verify_arch(out: Path, runtime: Runtime, arch: str, image: str, emulated: bool) -> ArchResult:
    started = time.monotonic()
    snapshot = SnapshotView(out, runtime)
    try:
        state = snapshot.state(arch)
    except (OSError, ValueError) as exc:
        missing = Check("tarballs", FAIL, f"no snapshot: {snapshot.state_path(arch)}: {exc}")
        rest = [Check(name, SKIPPED, "no snapshot") for name in CHECKS[1:]]
        return ArchResult(runtime.name, arch, (missing, *rest))
    output.progress(None, f"{arch}: check tarballs")
    tarballs, upstream_tree, tree_error = check_tarballs(out, runtime, arch, state, tree=True, rendered=True)
    tarballs = dataclasses.replace(tarballs, seconds=time.monotonic() - started)
    output.progress(None, f"{arch}: check identity")
    identity = check_identity(out, runtime, state)
    found = engine.inspect_image(image)
    if found is None:
        gone = f"image {image} not found: run doit build:{runtime.name}"
        rest = (Check(name, FAIL, gone) for name in CHECKS[2:])
        return ArchResult(runtime.name, arch, (tarballs, identity, *rest), (), image)
    started = time.monotonic()
    output.progress(None, f"{arch}: check tree")
    if tree_error is not None:
        tree = Check("tree", FAIL, tree_error)
    elif upstream_tree is None:
        tree = Check("tree", SKIPPED, "upstream's tree comes from the tarballs, which failed their check")
    else:
        tree = check_tree(upstream_tree, found["Id"])
    tree = dataclasses.replace(tree, seconds=time.monotonic() - started)
    problems, notes = compare_config(state.config, found)
    if problems:
        config = Check("config", FAIL, problems[0] + _more(problems), tuple(problems[:DETAILS]))
    else:
        config = Check("config", PASS, "equal to upstream's")
    output.progress(None, f"{arch}: check invoke")
    why_not = emulation.cannot_run(arch) if emulated else None
    invoke = Check("invoke", CANNOT_RUN, why_not) if why_not else check_invoke(runtime, found["Id"])
    checks = (tarballs, identity, tree, config, invoke)
    return ArchResult(runtime.name, arch, checks, tuple(notes), image, found["Id"])


def _more(problems: list[str]) -> str:
    return f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""


# -- 1. tarballs and Dockerfiles -----------------------------------------------------------------


def check_tarballs(
    out: Path, runtime: Runtime, arch: str, state: State, tree: bool = False, rendered: bool = False
) -> tuple[Check, dict[str, Entry] | None, str | None]:
    """Check 1 for one architecture: tarball contents against upstream's diff_ids, and the ADD lines.

    Every tarball is decompressed once; with `tree`, the same pass merges the layers into upstream's file tree.
    With `rendered` (as verify and verify_branch ask), each Dockerfile must also be, byte for byte, what the
    template renders from upstream's config and diff_ids (`verify.dockerfiles`).

    Returns:
        The check; upstream's merged tree when `tree` was asked and every tarball is upstream's layer; why
        upstream's layers could not be merged although every tarball is upstream's layer (else None).
    """
    found = examine_tarballs(SnapshotView(out, runtime), arch, state, tree, rendered)
    return found.check, found.upstream_tree, found.tree_error


@dataclasses.dataclass(frozen=True)
class TarballFindings:
    """What check 1 found on one architecture: `problems` with the tarballs and ADD lines, `rendering` with
    Dockerfiles that are not the template's rendering (their tarballs can still be loaded)."""

    problems: tuple[str, ...]
    rendering: tuple[str, ...]
    layers: int
    size: int
    upstream_tree: dict[str, Entry] | None
    tree_error: str | None

    @property
    def check(self) -> Check:
        problems = [*self.problems, *self.rendering]
        if problems:
            return Check("tarballs", FAIL, problems[0] + _more(problems), tuple(problems[:DETAILS]))
        return Check("tarballs", PASS, f"{self.layers} layers are upstream's ({self.size / 1e6:.1f} MB uncompressed)")


def examine_tarballs(
    snapshot: SnapshotView, arch: str, state: State, tree: bool = False, rendered: bool = False
) -> TarballFindings:
    """Check 1's findings for one architecture (see `check_tarballs`)."""
    paths = [snapshot.tarball(arch, layer) for layer in state.layers]
    expected = [path.name for path in paths]
    problems = _dockerfile_problems(snapshot, arch, expected)
    rendering = dockerfiles.rendering_problems(snapshot, arch, state) if rendered else []
    wanted = set(expected)
    for stray in sorted(snapshot.arch_folder(arch).glob(layout.TARBALL_GLOB)):
        if stray.name not in wanted and not stray.name.startswith("."):
            problems.append(f"{arch}/{stray.name}: not one of upstream's layers")
    readers = [LayerReader(path) for path in paths]
    content_ok = True
    for number, reader in enumerate(readers, 1):
        if not reader.path.is_file():
            problems.append(f"{arch}/{reader.path.name}: missing (upstream layer {number})")
            content_ok = False
    upstream_tree, tree_error = None, None
    if tree and content_ok:
        try:
            upstream_tree = merge_layers(readers)
        except READ_ERRORS as exc:
            tree_error = f"cannot merge upstream's layers: {exc}"  # unless a tarball is not upstream's, below
    for number, reader in enumerate(readers, 1):
        if not reader.path.is_file():
            continue
        read = reader.finish()
        where = f"{arch}/{reader.path.name} (upstream layer {number})"
        if not read and is_lfs_pointer(reader.path):
            problems.append(f"{where}: a Git LFS pointer, not the tarball: run `git lfs pull`")
            content_ok = False
        elif not read:
            problems.append(f"{where}: cannot be decompressed: {reader.error}")
            content_ok = False
        elif reader.mismatch is not None:
            actual = Digest(reader.mismatch.actual).hex
            problems.append(f"{where}: decompresses to sha256 {actual}, which is not its name and upstream's diff_id")
            content_ok = False
    if not content_ok:
        upstream_tree, tree_error = None, None
    size = sum(reader.size for reader in readers)
    return TarballFindings(tuple(problems), tuple(rendering), len(readers), size, upstream_tree, tree_error)


def is_lfs_pointer(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(LFS_POINTER)) == LFS_POINTER


def _dockerfile_problems(snapshot: SnapshotView, arch: str, expected: list[str]) -> list[str]:
    problems = []
    for path, prefix in dockerfiles.adding(snapshot, arch):
        label = str(path.relative_to(snapshot.folder))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{label}: cannot be read: {exc}")
            continue
        problems += compare_adds(label, add_instructions(text), [prefix + name for name in expected])
    return problems


def compare_adds(label: str, adds: list[Add], expected: list[str]) -> list[str]:
    """How a Dockerfile's ADD lines differ from `ADD <each expected source> /`, in order; empty when they do not."""
    problems = [f"{label}:{a.line}: expected `ADD <tarball> /`, found `{a.dest}`" for a in adds if not a.source]
    problems += [f"{label}:{a.line}: ADD {a.source} to {a.dest}, not to /" for a in adds if a.source and a.dest != "/"]
    sources = [a.source for a in adds]
    if sources == expected:
        return problems
    have, want = collections.Counter(sources), collections.Counter(expected)
    if have == want:
        moved = [i for i, (got, wanted) in enumerate(zip(sources, expected, strict=True)) if got != wanted]
        first = moved[0]
        problems.append(
            f"{label}:{adds[first].line}: ADD lines are not in upstream's layer order ({len(moved)} of "
            f"{len(expected)} misplaced): ADD {first + 1} is {sources[first]}, upstream's layer {first + 1} "
            f"is {expected[first]}"
        )
        return problems
    for source in want - have:
        problems.append(f"{label}: no ADD for upstream's layer {expected.index(source) + 1} ({source})")
    for source in have - want:
        line = next(a.line for a in adds if a.source == source)
        problems.append(f"{label}:{line}: ADD {source or '(malformed)'} is not one of upstream's layers")
    return problems


class LayerReader:
    """A tarball read as its uncompressed layer tar through a digest.Reader that expects its name (or, with
    `by_name` False, only computes its digest: AWS's tarball names are not diff_ids); opened at the first read.

    A digest that is not the name ends the stream (the tree merge reading it sees a clean end) and is kept as
    `mismatch`, for `check_tarballs` to report beside the other problems.
    """

    def __init__(self, path: Path, by_name: bool = True) -> None:
        self.path = path
        self.name = str(path)  # what tree.merge_layers names in its errors
        self.error: str | None = None
        self.mismatch: DigestMismatch | None = None
        expected = Digest.from_hex(path.name.split(".", 1)[0]) if by_name else None
        self._verifier = Verifier(expected, what=path.name)
        self._stream: Reader | None = None
        self._done = False

    @property
    def size(self) -> int:
        """The uncompressed bytes read so far."""
        return self._verifier.received

    @property
    def digest(self) -> Digest:
        """The sha256 of the uncompressed bytes read so far: the diff_id, once `finish` returned True."""
        return self._verifier.digest

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            raise ValueError(f"{self.path.name}: {self.error}")
        if self._done:
            return b""
        try:
            if self._stream is None:
                self._stream = Reader(open_tarball(self.path), self._verifier)
            data = self._stream.read(size)
        except DigestMismatch as exc:
            self.mismatch = exc
            self.close()
            return b""
        except READ_ERRORS as exc:
            self.error = str(exc) or type(exc).__name__
            self.close()
            raise
        return data

    def finish(self) -> bool:
        """Read what is left; whether the whole tarball could be read (`mismatch` says if it is its name)."""
        if self.error is not None:
            return False
        try:
            while self.read(CHUNK):
                pass
        except READ_ERRORS:
            return False
        finally:
            self.close()
        return True

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._done = True


# -- 2. identity ---------------------------------------------------------------------------------


def check_identity(out: Path, runtime: Runtime, state: State) -> Check:
    """Check 2: the chain from upstream's manifest digest to the config file, and `<rt>:<arch>`'s ID at its end."""
    arch = state.architecture
    chain = follow(SnapshotView(out, runtime), arch, state.manifest_digest)
    problems = list(chain.problems)
    if chain.config_digest is not None and chain.config_digest != state.config_digest:
        problems.append(f"the manifest names config {chain.config_digest}, resolved upstream was {state.config_digest}")
    if chain.config is not None and chain.diff_ids != [layer.diff_id for layer in state.layers]:
        problems.append("the config file's diff_ids are not the layers resolved upstream")
    tag = layout.loaded_tag(runtime.name, arch)
    loaded = engine.image_id(tag)
    if loaded is None:
        problems.append(f"image {tag} not found: run doit build:{runtime.name}")
    elif loaded != state.config_digest:
        problems.append(f"{tag} has ID {loaded}, not upstream's config digest {state.config_digest}")
    if problems:
        return Check("identity", FAIL, problems[0] + _more(problems), tuple(problems[:DETAILS]))
    short = Digest(state.config_digest).hex[:12]
    return Check("identity", PASS, f"{tag} ID {short} = upstream's config digest (manifest {state.manifest_digest})")


# -- 3. file tree --------------------------------------------------------------------------------


def check_tree(upstream: dict[str, Entry], image: str) -> Check:
    """Check 3: the merged filesystem of `image` (an image ID or tag, read with `docker save`) equals `upstream`."""
    try:
        with layers_of_docker_save(engine.save_image(image, CHUNK)) as layers:
            built = merge_layers(layers)
    except EngineError as exc:
        return Check("tree", FAIL, f"cannot read the image from the engine: {exc}")
    except ValueError as exc:
        return Check("tree", FAIL, f"cannot read the image's layers: {exc}")
    diff = diff_trees(upstream, built)
    if not diff:
        return Check("tree", PASS, f"{len(built)} entries equal upstream's")
    lines = diff.describe(limit=DETAILS, old="upstream", new="built")
    counted = f"{diff.total} difference{'s' if diff.total > 1 else ''}"
    return Check("tree", FAIL, f"{counted}, first: {lines[0]}", tuple(lines))


# -- 4. config -----------------------------------------------------------------------------------


def compare_config(upstream: dict, built: dict, dropped: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """How the built image's config differs from upstream's; returns (problems, notes).

    Args:
        upstream: upstream's image config (OCI: `architecture`, `os`, `config`).
        built: the built image as `docker inspect` shows it (`Architecture`, `Os`, `Config`).
        dropped: keys of CONFIG_KEYS that the Dockerfile is known to leave out (AWS's drop the Labels), which
            the caller has already said: they are not compared.

    Env compares as name -> value: a FROM-scratch build starts from the builder's default PATH, so the order
    of Env can differ from upstream's when upstream does not list PATH first. A different order is a note.
    """
    problems, notes = [], []
    for key, theirs, ours in (
        ("architecture", upstream.get("architecture"), built.get("Architecture")),
        ("os", upstream.get("os"), built.get("Os")),
    ):
        if theirs != ours:
            problems.append(f"{key}: upstream {theirs!r} vs built {ours!r}")
    want = upstream.get("config") or {}
    have = built.get("Config") or {}
    want_env, have_env = _env(want.get("Env")), _env(have.get("Env"))
    for name in dict.fromkeys([*want_env, *have_env]):
        if name not in have_env:
            problems.append(f"Env {name}: upstream {want_env[name]!r}, built has none")
        elif name not in want_env:
            problems.append(f"Env {name}: built {have_env[name]!r}, upstream has none")
        elif want_env[name] != have_env[name]:
            problems.append(f"Env {name}: upstream {want_env[name]!r} vs built {have_env[name]!r}")
    if not problems and list(want_env) != list(have_env):
        notes.append(
            f"Env order differs (values equal; the builder starts with PATH): upstream {' '.join(want_env)}; "
            f"built {' '.join(have_env)}"
        )
    for key in CONFIG_KEYS:
        theirs, ours = _plain(key, want.get(key)), _plain(key, have.get(key))
        if key in dropped:
            continue
        if theirs != ours:
            problems.append(f"{key}: upstream {theirs!r} vs built {ours!r}")
    return problems, notes


def _env(entries: list[str] | None) -> dict[str, str]:
    env = {}
    for entry in entries or []:
        name, _, value = entry.partition("=")
        env[name] = value
    return env


def _plain(key: str, value: object) -> object:
    # Unset, empty and null mean the same to the engine; port and volume sets carry no values.
    if value in (None, "", [], {}):
        return None
    if key in ("ExposedPorts", "Volumes"):
        return sorted(value)
    return value


# -- 5. invocation -------------------------------------------------------------------------------


def check_invoke(runtime: Runtime, image: str) -> Check:
    """Check 5: run `image` as Lambda does against our Runtime API and send the smoke test's event.

    The container runs on network host with AWS_LAMBDA_RUNTIME_API set and the handler as the entrypoint's
    argument; smoke files are mounted read-only at /var/task (a `bootstrap` among them also at
    /var/runtime/bootstrap, where OS-only images look for a custom runtime). The container is removed
    however the check ends.
    """
    smoke = runtime.smoke
    if smoke is None:
        return Check("invoke", NO_SMOKE, f"the catalog has no smoke: entry for {runtime.name}")
    started = time.monotonic()
    try:
        with RuntimeAPIServer() as api, containers.smoke_container(runtime, smoke, image, api.address) as container:
            with containers.exit_reporter(container, api.address):
                invocation = api.invoke(
                    json.dumps(smoke.event).encode(), smoke.timeout, containers.function_name(runtime)
                )
            state = containers.describe_state(container)
            logs = containers.log_lines(container)
    except EngineError as exc:
        return Check("invoke", FAIL, f"the engine could not run {image}: {exc}")
    seconds = time.monotonic() - started
    body = invocation.body.decode("utf-8", "replace")
    details = (f"event: {json.dumps(smoke.event)}", f"answer ({invocation.outcome}): {_cut(body)}", *logs)
    if invocation.outcome == "response":
        try:
            answer = json.loads(invocation.body)
        except ValueError:
            return Check("invoke", FAIL, f"the response is not JSON: {_cut(body)}", details, seconds)
        if not same_json(answer, smoke.expect):
            message = f"response {_cut(json.dumps(answer))} instead of {_cut(json.dumps(smoke.expect))}"
            return Check("invoke", FAIL, message, details, seconds)
        message = f"{smoke.handler} answered as expected, {seconds:.1f} s from the container's start"
        return Check("invoke", PASS, message, (), seconds)
    if invocation.outcome == "error":
        return Check("invoke", FAIL, f"the handler answered with an error: {_cut(body)}", details, seconds)
    if invocation.outcome == "init_error":
        return Check("invoke", FAIL, f"the runtime failed to start: {_cut(body)}", details, seconds)
    message = f"no answer within {smoke.timeout:g} s (container {state}; removed)"
    return Check("invoke", FAIL, message, details, seconds)


def same_json(a: object, b: object) -> bool:
    """Equal as JSON values: numbers by value (1 == 1.0), but true is not 1 and "1" is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= BODY_CHARS else text[:BODY_CHARS] + "…"
