"""A local Lambda Runtime API (2018-06-01) that lets the host invoke a function running in a container."""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

PREFIX = "/2018-06-01"
OUTCOMES = ("response", "error", "init_error", "timeout")
ARN = "arn:aws:lambda:us-east-1:000000000000:function:{}"
NEXT = re.compile(re.escape(PREFIX) + r"/runtime/invocation/next")
RESULT = re.compile(re.escape(PREFIX) + r"/runtime/invocation/([^/]+)/(response|error)")
INIT_ERROR = re.compile(re.escape(PREFIX) + r"/runtime/init/error")
POLL = 0.2  # how often a waiting long-poll checks that its client is still connected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Invocation:
    """How one invoke ended: `body` is what the runtime posted (empty on timeout)."""

    outcome: str
    body: bytes
    request_id: str
    seconds: float


@dataclass
class _Call:
    request_id: str
    event: bytes
    headers: dict[str, str]
    outcome: str | None = None
    body: bytes = b""


class RuntimeAPIServer:
    """The Runtime API of one function, served on 127.0.0.1 on a free port; use it as a context manager.

    `invoke` queues an event and waits for its outcome; a runtime's `GET .../next` long-polls for that queue.
    One condition guards all state, so `stop` wakes every waiter at once by setting `_closed` and notifying.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[_Call] = deque()  # events no runtime has fetched yet
        self._calls: dict[str, _Call] = {}  # events fetched and not yet answered, by request id
        self._init_error: bytes | None = None
        self._closed = False
        self._connections: set[socket.socket] = set()
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.api = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the value of AWS_LAMBDA_RUNTIME_API."""
        host, port = self._httpd.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> RuntimeAPIServer:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="runtime-api", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; long-polls and open connections are cut so that no thread outlives the server."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._httpd.shutdown()  # would wait forever if serve_forever never ran
            self._thread.join()
        with self._cond:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._httpd.server_close()  # joins the handler threads, which the shutdowns above have woken

    def __enter__(self) -> RuntimeAPIServer:
        return self.start()

    def __exit__(self, kind: type | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def invoke(
        self,
        event: bytes,
        timeout: float,
        function_name: str = "function",
        *,
        client_context: str | None = None,
        cognito_identity: str | None = None,
    ) -> Invocation:
        """Queue `event` for the runtime and wait until it answers, reports an init error, or `timeout` passes.

        Args:
            event: the request body the runtime gets from `next`.
            timeout: seconds to wait, also what the Deadline-Ms header tells the runtime.
            function_name: last part of the function ARN the runtime sees.
            client_context, cognito_identity: header values, sent only when given.

        Returns:
            The outcome, one of `OUTCOMES`, with the body the runtime posted.
        """
        started = time.monotonic()
        request_id = str(uuid.uuid4())
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int((time.time() + timeout) * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": ARN.format(function_name),
            "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
        }
        if client_context is not None:
            headers["Lambda-Runtime-Client-Context"] = client_context
        if cognito_identity is not None:
            headers["Lambda-Runtime-Cognito-Identity"] = cognito_identity
        call = _Call(request_id, event, headers)
        with self._cond:
            if self._closed or self._thread is None:
                raise RuntimeError("the Runtime API server is not running")
            self._queue.append(call)
            self._cond.notify_all()
            self._cond.wait_for(lambda: call.outcome is not None or self._init_error is not None, timeout)
            self._calls.pop(request_id, None)
            if call in self._queue:
                self._queue.remove(call)
            if call.outcome is not None:
                outcome, body = call.outcome, call.body
            elif self._init_error is not None:
                outcome, body = "init_error", self._init_error
            else:
                outcome, body = "timeout", b""
        return Invocation(outcome, body, request_id, time.monotonic() - started)


class _HTTPServer(ThreadingHTTPServer):
    api: RuntimeAPIServer
    daemon_threads = False  # so that server_close joins them: stop() leaves no thread behind

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A runtime killed mid-request is how a container normally ends, not a fault of the server.
        if isinstance(sys.exc_info()[1], ConnectionError):
            log.debug("connection from %s:%s cut", *client_address)
        else:
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1: keep-alive as the runtime clients expect, and `Expect: 100-continue` for large responses.
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        api = self.server.api
        with api._cond:
            if api._closed:  # accepted while stopping, after stop() collected the connections
                self.connection.shutdown(socket.SHUT_RDWR)
            api._connections.add(self.connection)

    def finish(self) -> None:
        api = self.server.api
        with api._cond:
            api._connections.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        if NEXT.fullmatch(self._path()):
            self._next()
        else:
            self._fail(404, "UnknownPath", f"no such path: GET {self.path}")

    def do_POST(self) -> None:
        path, body = self._path(), self._read_body()
        api = self.server.api
        if INIT_ERROR.fullmatch(path):
            with api._cond:
                if api._init_error is None:  # the first error is the cause; later ones are consequences
                    api._init_error = body
                api._cond.notify_all()
            return self._accepted()
        match = RESULT.fullmatch(path)
        if not match:
            return self._fail(404, "UnknownPath", f"no such path: POST {self.path}")
        request_id, outcome = match.groups()
        with api._cond:
            call = api._calls.pop(request_id, None)
            if call is not None:
                call.outcome, call.body = outcome, body
                api._cond.notify_all()
        if call is None:
            return self._fail(400, "InvalidRequestID", f"no invocation waits for an answer with id {request_id}")
        self._accepted()

    def _next(self) -> None:
        api = self.server.api
        with api._cond:
            while not (api._queue or api._closed):
                # A runtime killed mid-poll must not swallow the next event: give up when the client is gone.
                if not api._cond.wait(POLL) and self._client_gone():
                    self.close_connection = True
                    return
            call = None if api._closed else api._queue.popleft()
            if call is not None:
                api._calls[call.request_id] = call
        if call is None:
            return self._fail(503, "ServerStopping", "the Runtime API server is stopping")
        try:
            self._send(200, call.event, call.headers)
        except OSError:
            with api._cond:  # not delivered: the next poll gets it
                if api._calls.pop(call.request_id, None) is call:
                    api._queue.appendleft(call)
                    api._cond.notify_all()
            self.close_connection = True

    def _client_gone(self) -> bool:
        try:  # an orderly close reads as end of stream; a live client has simply sent nothing more
            return self.connection.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():  # e.g. streamed responses
            parts = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _accepted(self) -> None:
        self._send(202, b'{"status":"OK"}\n')

    def _fail(self, status: int, kind: str, message: str) -> None:
        self._send(status, json.dumps({"errorMessage": message, "errorType": kind}).encode() + b"\n")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
