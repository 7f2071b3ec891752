"""Where registry credentials come from, and that no message ever carries a secret."""

import base64
import json
import stat
from pathlib import Path

import pytest

from lambdaimages.errors import CredentialsError
from lambdaimages.registry import credentials
from lambdaimages.registry.credentials import Credentials

SECRET = "s3cr3t-Pa55"
REGISTRY = "http://127.0.0.1:5000"


def docker_config(tmp_path: Path, config: dict | str) -> dict[str, str]:
    """An environment whose DOCKER_CONFIG holds `config` (a dict, or raw text)."""
    folder = tmp_path / "docker"
    folder.mkdir(exist_ok=True)
    text = config if isinstance(config, str) else json.dumps(config)
    (folder / "config.json").write_text(text)
    return {"DOCKER_CONFIG": str(folder), "PATH": str(tmp_path / "bin")}


def helper(tmp_path: Path, name: str, script: str) -> None:
    """A docker-credential-<name> program on the test PATH."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    path = folder / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def error_of(registry: str, environ: dict[str, str]) -> str:
    with pytest.raises(CredentialsError) as info:
        credentials.lookup(registry, environ)
    message = str(info.value)
    assert SECRET not in message and "\n" not in message
    return message


@pytest.mark.parametrize(
    ("written", "host"),
    [
        ("public.ecr.aws", "public.ecr.aws"),
        ("https://public.ecr.aws", "public.ecr.aws"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("Mirror.Example:443", "mirror.example:443"),
    ],
)
def test_registry_host_ignores_scheme_and_path(written, host):
    assert credentials.registry_host(written) == host


def test_environment_pair_wins_and_can_be_limited_to_one_host(tmp_path):
    env = docker_config(tmp_path, {"auths": {"127.0.0.1:5000": {"username": "file", "password": "x"}}})
    env.update({"LAMBDAIMAGES_REGISTRY_USER": "ci", "LAMBDAIMAGES_REGISTRY_PASSWORD": SECRET})
    found = credentials.lookup(REGISTRY, env)
    assert found.pair() == ("ci", SECRET)
    assert found.source == "$LAMBDAIMAGES_REGISTRY_USER/$LAMBDAIMAGES_REGISTRY_PASSWORD"
    env["LAMBDAIMAGES_REGISTRY_HOST"] = "mirror.example"
    assert credentials.lookup(REGISTRY, env).username == "file"  # not the mirror: config.json decides
    assert credentials.lookup("mirror.example", env).username == "ci"


def test_half_an_environment_pair_is_an_error(tmp_path):
    message = error_of(REGISTRY, {"LAMBDAIMAGES_REGISTRY_PASSWORD": SECRET})
    assert message == (
        "LAMBDAIMAGES_REGISTRY_USER and LAMBDAIMAGES_REGISTRY_PASSWORD go together, "
        "but LAMBDAIMAGES_REGISTRY_USER is not set"
    )


def test_docker_config_auth_and_username_password(tmp_path):
    auth = base64.b64encode(f"robot:{SECRET}".encode()).decode()
    env = docker_config(
        tmp_path,
        {"auths": {"http://127.0.0.1:5000": {"auth": auth}, "mirror.example": {"username": "u", "password": SECRET}}},
    )
    found = credentials.lookup(REGISTRY, env)
    assert found.pair() == ("robot", SECRET)
    assert found.source == f"{tmp_path / 'docker' / 'config.json'} (auths 'http://127.0.0.1:5000')"
    assert credentials.lookup("https://mirror.example", env).pair() == ("u", SECRET)
    assert credentials.lookup("public.ecr.aws", env) is None
    assert SECRET not in repr(found) and SECRET not in str(found)


def test_no_config_file_means_anonymous(tmp_path):
    assert credentials.lookup(REGISTRY, {"DOCKER_CONFIG": str(tmp_path / "none")}) is None
    assert credentials.lookup(REGISTRY, {"HOME": str(tmp_path)}) is None
    assert credentials.docker_config_path({"HOME": "/home/x"}) == Path("/home/x/.docker/config.json")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (f'{{"auths": {{"127.0.0.1:5000": {{"auth": "{SECRET}"', "config.json:1: Docker config is not valid JSON"),
        ({"auths": {"127.0.0.1:5000": {"auth": SECRET}}}, "'auth' is not the base64 of username:password"),
        ({"auths": {"127.0.0.1:5000": {"username": "u"}}}, "'username' and 'password' must both be non-empty"),
        ({"auths": {"127.0.0.1:5000": {"identitytoken": SECRET}}}, "identity tokens are not supported"),
        ({"auths": ["127.0.0.1:5000"]}, "'auths' must be a JSON object"),
        (
            {"credHelpers": {"127.0.0.1:5000": "absent"}},
            "docker-credential-absent for 127.0.0.1:5000: program",
        ),
    ],
)
def test_bad_docker_config_is_one_line_without_the_secret(tmp_path, config, expected):
    assert expected in error_of(REGISTRY, docker_config(tmp_path, config))


def test_credential_helpers(tmp_path):
    helper(tmp_path, "good", f'read host; printf \'{{"ServerURL":"%s","Username":"h","Secret":"{SECRET}"}}\' "$host"\n')
    helper(tmp_path, "empty", 'echo "credentials not found in native keychain"; exit 1\n')
    helper(tmp_path, "broken", f'echo "oops {SECRET}" >&2; exit 2\n')
    env = docker_config(tmp_path, {"credHelpers": {"127.0.0.1:5000": "good"}, "credsStore": "empty"})
    assert credentials.lookup(REGISTRY, env) == Credentials("h", SECRET, credentials.lookup(REGISTRY, env).source)
    assert "docker-credential-good" in credentials.lookup(REGISTRY, env).source
    assert credentials.lookup("mirror.example", env) is None  # credsStore has nothing stored for it
    env = docker_config(tmp_path, {"credsStore": "missing"})
    assert credentials.lookup(REGISTRY, env) is None  # a stale credsStore does not stop anonymous pulls
    env = docker_config(tmp_path, {"credsStore": "broken"})
    assert error_of(REGISTRY, env).endswith("docker-credential-broken for 127.0.0.1:5000 failed (exit 2)")
