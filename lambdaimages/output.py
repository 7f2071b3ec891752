"""Each task's output: its full log in a file, its live status on the console, never by swapping sys.stdout."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

LOGS = ".logs"
LOG_EVERY = 5.0  # seconds between two progress lines in a task's log
MARK = "#> "  # starts the log's own lines (task started, ended), which `tail` leaves out
DONE, UP_TO_DATE, FAILED, IGNORED = "done", "up to date", "failed", "ignored"


class Console(Protocol):
    """What a front end (lambdaimages.tasks.console) shows: tasks starting, their status, lines, their end."""

    def started(self, name: str) -> None: ...

    def status(self, name: str, fraction: float | None, text: str) -> None: ...

    def line(self, text: str) -> None: ...

    def finished(self, name: str, outcome: str, message: str | None = None, detail: Sequence[str] = ()) -> None: ...


@dataclass(eq=False)
class _Task:
    name: str
    log: IO[str] | None
    stream: bool  # every line to the console too (doit -v 2)
    began: float = field(default_factory=time.monotonic)
    logged: float = 0.0  # when a progress line last went to the log
    closed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def write(self, text: str) -> None:
        with self.lock:
            if not self.closed and self.log is not None:
                self.log.write(text + "\n")


_local = threading.local()
_lock = threading.Lock()
_tasks: dict[str, _Task] = {}
_console: Console | None = None
_counts: dict[str, dict[str, float]] = {}
_spans: dict[str, list[tuple[float, float]]] = {}  # kind -> (began, ended) of each piece of its work
_moved: list[str] = []
_said_once: set[str] = set()


class Cancelled(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C): a running task stops at its next `check` and removes what it began."""


_cancelled = threading.Event()
_active = 0  # actions running now (see `running`)
_idle = threading.Condition()


def cancel() -> None:
    """Ask every running task to stop (on Ctrl-C, from the main thread)."""
    _cancelled.set()


def cancelled() -> bool:
    return _cancelled.is_set()


def check() -> None:
    """Raise Cancelled if the run was interrupted: call it where a long task can stop cleanly."""
    if _cancelled.is_set():
        raise Cancelled("interrupted")


@contextlib.contextmanager
def running() -> Iterator[None]:
    """Mark an action as running, so that an interrupted run can wait for it to clean up (`wait_idle`)."""
    global _active
    with _idle:
        _active += 1
    try:
        yield
    finally:
        with _idle:
            _active -= 1
            _idle.notify_all()


def wait_idle(timeout: float) -> bool:
    """Wait until no action runs (True), or `timeout` seconds (False)."""
    with _idle:
        return _idle.wait_for(lambda: _active == 0, timeout)


def log_path(out: Path, task: str) -> Path:
    """Where a doit task's full output of its last run goes: `<out>/.logs/<task>.log`."""
    return Path(out) / LOGS / f"{task}.log"


def use(console: Console | None) -> None:
    """Show tasks on `console` from now on (None: no console; lines outside a task go to stdout)."""
    global _console
    _console = console


def begin(name: str, log: Path | None, *, stream: bool = False) -> None:
    """Start task `name` on this thread: its log file is created anew and the console shows it running.

    Args:
        name: the task's name, as the console shows it.
        log: its log file, overwritten; lines are flushed as they come, so a crash leaves a readable log.
            None (or a file that cannot be written): no log.
        stream: show every line of the task on the console too, as doit's `-v 2` does.
    """
    handle = None
    if log is not None:
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            handle = log.open("w", encoding="utf-8", errors="replace", buffering=1)  # line-buffered
        except OSError as exc:
            say(f"{name}: no log: {exc}")
    task = _Task(name, handle, stream)
    task.write(f"{MARK}{name} started {time.strftime('%Y-%m-%d %H:%M:%S')}")
    with _lock:
        _tasks[name] = task
    _local.task = task
    if _console is not None:
        _console.started(name)


def end(name: str, outcome: str = DONE, *, message: str | None = None, detail: Sequence[str] = ()) -> None:
    """End task `name` (from any thread): close its log with its outcome and collapse it on the console.

    Args:
        name: a task begun with `begin`; any other name only reaches the console.
        outcome: DONE, FAILED (or UP_TO_DATE, IGNORED for tasks that never began).
        message: a failure's one-line message; a failure without one is shown by no line (counted elsewhere).
        detail: lines shown under a failure's message (its log's tail and path).
    """
    with _lock:
        task = _tasks.pop(name, None)
    if task is not None:
        seconds = time.monotonic() - task.began
        task.write(f"{MARK}{outcome} after {seconds:.1f} s{': ' + message if message else ''}")
        with task.lock:
            task.closed = True
            if task.log is not None:
                task.log.close()
    if _console is not None:
        _console.finished(name, outcome, message, detail)


@contextlib.contextmanager
def task(name: str, log: Path | None, *, stream: bool = False) -> Iterator[None]:
    """Run a block as task `name` (see `begin`): done when it returns, failed naming the exception when it raises."""
    begin(name, log, stream=stream)
    try:
        yield
    except BaseException as exc:
        detail = (*tail(log), f"log: {log}") if log is not None else ()
        end(name, FAILED, message=str(exc) or type(exc).__name__, detail=detail)
        raise
    end(name, DONE)


def _current() -> _Task | None:
    found = getattr(_local, "task", None)
    return None if found is None or found.closed else found


def say(text: str, *, status: bool = False, show: bool = False) -> None:
    """A line of output: to the running task's log (and console with streaming), else to the console or stdout.

    Args:
        text: the line (or lines).
        status: also show it as the running task's status (a build's step, say) when not streaming.
        show: also show it on the console: a task's result (`doit changes`' report, the commit pushed).
    """
    current = _current()
    if current is None or current.stream or show:
        if _console is not None:
            _console.line(text)
        else:
            print(text, flush=True)
    if current is None:
        return
    current.write(text)
    if status and not current.stream and _console is not None:
        _console.status(current.name, None, text)


def say_once(key: str, text: str) -> bool:
    """`say(text, show=True)` the first time `key` is said in this run (a source that is down: one line for
    every layer and task that meets it); whether it was said now."""
    with _lock:
        if key in _said_once:
            return False
        _said_once.add(key)
    say(text, show=True)
    return True


def note(text: str) -> None:
    """Lines for the running task's log only, marked as the log's own (MARK): never on the console, and left
    out of `tail` (a failure's cause chain, which the one-line message leaves out)."""
    current = _current()
    if current is not None:
        for line in text.splitlines():
            current.write(MARK + line)


def progress(fraction: float | None, text: str) -> None:
    """The running task's live status (`compressing 45% 4.0 MB/s`), in its log every LOG_EVERY seconds.

    Cheap enough to call per chunk: the console draws the last status a few times a second.

    Args:
        fraction: how much of the task's current stage is done, 0 to 1, or None when unknown.
        text: what it is doing.
    """
    current = _current()
    if current is None:
        return
    if _console is not None and not current.stream:
        _console.status(current.name, fraction, text)
    now = time.monotonic()
    if now - current.logged >= LOG_EVERY:
        current.logged = now
        current.write(text)
        if current.stream:
            say_to = _console.line if _console is not None else print
            say_to(text)


def count(kind: str, **numbers: float) -> None:
    """Add to the run's summary: `count("downloaded", layers=1, bytes=n, seconds=s)`, `count("built", images=1)`."""
    with _lock:
        totals = _counts.setdefault(kind, {})
        for key, value in numbers.items():
            totals[key] = totals.get(key, 0) + value


def span(kind: str, began: float, ended: float) -> None:
    """Note that work of `kind` ran from `began` to `ended` (time.monotonic()): its rate in the summary is per
    second that the stage ran (the union of its spans, overlapping layers counted once), not per second of the run.
    """
    with _lock:
        _spans.setdefault(kind, []).append((began, ended))


def _union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one span."""
    total, reach = 0.0, float("-inf")
    for began, ended in sorted(spans):
        if ended > reach:
            total += ended - max(began, reach)
            reach = ended
    return total


def moved(runtime: str) -> None:
    """Note for the summary that a runtime moved upstream."""
    with _lock:
        if runtime not in _moved:
            _moved.append(runtime)


def counts() -> dict[str, dict[str, float]]:
    """Every kind counted in this run, in the order first counted, with its totals.

    A kind with spans (`span`) has `seconds`: how long that stage ran, its spans' union.
    """
    with _lock:
        found = {kind: dict(totals) for kind, totals in _counts.items()}
        for kind, spans in _spans.items():
            if kind in found:
                found[kind]["seconds"] = _union(spans)
        return found


def moved_runtimes() -> list[str]:
    with _lock:
        return list(_moved)


def reset() -> None:
    """Forget the counts of a previous run (a new doit run in the same process)."""
    with _lock:
        _counts.clear()
        _spans.clear()
        _moved.clear()
        _said_once.clear()


def tail(path: Path, lines: int = 10) -> list[str]:
    """The last lines of a log, read from its end (the log's own MARK lines left out)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if not line.startswith(MARK)][-lines:]
