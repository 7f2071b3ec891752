"""How doit shows a run: one line per failure, no tracebacks for foreseeable failures."""

from __future__ import annotations

from doit.exceptions import TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter

from lambdaimages.errors import RegistryUnreachable
from lambdaimages.tasks.actions import ProjectFailure

DEMO_HINT = "No network to the registry? `doit demo` runs the whole pipeline against a local registry."


class Reporter(ConsoleReporter):
    """doit's console reporter, but a failure is `FAILED <task>: <message>` on one line.

    Tasks skipped because a task they depend on failed are counted, not listed, and so are further
    failures with the same cause (one registry down stops every runtime it serves): the first
    line is the one worth reading.
    """

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.skipped = 0
        self.causes: dict[str, int] = {}
        self.unreachable = False

    def add_failure(self, task, fail):
        if isinstance(fail, UnmetDependency):
            self.skipped += 1
            return
        self.failures.append({"task": task, "exception": fail})
        error = fail.error if isinstance(fail, ProjectFailure) else None
        self.unreachable |= isinstance(error, RegistryUnreachable)
        cause = error.cause if error is not None else None
        if cause:
            self.causes[cause] = self.causes.get(cause, 0) + 1
            if self.causes[cause] > 1:
                return
        if isinstance(fail, TaskFailed) and not fail.traceback:
            self.write(f"FAILED {task.name}: {fail.message}\n")
        else:
            self.write(f"FAILED {task.name}:\n{fail.get_msg()}\n")

    def complete_run(self):
        for cause, count in self.causes.items():
            if count > 1:
                self.write(f"FAILED {count - 1} more task(s) for the same reason: {cause}\n")
        if self.failures:
            more = f"; {self.skipped} task(s) that depend on them not run" if self.skipped else ""
            self.write(f"{len(self.failures)} task(s) failed{more}.\n")
        if self.unreachable:
            self.write(DEMO_HINT + "\n")
        if self.runtime_errors:
            self.write("\n".join(self.runtime_errors) + "\n")
