"""The console, the task logs and the reporter: plain lines, log files, failures, a real pseudo-terminal."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from terminal import clean_env, run_on_terminal

from lambdaimages import output
from lambdaimages.tasks import console

HIDE, SHOW = b"\x1b[?25l", b"\x1b[?25h"

# A doit project of fake tasks run through the project's Reporter, two at a time on threads, as dodo.py does.
DODO = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from doit import get_var
    from doit.exceptions import TaskFailed
    from lambdaimages import output
    from lambdaimages.tasks.reporter import Reporter

    OUT = Path(get_var("out", "out"))
    SECONDS = float(get_var("seconds", "0.1"))
    DOIT_CONFIG = {
        "reporter": Reporter.logging_to(OUT), "num_process": 2, "par_type": "thread", "continue": True,
        "backend": "json", "dep_file": str(OUT / ".doit.json"), "default_tasks": ["work"],
        "verbosity": 0,  # doit leaves sys.stdout and sys.stderr alone; `doit -v 2` streams (the reporter reads it)
    }

    def work(name, steps, fail):
        output.say(f"stdout swapped: {sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__}")
        for step in range(steps):
            output.say(f"{name} says Step {step + 1}/{steps}", status=True)
            began = time.monotonic()
            while (done := (time.monotonic() - began) / SECONDS) < 1:
                output.progress(done, f"step {step + 1}/{steps} {done:.0%}")
                time.sleep(0.001)
        if name == "a":
            output.moved("demo.a")
        output.count("built", images=1)
        output.count("downloaded", layers=2, bytes=3e6, seconds=1.5)
        if fail:
            return TaskFailed("the build broke")

    def task_work():
        for name, steps, fail in (("a", 2, False), ("b", 12, True), ("c", 1, False)):
            yield {"name": name, "actions": [(work, [name, steps, fail])], "io": {"capture": False}}
        yield {"name": "fresh", "actions": [(work, ["fresh", 0, False])], "uptodate": [True], "io": {"capture": False}}
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "dodo.py").write_text(DODO)
    return tmp_path


def _env(**extra: str) -> dict[str, str]:
    return clean_env(**extra)


def _doit(project: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "doit", "-f", str(project / "dodo.py"), f"out={project / 'out'}", *args]
    return subprocess.run(cmd, cwd=project, env=_env(**env), capture_output=True, text=True, timeout=60)


_pty = run_on_terminal


@pytest.fixture
def plain():
    stream = io.StringIO()
    front = console.PlainConsole(stream)
    output.use(front)
    yield stream
    front.stop()
    output.use(None)


# -- plain mode, through the output API ------------------------------------------------------


def test_plain_mode_two_threads_a_start_and_an_end_line_each_no_task_output(plain, tmp_path):
    def run(name: str) -> None:
        with output.task(name, output.log_path(tmp_path, name)):
            for i in range(200):
                output.say(f"{name} line {i}", status=i % 50 == 0)
                output.progress(i / 200, f"{name} {i / 2:.0f}%")

    threads = [threading.Thread(target=run, args=(name,)) for name in ("build:x", "build:y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = plain.getvalue().splitlines()
    assert sorted(line.split(" (")[0] for line in lines) == [
        "done   build:x", "done   build:y", "start  build:x", "start  build:y"
    ]  # fmt: skip
    for name in ("build:x", "build:y"):
        done = next(i for i, line in enumerate(lines) if line.startswith(f"done   {name}"))
        assert lines.index(f"start  {name}") < done
        assert re.fullmatch(rf"done   {name} \(\d+\.\d s\)", lines[done])
        log = output.log_path(tmp_path, name).read_text().splitlines()
        assert [line for line in log if " line " in line] == [f"{name} line {i}" for i in range(200)]
        assert [line for line in log if line.endswith("%")] == [f"{name} 0%"]  # then none for LOG_EVERY s


def test_plain_progress_line_only_after_ten_seconds_and_then_at_most_every_ten():
    front = console.PlainConsole(io.StringIO())
    front.started("export:x")
    began = front._running["export:x"].began
    front.status("export:x", 0.45, "compressing 45% 4.0 MB/s")
    assert front.progress_lines(began + 9.9) == []
    assert front.progress_lines(began + 10.1) == ["...    export:x (10.1 s) compressing 45% 4.0 MB/s"]
    assert front.progress_lines(began + 20.0) == []
    front.status("export:x", 0.9, "compressing 90% 4.1 MB/s")
    assert front.progress_lines(began + 20.2) == ["...    export:x (20.2 s) compressing 90% 4.1 MB/s"]
    front.finished("export:x", output.DONE)
    assert front.progress_lines(began + 40) == []
    front.stop()


def test_plain_mode_long_task_gets_its_status_line_from_the_ticker(tmp_path):
    stream = io.StringIO()
    front = console.PlainConsole(stream, every=0.2)
    output.use(front)
    try:
        with output.task("build:x", None):
            output.say("Step 6/17 : RUN make", status=True)
            time.sleep(0.7)
    finally:
        front.stop()
        output.use(None)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "start  build:x" and lines[-1].startswith("done   build:x (0.7 s)")
    assert 1 <= len(lines[1:-1]) <= 3, lines  # after 0.2 s, then at most every 0.2 s
    assert all(re.fullmatch(r"\.\.\.    build:x \(0\.\d s\) Step 6/17 : RUN make", line) for line in lines[1:-1])


def test_a_shown_line_reaches_the_console_and_the_log(plain, tmp_path):
    with output.task("changes:x", output.log_path(tmp_path, "changes:x")):
        output.say("detail only in the log")
        output.say("x: 2 files changed", show=True)
    assert plain.getvalue().splitlines()[1] == "x: 2 files changed"
    assert "detail only in the log" not in plain.getvalue()
    assert output.log_path(tmp_path, "changes:x").read_text().splitlines()[1:3] == [
        "detail only in the log", "x: 2 files changed"
    ]  # fmt: skip


def test_outside_a_task_say_prints_to_stdout(capsys):
    output.use(None)
    output.say("plain call")
    output.progress(0.5, "ignored outside a task")
    assert capsys.readouterr().out == "plain call\n"


def test_plain_mode_strips_escape_codes(plain):
    output.say("\x1b[31mred\x1b[0m and \x1b]0;title\x07done")
    assert plain.getvalue() == "red and done\n"


def test_interactive_only_on_a_terminal_without_no_color_or_dumb_term(monkeypatch):
    master, slave = os.openpty()
    with os.fdopen(slave, "w") as tty:
        monkeypatch.setenv("TERM", "xterm")
        monkeypatch.delenv("NO_COLOR", raising=False)
        assert console.interactive(tty)
        monkeypatch.setenv("NO_COLOR", "1")
        assert not console.interactive(tty)
        monkeypatch.delenv("NO_COLOR")
        monkeypatch.setenv("TERM", "dumb")
        assert not console.interactive(tty)
        assert not console.interactive(io.StringIO())
    os.close(master)


# -- the log files ---------------------------------------------------------------------------


def test_log_is_overwritten_per_run_and_progress_is_logged_at_most_every_few_seconds(tmp_path):
    log = output.log_path(tmp_path, "export:x")
    with output.task("export:x", log):
        output.say("first run")
    with output.task("export:x", log):
        output.say("second run")
        for i in range(1000):
            output.progress(i / 1000, f"layer 1/1 {i}/1000 MB")
    lines = log.read_text().splitlines()
    assert "first run" not in lines
    assert lines[0].startswith(f"{output.MARK}export:x started ")
    assert lines[1:3] == ["second run", "layer 1/1 0/1000 MB"]  # the first progress, then none for LOG_EVERY s
    assert re.fullmatch(rf"{output.MARK}done after \d+\.\d s", lines[3]) and len(lines) == 4


def test_a_failed_task_logs_its_failure_and_shows_its_last_lines_and_log_path(plain, tmp_path):
    log = output.log_path(tmp_path, "build:x")
    with pytest.raises(RuntimeError), output.task("build:x", log):
        for i in range(30):
            output.say(f"Step {i}/30")
        raise RuntimeError("the build broke")
    lines = plain.getvalue().splitlines()
    assert lines[1:] == [
        "FAILED build:x: the build broke",
        *(f"    Step {i}/30" for i in range(20, 30)),
        f"    log: {log}",
    ]
    assert log.read_text().splitlines()[-1].endswith(": the build broke")


def test_counts_add_up_across_threads():
    output.reset()
    threads = [threading.Thread(target=lambda: [output.count("built", images=1) for _ in range(500)]) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    output.moved("python3.12")
    output.moved("python3.12")
    assert output.counts() == {"built": {"images": 1000}}
    assert output.moved_runtimes() == ["python3.12"]
    output.reset()


def test_a_stage_rate_is_per_second_that_stage_ran_not_per_second_of_the_run():
    """Issue 21, item 5: compression of two overlapping layers and a later one, in a run ten times longer."""
    from lambdaimages.tasks.reporter import _numbers

    output.reset()
    for began, ended in ((100.0, 102.0), (101.0, 103.0), (110.0, 111.0)):  # 3 s overlapped + 1 s
        output.count("compressed", layers=1, bytes=4e6)
        output.span("compressed", began, ended)
    totals = output.counts()["compressed"]
    assert totals == {"layers": 3, "bytes": 12e6, "seconds": 4.0}
    assert _numbers(totals) == "3 layers, 12.0 MB in 4.0 s (3.0 MB/s)"
    output.count("pushed", blobs=2, bytes=1e6)  # no span: no made-up rate
    assert _numbers(output.counts()["pushed"]) == "2 blobs, 1.0 MB"
    output.reset()
    assert output.counts() == {}


# -- doit runs through the reporter ----------------------------------------------------------


def test_doit_plain_run_line_by_line(project):
    run = _doit(project)
    assert run.returncode != 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert "\x1b" not in run.stdout
    log_b = project / "out" / ".logs" / "work:b.log"
    failed = lines.index("FAILED work:b: the build broke")
    assert lines[failed + 1 : failed + 12] == [
        *(f"    b says Step {i}/12" for i in range(3, 13)),
        f"    log: {log_b}",
    ]
    rest = lines[:failed] + lines[failed + 12 :]
    assert sorted(re.sub(r" \(.*", "", line) for line in rest[:-4]) == [
        "done   work:a", "done   work:c", "start  work:a", "start  work:b", "start  work:c"
    ]  # fmt: skip
    summary = ["moved upstream: demo.a", "built 3 images", "downloaded 6 layers, 9.0 MB in 4.5 s (2.0 MB/s)"]
    assert rest[-4:-1] == summary
    assert re.fullmatch(r"tasks: 2 done, 1 up to date \(1 work\), 1 failed; wall time \d+\.\d s", rest[-1])
    assert "says" not in "\n".join(rest)  # the tasks' own lines are in their logs only
    for name, steps in (("a", 2), ("b", 12), ("c", 1)):
        log = (project / "out" / ".logs" / f"work:{name}.log").read_text().splitlines()
        said = [line for line in log if "says" in line]
        assert said == [f"{name} says Step {i}/{steps}" for i in range(1, steps + 1)]
        assert "stdout swapped: False" in log


def test_doit_verbosity_2_streams_every_line(project):
    run = _doit(project, "-v", "2", "work:a")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[:4] == ["start  work:a", "stdout swapped: False", "a says Step 1/2", "step 1/2 0%"]
    assert "a says Step 2/2" in run.stdout.splitlines()


# -- a real terminal -------------------------------------------------------------------------


def test_terminal_final_screen_collapsed_lines_and_summary_cursor_shown(project):
    argv = [sys.executable, "-m", "doit", f"out={project / 'out'}"]
    data, screen, _ = _pty(argv, project)
    assert "✔ work:a  done" in screen and "✔ work:c  done" in screen, screen
    assert "- work:fresh  up to date" in screen
    assert "FAILED work:b: the build broke" in screen
    assert "    b says Step 12/12" in screen and "a says" not in screen
    assert re.search(r"^tasks: 2 done, 1 up to date \(1 work\), 1 failed; wall time \d+\.\d s$", screen, re.M)
    assert "━" not in screen  # no live row left
    assert data.rfind(SHOW) > data.rfind(HIDE) > -1


def test_terminal_ctrl_c_stops_the_live_view_and_shows_the_cursor(project):
    argv = [sys.executable, "-m", "doit", f"out={project / 'out'}", "seconds=5"]
    began = time.monotonic()
    data, screen, status = _pty(argv, project, rows=80, interrupt_on=b"step 1/")
    assert time.monotonic() - began < 10
    assert os.WIFEXITED(status) or os.WIFSIGNALED(status)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT  # the shell's 130
    assert data.rfind(SHOW) > data.rfind(HIDE) > -1
    # The interruption is shown as one line (issue 21, item 3: it was a KeyboardInterrupt traceback).
    line = r"^interrupted \(SIGINT\): \d task\(s\) done, the rest stopped; the next run resumes$"
    assert re.search(line, screen, re.M), screen
    assert "Traceback" not in screen and "tasks:" not in screen and "━" not in screen, screen


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)])
def test_signals_end_a_run_with_one_line_and_their_status(project, signals):
    """Ctrl-C twice, or SIGTERM: one line, no traceback or summary, exit by the first signal, no temp file."""
    cmd = [sys.executable, "-m", "doit", "-f", str(project / "dodo.py"), f"out={project / 'out'}", "seconds=5"]
    proc = subprocess.Popen(cmd, cwd=project, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = project / "out" / ".logs" / "work:a.log"
    deadline = time.monotonic() + 20
    while not (log.exists() and "Step 1/" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for sig in signals:
        proc.send_signal(sig)
        time.sleep(0.05)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signals[0], stdout + stderr  # the shell shows 130 / 143
    name = signal.Signals(signals[0]).name
    last = stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"interrupted \({name}\): \d task\(s\) done, the rest stopped; the next run resumes", last)
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stdout + stderr, stdout + stderr
    assert "tasks:" not in stdout
    assert not [p for p in (project / "out").rglob(".tmp-*")]
    assert (project / "out" / ".doit.json").exists()


LOAD = textwrap.dedent(
    """
    import sys, threading, time
    from pathlib import Path
    from lambdaimages import output
    from lambdaimages.tasks import console

    live = console.LiveConsole(sys.stdout)
    output.use(live)

    def run(name):
        with output.task(name, Path(sys.argv[1]) / f"{name}.log"):
            for round in range(4):  # 10,000 events in bursts over 2 s
                for i in range(2500):
                    output.progress(i / 2500, f"layer {round + 1}/4 {i / 25:.1f}/100.0 MB 12.1 MB/s")
                time.sleep(0.5)

    began = time.process_time()
    threads = [threading.Thread(target=run, args=(f"export:{n}",)) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    live.stop()
    (Path(sys.argv[1]) / "cpu").write_text(str(time.process_time() - began))
    """
)


def test_live_view_redraws_a_few_times_a_second_not_per_event(tmp_path):
    data, screen, _ = _pty([sys.executable, "-c", LOAD, str(tmp_path)], tmp_path)
    assert "✔ export:a  done" in screen and "✔ export:b  done" in screen, screen
    assert len(data) < 30_000  # ~10 redraws of two lines; one per event would be megabytes
    assert float((tmp_path / "cpu").read_text()) < 0.5  # measured: about 0.05 s
