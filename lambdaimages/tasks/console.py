"""What a run shows: a live view of the running tasks on a terminal, plain lines elsewhere."""

from __future__ import annotations

import atexit
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from rich.console import Console as RichConsole
from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from lambdaimages.output import DONE, FAILED, IGNORED, UP_TO_DATE

PLAIN_EVERY = 10.0  # plain mode: a running task's progress line at most this often, after it ran that long
REFRESH_PER_SECOND = 4  # live view: redrawn this often, whatever the rate of events
_ESCAPES = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def interactive(stream: TextIO) -> bool:
    """Whether `stream` gets the live view: a terminal, no NO_COLOR, TERM not dumb."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") not in ("dumb", "unknown")


def closed_pipe(stream: TextIO) -> None:
    """The reader of `stream` went away (`doit ... | head`): send the rest of the run's lines to /dev/null.

    The run goes on to its end, so no task is cut off half-way, and its exit status is the run's; each task's
    log under <out>/.logs keeps everything it said. (Read-only commands die by SIGPIPE instead, as `yes | head`.)
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


def open_console(stream: TextIO) -> LiveConsole | PlainConsole:
    """The front end for `stream`: the live view on a terminal, plain lines otherwise (CI, pipes, NO_COLOR)."""
    return LiveConsole(stream) if interactive(stream) else PlainConsole(stream)


def elapsed(seconds: float) -> str:
    """`4.2 s`, `3m05s`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


@dataclass(eq=False)
class _Running:
    began: float = field(default_factory=time.monotonic)
    state: tuple[float | None, str] = (None, "")  # (fraction, text), replaced whole: no lock needed
    shown: float = 0.0  # plain mode: when its last progress line was written
    spinner: Spinner = field(default_factory=lambda: Spinner("dots", style="cyan"))


class PlainConsole:
    """Plain lines, no escape codes: a line when a task starts and one when it ends.

    A task running over PLAIN_EVERY seconds gets a progress line at most every PLAIN_EVERY seconds,
    from a thread that looks once a second (its latest status, or `running`). Up-to-date tasks print
    nothing (the reporter counts them).
    """

    def __init__(self, stream: TextIO, every: float = PLAIN_EVERY) -> None:
        self._stream = stream
        self._every = every
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._stopped = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="console-ticker", daemon=True)
        self._ticker.start()

    def _write(self, text: str) -> None:
        if "\x1b" in text:
            text = _ESCAPES.sub("", text)
        with self._lock:
            try:
                self._stream.write(text + "\n")
                self._stream.flush()
            except BrokenPipeError:
                closed_pipe(self._stream)

    def started(self, name: str) -> None:
        with self._lock:
            self._running[name] = _Running()
        self._write(f"start  {name}")

    def status(self, name: str, fraction: float | None, text: str) -> None:
        running = self._running.get(name)
        if running is not None:
            running.state = (fraction, text)

    def line(self, text: str) -> None:
        self._write(text)

    def finished(self, name: str, outcome: str, message: str | None = None, detail: Sequence[str] = ()) -> None:
        with self._lock:
            running = self._running.pop(name, None)
        took = f" ({elapsed(time.monotonic() - running.began)})" if running else ""
        if outcome == FAILED:
            if message:
                self._write("\n".join([f"FAILED {name}: {message}", *(f"    {line}" for line in detail)]))
        elif outcome == DONE:
            self._write(f"done   {name}{took}")
        elif outcome == IGNORED:
            self._write(f"ignored {name}")

    def progress_lines(self, now: float) -> list[str]:
        """The progress lines due at `now` (each marks its task as just shown)."""
        lines = []
        with self._lock:
            for name, running in self._running.items():
                if now - running.began >= self._every and now - running.shown >= self._every:
                    running.shown = now
                    text = running.state[1] or "running"
                    lines.append(f"...    {name} ({elapsed(now - running.began)}) {text}")
        return lines

    def _tick(self) -> None:
        while not self._stopped.wait(min(1.0, self._every)):
            for line in self.progress_lines(time.monotonic()):
                self._write(line)

    def stop(self) -> None:
        self._stopped.set()


class LiveConsole:
    """rich's live view: a line per running task (spinner, name, bar, status, time) under the finished ones.

    Events only store the task's latest status; rich redraws REFRESH_PER_SECOND times a second from its
    own thread, so a task may report progress per chunk. Finished tasks are printed above the view, one
    line each. `stop` (also at exit, so after Ctrl-C) ends the view and shows the cursor again.
    """

    def __init__(self, stream: TextIO, refresh_per_second: float = REFRESH_PER_SECOND) -> None:
        self._console = RichConsole(file=stream, highlight=False, markup=False, emoji=False)
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._stopped = False
        self._live = Live(
            console=self._console,
            get_renderable=self._render,
            refresh_per_second=refresh_per_second,
            transient=True,
            redirect_stdout=False,  # never swap sys.stdout: tasks write through lambdaimages.output
            redirect_stderr=False,
        )
        self._live.start()
        atexit.register(self.stop)

    def _render(self) -> RenderableType:
        with self._lock:
            rows = list(self._running.items())
        if not rows:
            return Group()
        now = time.monotonic()
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=1, no_wrap=True)
        grid.add_column(style="bold", no_wrap=True, overflow="ellipsis")
        grid.add_column(width=20, no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        grid.add_column(justify="right", no_wrap=True, style="dim")
        for name, running in rows:
            fraction, text = running.state
            bar = ProgressBar(total=1.0, completed=fraction, width=20) if fraction is not None else Text("")
            grid.add_row(running.spinner, name, bar, text, elapsed(now - running.began))
        return grid

    def started(self, name: str) -> None:
        with self._lock:
            self._running[name] = _Running()

    def status(self, name: str, fraction: float | None, text: str) -> None:
        running = self._running.get(name)
        if running is not None:
            running.state = (fraction, text)

    def line(self, text: str) -> None:
        self._console.print(Text(text))

    def finished(self, name: str, outcome: str, message: str | None = None, detail: Sequence[str] = ()) -> None:
        with self._lock:
            running = self._running.pop(name, None)
        took = elapsed(time.monotonic() - running.began) if running else ""
        if outcome == FAILED:
            if message:
                lines = [Text(f"FAILED {name}: {message}", style="bold red")]
                self._console.print(*lines, *(Text(f"    {line}", style="dim") for line in detail), sep="\n")
        elif outcome == DONE:
            self._console.print(Text.assemble(("✔ ", "green"), (name, "bold"), f"  done  {took}"))
        elif outcome == UP_TO_DATE:
            self._console.print(Text.assemble("- ", name, "  up to date", style="dim"))
        elif outcome == IGNORED:
            self._console.print(Text.assemble("- ", name, "  ignored", style="dim"))

    def stop(self) -> None:
        """End the live view (idempotent): erase it and show the cursor."""
        if self._stopped:
            return
        self._stopped = True
        try:
            self._live.stop()
        finally:
            self._console.show_cursor(True)
