"""Run Debian's docker-registry (distribution 2.8) on 127.0.0.1 for tests, the demo and the benchmark."""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests
import yaml

from lambdaimages.errors import RegistryUnreachable

# The access log goes to stdout in Apache combined format, one line per request:
#   127.0.0.1 - - [27/Nov/2026:13:53:08 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
# Its own log (logrus `time=... level=... msg=...`) goes to stderr; both land in `log_path`.
_ACCESS_LINE = re.compile(r'^\S+ \S+ \S+ \[[^\]]*\] "([A-Z]+) (\S+) [^"]*" (\d{3}) ')
# Our own probes carry this query and are left out of requests_log().
_SYNC = "_sync="


class LocalRegistry:
    """A registry process on 127.0.0.1, stopped and cleaned up on exit.

    The storage folder is temporary unless `storage` is given (then it persists, e.g. as a
    benchmark cache). The port is free and random unless `port` is given. `read_only` serves pulls and
    refuses every write (distribution's maintenance mode: 405 to uploads and manifest PUTs).

    An access line is written when the request's handler returns, which can be after the
    client has read the whole answer. `requests_log()` therefore first sends a marker
    request and waits for its line: every request answered before the call is then in the log.
    """

    def __init__(
        self,
        storage: str | Path | None = None,
        port: int | None = None,
        *,
        binary: str = "docker-registry",
        startup_timeout: float = 15.0,
        read_only: bool = False,
    ) -> None:
        self._read_only = read_only
        self._storage = Path(storage) if storage is not None else None
        self._fixed_port = port
        self._binary = binary
        self._startup_timeout = startup_timeout
        self._workdir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._syncs = 0
        self._http = requests.Session()
        self._http.trust_env = False  # a proxy from the environment must not see 127.0.0.1
        self.port = 0
        self.storage: Path | None = None
        self.log_path: Path | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> LocalRegistry:
        """Start the registry and wait until `GET /v2/` answers 200.

        Raises:
            RegistryUnreachable: the binary is missing, or the registry did not answer in time
                (the message carries the tail of its log).
        """
        if self._proc is not None:
            raise RuntimeError("local registry already started")
        if shutil.which(self._binary) is None:
            raise RegistryUnreachable(f"{self._binary} not found (Debian package docker-registry)")
        self._workdir = Path(tempfile.mkdtemp(prefix="localregistry-"))
        self.storage = self._storage or self._workdir / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log_path = self._workdir / "registry.log"
        # A random free port can be taken between our probe and the registry's bind: retry then.
        attempts = 1 if self._fixed_port else 3
        attempt = 0
        while True:
            attempt += 1
            self.port = self._fixed_port or _free_port()
            try:
                self._launch()
                return self
            except RegistryUnreachable:
                self._terminate()
                if attempt < attempts and "address already in use" in self.log_tail():
                    continue
                self.stop()
                raise
            except BaseException:  # e.g. KeyboardInterrupt: leave no process or folder behind
                self.stop()
                raise

    def _launch(self) -> None:
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "maintenance": {"readonly": {"enabled": self._read_only}},
            },
            # Without a secret the registry makes one up and warns about it in every log.
            "http": {"addr": self.host, "secret": secrets.token_hex(16)},
        }
        config_path = self._workdir / "config.yml"
        config_path.write_text(yaml.safe_dump(config))
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [self._binary, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if self._http.get(f"{self.url}/v2/?{_SYNC}start", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        if self._proc.poll() is not None:
            state = f"exited with status {self._proc.returncode}"
        else:
            state = f"did not answer GET /v2/ within {self._startup_timeout:g} s"
        raise RegistryUnreachable(f"local registry on {self.host} {state}; log tail:\n{self.log_tail()}")

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop the process (terminate, then kill) and remove the temporary folder."""
        self._terminate()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # -- log ---------------------------------------------------------------------------------

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def requests_log(self) -> list[tuple[str, str, int]]:
        """Every request answered so far, in log order, as (method, request URI with query, status)."""
        if self._proc is None:
            raise RuntimeError("local registry not running")
        self._syncs += 1
        marker = f"/v2/?{_SYNC}{self._syncs}"
        self._http.get(self.url + marker, timeout=5)
        deadline = time.monotonic() + 5
        while True:
            entries = _parse_access_log(self.log_path.read_text(errors="replace"))
            if any(path == marker for _, path, _ in entries) or time.monotonic() > deadline:
                return [e for e in entries if _SYNC not in e[1]]
            time.sleep(0.02)

    def count(self, method: str, path_contains: str = "", *, since: int = 0) -> int:
        """How many `method` requests whose URI contains `path_contains` were answered.

        `since` skips the first entries of `requests_log()`, e.g. `since=len(reg.requests_log())`
        taken before a step counts only that step's requests.
        """
        return sum(1 for m, path, _ in self.requests_log()[since:] if m == method and path_contains in path)


def _parse_access_log(text: str) -> list[tuple[str, str, int]]:
    entries = []
    for line in text.splitlines():
        match = _ACCESS_LINE.match(line)
        if match:
            entries.append((match.group(1), match.group(2), int(match.group(3))))
    return entries


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
