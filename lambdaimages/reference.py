"""Image references (`[http://]host[:port]/repository[:tag|@digest]`): parsed, checked and formatted here only."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from lambdaimages import digest

# The OCI distribution spec's grammar: path components of lowercase letters and digits, joined by one `.`,
# one or two `_` or any number of `-`, separated by `/`; a tag of at most 128 characters.
COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
COMPONENT_RE = re.compile(rf"^{COMPONENT}$")
REPOSITORY_RE = re.compile(rf"^{COMPONENT}(?:/{COMPONENT})*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
HTTPS, HTTP = "https://", "http://"


# Docker Hub's name is not its API host (that is registry-1.docker.io, with tokens from auth.docker.io).
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "https://registry-1.docker.io"
_DOCKER_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}


def registry_url(registry: str) -> str:
    """Base URL of a registry as the catalog writes it: `host[:port]` is HTTPS, `http://host:port` plain HTTP.

    Docker Hub (`docker.io`) is reached at its API host, registry-1.docker.io.
    """
    registry = registry.rstrip("/")
    if registry.startswith((HTTP, HTTPS)):
        return registry
    if registry in _DOCKER_HUB_NAMES:
        return DOCKER_HUB_API
    return HTTPS + registry


def display_name(registry: str) -> str:
    """The registry as users write it (no scheme for HTTPS; Docker Hub as docker.io)."""
    url = registry_url(registry)
    return DOCKER_HUB if url == DOCKER_HUB_API else url.removeprefix(HTTPS)


def is_loopback(registry: str) -> bool:
    """The registry is on this machine (127.0.0.0/8, ::1, localhost), where Docker itself allows plain HTTP."""
    host = urlsplit(registry_url(registry)).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_repository(repository: str) -> None:
    """Raises ValueError naming the first path component the distribution spec does not allow."""
    if REPOSITORY_RE.match(repository):
        return
    bad = next((c for c in repository.split("/") if not COMPONENT_RE.match(c)), repository)
    why = "has uppercase letters" if bad != bad.lower() and COMPONENT_RE.match(bad.lower()) else "is not allowed"
    raise ValueError(
        f"repository {repository!r}: component {bad!r} {why} (lowercase letters and digits, "
        "joined by '.', '_', '__' or '-', separated by '/')"
    )


def check_tag(tag: str) -> None:
    """Raises ValueError when `tag` is not a tag the distribution spec allows."""
    if not TAG_RE.match(tag):
        raise ValueError(f"tag {tag!r} is not allowed (up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -)")


@dataclass(frozen=True)
class Reference:
    """One image: its registry (as the catalog writes registries), repository, and a tag or a digest.

    `str()` is the reference as users write it: `public.ecr.aws/lambda/python:3.12`,
    `http://127.0.0.1:5000/mirror/x@sha256:...`.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __post_init__(self) -> None:
        if (self.tag is None) == (self.digest is None):
            raise ValueError(f"{self.repository}: a reference has a tag or a digest, exactly one")
        if "/" not in self.repository and registry_url(self.registry) == DOCKER_HUB_API:
            object.__setattr__(self, "repository", "library/" + self.repository)  # Docker Hub's official images

    @classmethod
    def of(cls, registry: str, repository: str, reference: str) -> Reference:
        """The reference whose tag or digest is `reference` (what the registry API takes after /manifests/)."""
        if digest.is_sha256(reference):
            return cls(registry, repository, digest=reference)
        return cls(registry, repository, tag=reference)

    @classmethod
    def parse(cls, text: str, *, default_tag: str | None = None) -> Reference:
        """`[http://|https://]HOST[:PORT]/REPOSITORY[:TAG|@DIGEST]`, checked as the distribution spec says.

        Raises:
            ValueError: no host or repository, no tag and no `default_tag`, or a part the spec does not allow.
        """
        registry, path = _split_registry(text)
        if not registry or not path:
            raise ValueError("expected HOST[:PORT]/REPOSITORY[:TAG]")
        repository, tag, found = split_name(path)
        if tag is None and found is None:
            if default_tag is None:
                raise ValueError("no tag")
            tag = default_tag
        return cls(registry, repository, tag, found)

    @property
    def reference(self) -> str:
        """The tag or the digest."""
        return self.digest or self.tag or ""

    @property
    def name(self) -> str:
        """Registry and repository as users write them, without tag or digest."""
        return f"{display_name(self.registry)}/{self.repository}"

    def __str__(self) -> str:
        return f"{self.name}@{self.digest}" if self.digest else f"{self.name}:{self.tag}"


@dataclass(frozen=True)
class Repository:
    """A repository of a registry, without tag or digest (a registry layer cache is one): `str()` as users write it."""

    registry: str
    repository: str

    @classmethod
    def parse(cls, text: str) -> Repository:
        """`[http://|https://]HOST[:PORT]/REPOSITORY`, checked as the distribution spec says.

        Raises:
            ValueError: no host or repository, a tag or digest, or plain HTTP to a host that is not this machine.
        """
        registry, path = _split_registry(text)
        if not registry or not path:
            raise ValueError("expected [http://]HOST[:PORT]/REPOSITORY")
        repository, tag, found = split_name(path)
        if tag is not None or found is not None:
            raise ValueError("name a repository, without a tag or digest")
        if registry.startswith(HTTP) and not is_loopback(registry):
            raise ValueError("plain http:// only to this machine (127.0.0.1, localhost); use HTTPS")
        return cls(registry, repository)

    def __str__(self) -> str:
        return f"{display_name(self.registry)}/{self.repository}"


def _split_registry(text: str) -> tuple[str, str]:
    """(registry as the catalog writes it, the path after it) of `[http://|https://]HOST[:PORT]/PATH`."""
    scheme = HTTP if text.startswith(HTTP) else ""
    host, _, path = text.removeprefix(HTTP).removeprefix(HTTPS).rstrip("/").partition("/")
    return (scheme + host if host else ""), path


def split_name(name: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of `REPOSITORY[:TAG][@DIGEST]` (no registry), each part checked.

    Raises:
        ValueError: a part the distribution spec does not allow.
    """
    name, at, found = name.partition("@")
    if at:
        try:
            digest.Digest.parse(found)
        except ValueError:
            raise ValueError(f"digest {found!r} is not sha256:<64 hex digits>") from None
    tag = None
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name, _, tag = name.rpartition(":")
        check_tag(tag)
    check_repository(name)
    if tag is not None and at:
        raise ValueError("a tag and a digest: name one of them")
    return name, tag, found if at else None
