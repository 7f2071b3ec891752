"""The Docker engine: connect, build a rendered folder, look up images."""

from __future__ import annotations

import os
from pathlib import Path

import docker
import docker.errors
import requests

from .errors import EngineError

ARCHES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "arm64", "aarch64": "arm64"}
_client: docker.DockerClient | None = None


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


def native_arch() -> str:
    arch = client().version().get("Arch", "")
    return ARCHES.get(arch, arch)


def image_id(tag: str) -> str | None:
    try:
        return client().images.get(tag).id
    except docker.errors.ImageNotFound:
        return None
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise EngineError(f"cannot inspect {tag} on {engine_name()}: {exc}") from None


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
            if "error" in message:
                detail = (message.get("errorDetail") or {}).get("message") or message["error"]
                raise EngineError(f"{label}: docker build failed: {detail.strip()}")
            pending += message.get("stream") or ""
            *lines, pending = pending.split("\n")
            for line in lines:
                if line.strip() and not line.startswith((" ---> Running in", "Removing intermediate")):
                    print(f"{label}: {line.rstrip()}", flush=True)
            aux = message.get("aux") or {}
            image = aux.get("ID", image)
    except (docker.errors.APIError, requests.RequestException) as exc:
        raise EngineError(f"{label}: docker build on {engine_name()} failed: {exc}") from None
    found = image_id(tag)
    if found is None or (image is not None and found != image):
        raise EngineError(f"{label}: the build finished but {tag} is not the image it built")
    return found
