"""The Docker engine, the only module that talks to it: connect, build, load, inspect, save, run and remove."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import docker.errors
import requests

from lambdaimages import output, platforms
from lambdaimages.errors import EngineError

_client: docker.DockerClient | None = None
_STEP = re.compile(r"Step (\d+)/(\d+) :")
# What the SDK raises when the engine refuses a call or the connection to it fails.
_FAULTS = (docker.errors.APIError, requests.RequestException)


def engine_name() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client() -> docker.DockerClient:
    """The engine of the environment (DOCKER_HOST or the local socket), checked to answer."""
    global _client
    if _client is None:
        try:
            candidate = docker.from_env(timeout=600)
            candidate.ping()
        except (docker.errors.DockerException, requests.RequestException) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise EngineError(
                f"Docker engine at {engine_name()} does not answer ({reason}); is dockerd running?"
            ) from None
        _client = candidate
    return _client


@functools.cache
def native_arch() -> str:
    """The engine's architecture, by the catalog's name (asked once per process)."""
    return platforms.catalog_name(client().version().get("Arch", ""))


def inspect_image(ref: str) -> dict | None:
    """The engine's inspect record of an image (`docker image inspect`), or None when it has no such image."""
    try:
        return client().images.get(ref).attrs
    except docker.errors.ImageNotFound:
        return None
    except _FAULTS as exc:
        raise EngineError(f"cannot inspect {ref} on {engine_name()}: {exc}") from None


def image_id(ref: str) -> str | None:
    """The ID of an image, or None when the engine has no such image."""
    found = inspect_image(ref)
    return found["Id"] if found is not None else None


def save_image(image: str, chunk_size: int) -> Iterator[bytes]:
    """`docker save IMAGE` as a stream of chunks; a fault while streaming is an EngineError with the engine's words."""
    try:
        yield from client().images.get(image).save(chunk_size=chunk_size)
    except _FAULTS as exc:
        raise EngineError(str(exc)) from None


def load(chunks: Iterator[bytes], label: str) -> list[str]:
    """`docker load` of a docker-archive streamed from `chunks`; the names (tags or IDs) of the images it loaded."""
    loaded = []
    try:
        for message in client().api.load_image(chunks):
            if "error" in message:
                detail = (message.get("errorDetail") or {}).get("message") or message["error"]
                raise EngineError(f"{label}: docker load failed: {detail.strip()}")
            text = (message.get("stream") or "").strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text.removeprefix(prefix))
    except _FAULTS as exc:
        raise EngineError(f"{label}: docker load on {engine_name()} failed: {_first_line(exc)}") from None
    return loaded


def remove_image(tag: str) -> bool:
    """Untag (and, when it was the last tag, remove) an image; False when there was none."""
    if image_id(tag) is None:
        return False
    try:
        client().images.remove(tag)
    except _FAULTS as exc:
        raise EngineError(f"cannot remove {tag} on {engine_name()}: {exc}") from None
    return True


class Container:
    """A created container, seen through the few questions verification asks; every fault is an EngineError."""

    def __init__(self, container) -> None:
        self._container = container

    def status(self) -> tuple[str, int | None]:
        """The container's status now (running, exited, dead...) and its exit code."""
        try:
            self._container.reload()
        except _FAULTS as exc:
            raise EngineError(f"cannot inspect container {self._container.name}: {exc}") from None
        return self._container.status, self._container.attrs.get("State", {}).get("ExitCode")

    def logs(self, tail: int) -> str:
        try:
            return self._container.logs(stdout=True, stderr=True, tail=tail).decode("utf-8", "replace")
        except _FAULTS as exc:
            raise EngineError(f"cannot read the logs of {self._container.name}: {exc}") from None


@contextmanager
def running_container(image: str, **options) -> Iterator[Container]:
    """A container of `image` created with docker-py's `containers.create` options and started; removed however
    the block ends. A fault of the engine is an EngineError naming its first line."""
    try:
        container = client().containers.create(image, **options)
    except _FAULTS as exc:
        raise EngineError(_first_line(exc)) from None
    try:
        try:
            container.start()
        except _FAULTS as exc:
            raise EngineError(_first_line(exc)) from None
        yield Container(container)
    finally:
        try:
            container.remove(force=True)
        except _FAULTS as exc:
            raise EngineError(_first_line(exc)) from None


def run_to_exit(image: str, timeout: float, **options) -> int:
    """Run a container of `image` to its end and remove it; its exit code.

    Raises:
        EngineError: the engine could not start it (e.g. `exec format error`) or it outlived `timeout`.
    """
    with running_container(image, **options) as container:
        try:
            result = container._container.wait(timeout=timeout)
        except _FAULTS as exc:
            raise EngineError(_first_line(exc)) from None
    return int(result.get("StatusCode", -1))


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def build(context: Path, dockerfile: str, tag: str, label: str) -> str:
    """`docker build -t TAG -f DOCKERFILE CONTEXT` with the legacy builder, output streamed; the image id."""
    api = client().api
    image = None
    pending = ""
    try:
        stream = api.build(
            path=str(context), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True, pull=False, decode=True
        )
        for message in stream:
            output.check()  # Ctrl-C: the engine stops the build when the stream closes
            if "error" in message:
                detail = (message.get("errorDetail") or {}).get("message") or message["error"]
                raise EngineError(f"{label}: docker build failed: {detail.strip()}")
            pending += message.get("stream") or ""
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.strip() and not line.startswith((" ---> Running in", "Removing intermediate")):
                    output.say(f"{label}: {line.rstrip()}", status=True)
                    if step := _STEP.match(line):
                        output.progress(int(step[1]) / int(step[2]), f"step {step[1]}/{step[2]}")
            aux = message.get("aux") or {}
            image = aux.get("ID", image)
    except _FAULTS as exc:
        raise EngineError(f"{label}: docker build on {engine_name()} failed: {exc}") from None
    found = image_id(tag)
    if found is None or (image is not None and found != image):
        raise EngineError(f"{label}: the build finished but {tag} is not the image it built")
    return found
