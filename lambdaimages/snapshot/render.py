"""Render Dockerfiles from templates/ so that the built image's config equals upstream's exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

from lambdaimages import layout, platforms
from lambdaimages.catalog import Runtime
from lambdaimages.errors import RenderError
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.files import write_if_changed
from lambdaimages.tools.templates import TEMPLATES, render_template

DOCKERFILE_TEMPLATE = "Dockerfile.j2"
DOCKERIGNORE_TEMPLATE = "dockerignore.j2"

# Leftovers of `docker commit` in older configs: harmless when empty, not expressible when set.
IGNORED_WHEN_EMPTY = {
    "Hostname", "Domainname", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin",
    "StdinOnce", "Image", "OnBuild", "ArgsEscaped", "NetworkDisabled", "MacAddress", "Shell", "Healthcheck",
}  # fmt: skip
RENDERED = {"Env", "Labels", "User", "WorkingDir", "ExposedPorts", "Volumes", "StopSignal", "Entrypoint", "Cmd"}
ENV_NAME_RE = re.compile(r"^[^\s=\"'\\$]+$")
WORD_RE = re.compile(r"^[^\s\"'\\$]+$")
PORT_RE = re.compile(r"^[0-9]{1,5}(?:/(?:tcp|udp|sctp))?$")


def dquote(value: str) -> str:
    """A double-quoted Dockerfile word: round-trips spaces, quotes, `$`, `=`, backslashes, tabs, UTF-8."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def exec_form(values: list[str]) -> str:
    return json.dumps(values, ensure_ascii=False)


FILTERS = {"dquote": dquote, "exec_form": exec_form}


def dockerfile_context(runtime: Runtime, state: State, prefix: str = "") -> dict:
    """Template variables for one architecture; RenderError for what no Dockerfile can express."""
    config = state.config.get("config") or {}
    where = {"runtime": runtime.name, "arch": state.architecture}

    def fail(key: str, why: str) -> RenderError:
        return RenderError(f"config {key} cannot be expressed in a Dockerfile: {why}", **where)

    for key, value in config.items():
        if key not in RENDERED and not (key in IGNORED_WHEN_EMPTY and not value):
            raise fail(key, f"unsupported setting {value!r}")
    for key, value in _all_strings(config):
        if "\n" in value or "\r" in value or "\0" in value:
            raise fail(key, "it contains a line break or NUL")

    env = []
    for item in config.get("Env") or []:
        name, sep, value = item.partition("=")
        if not sep or not ENV_NAME_RE.match(name):
            raise fail("Env", f"entry {item!r} is not NAME=value with a plain name")
        env.append((name, value))
    labels = sorted((config.get("Labels") or {}).items())
    user = config.get("User") or None
    if user is not None and not WORD_RE.match(user):
        raise fail("User", f"{user!r} has spaces, quotes, '$' or backslashes")
    workdir = config.get("WorkingDir") or None
    if workdir is not None and not WORD_RE.match(workdir):
        raise fail("WorkingDir", f"{workdir!r} has spaces, quotes, '$' or backslashes")
    ports = sorted(config.get("ExposedPorts") or {})
    for port in ports:
        if not PORT_RE.match(port):
            raise fail("ExposedPorts", f"{port!r} is not PORT[/tcp|udp|sctp]")
    stop_signal = config.get("StopSignal") or None
    if stop_signal is not None and not WORD_RE.match(stop_signal):
        raise fail("StopSignal", repr(stop_signal))
    ext = runtime.extension
    return {
        "reference": state.reference,
        "platform": platforms.get(state.architecture).platform,
        "tarballs": [prefix + layer.tarball(ext) for layer in state.layers],
        "env": env,
        "labels": labels,
        "user": user,
        "workdir": workdir,
        "exposed_ports": ports,
        "volumes": sorted(config.get("Volumes") or {}),
        "stop_signal": stop_signal,
        "entrypoint": config.get("Entrypoint"),
        "cmd": config.get("Cmd"),
    }


def _all_strings(config: dict):
    for key, value in config.items():
        if isinstance(value, str):
            yield key, value
        elif isinstance(value, list):
            yield from ((key, v) for v in value if isinstance(v, str))
        elif isinstance(value, dict):
            for k, v in value.items():
                yield key, k
                if isinstance(v, str):
                    yield key, v


def render_dockerfile(runtime: Runtime, state: State, prefix: str = "", templates: Path = TEMPLATES) -> str:
    context = dockerfile_context(runtime, state, prefix)
    return render_template(DOCKERFILE_TEMPLATE, context, templates, FILTERS)


def render(runtime: Runtime, states: dict[str, State], out: Path, templates: Path = TEMPLATES) -> list[Path]:
    """Write every Dockerfile of a runtime (and the top-level .dockerignore); return the paths written."""
    snapshot = SnapshotView(out, runtime)
    written = []
    for arch, state in states.items():
        text = render_dockerfile(runtime, state, templates=templates)
        if write_if_changed(snapshot.dockerfile(arch), text.encode()):
            written.append(snapshot.dockerfile(arch))
    top = layout.default_arch(runtime.architectures)
    text = render_dockerfile(runtime, states[top], prefix=f"{top}/", templates=templates)
    if write_if_changed(snapshot.dockerfile(), text.encode()):
        written.append(snapshot.dockerfile())
    others = [a for a in runtime.architectures if a != top]
    ignore = render_template(DOCKERIGNORE_TEMPLATE, {"arch": top, "others": others}, templates, FILTERS)
    if write_if_changed(snapshot.dockerignore, ignore.encode()):
        written.append(snapshot.dockerignore)
    return written


def dockerfile_outputs(runtime: Runtime, out: Path) -> list[Path]:
    """Every file `render` owns, for doit targets."""
    snapshot = SnapshotView(out, runtime)
    paths = [snapshot.dockerfile(arch) for arch in runtime.architectures]
    return [*paths, snapshot.dockerfile(), snapshot.dockerignore]
