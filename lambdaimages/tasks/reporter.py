"""How doit shows a run: a live or plain console, a log per task, one line per failure, one summary."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from doit.exceptions import TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from lambdaimages import output
from lambdaimages.errors import RegistryUnreachable
from lambdaimages.output import DONE, FAILED, IGNORED, UP_TO_DATE
from lambdaimages.tasks.actions import ProjectFailure
from lambdaimages.tasks.console import elapsed, open_console

DEMO_HINT = "No network to the registry? `doit demo` runs the whole pipeline against a local registry."
DEMO_SNAPSHOT = "catalog=build-demo/runtimes.yaml out=build-demo"  # what reaches the snapshot `doit demo` made
TAIL_LINES = 10
STOP_WAIT = 120.0  # seconds an interrupted run waits for its running tasks to clean up


def offline_hint(errors: list[RegistryUnreachable], out: Path | None) -> str:
    """What a user can do about the unreachable registries of a run: resolve had no snapshot to go on, or strict=1."""
    polls = [error for error in errors if error.registry]  # resolve's (not a push's or an export's download)
    if not polls:
        return DEMO_HINT
    if all(error.snapshot is not None for error in polls):
        return "strict=1: a run that cannot poll upstream fails; without it the run goes on from the snapshot on disk."
    where = f" in {out}" if out is not None else ""
    registries = ", ".join(sorted({error.registry for error in polls if error.snapshot is None}))
    return (
        f"No snapshot{where} to go on without {registries}: the first resolve needs it. "
        f"The demo's snapshot is used with `{DEMO_SNAPSHOT}`; `doit demo` runs the whole pipeline against a local "
        "registry."
    )


_signalled: list[int] = []  # the signal that interrupted the run (SIGINT, SIGTERM), once


def _interrupt(signum, frame):
    """Ctrl-C or SIGTERM: ask the running tasks to stop (they check between chunks), then interrupt doit.

    Only the first signal interrupts: a second one (Ctrl-C again) would land in the middle of the cleanup or of
    doit's database write (temp file, rename) and leave them half done; the run is already stopping.
    """
    if _signalled:
        return
    _signalled.append(signum)
    output.cancel()
    raise KeyboardInterrupt


def _end_by_signal(kind, value, tb):
    """sys.excepthook: an interrupted run ends without a traceback, by its signal (exit status 130, 143)."""
    if not (_signalled and issubclass(kind, KeyboardInterrupt)):
        return sys.__excepthook__(kind, value, tb)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(_signalled[0], signal.SIG_DFL)
    os.kill(os.getpid(), _signalled[0])


class Reporter(ConsoleReporter):
    """doit's reporter, drawing the run on lambdaimages.tasks.console and each task's log through output.

    Under `-n 2 -P thread` doit calls `execute_task` on the worker thread that then runs the task's
    actions (so `output.begin` there makes their `output.say` land in that task's log), and every other
    method on the main thread. A task streams all its lines to the console when its doit verbosity is 2
    (`doit -v 2`). A failure is `FAILED <task>: <message>` on one line, followed by its log's last lines
    and path (only the path when the task showed its lines itself: a failure marked `shown`, check_base's).
    Tasks skipped because a task they depend on failed are counted, not listed, and so are further failures
    with the same cause (one registry down stops every runtime it serves): the first line is the one worth
    reading.
    """

    out: Path | None = None  # the output folder whose .logs/ gets each task's log; None: no logs

    @classmethod
    def logging_to(cls, out: Path) -> type[Reporter]:
        """This reporter writing task logs under `out` (doit wants a class: `DOIT_CONFIG["reporter"]`)."""
        return type(cls.__name__, (cls,), {"out": Path(out)})

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.skipped = 0
        self.causes: dict[str, int] = {}
        self.unreachable: list[RegistryUnreachable] = []  # the failures upstream being down caused
        self.began = time.monotonic()
        self.tally: Counter[str] = Counter()
        self.fresh: Counter[str] = Counter()  # up-to-date tasks by kind (`build` of `build:<rt>`)
        self.console = open_console(outstream)
        self.foreground = False
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _interrupt)
            signal.signal(signal.SIGTERM, _interrupt)
            sys.excepthook = _end_by_signal
        output.reset()
        output.use(self.console)

    def write(self, text):
        self.console.line(text.rstrip("\n"))

    @staticmethod
    def _shown(task) -> bool:
        return bool(task.actions) and not task.name.startswith("_")

    def _log(self, task) -> Path | None:
        return output.log_path(self.out, task.name) if self.out is not None else None

    def execute_task(self, task):
        if self._foreground(task):
            # The task draws the terminal itself (the demo's inner doit run): no view of ours meanwhile.
            self.console.stop()
            output.use(None)
            self.foreground = True
            output.begin(task.name, self._log(task), stream=True)
        elif self._shown(task):
            output.begin(task.name, self._log(task), stream=(task.verbosity or 0) >= 2)

    @staticmethod
    def _foreground(task) -> bool:
        return bool((task.meta or {}).get("foreground"))

    def add_success(self, task):
        if self._foreground(task):
            output.end(task.name, DONE)
        elif self._shown(task):
            self.tally[DONE] += 1
            output.end(task.name, DONE)

    def skip_uptodate(self, task):
        if self._shown(task):
            self.tally[UP_TO_DATE] += 1
            self.fresh[task.name.split(":")[0]] += 1
            output.end(task.name, UP_TO_DATE)

    def skip_ignore(self, task):
        if self._shown(task):
            self.tally[IGNORED] += 1
            output.end(task.name, IGNORED)

    def add_failure(self, task, fail):
        if isinstance(fail, UnmetDependency):
            self.skipped += self._shown(task)  # a group task (no actions) would have done nothing itself
            return
        self.failures.append({"task": task, "exception": fail})
        self.tally[FAILED] += 1
        error = fail.error if isinstance(fail, ProjectFailure) else None
        if isinstance(error, RegistryUnreachable):
            self.unreachable.append(error)
        cause = error.cause if error is not None else None
        if cause:
            self.causes[cause] = self.causes.get(cause, 0) + 1
        if cause and self.causes[cause] > 1:
            output.end(task.name, FAILED)  # counted: one line at the end
            return
        message = fail.message if isinstance(fail, TaskFailed) and not fail.traceback else fail.get_msg().rstrip()
        log = self._log(task)
        tail = output.tail(log, TAIL_LINES) if log is not None and task.executed else []
        detail = [*tail, f"log: {log}"] if tail else []  # an empty log is not worth a line
        if getattr(fail, "shown", False) and detail:  # a verdict whose lines the task showed (check_base)
            detail = detail[-1:]
        output.end(task.name, FAILED, message=message, detail=detail)

    def cleanup_error(self, exception):
        self.write(exception.get_msg())

    def complete_run(self):
        try:
            if output.cancelled():
                # One line, no summary or table: nothing of an interrupted run is claimed as done.
                stopped = output.wait_idle(STOP_WAIT)
                name = signal.Signals(_signalled[0]).name if _signalled else "interrupted"
                rest = "the next run resumes"
                if not stopped:
                    rest = f"tasks still running after {STOP_WAIT:g} s; the next run cleans up"
                self.write(f"interrupted ({name}): {self.tally[DONE]} task(s) done, the rest stopped; {rest}")
                return
            for cause, count in self.causes.items():
                if count > 1:
                    self.write(f"FAILED {count - 1} more task(s) for the same reason: {cause}")
            if self.unreachable:
                self.write(offline_hint(self.unreachable, self.out))
            if self.runtime_errors:
                self.write("\n".join(self.runtime_errors))
            if not (self.foreground and not self.tally):  # a foreground task alone printed its own summary
                self.write("\n".join(self.summary()))
        finally:
            self.console.stop()
            output.use(None)

    def summary(self) -> list[str]:
        """The run in a few lines: what moved upstream, what the counted work came to, the tasks, the wall time."""
        lines = []
        if moved := output.moved_runtimes():
            lines.append(f"moved upstream: {', '.join(moved)}")
        for kind, totals in output.counts().items():
            # Rates are per second that the stage ran (output.span), never per second of the whole run.
            lines.append(f"{kind} {_numbers(totals)}")
        kinds = ", ".join(f"{n} {kind}" for kind, n in self.fresh.items())
        parts = [f"{self.tally[DONE]} done"]
        if self.tally[UP_TO_DATE]:
            parts.append(f"{self.tally[UP_TO_DATE]} up to date ({kinds})")
        for label, n in ((FAILED, self.tally[FAILED]), ("not run", self.skipped), (IGNORED, self.tally[IGNORED])):
            if n:
                parts.append(f"{n} {label}")
        lines.append(f"tasks: {', '.join(parts)}; wall time {elapsed(time.monotonic() - self.began)}")
        return lines


def _numbers(totals: dict[str, float]) -> str:
    """`6 layers, 1.2 MB in 0.4 s (3.0 MB/s)` from {"layers": 6, "bytes": 1.2e6, "seconds": 0.4}."""
    parts = [f"{value:g} {key[:-1] if value == 1 and key.endswith('s') else key}"
             for key, value in totals.items() if key not in ("bytes", "seconds")]  # fmt: skip
    size, seconds = totals.get("bytes"), totals.get("seconds")
    amount = " ".join(
        ([f"{size / 1e6:.1f} MB"] if size is not None else [])
        + ([f"in {seconds:.1f} s"] if seconds is not None else [])
        + ([f"({size / 1e6 / seconds:.1f} MB/s)"] if size is not None and seconds else [])
    )
    return ", ".join([*parts, amount] if amount else parts)
