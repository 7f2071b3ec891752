"""Talk to an OCI distribution registry: verified pulls of manifests and blobs, and pushes."""

from __future__ import annotations

import email.utils
import json
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import requests

from lambdaimages import mediatypes, output
from lambdaimages.digest import Digest, Verifier, is_sha256
from lambdaimages.errors import DigestMismatch, RegistryError, RegistryUnreachable
from lambdaimages.reference import Reference, display_name, is_loopback, registry_url

CHUNK = 1 << 20
RETRY_STATUS = {500, 502, 503, 504}  # and 429, waited out apart (see _rate_limited)
MANIFEST_LIMIT = 4 << 20  # distribution refuses bigger manifests; a bigger answer is not one
CONFIG_LIMIT = 16 << 20  # an image config of unknown size (real ones are kilobytes)

# The client's patience, each overridable from the environment (see client_settings).
SETTINGS = {
    "retries": ("LAMBDAIMAGES_RETRIES", int, 4),
    "backoff": ("LAMBDAIMAGES_BACKOFF", float, 0.5),
    "max_wait": ("LAMBDAIMAGES_MAX_WAIT", float, 30.0),
    "patience": ("LAMBDAIMAGES_PATIENCE", float, 300.0),
    "rate": ("LAMBDAIMAGES_RATE", float, None),
    "connect_timeout": ("LAMBDAIMAGES_CONNECT_TIMEOUT", float, 5.0),
    "read_timeout": ("LAMBDAIMAGES_READ_TIMEOUT", float, 60.0),
}


def client_settings(environ: Mapping[str, str] = os.environ) -> dict[str, float]:
    """RegistryClient keyword arguments from LAMBDAIMAGES_RETRIES, _BACKOFF, _MAX_WAIT, _CONNECT_TIMEOUT, _READ_TIMEOUT.

    Raises:
        RegistryError: a variable is set to something that is not a number >= 0.
    """
    settings = {}
    for key, (variable, kind, default) in SETTINGS.items():
        text = environ.get(variable, "").strip()
        if not text:
            if default is not None:
                settings[key] = default
            continue
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if value < 0 or value != value:
            raise RegistryError(f"{variable}={text!r}: expected a {'whole ' if kind is int else ''}number >= 0")
        settings[key] = value
    return settings


# public.ecr.aws's token service; anonymous pulls are limited to about 1 request/s, authenticated ones ~10/s.
PUBLIC_ECR_SERVICE = "public.ecr.aws"
PUBLIC_ECR_RATES = (1.0, 10.0)
# A 429 that is a quota, not a burst: waiting seconds will not lift it.
_QUOTA_WORDS = ("data limit", "quota", "pull rate limit")


class Pace:
    """At most `rate` requests a second to one registry, shared by every client of it in the process.

    Requests are spaced evenly (1/rate apart), so a registry that allows one a second never sees two
    in the same second; `None` or 0 sends at once.
    """

    def __init__(self, rate: float | None = None) -> None:
        self.rate = rate
        self._next = 0.0
        self._lock = threading.Lock()
        # Until a registry has answered once, its limit is unknown (public.ecr.aws is known by its challenge):
        # the first request goes alone, the others wait for its answer instead of meeting a 429 at once.
        self._known = threading.Event()
        self._prober: int | None = None  # the thread whose request goes first

    def known(self, rate: float | None) -> None:
        """The registry's pace is `rate` from now on, whatever its answers."""
        self.rate = rate
        self._known.set()

    def learned(self) -> None:
        """The registry has answered (its challenge is handled): the pace is what it is."""
        self._known.set()

    def wait(self) -> float:
        """Sleep until the next request may go; return the seconds slept."""
        if not self._known.is_set():
            with self._lock:
                self._prober = self._prober or threading.get_ident()
                first = self._prober == threading.get_ident()
            if not first:
                self._known.wait(60)
        if not self.rate:
            return 0.0
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + 1.0 / self.rate
        if start > now:
            time.sleep(start - now)
        return start - now


@dataclass(frozen=True)
class Manifest:
    """A manifest or index as fetched: its bytes are exactly what hashes to `digest`."""

    media_type: str
    body: bytes
    digest: Digest

    def json(self) -> dict:
        return json.loads(self.body)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', rest))
    return scheme.lower(), params


class RegistryClient:
    """One registry: anonymous, basic or bearer-token auth, bounded retries, every byte verified.

    429 and 5xx answers and connections that break or time out mid-request are retried `retries`
    times, waiting `backoff` seconds doubling each time, or what the server's Retry-After asks for
    (a wait above `max_wait` is not waited for: the request fails at once). A blob cut off
    mid-stream resumes where it stopped (HTTP Range), within the same bound.

    A registry that refuses connections, has no address, or times out on every attempt is
    remembered as down for the life of the process, so that it costs one timeout, not one per
    runtime and architecture.
    """

    _unreachable: ClassVar[dict[str, str]] = {}
    _paces: ClassVar[dict[str, Pace]] = {}
    _lock = threading.Lock()

    def __init__(
        self,
        base_url: str,
        *,
        credentials: tuple[str, str] | None = None,
        credentials_source: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        max_wait: float = 30.0,
        patience: float = 300.0,
        rate: float | None = None,
    ) -> None:
        self.base_url = registry_url(base_url)
        self.name = display_name(self.base_url)
        self._credentials = tuple(credentials) if credentials else None
        self._credentials_source = credentials_source or "the caller"
        self._timeout = (connect_timeout, read_timeout)
        self._retries = retries
        self._backoff = backoff
        self._max_wait = max_wait
        self._patience = patience
        self._rate = rate  # None: chosen from the registry's answers (public.ecr.aws: 1/s anonymous)
        with self._lock:
            self._pace = self._paces.setdefault(self.base_url, Pace())
            if rate is not None:
                self._pace.known(rate)
        self._tokens: dict[str, str] = {}
        self._registry_scope: str | None = None  # a token service that grants one scope for everything ("aws")
        self._session = requests.Session()
        # HTTPS_PROXY / HTTP_PROXY / NO_PROXY and REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE are honoured (trust_env);
        # SSL_CERT_FILE too, which requests itself does not read.
        ca_file = os.environ.get("SSL_CERT_FILE")
        if ca_file and not (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")):
            self._session.verify = ca_file
        self.requests_sent = 0
        self._basic = False  # the registry asked for basic auth: send credentials with every request

    # -- transport -------------------------------------------------------------------------

    def _request(self, method: str, url: str, *, scope: str, what: str, **kwargs) -> requests.Response:
        """Send with auth and bounded retries; return a response with a status below 400."""
        with self._lock:
            down = self._unreachable.get(self.base_url)
        if down:
            raise RegistryUnreachable(down, cause=down)
        if not url.startswith("http"):
            url = self.base_url + url
        headers = dict(kwargs.pop("headers", {}))
        accepted = kwargs.pop("accept_status", ())  # statuses >= 400 returned to the caller, not raised
        body = kwargs.pop("body", None)  # a function giving a fresh body for every attempt (a file to upload)
        authed = False
        attempt = 0
        limited = (0, 0.0)  # 429 answers to this request, and the seconds waited on them
        while True:
            resp = None
            try:
                paced = self._pace.wait()  # before the token is looked up: a request held back may find one
                if paced >= 1.0:
                    output.progress(None, f"pacing requests to {self.name}: {self._pace.rate:g}/s")
                token = self._tokens.get(scope) or (self._registry_scope and self._tokens.get(self._registry_scope))
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                elif self._credentials and self._basic:
                    kwargs["auth"] = self._credentials
                if body is not None:
                    kwargs["data"] = body()
                try:
                    self.requests_sent += 1
                    resp = self._session.request(method, url, headers=headers, timeout=self._timeout, **kwargs)
                except requests.exceptions.SSLError as exc:
                    # A TLS failure does not change on a retry; a loopback registry most often speaks plain HTTP.
                    raise RegistryError(_tls_failure(self.name, exc)) from exc
                except (requests.ConnectionError, requests.Timeout) as exc:
                    attempt += 1
                    # Refused, unresolvable or silent on connect: down, not busy; say so at once.
                    down = isinstance(exc, requests.ConnectTimeout) or _is_refused_or_dns(exc)
                    if attempt > self._retries or down:
                        tries = "" if down else f", {attempt} attempts"
                        if isinstance(exc, requests.ConnectTimeout):
                            reason = f"no answer to connect within {self._timeout[0]:g} s"
                        else:
                            reason = _short(exc)
                        message = f"registry {self.name} unreachable ({reason}{tries})"
                        with self._lock:
                            self._unreachable[self.base_url] = message
                        raise RegistryUnreachable(message, cause=message) from exc
                    time.sleep(self._delay(attempt, None))
                    continue
                except requests.RequestException as exc:
                    raise RegistryError(f"{what}: {_short(exc)}") from exc
                if resp.status_code == 401 and not authed:
                    authed = True
                    self._authenticate(resp, scope, what)
                    resp.close()
                    continue
                if resp.status_code == 429:
                    limited = self._rate_limited(resp, what, limited)
                    continue
                if resp.status_code in RETRY_STATUS and attempt < self._retries:
                    attempt += 1
                    retry_after = resp.headers.get("Retry-After")
                    resp.close()
                    wait = self._delay(attempt, retry_after)
                    if wait is None:
                        raise RegistryError(self._waits_too_long(resp.status_code, what, retry_after))
                    time.sleep(wait)
                    continue
                if resp.status_code >= 400 and resp.status_code not in accepted:
                    message = self._http_error(resp, what, attempt + 1)
                    resp.close()
                    raise RegistryError(message).answered(resp.status_code)
                return resp
            finally:
                if resp is None or resp.status_code != 429:  # a 429 teaches nothing: the next answer will
                    self._pace.learned()  # the first answer (its challenge handled) tells the pace

    def _rate_limited(self, resp: requests.Response, what: str, limited: tuple[int, float]) -> tuple[int, float]:
        """Wait out a 429 (its Retry-After, else a doubling backoff); `limited` and the result count (answers, seconds).

        A quota (a data limit) is an error at once: waiting seconds will not lift it. The 429s of one request
        are retried at most `retries` times and `patience` seconds in all. A 429 without Retry-After also
        paces the registry at 1 request/s from then on, unless a rate is configured or it is paced already.
        """
        hits, waited = limited
        retry_after = resp.headers.get("Retry-After")
        detail = _error_detail(resp)
        resp.close()
        if any(word in detail.lower() for word in _QUOTA_WORDS):
            raise RegistryError(
                f"registry {self.name} refused {what} (429{detail}): a quota, not a burst; "
                + ("log in for a higher limit" if not self._credentials else "wait for the quota to renew")
            )
        if hits >= self._retries:
            tries = f", {hits + 1} attempts" if hits else ""
            raise RegistryError(f"registry {self.name} answered 429 for {what}{tries}{detail}")
        wait = self._delay(hits + 1, retry_after)
        if wait is None:
            raise RegistryError(self._waits_too_long(429, what, retry_after))
        if waited + wait > self._patience:
            raise RegistryError(
                f"registry {self.name} kept answering 429{detail} for {what} for {waited:.0f} s "
                f"(LAMBDAIMAGES_PATIENCE={self._patience:g} s)"
            )
        if not retry_after and self._rate is None:
            with self._lock:
                if not self._pace.rate or self._pace.rate > 1.0:
                    self._pace.rate = 1.0
        output.progress(None, f"{self.name} limits requests (429{detail}): waiting {wait:.1f} s")
        time.sleep(wait)
        return hits + 1, waited + wait

    def _waits_too_long(self, status: int, what: str, retry_after: str) -> str:
        return (
            f"registry {self.name} answered {status} for {what} and asks to retry after "
            f"{retry_after.strip()!r}, longer than LAMBDAIMAGES_MAX_WAIT ({self._max_wait:g} s)"
        )

    def _delay(self, attempt: int, retry_after: str | None) -> float | None:
        """Seconds to wait before retry `attempt`: the server's Retry-After (None if above max_wait), else backoff."""
        if retry_after:
            wait = _retry_after_seconds(retry_after)
            if wait is not None:
                return wait if wait <= self._max_wait else None
        return min(self._backoff * 2 ** (attempt - 1), self._max_wait)

    def _http_error(self, resp: requests.Response, what: str, attempts: int) -> str:
        status = resp.status_code
        if status == 401:
            if self._credentials:
                return f"registry {self.name} rejected the credentials from {self._credentials_source} for {what} (401)"
            return f"registry {self.name} requires credentials for {what} (401), and none are configured for it"
        if status == 403:
            return f"registry {self.name} denied {what} (403){_error_detail(resp)}"
        if status == 404:
            return f"{what} not found on registry {self.name} (404){_error_detail(resp)}"
        tries = f", {attempts} attempts" if attempts > 1 else ""
        return f"registry {self.name} answered {status} for {what}{tries}{_error_detail(resp)}"

    def _authenticate(self, resp: requests.Response, scope: str, what: str) -> None:
        header = resp.headers.get("WWW-Authenticate", "")
        scheme, params = _parse_challenge(header)
        if scheme == "basic":
            if not self._credentials:
                raise RegistryError(
                    f"registry {self.name} requires credentials for {what} (401, basic auth), "
                    "and none are configured for it"
                )
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryError(
                f"registry {self.name} refused {what} (401) without a usable auth challenge"
                + (f": {header!r}" if header else "")
            )
        query = {"service": params.get("service", ""), "scope": params.get("scope", scope)}
        self._pace_for(params.get("service"))
        token_resp = self._token(params["realm"], query)
        if token_resp.status_code in (401, 403) and self._credentials and _pulls_only(scope):
            # A stored login that expired (public.ecr.aws's last 12 h): pulls need none, so go on without it.
            refused = f"{token_resp.status_code}{_error_detail(token_resp)}"
            refused_source, saved, self._credentials = self._credentials_source, self._credentials, None
            token_resp = self._token(params["realm"], query)
            if token_resp.status_code in (401, 403):  # anonymous is refused too: the credentials were the way in
                self._credentials = saved
                raise RegistryError(
                    f"token service of {self.name} rejected the credentials from {refused_source} for {what} "
                    f"({refused.split(':')[0]})"
                )
            output.say(
                f"note: the token service of {self.name} refused the credentials from {refused_source} "
                f"({refused}); pulling anonymously",
                show=True,
            )
        if token_resp.status_code in (401, 403) and self._credentials:
            raise RegistryError(
                f"token service of {self.name} rejected the credentials from {self._credentials_source} for {what} "
                f"({token_resp.status_code})"
            )
        if token_resp.status_code in (401, 403):
            raise RegistryError(
                f"registry {self.name} requires credentials for {what} (its token service answered "
                f"{token_resp.status_code}), and none are configured for it"
            )
        if token_resp.status_code != 200:
            raise RegistryError(f"token service of {self.name} answered {token_resp.status_code} for {what}")
        try:
            data = token_resp.json()
            self._tokens[scope] = data.get("token") or data["access_token"]
            if "scope" in params and not params["scope"].startswith("repository:") and _pulls_only(scope):
                # public.ecr.aws challenges with scope="aws": one pull token for every repository
                self._registry_scope = params["scope"]
                self._tokens[self._registry_scope] = self._tokens[scope]
        except (ValueError, KeyError):
            raise RegistryError(f"token service of {self.name} answered without a token for {what}") from None
        self._pace_for(params.get("service"))

    def _pace_for(self, service: str | None) -> None:
        """public.ecr.aws (named by its token service): 1 request/s anonymous, 10/s with credentials."""
        if service == PUBLIC_ECR_SERVICE and self._rate is None:
            with self._lock:
                self._pace.rate = PUBLIC_ECR_RATES[1 if self._credentials else 0]

    def _token(self, realm: str, query: dict[str, str]) -> requests.Response:
        self._pace.wait()  # the token service is the same service: it counts against the same limit
        try:
            return self._session.get(realm, params=query, auth=self._credentials, timeout=self._timeout)
        except requests.RequestException as exc:
            raise RegistryUnreachable(f"token service of {self.name} unreachable: {_short(exc)}") from exc

    # -- pull ------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        """Fetch a manifest or index by tag or digest; a digest reference is verified."""
        found = self._get_manifest(repository, reference, missing_ok=False)
        assert found is not None
        return found

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        """As `get_manifest`, but None when the registry has nothing under `reference` (404)."""
        return self._get_manifest(repository, reference, missing_ok=True)

    def _get_manifest(self, repository: str, reference: str, *, missing_ok: bool) -> Manifest | None:
        what = str(Reference.of(self.base_url, repository, reference))
        resp = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull",
            what=what,
            headers={"Accept": mediatypes.ACCEPT},
            stream=True,
            accept_status=(404,) if missing_ok else (),
        )
        if resp.status_code == 404:
            resp.close()
            return None
        body = _read_limited(resp, MANIFEST_LIMIT, f"manifest {what}")
        verifier = Verifier(reference if is_sha256(reference) else None, what=f"manifest {what}")
        verifier.update(body)
        digest = verifier.finish()
        header_digest = resp.headers.get("Docker-Content-Digest")
        if header_digest and is_sha256(header_digest) and header_digest != digest:
            raise DigestMismatch(
                f"manifest {what}: registry says {header_digest}, bytes hash to {digest}",
                expected=header_digest,
                actual=digest,
                received=len(body),
            )
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            declared = json.loads(body).get("mediaType")
        except (ValueError, AttributeError):
            raise RegistryError(f"manifest {what} is not JSON") from None
        return Manifest(declared or media_type, body, digest)

    def iter_blob(self, repository: str, digest: str, size: int | None = None) -> Iterator[bytes]:
        """Stream a blob in chunks; after the last chunk, length and sha256 have been checked.

        A stream cut off mid-way is resumed from where it stopped (a Range request), at most
        `retries` times. A consumer must not trust what it wrote until the iterator is exhausted
        without error.
        """
        what = f"blob {digest} of {self.name}/{repository}"
        verifier = Verifier(digest, size, what=what)
        breaks = 0
        while True:
            received = verifier.received
            headers = {"Accept-Encoding": "identity"}  # the bytes the digest is of, not a re-encoding
            if received:
                headers["Range"] = f"bytes={received}-"
            resp = self._request(
                "GET",
                f"/v2/{repository}/blobs/{digest}",
                scope=f"repository:{repository}:pull",
                what=what,
                stream=True,
                headers=headers,
            )
            try:
                skip = _resume_offset(resp, received, what)
                for chunk in resp.iter_content(CHUNK):
                    if skip:
                        chunk, skip = chunk[skip:], max(0, skip - len(chunk))
                        if not chunk:
                            continue
                    yield verifier.update(chunk)
                break
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                breaks += 1
                if breaks > self._retries:
                    raise RegistryError(
                        f"{what} cut off {breaks} times, the last after {verifier.received} bytes: {_short(exc)}"
                    ) from exc
                time.sleep(self._delay(breaks, None))
            finally:
                resp.close()
        verifier.finish()

    def get_blob(self, repository: str, digest: str, size: int | None = None) -> bytes:
        """A small blob (a config) in memory, verified; without `size`, at most CONFIG_LIMIT bytes."""
        chunks, total = [], 0
        for chunk in self.iter_blob(repository, digest, size):
            total += len(chunk)
            if total > CONFIG_LIMIT:
                raise RegistryError(f"blob {digest} of {self.name}/{repository} is over {CONFIG_LIMIT} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- push --------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        """The repository has the blob (HEAD, nothing downloaded)."""
        resp = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=f"repository:{repository}:pull,push",
            what=f"blob {digest} of {self.name}/{repository}",
            accept_status=(404,),
        )
        resp.close()
        return resp.status_code < 400

    def mount_blob(self, repository: str, digest: str, source: str) -> bool:
        """Ask the registry to link a blob of `source` (same registry) into `repository`; True when it did.

        A registry that does not mount answers by starting an upload, which is left to expire unused.
        """
        resp = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scope=f"repository:{repository}:pull,push repository:{source}:pull",
            what=f"mount of {digest} from {self.name}/{source} into {repository}",
            params={"mount": digest, "from": source},
        )
        resp.close()
        return resp.status_code == 201

    def upload_blob(self, repository: str, digest: str, size: int, source: bytes | Path) -> None:
        """Upload a blob in one request, from memory or streamed from a file (reopened for each attempt)."""
        scope = f"repository:{repository}:pull,push"
        what = f"push of {digest} to {self.name}/{repository}"
        start = self._request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, what=what)
        start.close()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base_url + location
        sep = "&" if "?" in location else "?"
        opened = []

        def body():
            if isinstance(source, bytes):
                return source
            opened.append(open(source, "rb"))  # closed below, after the last attempt
            return opened[-1]

        try:
            resp = self._request(
                "PUT",
                f"{location}{sep}digest={digest}",
                scope=scope,
                what=what,
                body=body,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            )
            resp.close()
        finally:
            for f in opened:
                f.close()

    def push_blob(self, repository: str, data: bytes) -> Digest:
        """Upload a blob held in memory unless the registry has it; return its digest."""
        digest = Digest.of(data)
        if not self.has_blob(repository, digest):
            self.upload_blob(repository, digest, len(data), data)
        return digest

    def manifest_digest(self, repository: str, reference: str, *, pull_only: bool = False) -> str | None:
        """The digest the registry has under a tag or digest (HEAD), or None when it has nothing there.

        `pull_only` asks with a pull token (a poll of upstream), not the push token a mirror's check needs.
        """
        resp = self._request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull" + ("" if pull_only else ",push"),
            what=f"manifest {self.name}/{repository}:{reference}",
            headers={"Accept": mediatypes.ACCEPT},
            accept_status=(404,),
        )
        resp.close()
        return resp.headers.get("Docker-Content-Digest") if resp.status_code < 400 else None

    def push_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> Digest:
        """Put a manifest or index under a tag (or its digest); return its digest."""
        self._put_manifest(repository, reference, media_type, body, f"{self.name}/{repository}:{reference}")
        return Digest.of(body)

    def push_artifact(self, repository: str, digest: str, media_type: str, body: bytes) -> str | None:
        """Put a manifest that has a `subject` under its digest; return the answer's OCI-Subject header.

        A registry with the referrers API names the subject there (distribution spec 1.1); None means the
        registry keeps no referrers list, and the client must keep the fallback tag.
        """
        return self._put_manifest(repository, digest, media_type, body, f"{self.name}/{repository}@{digest}")

    def _put_manifest(self, repository: str, reference: str, media_type: str, body: bytes, name: str) -> str | None:
        """PUT a manifest; the answer's OCI-Subject header (None without)."""
        resp = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scope=f"repository:{repository}:pull,push",
            what=f"push of {name}",
            data=body,
            headers={"Content-Type": media_type},
        )
        resp.close()
        return resp.headers.get("OCI-Subject")

    def referrers(self, repository: str, digest: str) -> Manifest | None:
        """The referrers API's index of the manifests whose subject is `digest`; None when the registry has no
        such API (it answers 404, or something that is not an index).
        """
        what = f"referrers of {self.name}/{repository}@{digest}"
        resp = self._request(
            "GET",
            f"/v2/{repository}/referrers/{digest}",
            scope=f"repository:{repository}:pull",
            what=what,
            headers={"Accept": mediatypes.OCI_INDEX},
            stream=True,
            accept_status=(404,),
        )
        if resp.status_code == 404:
            resp.close()
            return None
        body = _read_limited(resp, MANIFEST_LIMIT, what)
        try:
            index = json.loads(body)
        except ValueError:
            return None
        if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
            return None
        return Manifest(index.get("mediaType") or mediatypes.OCI_INDEX, body, Digest.of(body))


def _tls_failure(name: str, exc: Exception) -> str:
    """What a failed TLS handshake with registry `name` says: the SSL reason, and for a loopback registry the fix."""
    found = re.search(r"\[SSL: [A-Z0-9_]+\] ([^(')\]]+)", str(exc))
    reason = found.group(1).strip() if found else _short(exc)
    message = f"registry {name}: HTTPS failed ({reason})"
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # a company CA, or a registry's own
        return message + ": certificate not trusted: set REQUESTS_CA_BUNDLE or SSL_CERT_FILE to the CA that signed it"
    if is_loopback(name):
        message += f": plain HTTP? use http://{name}/..."
    return message


def _pulls_only(scope: str) -> bool:
    """The token scope asks to read only (`repository:R:pull`, maybe several), nothing to push."""
    return all(part.rsplit(":", 1)[-1] == "pull" for part in scope.split())


def _is_refused_or_dns(exc: Exception) -> bool:
    text = str(exc)
    return any(s in text for s in ("Connection refused", "Name or service not known", "resolve", "No route"))


def _short(exc: Exception) -> str:
    text = str(exc)
    incomplete = re.search(r"IncompleteRead\(([^)]*)\)", text)
    if incomplete:
        return f"connection closed mid-answer ({incomplete.group(1)})"
    for marker in (
        "Connection refused",
        "Name or service not known",
        "Failed to resolve",
        "Read timed out",
        "timed out",
    ):
        if marker in text:
            return marker.lower()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _error_detail(resp: requests.Response) -> str:
    """The registry's own words from an error answer (its first 64 KiB), as `: CODE message`."""
    body = b""
    try:
        for chunk in resp.iter_content(1 << 16):
            body += chunk
            if len(body) >= 1 << 16:
                break
        errors = json.loads(body).get("errors") or []
    except (ValueError, AttributeError, requests.RequestException):
        return ""
    if not isinstance(errors, list):
        return ""
    detail = "; ".join(
        f"{e.get('code', '')} {e.get('message', '')}".strip()[:200] for e in errors[:3] if isinstance(e, dict)
    )
    return f": {detail}" if detail else ""


def _retry_after_seconds(value: str) -> float | None:
    """Retry-After as seconds (RFC 9110: a number of seconds or an HTTP date); None if unreadable."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _read_limited(resp: requests.Response, limit: int, what: str) -> bytes:
    chunks, total = [], 0
    try:
        for chunk in resp.iter_content(CHUNK):
            total += len(chunk)
            if total > limit:
                raise RegistryError(f"{what} is over {limit} bytes: not a manifest")
            chunks.append(chunk)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise RegistryError(f"{what} cut off after {total} bytes: {_short(exc)}") from exc
    finally:
        resp.close()
    return b"".join(chunks)


def _resume_offset(resp: requests.Response, received: int, what: str) -> int:
    """How many leading bytes of a resumed answer were already received (0 for a 206 from the right offset)."""
    if not received:
        return 0
    if resp.status_code == 206:
        match = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != received:
            raise RegistryError(f"{what}: resumed at the wrong offset ({resp.headers.get('Content-Range')!r})")
        return 0
    return received  # a full answer again: skip what we have
