"""The up-to-date checks of dodo.py's tasks: small objects in the manner of doit's own `config_changed`."""

from __future__ import annotations

from pathlib import Path

from lambdaimages import engine, layout
from lambdaimages.catalog import Runtime
from lambdaimages.errors import ProjectError
from lambdaimages.image import builds, load, plan
from lambdaimages.snapshot import fingerprint
from lambdaimages.snapshot.view import SnapshotView

# What "cannot be computed" means: a file or the engine that cannot be read. The task then is not up to date.
FAILURES = (OSError, ProjectError)


class Check:
    """A doit `uptodate` entry for one runtime: compares what the task's last success saved with what is there now.

    doit calls it with the task and the values its last successful run saved. The check registers a value
    saver, which doit calls after the task's actions succeeded, so what is saved is the state after the run
    (the checks compute it themselves: the actions return nothing for doit to keep). A value that cannot be
    computed makes the task not up to date, and saves nothing, so that the next run checks again.
    """

    name = "check"

    def __init__(self, out: Path, runtime: Runtime) -> None:
        self.out = Path(out)
        self.runtime = runtime

    def current(self, values: dict) -> bool:
        """Whether the saved `values` still describe the files and the engine (may raise FAILURES)."""
        raise NotImplementedError

    def saved(self) -> dict:
        """The values to save after a successful run (may raise FAILURES); none by default."""
        return {}

    def __call__(self, task, values: dict) -> bool:
        task.value_savers.append(self._save)
        try:
            return bool(self.current(values))
        except FAILURES:
            return False

    def _save(self) -> dict:
        try:
            return self.saved()
        except FAILURES:
            return {}

    def __repr__(self) -> str:
        return f"{self.name}({self.runtime.name})"


class SnapshotUnchanged(Check):
    """Every tarball and upstream document is still the file the last export left (size, mtime, inode)."""

    name = "snapshot_unchanged"

    def _files(self) -> list:
        paths = fingerprint.exported_files(self.out, self.runtime)
        return fingerprint.files(paths) if paths else []

    def current(self, values: dict) -> bool:
        saved = values.get("files")
        return bool(saved) and saved == self._files()

    def saved(self) -> dict:
        return {"files": self._files()}


class ImageCurrent(Check):
    """Same Dockerfile and tarballs as the last build, and the image it built still tagged `<rt>:local`."""

    name = "image_current"

    def current(self, values: dict) -> bool:
        if "inputs" not in values or values["inputs"] != plan.build_inputs(self.out, self.runtime):
            return False
        return values["image_id"] is None or engine.image_id(layout.local_tag(self.runtime.name)) == values["image_id"]

    def saved(self) -> dict:
        return {"inputs": plan.build_inputs(self.out, self.runtime), "image_id": plan.built_image_id(self.runtime)}


class BuildRecorded(Check):
    """The diff_ids of the build of the current snapshot are recorded for check_base (`image.builds`), so a build
    made before they were is done once more (nothing saved: the record says)."""

    name = "build_recorded"

    def current(self, values: dict) -> bool:
        arch = plan.built_arch(self.runtime)
        if arch is None:
            return True
        state = SnapshotView(self.out, self.runtime).state_or_none(arch)
        return state is not None and builds.recorded(self.out, self.runtime.name, state.manifest_digest)


class ImagesLoaded(Check):
    """Every architecture's `<rt>:<arch>` is the image of the snapshot's config (nothing saved: the engine says)."""

    name = "images_loaded"

    def current(self, values: dict) -> bool:
        return all(load.is_loaded(self.out, self.runtime, arch) for arch in self.runtime.architectures)


class VerificationCurrent(Check):
    """Same images, snapshot and smoke test as the last successful verification (`verify.inputs.gather`)."""

    name = "verification_current"

    def _inputs(self) -> dict:
        from lambdaimages.verify import inputs  # verify's modules are imported only when a verify task is checked

        return inputs.gather(self.out, self.runtime)

    def current(self, values: dict) -> bool:
        return "inputs" in values and values["inputs"] == self._inputs()

    def saved(self) -> dict:
        return {"inputs": self._inputs()}
