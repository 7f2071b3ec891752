"""Rendering: golden Dockerfiles, escaping, and configs no Dockerfile can express."""

import copy
import dataclasses
from pathlib import Path

import pytest
from states import make_state

from lambdaimages.catalog import Runtime
from lambdaimages.errors import RenderError
from lambdaimages.snapshot import render

GOLDEN = Path(__file__).resolve().parent / "golden"
RUNTIME = Runtime("python3.12", "https://public.ecr.aws", "lambda/python", "3.12", ("x86_64", "arm64"))
STATE = make_state(
    runtime="python3.12",
    architecture="x86_64",
    reference="public.ecr.aws/lambda/python:3.12",
    config={
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": [
                "LANG=en_US.UTF-8",
                "TZ=:/etc/localtime",
                "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
                "TRICKY= a \"b\" 'c' $HOME ${HOME} $$ = \\ \t é # ",
                "EMPTY=",
            ],
            "Labels": {"com.amazonaws.lambda.platform.kernel": "k6.1", "b": "x y"},
            "WorkingDir": "/var/task",
            "Entrypoint": ["/lambda-entrypoint.sh"],
            "Cmd": ["app.handler"],
            "ExposedPorts": {"8080/tcp": {}},
            "OnBuild": None,
        },
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64, "sha256:" + "a" * 64]},
    },
    layers=[
        {"digest": "sha256:" + "1" * 64, "diff_id": "sha256:" + "b" * 64, "size": 1, "media_type": "x"},
        {"digest": "sha256:" + "2" * 64, "diff_id": "sha256:" + "a" * 64, "size": 1, "media_type": "x"},
    ],
)


def test_golden_arch_dockerfile():
    text = render.render_dockerfile(RUNTIME, STATE)
    assert text == (GOLDEN / "Dockerfile.python3.12").read_text()


def test_golden_top_level_dockerfile_uses_arch_folder(tmp_path):
    arm = dataclasses.replace(STATE, architecture="arm64")
    written = render.render(RUNTIME, {"x86_64": STATE, "arm64": arm}, tmp_path)
    top = (tmp_path / "python3.12" / "Dockerfile.python3.12").read_text()
    assert top == (GOLDEN / "Dockerfile.python3.12").read_text().replace("ADD " + "b", "ADD x86_64/" + "b").replace(
        "ADD " + "a", "ADD x86_64/" + "a"
    )
    assert (tmp_path / "python3.12" / ".dockerignore").read_text().splitlines()[-1] == "arm64/"
    assert "(linux/arm64)" in (tmp_path / "python3.12" / "arm64" / "Dockerfile.python3.12").read_text()
    assert len(written) == 4
    assert render.render(RUNTIME, {"x86_64": STATE, "arm64": arm}, tmp_path) == []


def test_add_lines_follow_layer_order_not_names():
    lines = [line for line in render.render_dockerfile(RUNTIME, STATE).splitlines() if line.startswith("ADD")]
    assert lines == [f"ADD {'b' * 64}.tar.xz /", f"ADD {'a' * 64}.tar.xz /"]


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("$HOME ${HOME}", '"\\$HOME \\${HOME}"'),
        ("back\\slash\\", '"back\\\\slash\\\\"'),
        ("", '""'),
    ],
)
def test_dquote(value, quoted):
    assert render.dquote(value) == quoted


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("Env", ["A=line\nbreak"], "config Env cannot be expressed in a Dockerfile: it contains a line break"),
        ("Env", ["NOEQUALS"], "config Env cannot be expressed"),
        ("Env", ["BAD NAME=x"], "config Env cannot be expressed"),
        ("User", "a b", "config User cannot be expressed"),
        ("WorkingDir", "/var/$task", "config WorkingDir cannot be expressed"),
        ("Healthcheck", {"Test": ["CMD", "true"]}, "config Healthcheck cannot be expressed"),
        ("ExposedPorts", {"http": {}}, "config ExposedPorts cannot be expressed"),
    ],
)
def test_inexpressible_values_name_runtime_and_key(key, value, message):
    state = dataclasses.replace(STATE, config=copy.deepcopy(STATE.config))
    state.config["config"][key] = value
    with pytest.raises(RenderError) as info:
        render.render_dockerfile(RUNTIME, state)
    assert str(info.value).startswith(f"python3.12 x86_64: {message}")
