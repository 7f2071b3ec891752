"""The up-to-date checks: what they show in `doit info`, what they save, and a failure to compute as "run"."""

import os
from pathlib import Path

import pytest
from doit_cli import run_doit
from states import make_state

from lambdaimages import engine
from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.errors import EngineError
from lambdaimages.image import builds, load, plan
from lambdaimages.snapshot import fingerprint
from lambdaimages.tasks import uptodate
from lambdaimages.testbed import ROOT
from lambdaimages.verify import inputs

RUNTIME = Runtime("demo.python", "https://r", "lambda/python", "3.12", ("x86_64", "arm64"))


class FakeTask:
    """What a check uses of a doit task: the list of value savers doit calls after a successful run."""

    def __init__(self) -> None:
        self.value_savers = []

    def saved(self) -> dict:
        values = {}
        for saver in self.value_savers:
            values.update(saver())
        return values


def test_checks_show_their_kind_and_runtime():
    out = Path("/out")
    assert repr(uptodate.SnapshotUnchanged(out, RUNTIME)) == "snapshot_unchanged(demo.python)"
    assert repr(uptodate.ImageCurrent(out, RUNTIME)) == "image_current(demo.python)"
    assert repr(uptodate.ImagesLoaded(out, RUNTIME)) == "images_loaded(demo.python)"
    assert repr(uptodate.VerificationCurrent(out, RUNTIME)) == "verification_current(demo.python)"
    assert str(uptodate.ImageCurrent(out, RUNTIME)) == "image_current(demo.python)"
    assert repr(uptodate.BuildRecorded(out, RUNTIME)) == "build_recorded(demo.python)"


def test_snapshot_unchanged_saves_the_files_and_sees_a_rewritten_one(tmp_path, monkeypatch):
    paths = [tmp_path / "a.tar.xz", tmp_path / "b.tar.xz"]
    for path in paths:
        path.write_bytes(b"layer")
    monkeypatch.setattr(fingerprint, "exported_files", lambda out, runtime: paths)
    check, task = uptodate.SnapshotUnchanged(tmp_path, RUNTIME), FakeTask()
    assert check(task, {}) is False  # never exported
    saved = task.saved()
    assert saved == {"files": fingerprint.files(paths)}
    assert check(FakeTask(), saved) is True
    os.utime(paths[1], ns=(1, 1))
    assert check(FakeTask(), saved) is False


def test_snapshot_unchanged_without_a_state_is_not_up_to_date(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprint, "exported_files", lambda out, runtime: [])
    assert uptodate.SnapshotUnchanged(tmp_path, RUNTIME)(FakeTask(), {"files": []}) is False


def test_image_current_saves_the_build_inputs_and_the_image_after_the_run(monkeypatch):
    built = {"inputs": {"dockerfile": "1"}, "image": "sha256:" + "a" * 64}
    monkeypatch.setattr(plan, "build_inputs", lambda out, runtime: built["inputs"])
    monkeypatch.setattr(plan, "built_image_id", lambda runtime: built["image"])
    monkeypatch.setattr(engine, "image_id", lambda tag: built["image"] if tag == "demo.python:local" else None)
    check, task = uptodate.ImageCurrent(Path("/out"), RUNTIME), FakeTask()
    assert check(task, {}) is False
    built["image"] = "sha256:" + "b" * 64  # the savers run after the task's actions: the image the build made
    saved = task.saved()
    assert saved == {"inputs": {"dockerfile": "1"}, "image_id": "sha256:" + "b" * 64}
    assert check(FakeTask(), saved) is True
    built["inputs"] = {"dockerfile": "2"}
    assert check(FakeTask(), saved) is False


def test_build_recorded_until_the_current_snapshots_build_is(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "built_arch", lambda runtime: "x86_64")
    check = uptodate.BuildRecorded(tmp_path, RUNTIME)
    assert check(FakeTask(), {}) is False  # no state
    state = make_state(runtime=RUNTIME.name, architecture="x86_64")
    states_on_disk.write(tmp_path, state)
    assert check(FakeTask(), {}) is False  # a state, no build recorded
    builds.record(tmp_path, RUNTIME.name, "sha256:" + "0" * 64, ("sha256:" + "1" * 64,))
    assert check(FakeTask(), {}) is False  # another snapshot's build
    builds.record(tmp_path, RUNTIME.name, state.manifest_digest, ("sha256:" + "2" * 64,))
    assert check(FakeTask(), {}) is True
    monkeypatch.setattr(plan, "built_arch", lambda runtime: None)
    assert uptodate.BuildRecorded(tmp_path / "other", RUNTIME)(FakeTask(), {}) is True  # nothing to build


@pytest.mark.parametrize("failure", [OSError("unreadable"), EngineError("the engine does not answer")])
def test_a_value_that_cannot_be_computed_means_not_up_to_date_and_saves_nothing(monkeypatch, failure):
    def fail(*args):
        raise failure

    monkeypatch.setattr(plan, "build_inputs", fail)
    monkeypatch.setattr(inputs, "gather", fail)
    monkeypatch.setattr(engine, "image_id", fail)
    monkeypatch.setattr(load, "is_loaded", fail)
    for check in (
        uptodate.ImageCurrent(Path("/out"), RUNTIME),
        uptodate.VerificationCurrent(Path("/out"), RUNTIME),
        uptodate.ImagesLoaded(Path("/out"), RUNTIME),
    ):
        task = FakeTask()
        assert check(task, {"inputs": None, "image_id": None}) is False, check
        assert task.saved() == {}, check


def test_verification_current_saves_the_inputs_it_compares(monkeypatch):
    monkeypatch.setattr(inputs, "gather", lambda out, runtime: {"snapshot": "1"})
    check, task = uptodate.VerificationCurrent(Path("/out"), RUNTIME), FakeTask()
    assert check(task, {}) is False
    assert task.saved() == {"inputs": {"snapshot": "1"}}
    assert check(FakeTask(), {"inputs": {"snapshot": "1"}}) is True
    assert check(FakeTask(), {"inputs": {"snapshot": "0"}}) is False


def test_doit_info_names_each_check_that_is_not_up_to_date(tmp_path):
    out = tmp_path / "out"
    for task, check in [
        ("build:python3.12", "image_current(python3.12)"),
        ("load:python3.12", "images_loaded(python3.12)"),
        ("export:python3.12", "snapshot_unchanged(python3.12)"),
        ("verify:python3.12", "verification_current(python3.12)"),
    ]:
        proc = run_doit(ROOT / "runtimes.yaml", out, "info", task, check=False)
        assert proc.returncode == 1, proc.stdout + proc.stderr  # doit info: 1 when the task is not up to date
        assert f"    - {check} (args=" in proc.stdout, proc.stdout
        assert "<function" not in proc.stdout and "<locals>" not in proc.stdout
