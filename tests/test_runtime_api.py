"""Tests of the local Runtime API against awslambdaric, the real Python client, and with plain requests."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from lambdaimages.verify.runtime_api import PREFIX, Invocation, RuntimeAPIServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def server() -> Iterator[RuntimeAPIServer]:
    with RuntimeAPIServer() as api:
        yield api


@pytest.fixture
def runtime(tmp_path: Path, server: RuntimeAPIServer) -> Iterator[Callable[[str], subprocess.Popen]]:
    """Start `python -m awslambdaric app.handler` on a module `app` with the given source; always killed."""
    processes = []

    def start(source: str) -> subprocess.Popen:
        (tmp_path / "app.py").write_text(textwrap.dedent(source))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "_LAMBDA", "_HANDLER"))}
        env["AWS_LAMBDA_RUNTIME_API"] = server.address
        with open(tmp_path / "runtime.log", "wb") as log:  # a file, not a pipe nobody reads that could fill up
            process = subprocess.Popen(
                [sys.executable, "-m", "awslambdaric", "app.handler"],
                cwd=tmp_path,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.kill()
        process.wait()


def test_handler_result_is_the_response_for_each_invocation(server, runtime):
    runtime("""
        def handler(event, context):
            return {"event": event, "id": context.aws_request_id, "arn": context.invoked_function_arn,
                    "left_ms": context.get_remaining_time_in_millis(), "padding": "x" * event["size"]}
    """)
    # The same warm runtime answers several invocations; 2 MB exercises `Expect: 100-continue`.
    for size in (0, 2_000_000):
        invocation = server.invoke(json.dumps({"size": size}).encode(), timeout=20, function_name="fn")
        assert invocation.outcome == "response", invocation
        answer = json.loads(invocation.body)
        assert answer["event"] == {"size": size}
        assert answer["id"] == invocation.request_id
        assert answer["arn"] == "arn:aws:lambda:us-east-1:000000000000:function:fn"
        assert 0 < answer["left_ms"] <= 20_000
        assert len(answer["padding"]) == size
        assert 0 < invocation.seconds < 20


def test_handler_exception_is_an_error(server, runtime):
    runtime("""
        def handler(event, context):
            raise ValueError("boom " + event["who"])
    """)
    invocation = server.invoke(b'{"who": "me"}', timeout=20)
    assert invocation.outcome == "error"
    error = json.loads(invocation.body)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "boom me"


def test_import_failure_is_an_init_error_even_when_posted_before_the_invoke(server, runtime):
    process = runtime("import module_that_does_not_exist\n")
    assert process.wait(timeout=20) != 0  # it posts the init error, then exits
    invocation = server.invoke(b"{}", timeout=20)
    assert invocation.outcome == "init_error"
    assert invocation.seconds < 1
    error = json.loads(invocation.body)
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert "module_that_does_not_exist" in error["errorMessage"]


def test_runtime_that_never_answers_times_out(server, runtime):
    runtime("""
        import time

        def handler(event, context):
            time.sleep(60)
    """)
    invocation = server.invoke(b"{}", timeout=1.5)
    assert invocation == Invocation("timeout", b"", invocation.request_id, invocation.seconds)
    assert 1.5 <= invocation.seconds < 3


def _invoke_in_thread(server: RuntimeAPIServer, **kwargs) -> tuple[threading.Thread, list[Invocation]]:
    results: list[Invocation] = []
    thread = threading.Thread(target=lambda: results.append(server.invoke(**kwargs)))
    thread.start()
    return thread, results


def test_next_headers_and_4xx_answers(server):
    base = f"http://{server.address}{PREFIX}/runtime"
    thread, results = _invoke_in_thread(server, event=b'{"a": 1}', timeout=10, function_name="f", client_context="cc")
    before_ms = time.time() * 1000
    got = requests.get(f"{base}/invocation/next", timeout=10)
    assert got.status_code == 200
    assert got.content == b'{"a": 1}'
    request_id = got.headers["Lambda-Runtime-Aws-Request-Id"]
    assert before_ms + 8_000 < int(got.headers["Lambda-Runtime-Deadline-Ms"]) < before_ms + 10_500
    assert got.headers["Lambda-Runtime-Invoked-Function-Arn"].endswith(":function:f")
    assert got.headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    assert got.headers["Lambda-Runtime-Client-Context"] == "cc"
    assert "Lambda-Runtime-Cognito-Identity" not in got.headers

    assert requests.post(f"{base}/invocation/other-id/response", data=b"x", timeout=5).status_code == 400
    assert requests.get(f"{base}/invocation/nope", timeout=5).status_code == 404
    assert requests.post(f"{base}/invocation/next", timeout=5).status_code == 404
    assert requests.get(f"http://{server.address}/2020-01-01/extension/register", timeout=5).status_code == 404

    answered = requests.post(f"{base}/invocation/{request_id}/response", data=b'"ok"', timeout=5)
    assert answered.status_code == 202
    thread.join(10)
    assert results[0].outcome == "response"
    assert results[0].body == b'"ok"'
    assert results[0].request_id == request_id
    # An invocation is answered once: a second answer is refused.
    assert requests.post(f"{base}/invocation/{request_id}/error", data=b"{}", timeout=5).status_code == 400


def test_init_error_ends_a_waiting_invocation(server):
    thread, results = _invoke_in_thread(server, event=b"{}", timeout=20)
    time.sleep(0.3)
    posted = requests.post(f"http://{server.address}{PREFIX}/runtime/init/error", data=b'{"errorType": "X"}')
    assert posted.status_code == 202
    thread.join(10)
    assert results[0].outcome == "init_error"
    assert results[0].body == b'{"errorType": "X"}'
    assert results[0].seconds < 5


def test_timed_out_event_is_not_handed_out_later(server):
    assert server.invoke(b"stale", timeout=0.2).outcome == "timeout"
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"http://{server.address}{PREFIX}/runtime/invocation/next", timeout=0.5)


def test_runtime_killed_while_polling_does_not_swallow_the_next_event(server):
    threads = threading.active_count()
    thread = threading.Thread(target=_abandoned_poll, args=(server.address,))
    thread.start()
    thread.join()
    time.sleep(0.5)  # let the abandoned handler notice its client is gone
    assert threading.active_count() == threads  # its handler thread has ended, it will not take the event
    thread, results = _invoke_in_thread(server, event=b"fresh", timeout=10)
    got = requests.get(f"http://{server.address}{PREFIX}/runtime/invocation/next", timeout=10)
    assert got.content == b"fresh"
    request_id = got.headers["Lambda-Runtime-Aws-Request-Id"]
    requests.post(f"http://{server.address}{PREFIX}/runtime/invocation/{request_id}/response", data=b"1", timeout=5)
    thread.join(10)
    assert results[0].outcome == "response"


def _abandoned_poll(address: str) -> None:
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"http://{address}{PREFIX}/runtime/invocation/next", timeout=0.3)


def test_stop_returns_while_a_long_poll_is_blocked():
    server = RuntimeAPIServer().start()
    outcome = []

    def poll() -> None:
        try:
            outcome.append(requests.get(f"http://{server.address}{PREFIX}/runtime/invocation/next", timeout=30))
        except requests.ConnectionError as error:
            outcome.append(error)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    thread.join(5)
    assert not thread.is_alive()
    assert isinstance(outcome[0], requests.ConnectionError) or outcome[0].status_code == 503
    with pytest.raises(RuntimeError):
        server.invoke(b"{}", timeout=1)
