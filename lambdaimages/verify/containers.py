"""The smoke-test container: started as Lambda starts a function, watched for an early exit, its state and logs."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from lambdaimages import engine
from lambdaimages.catalog import Runtime, Smoke
from lambdaimages.errors import EngineError
from lambdaimages.verify.runtime_api import PREFIX

LABEL = "lambdaimages.verify"  # on every smoke-test container: its value is the runtime
LOG_LINES = 15
EXIT_POLL = 0.25
# What Lambda sets for every function, so that runtime clients that read them find them.
FUNCTION_ENV = {
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
    "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def function_name(runtime: Runtime) -> str:
    return f"{runtime.name.replace('.', '-')}-smoke"


@contextmanager
def smoke_container(runtime: Runtime, smoke: Smoke, image: str, api_address: str) -> Iterator:
    environment = {
        **FUNCTION_ENV,
        "AWS_LAMBDA_RUNTIME_API": api_address,
        "AWS_LAMBDA_FUNCTION_NAME": function_name(runtime),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name(runtime)}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "verify",
    }
    volumes = {}
    if smoke.files is not None:
        volumes[smoke.files] = {"bind": "/var/task", "mode": "ro"}
        bootstrap = Path(smoke.files) / "bootstrap"
        if bootstrap.is_file():
            volumes[str(bootstrap)] = {"bind": "/var/runtime/bootstrap", "mode": "ro"}
    with engine.running_container(
        image,
        command=[smoke.handler],
        environment=environment,
        network_mode="host",
        volumes=volumes,
        labels={LABEL: runtime.name},
        name=f"lambdaimages-verify-{runtime.name}-{uuid.uuid4().hex[:8]}",
    ) as container:
        yield container


@contextmanager
def exit_reporter(container: engine.Container, api_address: str) -> Iterator[None]:
    """While the block runs, report a container that exits as an init error, as Lambda reports Runtime.ExitError.

    Without it an invocation of a runtime that died waits out its whole timeout.
    """
    done = threading.Event()

    def watch() -> None:
        while not done.wait(EXIT_POLL):
            try:
                status, code = container.status()
            except EngineError:
                return
            if status in ("exited", "dead"):
                error = {"errorType": "Runtime.ExitError", "errorMessage": f"the container exited with code {code}"}
                try:
                    requests.post(
                        f"http://{api_address}{PREFIX}/runtime/init/error",
                        json=error,
                        headers={"Lambda-Runtime-Function-Error-Type": "Runtime.ExitError"},
                        timeout=10,
                    )
                except requests.RequestException:
                    pass
                return

    watcher = threading.Thread(target=watch, name="verify-exit-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()


def describe_state(container: engine.Container) -> str:
    try:
        status, code = container.status()
    except EngineError:
        return "state unknown"
    return f"exited with code {code}" if status == "exited" else status


def log_lines(container: engine.Container) -> tuple[str, ...]:
    try:
        text = container.logs(LOG_LINES)
    except EngineError:
        return ()
    return tuple(f"log: {line}" for line in text.splitlines())
