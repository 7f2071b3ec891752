"""Shared fixtures: a local registry for the session, and the Docker engine."""

from collections.abc import Iterator

import docker
import pytest

from lambdaimages.testbed.localregistry import LocalRegistry


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """Debian's docker-registry on 127.0.0.1 with temporary storage, for the whole session."""
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"Docker engine unreachable: {exc}")
    yield client
    client.close()
