"""A fault-injecting HTTP proxy on 127.0.0.1 in front of a registry, for tests.

Requests pass through to the upstream registry unchanged unless a rule matches their path; a rule
injects one fault (an HTTP status, a body cut off or stalled mid-stream, changed bytes, a hang, a
throttled stream) for its first `times` matching requests, or for every one. The proxy can also
demand credentials (HTTP basic, or a bearer token from its own /token realm) as private mirrors do.
Every request is logged with the time it arrived and what was done with it.
"""

from __future__ import annotations

import base64
import http.client
import secrets
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHUNK = 64 << 10
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "host", "proxy-authorization", "te", "upgrade"}


@dataclass
class Fault:
    """What to do instead of (or to) the upstream answer.

    kind:
        status   answer `status` with `headers` and a registry-style error body; upstream is not asked.
        hang     read the request, answer nothing until `seconds` pass (or the proxy stops), then close.
        cut      send upstream's headers (with the full Content-Length) and `after` bytes, then close.
        stall    like cut, but hold the connection open for `seconds` instead of closing.
        corrupt  upstream's body with the byte at `at` (default: the middle) flipped; same length.
        body     upstream's body through `transform`; Content-Length follows, other headers stay.
        throttle upstream's body at `rate` bytes per second.
    """

    kind: str
    times: int | None = None  # the first N matching requests; None: every one
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    after: int = 0
    at: int | None = None
    seconds: float = 30.0
    rate: int = 1 << 20
    transform: Callable[[bytes], bytes] | None = None
    method: str | None = None  # only requests with this method; None: any


@dataclass
class _Rule:
    path_contains: str
    fault: Fault
    applied: int = 0


@dataclass(frozen=True)
class Logged:
    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    outcome: str  # "200" (forwarded, upstream's status), or the fault kind
    range: str | None = None  # the request's Range header


class FaultProxy:
    """A threaded proxy on 127.0.0.1 (a free port unless `port` is given) to `upstream` (http://host:port)."""

    def __init__(self, upstream: str, port: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self._wanted_port = port
        self._rules: list[_Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.log: list[Logged] = []
        self.completed: list[tuple[float, str]] = []  # (time.monotonic(), path) of every body sent in full
        self.auth: tuple[str, str, str] | None = None  # (basic|bearer, user, password)
        self.tokens: set[str] = set()
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        self._stopping.clear()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._server = _Server(("127.0.0.1", self._wanted_port or self.port), handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (connections to it are then refused); hanging answers end."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    # -- rules and log -----------------------------------------------------------------------

    def add(self, path_contains: str, fault: Fault) -> Fault:
        with self._lock:
            self._rules.append(_Rule(path_contains, fault))
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def require_auth(self, kind: str, user: str, password: str) -> None:
        """Demand credentials: `basic` (401 Basic challenge) or `bearer` (a token from <url>/token)."""
        if kind not in ("basic", "bearer"):
            raise ValueError(kind)
        self.auth = (kind, user, password)

    def requests(self, path_contains: str = "", method: str | None = None, *, since: int = 0) -> list[Logged]:
        """Logged requests whose path contains `path_contains`; `since` skips the first entries of the log."""
        with self._lock:
            return [e for e in self.log[since:] if path_contains in e.path and (method is None or e.method == method)]

    def _record(self, method: str, path: str, outcome: str, at: float, range_: str | None = None) -> None:
        with self._lock:
            self.log.append(Logged(at, method, path, outcome, range_))

    def _match(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for rule in self._rules:
                fault = rule.fault
                if rule.path_contains not in path or (fault.method and fault.method != method):
                    continue
                if fault.times is not None and rule.applied >= fault.times:
                    continue
                rule.applied += 1
                return fault
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up is no error
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    proxy: FaultProxy
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        try:
            self._answer()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away: nothing to answer

    def _answer(self) -> None:
        arrived = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy = self.proxy
        if self.path.startswith("/token"):
            proxy._record(self.command, self.path, self._token(), arrived)
            return
        if proxy.auth and not self._authorized():
            proxy._record(self.command, self.path, "401 challenge", arrived)
            return
        fault = proxy._match(self.command, self.path)
        if fault is not None and fault.kind in ("status", "hang"):
            proxy._record(self.command, self.path, fault.kind, arrived)
            if fault.kind == "status":
                self._status(fault)
            else:
                proxy._stopping.wait(fault.seconds)
                self.close_connection = True
            return
        self._forward(body, fault, arrived)

    # -- auth --------------------------------------------------------------------------------

    def _authorized(self) -> bool:
        kind, user, password = self.proxy.auth
        header = self.headers.get("Authorization", "")
        if kind == "basic":
            if header == "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode():
                return True
            challenge = 'Basic realm="faultproxy"'
        else:
            if header.removeprefix("Bearer ") in self.proxy.tokens:
                return True
            challenge = f'Bearer realm="{self.proxy.url}/token",service="faultproxy"'
        self._send(401, {"WWW-Authenticate": challenge}, _error_body("UNAUTHORIZED", "authentication required"))
        return False

    def _token(self) -> str:
        _, user, password = self.proxy.auth or ("", "", "")
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._send(401, {}, b'{"details":"incorrect username or password"}')
            return "401 token"
        token = "tok-" + secrets.token_hex(16)
        with self.proxy._lock:
            self.proxy.tokens.add(token)
        self._send(200, {"Content-Type": "application/json"}, f'{{"token": "{token}"}}'.encode())
        return "200 token"

    # -- answers -----------------------------------------------------------------------------

    def _status(self, fault: Fault) -> None:
        code = {429: "TOOMANYREQUESTS", 404: "MANIFEST_UNKNOWN", 401: "UNAUTHORIZED"}.get(fault.status, "UNAVAILABLE")
        self._send(fault.status, fault.headers, _error_body(code, f"injected {fault.status}"))

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _forward(self, body: bytes, fault: Fault | None, arrived: float) -> None:
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS | {"authorization"}}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            outcome = fault.kind if fault else str(resp.status)
            self.proxy._record(self.command, self.path, outcome, arrived, self.headers.get("Range"))
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_HEADERS]
            if (fault is not None and fault.kind in ("corrupt", "body")) or resp.getheader("Content-Length") is None:
                data = resp.read()
                if fault is not None and fault.kind == "corrupt" and data:
                    at = len(data) // 2 if fault.at is None else fault.at
                    data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
                elif fault is not None and fault.kind == "body":
                    data = fault.transform(data)
                self._start(resp.status, out_headers, len(data))
                if self.command != "HEAD":
                    self.wfile.write(data)
                return
            self._start(resp.status, out_headers, int(resp.getheader("Content-Length")))
            if self.command == "HEAD":
                return
            self._stream(resp, fault)
        finally:
            conn.close()

    def _start(self, status: int, headers: list[tuple[str, str]], length: int) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def _stream(self, resp: http.client.HTTPResponse, fault: Fault | None) -> None:
        sent = 0
        started = time.monotonic()
        limit = fault.after if fault is not None and fault.kind in ("cut", "stall") else None
        while chunk := resp.read(CHUNK):
            if limit is not None and sent + len(chunk) >= limit:
                self.wfile.write(chunk[: limit - sent])
                self.wfile.flush()
                if fault.kind == "stall":
                    self.proxy._stopping.wait(fault.seconds)
                self.close_connection = True
                return
            self.wfile.write(chunk)
            sent += len(chunk)
            if fault is not None and fault.kind == "throttle":
                ahead = sent / fault.rate - (time.monotonic() - started)
                if ahead > 0 and self.proxy._stopping.wait(ahead):
                    self.close_connection = True
                    return
        self.wfile.flush()
        with self.proxy._lock:
            self.proxy.completed.append((time.monotonic(), self.path))


def _error_body(code: str, message: str) -> bytes:
    return f'{{"errors": [{{"code": "{code}", "message": "{message}"}}]}}'.encode()
