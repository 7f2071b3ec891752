"""A clone of one of AWS's own branches (aws/aws-lambda-base-images) proven against upstream's documents.

AWS's layout: per architecture folder a `Dockerfile.<rt>` (FROM scratch, `ADD <name>.tar.xz /` sorted by file
name, then ENV, WORKDIR, ENTRYPOINT, ...) and the tarballs, named by something other than their diff_ids; beside
them a top-level `Dockerfile.<rt>` (`ADD x86_64/<name> /`); no manifest, config or index. So upstream's documents
come from elsewhere (`upstream_states`): offline from an output folder that holds them, or from the registry.

Per architecture: every tarball is decompressed once, its sha256 matched to the config's diff_ids whatever its
name, and its layer's members kept (`tools.tree.read_layer`) to stack them in two orders: upstream's layer order
and the Dockerfile's ADD order, whose trees are compared (`tools.tree.combine`, `diff_trees`) when the orders
differ. The config lines of every Dockerfile are compared with what upstream's config renders to
(`verify.dockerfiles.compare_settings`). The image is loaded from the tarballs in layer order (its ID must be
upstream's config digest), and for the engine's architecture the Dockerfile users build is built and its file
tree and config compared with upstream's.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lambdaimages import engine, layout, mediatypes, platforms
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest
from lambdaimages.errors import BranchError, EngineError, RegistryError, RenderError, UsageError
from lambdaimages.image.archive import docker_archive
from lambdaimages.reference import Reference
from lambdaimages.snapshot import documents, render, resolve
from lambdaimages.state import Layer, State
from lambdaimages.tools.dockerfile import add_instructions, settings
from lambdaimages.tools.tree import Entry, LayerContents, combine, diff_trees, read_layer
from lambdaimages.verify import checks, dockerfiles
from lambdaimages.verify.results import CHECKS, FAIL, PASS, SKIPPED, ArchResult, Check, RuntimeResult

TAG_PREFIX = "lambdaimages-awsbranch"
LAYOUT = "AWS's"


@dataclass(frozen=True)
class Clone:
    """A clone in AWS's layout: its folder, the runtime its Dockerfiles name, its architecture folders."""

    folder: Path
    runtime: str
    architectures: tuple[str, ...]
    extension: str

    def arch_folder(self, arch: str) -> Path:
        return self.folder / arch

    def dockerfile(self, arch: str | None = None) -> Path:
        """`Dockerfile.<rt>` at the top or in `<arch>/`."""
        return (self.folder if arch is None else self.folder / arch) / f"Dockerfile.{self.runtime}"

    def tarballs(self, arch: str) -> list[Path]:
        """The tarballs of `arch`'s folder by name (dot-names are no tarballs)."""
        found = sorted(self.arch_folder(arch).glob(layout.TARBALL_GLOB))
        return [path for path in found if not path.name.startswith(".")]

    def adding(self, arch: str) -> list[tuple[Path, str]]:
        """The Dockerfiles that ADD `arch`'s tarballs, with their sources' folder prefix: the architecture's
        own and, for the default architecture, the top-level one when the branch has it."""
        files = [(self.dockerfile(arch), "")]
        if arch == layout.default_arch(self.architectures) and self.dockerfile().is_file():
            files.append((self.dockerfile(), f"{arch}/"))
        return files

    def build_dockerfile(self, arch: str) -> Path:
        """The Dockerfile users build for `arch` (the top-level one for the default architecture, if any)."""
        return self.adding(arch)[-1][0]


def aws_clone(folder: Path) -> Clone | None:
    """The clone as AWS's layout, or None when no architecture folder holds a `Dockerfile.<rt>`.

    Raises:
        BranchError: the architecture folders' Dockerfiles name different runtimes.
    """
    names: dict[str, set[str]] = {}
    for arch in platforms.NAMES:
        for path in sorted((folder / arch).glob("Dockerfile.*")):
            names.setdefault(arch, set()).add(path.name.removeprefix("Dockerfile."))
    if not names:
        return None
    runtimes = set().union(*names.values())
    if len(runtimes) != 1:
        raise BranchError(f"its Dockerfiles name several runtimes: {', '.join(sorted(runtimes))}", where=str(folder))
    extension = layout.TARBALL_EXTENSIONS[0]
    for candidate in layout.TARBALL_EXTENSIONS:
        if any(next((folder / arch).glob(f"*.{candidate}"), None) for arch in names):
            extension = candidate
            break
    return Clone(folder, runtimes.pop(), tuple(names), extension)


def runtime_of(clone: Clone) -> Runtime:
    """The catalog entry that stands for the clone (what rendering and resolve take)."""
    compression = "xz" if clone.extension == "tar.xz" else "gzip"
    return Runtime(clone.runtime, "", "", "", clone.architectures, compression)


# -- upstream's documents ----------------------------------------------------------------------


def upstream_states(clone: Clone, out: Path, manifest: str | None, image: str | None) -> tuple[dict[str, State], str]:
    """Upstream's state of each architecture the clone is checked on, and where its documents came from.

    `manifest` (an index, or one architecture's manifest) is read offline from `out` (`documents.find`: its
    cache or a snapshot); `image` (`REPOSITORY:TAG`) is resolved through the registry (`snapshot.resolve`,
    the project's one client), which keeps the documents in `out` as a snapshot does.

    Raises:
        UsageError: neither given, or `image` is no reference.
        BranchError: `out` lacks a document, or upstream has none of the clone's architectures.
        RegistryError: the registry did not answer as it should.
    """
    if image:
        return resolved(image, runtime_of(clone), out), f"the registry ({image})"
    if not manifest:
        raise UsageError(
            f"{clone.folder} is in AWS's layout (no manifest or config on the branch): name upstream's image, "
            "`doit verify_branch clone=DIR manifest=sha256:... [out=DIR that holds its documents]` or "
            "`doit verify_branch clone=DIR image=REPOSITORY:TAG` (the registry reachable)"
        )
    try:
        Digest.parse(manifest)
    except ValueError as exc:
        raise UsageError(f"manifest={manifest}: {exc}") from exc
    top = _document(out, manifest, "document")
    if mediatypes.is_index(top.get("mediaType", "")) or "manifests" in top:
        found = {}
        for arch in clone.architectures:
            try:
                found[arch] = resolve.platform_manifest(top, arch)
            except RegistryError as exc:  # it names the platforms the index offers
                raise BranchError(f"upstream's index {manifest}: {exc}", where=str(clone.folder)) from exc
        states = {arch: _state(clone, out, arch, digest, manifest) for arch, digest in found.items()}
    else:
        config = _document(out, top["config"]["digest"], "config")
        arch = platforms.catalog_name(str(config.get("architecture")))
        if arch not in clone.architectures:
            raise BranchError(
                f"upstream's manifest {manifest} is a {arch} image; the clone has {', '.join(clone.architectures)}",
                where=str(clone.folder),
            )
        states = {arch: _state(clone, out, arch, manifest, None)}
    return states, f"{out} (offline)"


def _document(out: Path, digest: str, kind: str) -> dict:
    data = documents.find(out, digest)
    if data is None:
        raise BranchError(
            f"upstream's {kind} {digest} is not in {out} (neither its documents cache nor a snapshot there has "
            "it): run `doit snapshot` with that out=, or give image=REPOSITORY:TAG with the registry reachable",
            where=str(out),
        )
    try:
        found = json.loads(data)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise BranchError(f"upstream's {kind} {digest} is not a JSON object", where=str(out))
    return found


def _state(clone: Clone, out: Path, arch: str, manifest_digest: str, index_digest: str | None) -> State:
    manifest = _document(out, manifest_digest, "manifest")
    try:
        config_digest = manifest["config"]["digest"]
        config = _document(out, config_digest, "config")
        diff_ids = list(config["rootfs"]["diff_ids"])
        layers = list(manifest["layers"])
    except (KeyError, TypeError) as exc:
        raise BranchError(f"upstream's manifest {manifest_digest}: missing {exc}", where=str(out)) from exc
    if len(diff_ids) != len(layers):
        raise BranchError(
            f"upstream's manifest {manifest_digest} lists {len(layers)} layers, its config {len(diff_ids)} diff_ids",
            where=str(out),
        )
    return State(
        runtime=clone.runtime,
        architecture=arch,
        reference=manifest_digest,
        repository="",
        index_digest=index_digest,
        manifest_digest=manifest_digest,
        config_digest=config_digest,
        config=config,
        layers=tuple(
            Layer(layer.get("digest", ""), layer.get("mediaType", ""), layer.get("size", 0), diff_id)
            for layer, diff_id in zip(layers, diff_ids, strict=True)
        ),
    )


def resolved(image: str, runtime: Runtime, out: Path) -> dict[str, State]:
    """Upstream's state of each of `runtime`'s architectures under `image`, asked of the registry; the documents
    are kept in `out`'s cache.

    Raises:
        UsageError: `image` is no reference.
        RegistryError: the registry did not answer as it should, or has not every architecture.
    """
    try:
        reference = Reference.parse(image)
    except ValueError as exc:
        raise UsageError(f"image={image}: {exc}") from exc
    runtime = dataclasses.replace(
        runtime, registry=reference.registry, repository=reference.repository, reference=reference.reference
    )
    client, poll = resolve.client_for(reference.registry), resolve.Poll()
    return {arch: resolve.resolve(runtime, arch, client, out, polled=poll) for arch in runtime.architectures}


# -- the checks ------------------------------------------------------------------------------------


def verify(clone: Clone, out: Path, states: dict[str, State]) -> RuntimeResult:
    """Every check of the clone's architectures against upstream's states (an architecture without one is
    skipped, naming why)."""
    native = engine.native_arch()
    results = []
    for arch in clone.architectures:
        if arch not in states:
            named = ", ".join(states)
            results.append(ArchResult(clone.runtime, arch, _skipped(CHECKS, f"upstream's manifest is {named} only")))
            continue
        results.append(_verify_arch(clone, out, states[arch], native))
    return RuntimeResult(clone.runtime, tuple(results))


@dataclass
class Matching:
    """What the tarballs of one architecture are: each tarball's layer numbers, the tarballs in layer order
    (when every layer has one), the problems and the report lines."""

    layers_of: dict[str, list[int]] = field(default_factory=dict)  # tarball name -> upstream layer numbers
    contents: dict[str, LayerContents] = field(default_factory=dict)
    in_layer_order: list[Path] | None = None
    tree: dict[str, Entry] | None = None  # upstream's tree: the layers stacked in layer order
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    size: int = 0


def match_tarballs(clone: Clone, state: State) -> Matching:
    """Decompress each tarball of the architecture once and say which of upstream's layers it is, by content;
    then whether each Dockerfile ADDs every layer, and in which order (see `_adds`)."""
    arch, found = state.architecture, Matching()
    numbers = collections.defaultdict(list)
    for number, layer in enumerate(state.layers, 1):
        numbers[layer.diff_id].append(number)
    paths = {}
    for path in clone.tarballs(arch):
        reader = checks.LayerReader(path, by_name=False)
        try:
            contents = read_layer(reader)
        except checks.READ_ERRORS:
            contents = None  # not a layer tar: its digest below says it is none of upstream's layers
        where = f"{arch}/{path.name}"
        if not reader.finish():
            if checks.is_lfs_pointer(path):
                found.problems.append(f"{where}: a Git LFS pointer, not the tarball: run `git lfs pull`")
            else:
                found.problems.append(f"{where}: cannot be decompressed: {reader.error}")
            continue
        found.size += reader.size
        layers = numbers.get(reader.digest)
        if not layers or contents is None:
            found.problems.append(
                f"{where}: decompresses to sha256 {reader.digest.hex}, which is none of upstream's layers"
            )
            continue
        found.layers_of[path.name], found.contents[path.name] = layers, contents
        paths.setdefault(reader.digest, path)
        which = " and ".join(str(n) for n in layers)
        found.notes.append(f"{where} is upstream's layer {which} of {len(state.layers)} ({reader.digest})")
    for number, layer in enumerate(state.layers, 1):
        if layer.diff_id not in paths:
            found.problems.append(f"{arch}/: no tarball of upstream's layer {number} ({layer.diff_id})")
    if not found.problems:
        found.in_layer_order = [paths[layer.diff_id] for layer in state.layers]
        found.tree = combine(found.contents[path.name] for path in found.in_layer_order)
    for dockerfile, prefix in clone.adding(arch):
        _adds(clone, state, dockerfile, prefix, found)
    return found


def _adds(clone: Clone, state: State, dockerfile: Path, prefix: str, found: Matching) -> None:
    """Whether `dockerfile` ADDs each of upstream's layers once, and whether its order is upstream's layer order;
    where it is not, whether the other order builds another tree (a path in two layers with different content,
    or a whiteout), naming the first path that differs."""
    label = str(dockerfile.relative_to(clone.folder))
    try:
        adds = add_instructions(dockerfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        found.problems.append(f"{label}: cannot be read: {exc}")
        return
    order, names = [], []
    for add in adds:
        if not add.source or add.dest != "/":
            found.problems.append(
                f"{label}:{add.line}: expected `ADD <tarball> /`, found `ADD {add.source} {add.dest}`"
            )
            continue
        name = add.source.removeprefix(prefix) if add.source.startswith(prefix) else None
        if name not in found.layers_of:
            if name is None or not (clone.arch_folder(state.architecture) / name).is_file():
                found.problems.append(f"{label}:{add.line}: ADD {add.source}: no such tarball")
            continue  # else that tarball's problem is already named
        order.append(found.layers_of[name][0])
        names.append(name)
    wanted = list(range(1, len(state.layers) + 1))
    if collections.Counter(order) != collections.Counter(wanted):
        for number in sorted(set(wanted) - set(order)):
            found.problems.append(f"{label}: no ADD of upstream's layer {number} ({state.layers[number - 1].diff_id})")
        for number, count in collections.Counter(order).items():
            if count > 1:
                found.problems.append(f"{label}: upstream's layer {number} is ADDed {count} times")
        return
    if order == wanted:
        found.notes.append(f"{label}: the ADD lines are in upstream's layer order")
        return
    shown = ", ".join(str(number) for number in order)
    if found.tree is None:
        found.notes.append(f"{label}: the ADD lines add layers {shown}, not in upstream's layer order")
        return
    diff = diff_trees(found.tree, combine(found.contents[name] for name in names))
    if not diff:
        found.notes.append(
            f"{label}: the ADD lines add layers {shown}, not in upstream's layer order, which builds the same tree"
        )
        return
    first = min(
        (e.path for e in (*diff.removed, *diff.added, *(a for a, _ in diff.changed))), key=lambda p: p.split("/")
    )
    holders = [n for n, name in zip(order, names, strict=True) if _touches(found.contents[name], first)]
    found.problems.append(
        f"{label}: the ADD lines add layers {shown}, not in upstream's layer order, and that changes the tree: "
        f"{diff.describe(limit=1, old='layer order', new='ADD order')[0]} (layer order vs ADD order; "
        f"{first} is in layers {', '.join(str(n) for n in sorted(holders))})"
    )


def _touches(contents: LayerContents, path: str) -> bool:
    """Whether a layer has `path`, deletes it or hides it (a whiteout or opaque directory of it or a parent)."""
    parents = [path.rsplit("/", depth)[0] for depth in range(path.count("/") + 1)]
    return path in contents.paths or any(p in contents.whiteouts or p in contents.opaques for p in parents)


def _config_check(clone: Clone, state: State) -> tuple[list[str], list[str]]:
    """The config lines of every Dockerfile of the architecture against upstream's config, as rendered."""
    try:
        want = settings(render.render_dockerfile(runtime_of(clone), state))
    except RenderError as exc:
        return [f"upstream's config cannot be rendered to compare the Dockerfiles with: {exc.detail}"], []
    problems, notes = [], []
    for dockerfile, _ in clone.adding(state.architecture):
        label = str(dockerfile.relative_to(clone.folder))
        try:
            have = settings(dockerfile.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"{label}: {exc}")
            continue
        found, noted = dockerfiles.compare_settings(label, have, want)
        problems += found
        notes += noted
    return problems, notes


def _verify_arch(clone: Clone, out: Path, state: State, native: str) -> ArchResult:
    arch = state.architecture
    found = match_tarballs(clone, state)
    count = len(state.layers)
    if found.problems:
        tarballs = Check("tarballs", FAIL, found.problems[0] + _more(found.problems), tuple(found.problems))
    else:
        tarballs = Check("tarballs", PASS, f"{count} tarballs are upstream's {count} layers, matched by content")
    notes = list(found.notes)
    if found.in_layer_order is None:
        identity = Check("identity", SKIPPED, "not loaded: a layer has no tarball")
    else:
        identity = _load(clone, out, state, found.in_layer_order)
    config_problems, config_notes = _config_check(clone, state)
    notes += config_notes
    if arch != native or found.tree is None:
        why = f"the engine builds {native} only" if arch != native else "upstream's tree needs every layer's tarball"
        tree = Check("tree", SKIPPED, why)
        config = _config_result(config_problems, "the Dockerfiles' config lines are upstream's config")
        invoke = Check("invoke", SKIPPED, "a branch carries no smoke test")
        return ArchResult(clone.runtime, arch, (tarballs, identity, tree, config, invoke), tuple(notes))
    dockerfile = clone.build_dockerfile(arch)
    label = str(dockerfile.relative_to(clone.folder))
    tag = f"{TAG_PREFIX}/{clone.runtime}:{arch}-build"
    try:
        image = engine.build(dockerfile.parent, dockerfile.name, tag, runtime=clone.runtime, arch=arch)
    except EngineError as exc:
        failed = Check("tree", FAIL, f"{label} does not build: {exc}")
        rest = _skipped(CHECKS[3:], "no build")
        return ArchResult(clone.runtime, arch, (tarballs, identity, failed, *rest), tuple(notes))
    try:
        tree = checks.check_tree(found.tree, image)
        # A Dockerfile without LABEL lines is already a note of the config lines' check: not said twice.
        have_labels = settings(dockerfile.read_text(encoding="utf-8")).labels
        built, built_notes = checks.compare_config(
            state.config, engine.inspect_image(image) or {}, dropped=() if have_labels else ("Labels",)
        )
    finally:
        _remove(tag)
    notes += built_notes
    config_problems += [f"{label} builds another config: {problem}" for problem in built]
    config = _config_result(config_problems, f"the Dockerfiles' config lines and {label}'s build are upstream's")
    invoke = Check("invoke", SKIPPED, "a branch carries no smoke test")
    return ArchResult(clone.runtime, arch, (tarballs, identity, tree, config, invoke), tuple(notes), tag, image)


def _load(clone: Clone, out: Path, state: State, tarballs: list[Path]) -> Check:
    """The image loaded from the tarballs in upstream's layer order: its ID must be upstream's config digest."""
    config = documents.find(out, state.config_digest)
    tag = f"{TAG_PREFIX}/{clone.runtime}:{state.architecture}"
    try:
        name = layout.document_name(state.config_digest, "config")
        engine.load(docker_archive(config, name, tarballs, [tag]), runtime=clone.runtime)
        loaded = engine.image_id(tag)
    except (EngineError, OSError) as exc:
        return Check("identity", FAIL, f"the engine did not load the tarballs: {exc}")
    finally:
        _remove(tag)
    if loaded != state.config_digest:
        return Check("identity", FAIL, f"loaded image ID {loaded}, upstream's config is {state.config_digest}")
    return Check(
        "identity", PASS, f"loaded image ID {loaded} = upstream's config digest (manifest {state.manifest_digest})"
    )


def _config_result(problems: list[str], passed: str) -> Check:
    if problems:
        return Check("config", FAIL, problems[0] + _more(problems), tuple(problems))
    return Check("config", PASS, passed)


def _more(problems: list[str]) -> str:
    return f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""


def _skipped(names: tuple[str, ...], why: str) -> tuple[Check, ...]:
    return tuple(Check(name, SKIPPED, why) for name in names)


def _remove(tag: str) -> None:
    try:
        engine.remove_image(tag)
    except EngineError:
        pass
