"""Run a program on a real pseudo-terminal of a fixed size, and read its final screen with a VT emulator (pyte)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time
from pathlib import Path

import pyte

from lambdaimages.testbed import ROOT

HIDE, SHOW = b"\x1b[?25l", b"\x1b[?25h"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without NO_COLOR and TERM (which choose the console), the project importable."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TERM")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def run_on_terminal(
    argv: list[str],
    cwd: Path,
    *,
    cols: int = 100,
    rows: int = 40,
    interrupt_on: bytes | None = None,
    timeout: float = 30,
    env: dict[str, str] | None = None,
) -> tuple[bytes, str, int]:
    """Run argv on a new pseudo-terminal; its raw output, its final screen as text, and its wait status.

    With `interrupt_on`, SIGINT is sent (as Ctrl-C would) once those bytes have been written.
    """
    pid, fd = pty.fork()
    if pid == 0:  # the child: its terminal's size first, then the program
        try:
            fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # as on a user's terminal (a background job ignores it)
            os.chdir(cwd)
            os.execve(argv[0], argv, {**clean_env(TERM="xterm-256color"), **(env or {})})
        finally:
            os._exit(127)
    data, deadline, interrupted = b"", time.monotonic() + timeout, False
    try:
        while time.monotonic() < deadline:
            if interrupt_on is not None and not interrupted and interrupt_on in data:
                os.kill(pid, signal.SIGINT)
                interrupted = True
            if select.select([fd], [], [], 0.05)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                data += chunk
    finally:
        os.close(fd)
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    screen = pyte.Screen(cols, rows)
    pyte.ByteStream(screen).feed(data)
    return data, "\n".join(line.rstrip() for line in screen.display).rstrip(), status
