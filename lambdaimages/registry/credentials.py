"""Credentials for private registries and mirrors: from the environment or the Docker CLI's config.json.

Where they are looked up, first match wins:

1. `LAMBDAIMAGES_REGISTRY_USER` and `LAMBDAIMAGES_REGISTRY_PASSWORD` (both or neither), for every
   registry, or only for the `host[:port]` in `LAMBDAIMAGES_REGISTRY_HOST` when that is set.
2. `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`), as `docker login` writes it:
   `credHelpers[host]`, then `auths[host]` (`auth` = base64 of `user:password`, or `username` and
   `password`), then the `credsStore` helper. A helper is the program `docker-credential-<name>`.

A password never leaves this module except to the registry client: it is not in any message,
and `Credentials` prints without it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import subprocess
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lambdaimages.errors import CredentialsError

ENV_USER = "LAMBDAIMAGES_REGISTRY_USER"
ENV_PASSWORD = "LAMBDAIMAGES_REGISTRY_PASSWORD"
ENV_HOST = "LAMBDAIMAGES_REGISTRY_HOST"
HELPER_TIMEOUT = 30.0
# Docker Hub answers under several names; config.json usually says https://index.docker.io/v1/.
DOCKER_HUB = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class Credentials:
    """A username and password for one registry, and where they were found (for messages)."""

    username: str
    password: str = field(repr=False)
    source: str = ""

    def pair(self) -> tuple[str, str]:
        return self.username, self.password


def _error(detail: str, where: str | None = None) -> CredentialsError:
    """A CredentialsError about `where` (the config file or entry, the credential helper)."""
    error = CredentialsError(detail, where=where)
    error.cause = str(error)  # the same misconfiguration stops every runtime of a registry: the run reports it once
    return error


def registry_host(registry: str) -> str:
    """`host[:port]` of a registry as the catalog, config.json or a user writes it (scheme and path dropped)."""
    text = registry.strip()
    if "://" not in text:
        text = "//" + text
    host = (urllib.parse.urlsplit(text).netloc or "").lower()
    return "docker.io" if host in DOCKER_HUB else host


def docker_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The Docker CLI's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    folder = environ.get("DOCKER_CONFIG")
    if folder:
        return Path(folder) / "config.json"
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".docker" / "config.json"


def lookup(registry: str, environ: Mapping[str, str] = os.environ) -> Credentials | None:
    """The credentials for `registry` (a catalog `registry` value), or None to pull anonymously.

    Raises:
        CredentialsError: the environment variables are half set, config.json is unreadable or
            malformed, or a credential helper named for this registry fails. The message names the
            file, variable or helper, never a secret.
    """
    host = registry_host(registry)
    found = _from_environment(host, environ)
    if found is not None:
        return found
    path = docker_config_path(environ)
    config = _read_config(path)
    if config is None:
        return None
    helpers = _section(config, "credHelpers", path)
    for key, helper in helpers.items():
        if registry_host(key) == host:
            return _from_helper(str(helper), host, f"{path} (credHelpers)", environ, required=True)
    for key, entry in _section(config, "auths", path).items():
        if registry_host(key) == host:
            found = _from_auths_entry(entry, f"{path} (auths {key!r})")
            if found is not None:
                return found
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        # A stale credsStore (e.g. of Docker Desktop) must not stop anonymous pulls of public images.
        return _from_helper(store, host, f"{path} (credsStore)", environ, required=False)
    return None


def _from_environment(host: str, environ: Mapping[str, str]) -> Credentials | None:
    user, password = environ.get(ENV_USER, ""), environ.get(ENV_PASSWORD, "")
    if not user and not password:
        return None
    if not user or not password:
        missing = ENV_PASSWORD if user else ENV_USER
        raise _error(f"{ENV_USER} and {ENV_PASSWORD} go together, but {missing} is not set")
    only = environ.get(ENV_HOST, "").strip()
    if only and registry_host(only) != host:
        return None
    return Credentials(user, password, f"${ENV_USER}/${ENV_PASSWORD}")


def _read_config(path: Path) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(f"cannot read Docker config: {getattr(exc, 'strerror', None) or exc}", where=str(path)) from exc
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        # The position only: the message of a JSON error never quotes the text.
        raise _error(f"Docker config is not valid JSON ({exc.msg})", where=f"{path}:{exc.lineno}") from None
    if not isinstance(config, dict):
        raise _error("Docker config must be a JSON object", where=str(path))
    return config


def _section(config: dict, name: str, path: Path) -> dict:
    section = config.get(name) or {}
    if not isinstance(section, dict):
        raise _error(f"'{name}' must be a JSON object", where=str(path))
    return section


def _from_auths_entry(entry: object, source: str) -> Credentials | None:
    if not isinstance(entry, dict):
        raise _error("the entry must be a JSON object", where=source)
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            decoded = ""
        user, sep, password = decoded.partition(":")
        if not sep or not user or not password:
            raise _error("'auth' is not the base64 of username:password", where=source)
        return Credentials(user, password, source)
    if entry.get("username") or entry.get("password"):
        user, password = entry.get("username"), entry.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
            raise _error("'username' and 'password' must both be non-empty strings", where=source)
        return Credentials(user, password, source)
    if entry.get("identitytoken"):
        raise _error("identity tokens are not supported; log in with a username and password", where=source)
    return None  # an empty entry: `docker login` with a credsStore leaves these


def _from_helper(
    helper: str, host: str, source: str, environ: Mapping[str, str], *, required: bool
) -> Credentials | None:
    program = f"docker-credential-{helper}"
    source = f"{source}: {program}"
    try:
        proc = subprocess.run(
            [program, "get"],
            input=host,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT,
            check=False,
            env=dict(environ),
        )
    except FileNotFoundError:
        if required:
            raise _error("program not found", where=f"{source} for {host}") from None
        return None
    except subprocess.TimeoutExpired:
        raise _error(f"no answer within {HELPER_TIMEOUT:g} s", where=f"{source} for {host}") from None
    if proc.returncode != 0:
        # The helper's protocol for "nothing stored"; its output is never quoted (it may echo secrets).
        if "credentials not found" in (proc.stdout + proc.stderr).lower():
            return None
        raise _error(f"{source} for {host} failed (exit {proc.returncode})")
    try:
        data = json.loads(proc.stdout)
        user, secret = data["Username"], data["Secret"]
    except (ValueError, KeyError, TypeError):
        raise _error("answer is not JSON with Username and Secret", where=f"{source} for {host}") from None
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        raise _error("answer is not JSON with Username and Secret", where=f"{source} for {host}")
    if user == "<token>":
        raise _error("identity tokens are not supported; use a username and password", where=f"{source} for {host}")
    return Credentials(user, secret, source)
