"""Errors carry their context as data and format it once."""

import requests

from lambdaimages import engine, output
from lambdaimages.errors import EngineError, OutputError, RegistryUnreachable, cause_chain, label
from lambdaimages.tasks import actions


def test_message_is_formatted_from_the_context_once():
    error = RegistryUnreachable("registry http://r unreachable (connection refused)", cause="down")
    assert str(error) == "registry http://r unreachable (connection refused)"
    error.within(runtime="python3.12", arch="arm64", reference="r/lambda/python:3.12")
    error.within(runtime="other", where="layer 1/6 0123456789ab")  # what is already known stays
    assert str(error) == (
        "python3.12 arm64 (r/lambda/python:3.12) layer 1/6 0123456789ab: registry http://r unreachable "
        "(connection refused)"
    )
    assert (error.runtime, error.arch, error.cause) == ("python3.12", "arm64", "down")
    assert error.detail == "registry http://r unreachable (connection refused)"


def test_label_names_only_the_known_parts():
    assert label(runtime="python3.12") == "python3.12"
    assert label(arch="x86_64", where="layer 2/4 ab") == "x86_64 layer 2/4 ab"
    assert str(OutputError("disk full")) == "disk full"


def test_an_engine_fault_is_one_line_and_its_cause_goes_to_the_task_log_only(tmp_path):
    log = output.log_path(tmp_path, "build:x")

    @actions.one_line_errors
    def action():
        with engine._faults("docker load on E failed", first_line=True, runtime="python3.12", arch="arm64"):
            raise requests.ConnectionError("Connection aborted\nfrom http://r/v2/blobs/x?X-Amz-Signature=secret")

    with output.task("build:x", log):
        output.say("loading")
        failure = action()
    assert failure.message == "python3.12 arm64: docker load on E failed: Connection aborted"
    assert isinstance(failure.error, EngineError) and isinstance(failure.error.__cause__, requests.ConnectionError)
    text = log.read_text()
    assert f"{output.MARK}requests.exceptions.ConnectionError: Connection aborted" in text.splitlines()
    assert "secret" not in text and "x?..." in text
    assert output.tail(log) == ["loading"]  # the chain stays out of what a failure shows under its line
    assert cause_chain(EngineError("no cause")) == ""
