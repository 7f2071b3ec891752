"""The actions behind dodo.py's tasks, one function per pipeline step (their up-to-date checks: `uptodate`)."""

from __future__ import annotations

import functools
import shutil
import threading
import time
from pathlib import Path

from doit.exceptions import TaskError, TaskFailed

from lambdaimages import engine, layout, output
from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.errors import (
    OutputError,
    ProjectError,
    PublishError,
    RegistryUnreachable,
    RenderError,
    UsageError,
    cause_chain,
)
from lambdaimages.image import base, builds, load, push
from lambdaimages.image import plan as image_plan
from lambdaimages.inventory import images as inventories
from lambdaimages.inventory import report
from lambdaimages.publish import branch_source, branches
from lambdaimages.reference import Repository
from lambdaimages.registry import layercache
from lambdaimages.snapshot import documents, export, render, resolve, sources
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.tools import memory


class ProjectFailure(TaskFailed):
    """A task ended by a foreseeable failure: doit's failure, carrying the error itself for the reporter."""

    def __init__(self, error: ProjectError) -> None:
        super().__init__(str(error))
        self.error = error


def one_line_errors(action):
    """Foreseeable failures end the task with their one-line message instead of a traceback; the task's log
    gets the traceback of the error's cause chain (`output.note`), which the message leaves out.

    The action also counts as running (`output.running`), so that Ctrl-C waits for it to clean up.
    """

    @functools.wraps(action)
    def wrapper(*args, **kwargs):
        try:
            with output.running():  # an interrupted run waits for it to stop cleanly
                output.check()
                return action(*args, **kwargs)
        except ProjectError as exc:
            output.note(cause_chain(exc))
            return ProjectFailure(exc)

    return wrapper


# -- resolve -------------------------------------------------------------------------------


@one_line_errors
def resolve_runtime(out: Path, runtime: Runtime, strict: bool = False) -> dict:
    """Poll upstream for every architecture; state files change only when upstream moved.

    When upstream cannot be reached (not: refused or wrong), the snapshot on disk is kept and the run goes on
    from it, saying so and counting the runtime as "not polled"; `strict` (`doit strict=1`) fails instead.
    """
    client = resolve.client_for(runtime.registry)
    snapshot = SnapshotView(out, runtime)
    states, polled = [], resolve.Poll()
    for arch in runtime.architectures:
        try:
            state = resolve.resolve(runtime, arch, client, out, snapshot.state_or_none(arch), polled)
        except RegistryUnreachable as exc:
            written = resolve.snapshot_written(snapshot)
            if written is None or strict:
                raise exc.within(reference=runtime.image).offline(registry=runtime.registry, snapshot=written) from None
            output.say(f"{runtime.name}: upstream not polled: {exc.detail}; using the snapshot of {written}", show=True)
            output.count("not polled", runtimes=1)
            return {}
        try:
            render.dockerfile_context(runtime, state)  # a config no Dockerfile can express stops here
        except RenderError as exc:
            exc.within(reference=runtime.image)
            raise  # the same error, its cause kept
        states.append(state)
    # Written only when every architecture resolved: a failure leaves the whole runtime as it was.
    changed = [state.architecture for state in states if states_on_disk.write(out, state)]
    if changed:
        output.say(f"{runtime.name}: upstream {runtime.image} changed for {', '.join(changed)}")
        output.moved(runtime.name)
    return {}


def state_files(out: Path, runtime: Runtime) -> list[str]:
    snapshot = SnapshotView(out, runtime)
    return [str(snapshot.state_path(arch)) for arch in runtime.architectures]


# -- export --------------------------------------------------------------------------------


def export_settings(runtime: Runtime) -> dict:
    """The catalog settings an export reads besides the state files: a change reruns it."""
    return {"architectures": list(runtime.architectures), "compression": runtime.compression, "level": runtime.level}


def registry_cache(text: str | None, catalog) -> Repository | None:
    """The registry layer cache of the run: `cache=URL` on the command line (`cache=` alone: none), else the
    catalog's `cache: {to: URL}`.

    Raises:
        UsageError: `text` does not name a registry repository.
    """
    if text is None:
        return catalog.cache_to
    if not text.strip():
        return None
    try:
        return Repository.parse(text.strip())
    except ValueError as exc:
        raise UsageError(f"cache={text}: expected [http://]HOST[:PORT]/REPOSITORY: {exc}") from None


def layer_sources(out: Path, runtime: Runtime, repo: str | None, cache: Repository | None = None) -> sources.Sources:
    """Where export looks for a layer the local cache lacks before it compresses it, in this order: the registry
    cache (`cache`, which also gets what this machine compressed), the published branches (`repo`)."""
    found = []
    if cache is not None:
        found.append(layercache.LayerCacheSource(layercache.for_run(cache, resolve.client_for(cache.registry))))
    if repo:
        found.append(branch_source.PublishedBranches(out, repo))
    return sources.Sources(found)


@one_line_errors
def export_runtime(out: Path, runtime: Runtime, repo: str | None = None, cache: Repository | None = None) -> None:
    """Every layer into the cache (from the sources or compressed) and the snapshot; `repo`: the published branches,
    `cache`: the registry layer cache."""
    memory.return_freed_buffers()  # the chunks passed between export's threads do not pile up in the heap
    client = resolve.client_for(runtime.registry)
    states = SnapshotView(out, runtime).states()
    found = layer_sources(out, runtime, repo, cache)
    loads = load.FromDownloads(out, runtime, states)
    try:
        # Every layer of every architecture into the cache first: a fault stops the export before the snapshot
        # changes. The blobs being downloaded also feed `docker load` of their architecture (no second read).
        # And the uncompressed tars feed each layer's inventory facts.
        export.fetch(
            runtime,
            states,
            out,
            client,
            blob_sink=loads.sink,
            tar_sink=_facts_writer(out),
            sources=found,
            downloaded=loads.downloaded,
        )
        for state in states.values():
            documents.fetch_missing(out, state, client)
        for arch, state in states.items():
            export.export(runtime, arch, state, out, client, found)
        documents.place(out, runtime, states)
        export.drop_other_architectures(out, runtime)
    except BaseException:
        loads.abort()
        raise
    loads.finish()


def _facts_writer(out: Path):
    def sink(arch: str, number: int, layer):
        return inventories.FactsWriter(out, layer)

    return sink


# -- inventory -----------------------------------------------------------------------------


@one_line_errors
def inventory_runtime(out: Path, runtime: Runtime, argv: list[str]) -> dict:
    """Write each architecture's SBOM; its summary is shown when `inventory` is on the command line."""
    asked = any(word.split(":", 1)[0] == "inventory" for word in argv[1:])
    states = list(SnapshotView(out, runtime).states().values())
    try:
        inventories.read_missing(out, runtime, states)  # layers export did not read (older snapshots), in parallel
    except OSError as exc:
        raise OutputError(f"cannot read a layer for the inventory: {exc}", runtime=runtime.name) from exc
    for state in states:
        arch = state.architecture
        try:
            path, found = inventories.write(out, runtime, state)
        except OSError as exc:
            raise OutputError(f"cannot write the inventory: {exc}", runtime=runtime.name, arch=arch) from exc
        output.say(f"{runtime.name} {arch}: {path}", show=asked)
        for line in report.summary(found):
            output.say(f"  {line}", show=asked)
        output.count("inventoried", images=1, packages=len(found.packages))
    return {}


def sbom_files(out: Path, runtime: Runtime) -> list[str]:
    snapshot = SnapshotView(out, runtime)
    return [str(snapshot.sbom(arch)) for arch in runtime.architectures]


# -- render --------------------------------------------------------------------------------


def render_settings(runtime: Runtime) -> dict:
    """The catalog settings the Dockerfiles show (tarball names, architectures): a change rerenders."""
    return {"architectures": list(runtime.architectures), "extension": runtime.extension}


@one_line_errors
def render_runtime(out: Path, runtime: Runtime) -> dict:
    states = SnapshotView(out, runtime).states()
    for path in render.render(runtime, states, out):
        output.say(f"{runtime.name}: wrote {path}")
    return {}


# -- build ---------------------------------------------------------------------------------


_said_not_built: set[str] = set()


@one_line_errors
def build_runtime(out: Path, runtime: Runtime) -> None:
    plan = image_plan.build_plan(out, runtime)
    native = engine.native_arch()
    others = [a for a in runtime.architectures if a != native]
    if others and native not in _said_not_built:
        _said_not_built.add(native)
        output.say(f"The engine is {native}: Dockerfile builds are {native} only; every architecture is loaded.")
    if plan is None:
        output.say(f"{runtime.name}: no {native} image in the catalog; nothing to build")
        return
    image = engine.build(plan.context, plan.dockerfile, layout.local_tag(runtime.name), runtime=runtime.name)
    output.say(f"{runtime.name}: built {layout.local_tag(runtime.name)} ({plan.arch}) {image}")
    # check_base names the snapshot of an image built FROM <rt>:local by these (ADD re-tars: not upstream's ids).
    diff_ids = engine.image_diff_ids(layout.local_tag(runtime.name)) or ()
    builds.record(out, runtime.name, SnapshotView(out, runtime).state(plan.arch).manifest_digest, diff_ids)
    output.count("built", images=1)


# -- load ----------------------------------------------------------------------------------


@one_line_errors
def load_runtime(out: Path, runtime: Runtime) -> dict:
    """Load every architecture that is not in the engine as the snapshot's image (`<rt>:<arch>`)."""
    for arch in runtime.architectures:
        if load.is_loaded(out, runtime, arch):
            continue
        image = load.load(out, runtime, arch)
        output.say(f"{runtime.name}: loaded {layout.loaded_tag(runtime.name, arch)} {image} (upstream's config digest)")
        output.count("loaded", images=1)
    return {}


# -- push ----------------------------------------------------------------------------------


def push_target(to: str | None, catalog, runtime: Runtime, argv: list[str]):
    """Where `doit push:<rt>` pushes: `to=` (one image, so one runtime per run), else the catalog's mirror."""
    if to:
        if any(word == "push" for word in argv[1:]):
            raise UsageError(f"to={to} names one image: push one runtime with it (`doit push:<rt> to=...`)")
        return push.parse_target(to, runtime)
    if catalog.push_to:
        return push.parse_target(catalog.push_to, runtime, mirror=True)
    raise UsageError(
        f"where to? `doit push:{runtime.name} to=HOST[:PORT]/REPO[:TAG]`, "
        "or `push: {to: HOST[:PORT][/PREFIX]}` in the catalog",
        runtime=runtime.name,
    )


def switch(name: str, value: str | bool) -> bool:
    """A command-line on/off variable (`sbom=0`): 1/0, yes/no, true/false, on/off.

    Raises:
        UsageError: anything else.
    """
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "yes", "true", "on"):
        return True
    if text in ("0", "no", "false", "off"):
        return False
    raise UsageError(f"{name}={value}: expected 1 or 0 (yes/no, true/false, on/off)")


@one_line_errors
def push_runtime(
    out: Path, catalog, runtime: Runtime, to: str | None, argv: list[str], sbom: str | bool = True
) -> dict:
    """Push every architecture (with its SBOM as a referrer unless `sbom=0`) and the index; say what moved."""
    target = push_target(to, catalog, runtime, argv)
    client = resolve.client_for(target.registry)
    attach = switch("sbom", sbom)
    began = time.monotonic()
    try:
        done = push.push(out, runtime, target, client, sbom=attach)
    except ProjectError as exc:
        exc.within(runtime=runtime.name, reference=str(target))
        raise  # the same error, its cause kept
    moved = f"{done.uploaded} blob(s) uploaded ({done.uploaded_bytes / 1e6:.1f} MB), {done.mounted} mounted, "
    moved += f"{done.present} already there"
    kind = "upstream's index" if done.index_is_upstreams else "index"
    output.say(f"{runtime.name}: pushed {target} ({kind} {done.index_digest}): {moved}", show=True)
    for arch, digest in done.manifests.items():
        output.say(f"{runtime.name}:   {arch} manifest {digest}", show=True)
        if (sbom := done.sboms.get(arch)) is not None:
            output.say(f"{runtime.name}:   {arch} SBOM referrer {sbom.digest} ({sbom.listed_by})", show=True)
    output.count("pushed", blobs=done.uploaded, bytes=done.uploaded_bytes)
    output.span("pushed", began, time.monotonic())
    return {"index": done.index_digest}


# -- clean ---------------------------------------------------------------------------------


def clean_snapshot(out: Path, runtime: Runtime) -> None:
    """Remove what a runtime's snapshot wrote (the shared layer cache stays), and the verification of it."""
    for folder in (layout.runtime_dir(out, runtime.name), layout.state_path(out, runtime.name, "x").parent):
        if folder.exists():
            shutil.rmtree(folder)
            output.say(f"removed {folder}")
    _forget_verification(out, runtime, f"its snapshot was removed by doit clean: run doit build:{runtime.name}")


def clean_image(out: Path, runtime: Runtime) -> None:
    """Remove a runtime's images from the engine, and the verification of them."""
    tags = [layout.local_tag(runtime.name), *(layout.loaded_tag(runtime.name, a) for a in runtime.architectures)]
    for tag in tags:
        try:
            if engine.remove_image(tag):
                output.say(f"removed image {tag}")
        except ProjectError as exc:
            output.say(f"{runtime.name}: {exc}")
    _forget_verification(out, runtime, f"its images were removed by doit clean: run doit build:{runtime.name}")


def clean_verification(out: Path, runtime: Runtime) -> None:
    """Remove a runtime's verification result; the summary reports mark it not verified."""
    _forget_verification(out, runtime, f"its result was removed by doit clean: run doit verify:{runtime.name}")


def _forget_verification(out: Path, runtime: Runtime, reason: str) -> None:
    from lambdaimages.verify import reports

    for path in reports.forget(out, runtime, reason):
        output.say(f"{runtime.name}: {'removed' if not path.exists() else 'marked not verified in'} {path}")


# -- publish and changes ---------------------------------------------------------------------


@one_line_errors
def publish_runtime(out: Path, runtime: Runtime, repo: str | None) -> dict:
    if not repo:
        raise PublishError(
            "no repository to publish to: set `publish: {repo: PATH_OR_URL}` in the catalog "
            "or run `doit publish repo=PATH_OR_URL`",
            runtime=runtime.name,
        )
    outcome = branches.publish(out, runtime, repo)
    if outcome.pushed:
        output.say(f"{runtime.name}: pushed {outcome.commit} to branch {runtime.name} of {repo}", show=True)
    else:
        output.say(f"{runtime.name}: unchanged since published commit {outcome.commit}; nothing pushed", show=True)
    return {"commit": outcome.commit}


@one_line_errors
def print_changes(out: Path, runtime: Runtime, repo: str | None) -> dict:
    output.say(branches.changes_text(out, runtime, repo).rstrip("\n"), show=True)
    return {}


def clean_private(out: Path, runtime: Runtime) -> None:
    """Remove the private repository (the published branches stay where they were pushed)."""
    folder = layout.publish_dir(out, runtime.name)
    if folder.exists():
        shutil.rmtree(folder)
        output.say(f"removed {folder}")


# -- check_base ----------------------------------------------------------------------------


def check_base_requests(argv: list[str]) -> tuple[list[str], list[str]]:
    """The images (`image=A,B`, repeatable) and docker-archives (`archive=FILE`, repeatable) asked for.

    Read from the command line itself: doit's `get_var` keeps only the last of repeated variables.
    """
    images: list[str] = []
    archives: list[str] = []
    for word in argv[1:]:
        key, equals, value = word.partition("=")
        if equals and key == "image":
            images += [name.strip() for name in value.split(",") if name.strip()]
        elif equals and key == "archive" and value:
            archives.append(value)
    return images, archives


@one_line_errors
def check_base(out: Path, catalog, repo: str | None, argv: list[str]):
    """Name each image's base snapshot and whether upstream moved since; one line per image and a summary.

    doit's exit status is the verdict: 0 every image on a current base, 1 one behind (a failed task), 2 one on no
    known base or not readable, or the check could not run (a task error).
    """
    try:
        images, archives = check_base_requests(argv)
        if not images and not archives:
            raise UsageError("which images? `doit check_base image=NAME[,NAME...]` or `archive=FILE` (both repeatable)")
        subjects, unreadable = base.subjects(images, [Path(path) for path in archives])
        known = base.local_bases(out, catalog.runtimes)
        if repo:
            for runtime in catalog.runtimes:
                known += branches.published_bases(out, runtime, repo)
        if not known:
            output.say(
                f"no snapshot under {out} (run `doit snapshot`) and no published branch: no base is known", show=True
            )
        verdicts = base.check(subjects, known, base.inventory_reader(out)) + unreadable
    except ProjectError as exc:
        return TaskError(str(exc))
    for verdict in verdicts:
        output.say(verdict.line(), show=True)
        if verdict.changes:
            for line in verdict.changes.lines():
                output.say(f"  {line}")
    output.say(base.summary(verdicts), show=True)
    status = base.exit_status(verdicts)
    if not status:
        return {}
    off = sum(verdict.status != base.CURRENT for verdict in verdicts)
    failure = (TaskFailed if status == base.EXIT_STATUS[base.BEHIND] else TaskError)(
        f"{off} of {len(verdicts)} image{'s' if len(verdicts) != 1 else ''} not on a current base"
    )
    failure.shown = True  # its lines are on the console already: the reporter adds only the log's path
    return failure


# -- verify --------------------------------------------------------------------------------

PIPELINE_STAGES = ("resolve", "export", "render", "snapshot", "load", "build")


def requested_with_pipeline(argv: list[str]) -> bool:
    """The command line asks for pipeline tasks besides verify (`doit build verify`): verify must wait for them.

    Alone, `doit verify` depends on nothing: it checks what is on disk and in the engine, offline.
    """
    words = [arg for arg in argv[1:] if not arg.startswith("-") and "=" not in arg]
    return any(word.split(":", 1)[0] in PIPELINE_STAGES for word in words)


@one_line_errors
def verify_runtime(out: Path, catalog, runtime: Runtime):
    """Check a runtime against upstream and record the result; fail naming each failed check.

    The summary reports and the table are written once, after the run (`verify_report`).
    """
    from lambdaimages.verify import checks, inputs, reports

    if (missing := inputs.missing(out, runtime)) is not None:
        raise missing  # one line for the runtime, not one per file
    image_plan.build_missing(out, runtime)
    made_from = inputs.gather(out, runtime)
    result = checks.verify_runtime(out, runtime)
    reports.record(out, result, made_from)
    output.say("\n".join(reports.describe(result)))
    output.count("verified", runtimes=1)
    if result.failed:
        return TaskFailed(result.failure_message())
    return None


_reported: set[Path] = set()


@one_line_errors
def verify_report(out: Path, catalog) -> None:
    """The table of every runtime's last verification, and the JSON and JUnit reports: once per run.

    A teardown of every verify task that ran. doit 0.37's thread runner runs the teardown list once per
    worker thread when that worker runs out of tasks (other workers may still be verifying) and once more
    on the main thread after all of them ended: only that last call sees every result.
    """
    from lambdaimages.verify import reports

    if threading.current_thread() is not threading.main_thread() or out in _reported or output.cancelled():
        return  # an interrupted run shows no table
    _reported.add(out)
    found = reports.verdicts(out, catalog)
    paths = reports.write(out, found)
    output.say(reports.table(found))
    output.say(reports.closing_line(found, paths))


@one_line_errors
def verify_branch(out: Path, clone: str | None, manifest: str | None, image: str | None):
    """Check a clone of a published branch (ours or AWS's layout); fail naming each file that is not upstream's."""
    from lambdaimages.verify import branch, reports

    if not clone:
        raise UsageError("which clone? `doit verify_branch clone=PATH [manifest=sha256:... | image=REPOSITORY:TAG]`")
    result, named = branch.verify_clone(Path(clone), out, manifest, image)
    output.say(f"{clone}: {named.layout} branch layout; upstream's documents from {named.source}", show=True)
    output.say("\n".join(reports.describe(result)), show=True)
    if result.failed:
        return TaskFailed(f"{clone}: {result.failure_message()}")
    digests = ", ".join(f"{arch} {digest}" for arch, digest in named.manifests.items())
    output.say(
        f"{clone}: branch {named.runtime} is upstream's image {named.reference} ({digests}; {named.layout} layout)",
        show=True,
    )
    return {}
