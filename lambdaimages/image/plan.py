"""What the engine builds of a runtime, and which image stands for each architecture.

The engine builds Dockerfiles of its own architecture only, as `<rt>:local`; every architecture is loaded as
`<rt>:<arch>` (`image.load`). So for the engine's architecture the Dockerfile build is the image that build,
verify and their up-to-date checks look at, and for the others the loaded one. That rule lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lambdaimages import engine, layout, output
from lambdaimages.catalog import Runtime
from lambdaimages.errors import EngineError, OutputError
from lambdaimages.image import load
from lambdaimages.snapshot import fingerprint
from lambdaimages.snapshot.view import SnapshotView


@dataclass(frozen=True)
class BuildPlan:
    """A Dockerfile build of the engine's architecture: the folder it runs in and the Dockerfile's name there."""

    context: Path
    dockerfile: str
    arch: str


def built_arch(runtime: Runtime) -> str | None:
    """The architecture `<rt>:local` is built for: the engine's own, when the catalog lists it; else None."""
    native = engine.native_arch()
    return native if native in runtime.architectures else None


def build_plan(out: Path, runtime: Runtime) -> BuildPlan | None:
    """The build the engine can make of `runtime`, or None when the catalog has no image of its architecture.

    The top-level `<rt>/Dockerfile.<rt>` builds the default architecture (it ADDs `<arch>/...`); any other
    is built in its own folder.
    """
    arch = built_arch(runtime)
    if arch is None:
        return None
    dockerfile = SnapshotView(out, runtime).build_dockerfile(arch)
    return BuildPlan(dockerfile.parent, dockerfile.name, arch)


def build_inputs(out: Path, runtime: Runtime) -> dict | None:
    """What the build reads (its Dockerfile and the tarballs it ADDs), or None when there is no build."""
    plan = build_plan(out, runtime)
    if plan is None:
        return None
    return fingerprint.build_context(plan.context, plan.dockerfile)


def checked_image(runtime: Runtime, arch: str, image: str | None = None) -> str:
    """The image that stands for `arch`: `<rt>:local` (or `image`) for the built architecture, else `<rt>:<arch>`."""
    if arch == built_arch(runtime):
        return image or layout.local_tag(runtime.name)
    return layout.loaded_tag(runtime.name, arch)


def built_image_id(runtime: Runtime) -> str | None:
    """The ID of `<rt>:local` when the engine builds one for `runtime` (None when it is not there, or none is built)."""
    return engine.image_id(layout.local_tag(runtime.name)) if built_arch(runtime) is not None else None


def build_missing(out: Path, runtime: Runtime) -> None:
    """Build `<rt>:local` and load `<rt>:<arch>` when the engine lacks them, from the snapshot on disk as it is.

    An image that is there is left as it is (never rebuilt); a failure is said, and shows as the checks' failure.
    """
    plan = build_plan(out, runtime)
    view = SnapshotView(out, runtime)
    try:
        if plan is not None and engine.image_id(layout.local_tag(runtime.name)) is None:
            if (plan.context / plan.dockerfile).is_file():
                engine.build(plan.context, plan.dockerfile, layout.local_tag(runtime.name), runtime=runtime.name)
        for arch in runtime.architectures:
            if engine.image_id(layout.loaded_tag(runtime.name, arch)) is None:
                if view.state_or_none(arch) is not None:
                    load.load(out, runtime, arch)
    except (OutputError, EngineError) as exc:
        output.say(f"{runtime.name}: {exc}")
