"""Errors carry their context as data and format it once."""

from lambdaimages.errors import OutputError, RegistryUnreachable, label


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
