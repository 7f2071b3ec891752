"""The Docker engine, the only module that talks to it: connect, build, load, inspect, save, run and remove."""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from lambdaimages import output, platforms
from lambdaimages.errors import EngineError, label

if TYPE_CHECKING:
    import docker

_client: docker.DockerClient | None = None
_STEP = re.compile(r"Step (\d+)/(\d+) :")


def _sdk():
    """docker-py, imported on first use: a doit run that never asks the engine (an inventory, a resolve) does
    not pay its ~30 ms at every start."""
    import docker
    import docker.errors

    return docker


def _fault_types() -> tuple[type[Exception], ...]:
    """What the SDK raises when the engine refuses a call or the connection to it fails."""
    return (_sdk().errors.APIError, requests.RequestException)


@contextmanager
def _faults(doing: str = "", *, first_line: bool = False, **about: str) -> Iterator[None]:
    """The one place a fault of the engine becomes an EngineError (docker-py's own single translation point is
    `errors.create_api_error_from_http_exception`): `<doing>: <the SDK's words>`, or the words alone, with the
    error's context (runtime, arch, where) as data; the SDK's exception stays its cause, for the log.

    Args:
        doing: what the call was doing (`cannot inspect IMAGE on ENGINE`); empty: the SDK's words alone.
        first_line: keep only the first line of the SDK's words (a build's or run's can be a page long).
        about: the runtime, arch and where of the EngineError (see ProjectError).
    """
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, _fault_types()):
            raise
        words = _first_line(exc) if first_line else str(exc)
        raise EngineError(f"{doing}: {words}" if doing else words, **about) from exc


def engine_name() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def client() -> docker.DockerClient:
    """The engine of the environment (DOCKER_HOST or the local socket), checked to answer."""
    global _client
    if _client is None:
        try:
            candidate = _sdk().from_env(timeout=600)
            candidate.ping()
        except (_sdk().errors.DockerException, requests.RequestException) as exc:
            reason = str(exc).splitlines()[0][:200]
            raise EngineError(
                f"Docker engine at {engine_name()} does not answer ({reason}); is dockerd running?"
            ) from exc
        _client = candidate
    return _client


@functools.cache
def native_arch() -> str:
    """The engine's architecture, by the catalog's name (asked once per process)."""
    return platforms.catalog_name(client().version().get("Arch", ""))


def inspect_image(ref: str) -> dict | None:
    """The engine's inspect record of an image (`docker image inspect`), or None when it has no such image."""
    with _faults(f"cannot inspect {ref} on {engine_name()}"):
        try:
            return client().images.get(ref).attrs
        except _sdk().errors.ImageNotFound:  # an APIError too: caught before _faults sees it
            return None


def image_id(ref: str) -> str | None:
    """The ID of an image, or None when the engine has no such image."""
    found = inspect_image(ref)
    return found["Id"] if found is not None else None


def image_diff_ids(ref: str) -> tuple[str, ...] | None:
    """The diff_ids of an image's layers, lowest first (`docker inspect`'s RootFS.Layers), or None when the engine
    has no such image."""
    found = inspect_image(ref)
    if found is None:
        return None
    return tuple((found.get("RootFS") or {}).get("Layers") or ())


def save_image(image: str, chunk_size: int) -> Iterator[bytes]:
    """`docker save IMAGE` as a stream of chunks; a fault while streaming is an EngineError with the engine's words."""
    with _faults():
        yield from client().images.get(image).save(chunk_size=chunk_size)


def load(chunks: Iterator[bytes], **about: str) -> list[str]:
    """`docker load` of a docker-archive streamed from `chunks`; the names (tags or IDs) of the images it loaded.

    `about` (runtime, arch, where) names the image in an EngineError.
    """
    loaded = []
    with _faults(f"docker load on {engine_name()} failed", first_line=True, **about):
        for message in client().api.load_image(chunks):
            if "error" in message:
                detail = (message.get("errorDetail") or {}).get("message") or message["error"]
                raise EngineError(f"docker load failed: {detail.strip()}", **about)
            text = (message.get("stream") or "").strip()
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text.removeprefix(prefix))
    return loaded


def remove_image(tag: str) -> bool:
    """Untag (and, when it was the last tag, remove) an image; False when there was none."""
    if image_id(tag) is None:
        return False
    with _faults(f"cannot remove {tag} on {engine_name()}"):
        client().images.remove(tag)
    return True


class Container:
    """A created container, seen through the few questions verification asks; every fault is an EngineError."""

    def __init__(self, container) -> None:
        self._container = container

    def status(self) -> tuple[str, int | None]:
        """The container's status now (running, exited, dead...) and its exit code."""
        with _faults(f"cannot inspect container {self._container.name}"):
            self._container.reload()
        return self._container.status, self._container.attrs.get("State", {}).get("ExitCode")

    def logs(self, tail: int) -> str:
        with _faults(f"cannot read the logs of {self._container.name}"):
            return self._container.logs(stdout=True, stderr=True, tail=tail).decode("utf-8", "replace")


@contextmanager
def running_container(image: str, **options) -> Iterator[Container]:
    """A container of `image` created with docker-py's `containers.create` options and started; removed however
    the block ends. A fault of the engine is an EngineError naming its first line."""
    with _faults(first_line=True):
        container = client().containers.create(image, **options)
    try:
        with _faults(first_line=True):
            container.start()
        yield Container(container)
    finally:
        with _faults(first_line=True):
            container.remove(force=True)


def run_to_exit(image: str, timeout: float, **options) -> int:
    """Run a container of `image` to its end and remove it; its exit code.

    Raises:
        EngineError: the engine could not start it (e.g. `exec format error`) or it outlived `timeout`.
    """
    with running_container(image, **options) as container:
        with _faults(first_line=True):
            result = container._container.wait(timeout=timeout)
    return int(result.get("StatusCode", -1))


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def build(context: Path, dockerfile: str, tag: str, **about: str) -> str:
    """`docker build -t TAG -f DOCKERFILE CONTEXT` with the legacy builder, output streamed; the image id.

    `about` (runtime, arch, where) names the image in its output lines and in an EngineError.
    """
    api = client().api
    image = None
    pending = ""
    name = label(**about)
    with _faults(f"docker build on {engine_name()} failed", **about):
        stream = api.build(
            path=str(context), dockerfile=dockerfile, tag=tag, rm=True, forcerm=True, pull=False, decode=True
        )
        for message in stream:
            output.check()  # Ctrl-C: the engine stops the build when the stream closes
            if "error" in message:
                detail = (message.get("errorDetail") or {}).get("message") or message["error"]
                raise EngineError(f"docker build failed: {detail.strip()}", **about)
            pending += message.get("stream") or ""
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.strip() and not line.startswith((" ---> Running in", "Removing intermediate")):
                    output.say(f"{name}: {line.rstrip()}", status=True)
                    if step := _STEP.match(line):
                        output.progress(int(step[1]) / int(step[2]), f"step {step[1]}/{step[2]}")
            aux = message.get("aux") or {}
            image = aux.get("ID", image)
    found = image_id(tag)
    if found is None or (image is not None and found != image):
        raise EngineError(f"the build finished but {tag} is not the image it built", **about)
    return found
