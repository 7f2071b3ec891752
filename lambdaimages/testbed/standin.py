"""A stand-in for public.ecr.aws in front of a local registry, for tests, the demo and the benchmark.

public.ecr.aws cannot be reached from here, so what is known of it from other clients' reports is
reproduced on loopback:

- every /v2/ request without a token is answered 401 with
  `Bearer realm="<stand-in>/token/",service="public.ecr.aws",scope="aws"`; the realm answers `{"token": ...}`
  anonymously, and refuses a stored credential that has expired (`refused`);
- anonymous requests are paced by a token bucket (`rate` per second, `burst` at once; authenticated ones at
  `auth_rate`): over it, `429 TOOMANYREQUESTS Rate exceeded`; after `data_limit` blob bytes, `429 Data limit
  exceeded` on every blob;
- a blob GET answers 307 to a presigned URL on a second host (127.0.0.2), which serves the bytes only for an
  unexpired signature and rejects any request that carries an Authorization header (400, as S3 does);
  a blob HEAD answers 401 even with a token (`blob_head_401`);
- manifests (GET and HEAD) are the local registry's, byte for byte, with its Docker-Content-Digest.

`ForwardProxy` is a plain HTTP forward proxy (absolute-form requests and CONNECT) standing for a company proxy.
Every request either server sees is logged as (host, method, path, status).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import select
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

CHUNK = 256 << 10
_JITTER = 0.1  # a request up to 100 ms early counts as on time, as a server's limiter would not notice
SERVICE = "public.ecr.aws"
_PASSED = ("Content-Type", "Docker-Content-Digest", "Content-Length", "Content-Range", "Accept-Ranges", "ETag")


@dataclass(frozen=True)
class Logged:
    """One request as a server saw it."""

    host: str
    method: str
    path: str
    status: int
    authorization: bool  # it carried an Authorization header


class _Bucket:
    """A token bucket: `rate` tokens a second, at most `burst` saved."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1 - _JITTER:
                self._tokens -= 1
                return True
            return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up mid-answer is the client's business, not a traceback on stderr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: object  # set per server class

    def log_message(self, *args: object) -> None:  # the log is owner.log, not stderr
        pass

    def do_GET(self) -> None:
        self.owner.handle(self, "GET")

    def do_HEAD(self) -> None:
        self.owner.handle(self, "HEAD")

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)


def _errors(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


class _Serving:
    """A threaded HTTP server on a loopback address, run in the background."""

    def __init__(self, address: str, tls: tuple[str, str] | None = None, port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"owner": self})
        self._server = _Server((address, port), handler)
        if tls is not None:  # (certificate file, key file): HTTPS with a certificate the caller made
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.address = address
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.log: list[Logged] = []
        self._log_lock = threading.Lock()

    @property
    def host(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def record(self, handler: _Handler, status: int) -> None:
        with self._log_lock:
            self.log.append(
                Logged(self.host, handler.command, handler.path, status, "Authorization" in handler.headers)
            )

    def handle(self, handler: _Handler, method: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _Storage(_Serving):
    """The second host: presigned blob URLs, no Authorization header allowed."""

    def __init__(self, standin: PublicEcrStandIn, address: str) -> None:
        super().__init__(address)
        self._standin = standin

    def handle(self, handler: _Handler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        digest = url.path.rsplit("/", 1)[-1]
        repository = query.get("repository", "")
        if "Authorization" in handler.headers:
            status, body = (
                400,
                (
                    b"<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the "
                    b"X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header "
                    b"should be specified</Message></Error>"
                ),
            )
            self.record(handler, status)
            return handler.answer(status, body, {"Content-Type": "application/xml"})
        if not self._standin.signature_valid(repository, digest, query):
            self.record(handler, 403)
            return handler.answer(403, b"<Error><Code>AccessDenied</Code></Error>", {"Content-Type": "application/xml"})
        self._standin.forward(self, handler, method, f"/v2/{repository}/blobs/{digest}", blob=True)


class PublicEcrStandIn(_Serving):
    """public.ecr.aws's protocol and limits in front of `upstream` (a base URL such as a LocalRegistry's url).

    Use as a context manager; `url` is what a catalog's `registry:` names (`http://127.0.0.1:PORT`).
    """

    def __init__(
        self,
        upstream: str,
        *,
        rate: float = 1.0,
        burst: int = 1,
        auth_rate: float = 10.0,
        credentials: tuple[str, str] | None = None,
        refused: bool = False,
        data_limit: int | None = None,
        blob_head_401: bool = True,
        retry_after: str | None = None,
        address: str = "127.0.0.1",
        storage_address: str = "127.0.0.2",
        signature_seconds: float = 600.0,
        tls: tuple[str, str] | None = None,
        port: int = 0,
    ) -> None:
        super().__init__(address, tls, port)
        self._upstream = upstream.rstrip("/")
        self._http = requests.Session()
        self._http.trust_env = False  # the stand-in talks to loopback, never through a proxy
        self._anonymous = _Bucket(rate, burst)
        self._authenticated = _Bucket(auth_rate, max(burst, int(auth_rate)))
        self._credentials = credentials
        self.refused = refused  # the stored credential has expired: the realm refuses it
        self._data_limit = data_limit
        self._blob_head_401 = blob_head_401
        self._retry_after = retry_after
        self._tokens: dict[str, bool] = {}  # token -> issued for a credential
        self._key = secrets.token_bytes(16)
        self._signature_seconds = signature_seconds
        self.blob_bytes = 0
        self.storage = _Storage(self, storage_address)

    def __enter__(self) -> PublicEcrStandIn:
        self.start()
        self.storage.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.storage.stop()
        self.stop()

    def requests(self) -> list[Logged]:
        """Every request both hosts saw, in order of arrival per host (stand-in first)."""
        return list(self.log) + list(self.storage.log)

    # -- presigned URLs ------------------------------------------------------------------------

    def _sign(self, repository: str, digest: str, expires: int) -> str:
        return hmac.new(self._key, f"{repository}\n{digest}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def signature_valid(self, repository: str, digest: str, query: dict[str, str]) -> bool:
        try:
            expires = int(query.get("X-Amz-Expires", ""))
        except ValueError:
            return False
        wanted = self._sign(repository, digest, expires)
        return expires > time.time() and hmac.compare_digest(wanted, query.get("X-Amz-Signature", ""))

    # -- the registry host ---------------------------------------------------------------------

    def handle(self, handler: _Handler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        if url.path.rstrip("/") == "/token":
            return self._token(handler)
        token = handler.headers.get("Authorization", "")
        issued = token.startswith("Bearer ") and token[7:] in self._tokens
        bucket = self._authenticated if issued and self._tokens[token[7:]] else self._anonymous
        if not bucket.take():
            headers = {"Content-Type": "application/json"}
            if self._retry_after:
                headers["Retry-After"] = self._retry_after
            self.record(handler, 429)
            return handler.answer(429, _errors("TOOMANYREQUESTS", "Rate exceeded"), headers)
        if not issued:
            challenge = f'Bearer realm="{self.url}/token/",service="{SERVICE}",scope="aws"'
            self.record(handler, 401)
            return handler.answer(
                401,
                _errors("UNAUTHORIZED", "Not Authorized"),
                {"WWW-Authenticate": challenge, "Content-Type": "application/json"},
            )
        parts = url.path.split("/")
        if url.path.rstrip("/") == "/v2":
            self.record(handler, 200)
            return handler.answer(200, b"{}", {"Content-Type": "application/json"})
        if len(parts) >= 5 and parts[-2] == "blobs":
            return self._blob(handler, method, "/".join(parts[2:-2]), parts[-1])
        self.forward(self, handler, method, url.path)

    def _token(self, handler: _Handler) -> None:
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(handler.path).query))
        if query.get("service") != SERVICE:
            self.record(handler, 400)
            return handler.answer(400, _errors("INVALID", "service"), {"Content-Type": "application/json"})
        basic = handler.headers.get("Authorization", "")
        authenticated = False
        if basic.startswith("Basic "):
            if self.refused or self._credentials is None or not self._basic_matches(basic[6:]):
                self.record(handler, 403)
                return handler.answer(
                    403,
                    _errors("DENIED", "Your authorization token has expired. Reauthenticate and try again."),
                    {"Content-Type": "application/json"},
                )
            authenticated = True
        token = secrets.token_hex(16)
        self._tokens[token] = authenticated
        self.record(handler, 200)
        handler.answer(200, json.dumps({"token": token}).encode(), {"Content-Type": "application/json"})

    def _basic_matches(self, encoded: str) -> bool:
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return (user, password) == self._credentials

    def _blob(self, handler: _Handler, method: str, repository: str, digest: str) -> None:
        if method == "HEAD" and self._blob_head_401:
            self.record(handler, 401)
            return handler.answer(401, b"", {"Content-Type": "application/json"})
        if self._data_limit is not None and self.blob_bytes >= self._data_limit:
            self.record(handler, 429)
            return handler.answer(
                429, _errors("TOOMANYREQUESTS", "Data limit exceeded"), {"Content-Type": "application/json"}
            )
        expires = int(time.time() + self._signature_seconds)
        query = urllib.parse.urlencode(
            {
                "repository": repository,
                "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
                "X-Amz-Expires": str(expires),
                "X-Amz-Signature": self._sign(repository, digest, expires),
            }
        )
        self.record(handler, 307)
        handler.answer(307, b"", {"Location": f"{self.storage.url}/blobs/{digest}?{query}"})

    # -- passing through -----------------------------------------------------------------------

    def forward(self, server: _Serving, handler: _Handler, method: str, path: str, *, blob: bool = False) -> None:
        headers = {name: handler.headers[name] for name in ("Accept", "Range") if name in handler.headers}
        try:
            resp = self._http.request(method, self._upstream + path, headers=headers, stream=True, timeout=(5, 60))
        except requests.RequestException:
            server.record(handler, 502)
            return handler.answer(502, b"")
        with resp:
            passed = {name: resp.headers[name] for name in _PASSED if name in resp.headers}
            server.record(handler, resp.status_code)
            handler.send_response(resp.status_code)
            for name, value in passed.items():
                handler.send_header(name, value)
            if "Content-Length" not in passed:
                handler.send_header("Content-Length", "0" if method == "HEAD" else str(len(resp.content)))
            handler.end_headers()
            if method == "HEAD":
                return
            try:
                for chunk in resp.iter_content(CHUNK):
                    handler.wfile.write(chunk)
                    if blob:
                        self.blob_bytes += len(chunk)
            except OSError:
                handler.close_connection = True


class ForwardProxy(_Serving):
    """A company proxy: forwards absolute-form HTTP requests and tunnels CONNECT; logs each."""

    def handle(self, handler: _Handler, method: str) -> None:
        url = urllib.parse.urlsplit(handler.path)
        if not url.scheme:
            self.record(handler, 400)
            return handler.answer(400, b"not a proxy request")
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "proxy-connection", "connection")
        }
        session = requests.Session()
        session.trust_env = False
        try:
            resp = session.request(
                method, handler.path, headers=headers, stream=True, allow_redirects=False, timeout=(5, 60)
            )
        except requests.RequestException:
            self.record(handler, 502)
            return handler.answer(502, b"")
        with resp:
            body = b"" if method == "HEAD" else resp.raw.read(decode_content=False)
            self.record(handler, resp.status_code)
            handler.send_response(resp.status_code)
            for name, value in resp.headers.items():
                if name.lower() not in ("transfer-encoding", "connection", "content-length", "keep-alive"):
                    handler.send_header(name, value)
            handler.send_header(
                "Content-Length", resp.headers.get("Content-Length", "0") if method == "HEAD" else str(len(body))
            )
            handler.end_headers()
            if body:
                handler.wfile.write(body)

    def tunnel(self, handler: _Handler) -> None:
        host, _, port = handler.path.rpartition(":")
        try:
            upstream = socket.create_connection((host, int(port)), timeout=5)
        except OSError:
            self.record(handler, 502)
            return handler.answer(502, b"")
        self.record(handler, 200)
        handler.send_response(200, "Connection established")
        handler.end_headers()
        client = handler.connection
        sockets = [client, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 30)
                if not readable:
                    break
                for sock in readable:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
        finally:
            upstream.close()
            handler.close_connection = True

    def __init__(self, address: str = "127.0.0.1") -> None:
        super().__init__(address)
        proxy = self

        def do_connect(handler: _Handler) -> None:
            proxy.tunnel(handler)

        self._server.RequestHandlerClass.do_CONNECT = do_connect

    def __enter__(self) -> ForwardProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
