"""Talk to an OCI distribution registry: verified pulls of manifests and blobs, and pushes."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import requests

from .errors import DigestMismatch, RegistryError, RegistryUnreachable

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
# distribution 2.8 answers 404 for an OCI index unless its type is accepted too.
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)

CHUNK = 1 << 20
RETRY_STATUS = {429, 500, 502, 503, 504}


def registry_url(registry: str) -> str:
    """Base URL of a catalog `registry` value: `host[:port]` is HTTPS, `http://host:port` plain HTTP."""
    registry = registry.rstrip("/")
    if registry.startswith(("http://", "https://")):
        return registry
    return "https://" + registry


def display_name(base_url: str) -> str:
    """The registry as users write it (no scheme for HTTPS)."""
    return base_url.removeprefix("https://")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as fetched: its bytes are exactly what hashes to `digest`."""

    media_type: str
    body: bytes
    digest: str

    def json(self) -> dict:
        return json.loads(self.body)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', rest))
    return scheme.lower(), params


class RegistryClient:
    """One registry: anonymous or basic bearer-token auth, bounded retries, every byte verified.

    Connection failures are remembered for the life of the process, so that a registry that is
    down costs one timeout, not one per runtime and architecture.
    """

    _unreachable: ClassVar[dict[str, str]] = {}
    _lock = threading.Lock()

    def __init__(
        self,
        base_url: str,
        *,
        credentials: tuple[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
    ) -> None:
        self.base_url = registry_url(base_url)
        self.name = display_name(self.base_url)
        self._credentials = credentials
        self._timeout = (connect_timeout, read_timeout)
        self._retries = retries
        self._backoff = backoff
        self._max_wait = max_wait
        self._tokens: dict[str, str] = {}
        self._session = requests.Session()
        self._session.trust_env = False
        self.requests_sent = 0

    # -- transport -------------------------------------------------------------------------

    def _request(self, method: str, url: str, *, scope: str, what: str, **kwargs) -> requests.Response:
        """Send with auth and retries; return a response with a status below 400."""
        with self._lock:
            down = self._unreachable.get(self.base_url)
        if down:
            raise RegistryUnreachable(down)
        if not url.startswith("http"):
            url = self.base_url + url
        headers = dict(kwargs.pop("headers", {}))
        authed = False
        attempt = 0
        while True:
            token = self._tokens.get(scope)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            elif self._credentials and self._basic:
                kwargs["auth"] = self._credentials
            try:
                self.requests_sent += 1
                resp = self._session.request(method, url, headers=headers, timeout=self._timeout, **kwargs)
            except (requests.ConnectionError, requests.Timeout) as exc:
                attempt += 1
                # Refused, unresolvable or silent on connect: down, not busy; say so at once.
                down = isinstance(exc, requests.ConnectTimeout) or _is_refused_or_dns(exc)
                if attempt > self._retries or down:
                    message = f"registry {self.name} unreachable ({_short(exc)})"
                    if down:
                        with self._lock:
                            self._unreachable[self.base_url] = message
                    raise RegistryUnreachable(message) from None
                time.sleep(self._delay(attempt, None))
                continue
            if resp.status_code == 401 and not authed:
                authed = True
                self._authenticate(resp, scope, what)
                resp.close()
                continue
            if resp.status_code in RETRY_STATUS and attempt < self._retries:
                attempt += 1
                wait = self._delay(attempt, resp.headers.get("Retry-After"))
                resp.close()
                time.sleep(wait)
                continue
            if resp.status_code >= 400:
                raise RegistryError(_http_error(resp, self.name, what))
            return resp

    _basic = False

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self._max_wait)
            except ValueError:
                pass
        return min(self._backoff * 2 ** (attempt - 1), self._max_wait)

    def _authenticate(self, resp: requests.Response, scope: str, what: str) -> None:
        header = resp.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(header)
        if scheme == "basic" and self._credentials:
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(
                f"registry {self.name} refused {what} (401) without a usable auth challenge"
                + (f": {header!r}" if header else "")
            )
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        try:
            token_resp = self._session.get(
                params["realm"], params=query, auth=self._credentials, timeout=self._timeout
            )
        except requests.RequestException as exc:
            raise RegistryUnreachable(f"token service of {self.name} unreachable: {_short(exc)}") from None
        if token_resp.status_code != 200:
            raise RegistryError(f"token service of {self.name} answered {token_resp.status_code} for {what}")
        try:
            data = token_resp.json()
            self._tokens[scope] = data.get("token") or data["access_token"]
        except (ValueError, KeyError):
            raise RegistryError(f"token service of {self.name} answered without a token for {what}") from None

    # -- pull ------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest or index by tag or digest; a digest reference is verified."""
        what = f"{self.name}/{repository}:{reference}" if ":" not in reference else f"{self.name}/{repository}@{reference}"
        resp = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            what=what,
            headers={"Accept": ACCEPT},
        )
        body = resp.content
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and digest != reference:
            raise DigestMismatch(f"manifest {what} hashes to {digest}")
        header_digest = resp.headers.get("Docker-Content-Digest")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise DigestMismatch(f"manifest {what}: registry says {header_digest}, bytes hash to {digest}")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            declared = json.loads(body).get("mediaType")
        except (ValueError, AttributeError):
            raise RegistryError(f"manifest {what} is not JSON") from None
        return Manifest(declared or media_type, body, digest)

    def iter_blob(self, repository: str, digest: str, size: int | None = None) -> Iterator[bytes]:
        """Stream a blob in chunks; after the last chunk, length and sha256 have been checked.

        A consumer must not trust what it wrote until the iterator is exhausted without error.
        """
        what = f"blob {digest} of {self.name}/{repository}"
        resp = self._request(
            "GET", f"/v2/{repository}/blobs/{digest}", scope=f"repository:{repository}:pull", what=what, stream=True
        )
        hasher = hashlib.sha256()
        received = 0
        try:
            for chunk in resp.iter_content(CHUNK):
                hasher.update(chunk)
                received += len(chunk)
                yield chunk
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RegistryError(f"{what} cut off after {received} bytes: {_short(exc)}") from None
        finally:
            resp.close()
        if size is not None and received != size:
            raise DigestMismatch(f"{what}: expected {size} bytes, received {received}")
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            raise DigestMismatch(f"{what} hashes to {actual}")

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A small blob (a config) in memory, verified."""
        return b"".join(self.iter_blob(repository, digest))

    # -- push (demo, tests, benchmark) -------------------------------------------------------

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob unless the registry has it; return its digest."""
        digest = sha256_digest(data)
        scope = f"repository:{repository}:pull,push"
        what = f"push of {digest} to {self.name}/{repository}"
        try:
            self._request("HEAD", f"/v2/{repository}/blobs/{digest}", scope=scope, what=what)
            return digest
        except RegistryError as exc:
            if isinstance(exc, RegistryUnreachable):
                raise
        start = self._request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, what=what)
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base_url + location
        sep = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{sep}digest={digest}",
            scope=scope,
            what=what,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def push_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> str:
        """Put a manifest or index under a tag (or its digest); return its digest."""
        self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull,push",
            what=f"push of {self.name}/{repository}:{reference}",
            data=body,
            headers={"Content-Type": media_type},
        )
        return sha256_digest(body)


def _is_refused_or_dns(exc: Exception) -> bool:
    text = str(exc)
    return any(s in text for s in ("Connection refused", "Name or service not known", "resolve", "No route"))


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "Failed to resolve", "timed out", "Read timed out"):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _http_error(resp: requests.Response, name: str, what: str) -> str:
    detail = ""
    try:
        errors = resp.json().get("errors") or []
        if errors:
            detail = ": " + "; ".join(f"{e.get('code', '')} {e.get('message', '')}".strip() for e in errors)
    except ValueError:
        pass
    if resp.status_code == 404:
        return f"{what} not found on registry {name} (404){detail}"
    return f"registry {name} answered {resp.status_code} for {what}{detail}"
