"""Which image stands for each architecture, and what the engine builds (the engine's architecture is faked)."""

from pathlib import Path

import pytest

from lambdaimages import engine
from lambdaimages.catalog import Runtime
from lambdaimages.image import plan

OUT = Path("/out")
BOTH = Runtime("python3.12", "https://r", "lambda/python", "3.12", ("x86_64", "arm64"))
ARM_ONLY = Runtime("python3.12", "https://r", "lambda/python", "3.12", ("arm64",))


@pytest.fixture
def native(monkeypatch):
    def engine_is(arch: str) -> None:
        monkeypatch.setattr(engine, "native_arch", lambda: arch)

    return engine_is


def test_the_default_architecture_builds_the_top_level_dockerfile(native):
    native("x86_64")
    assert plan.build_plan(OUT, BOTH) == plan.BuildPlan(OUT / "python3.12", "Dockerfile.python3.12", "x86_64")
    assert plan.checked_image(BOTH, "x86_64") == "python3.12:local"
    assert plan.checked_image(BOTH, "x86_64", "other:tag") == "other:tag"
    assert plan.checked_image(BOTH, "arm64") == "python3.12:arm64"


def test_another_architecture_builds_in_its_own_folder(native):
    native("arm64")
    assert plan.built_arch(BOTH) == "arm64"
    assert plan.build_plan(OUT, BOTH) == plan.BuildPlan(OUT / "python3.12" / "arm64", "Dockerfile.python3.12", "arm64")
    assert plan.checked_image(BOTH, "arm64") == "python3.12:local"
    assert plan.checked_image(BOTH, "x86_64") == "python3.12:x86_64"
    assert plan.build_plan(OUT, ARM_ONLY).context == OUT / "python3.12"  # the only architecture is the default


def test_no_image_of_the_engines_architecture_builds_nothing(native):
    native("x86_64")
    assert plan.built_arch(ARM_ONLY) is None
    assert plan.build_plan(OUT, ARM_ONLY) is None
    assert plan.build_inputs(OUT, ARM_ONLY) is None
    assert plan.built_image_id(ARM_ONLY) is None
    assert plan.checked_image(ARM_ONLY, "arm64", "other:tag") == "python3.12:arm64"
