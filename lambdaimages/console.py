"""How doit shows a run: one line per failed task, no tracebacks for foreseeable failures."""

from __future__ import annotations

from doit.exceptions import TaskFailed, UnmetDependency
from doit.reporter import ConsoleReporter


class Reporter(ConsoleReporter):
    """doit's console reporter, but a failure is `FAILED <task>: <message>` on one line.

    Tasks skipped because a task they depend on failed are counted, not listed: the failure
    that caused them is the line worth reading.
    """

    def __init__(self, outstream, options):
        super().__init__(outstream, options)
        self.skipped = 0

    def add_failure(self, task, fail):
        if isinstance(fail, UnmetDependency):
            self.skipped += 1
            return
        self.failures.append({"task": task, "exception": fail})
        if isinstance(fail, TaskFailed) and not fail.traceback:
            self.write(f"FAILED {task.name}: {fail.message}\n")
        else:
            self.write(f"FAILED {task.name}:\n{fail.get_msg()}\n")

    def complete_run(self):
        if self.failures:
            more = f"; {self.skipped} dependent tasks not run" if self.skipped else ""
            self.write(f"{len(self.failures)} task(s) failed{more}.\n")
        if self.runtime_errors:
            self.write("\n".join(self.runtime_errors) + "\n")
