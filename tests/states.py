"""Typed upstream states for tests, with placeholder digests for the fields a test does not look at."""

from lambdaimages.state import Layer, State


def make_state(layers: list[dict] | None = None, **fields) -> State:
    """A State; `layers` as dicts with digest, media_type, size and diff_id."""
    defaults = {
        "runtime": "python3.12",
        "architecture": "x86_64",
        "reference": "public.ecr.aws/lambda/python:3.12",
        "repository": "lambda/python",
        "index_digest": None,
        "manifest_digest": "sha256:" + "d" * 64,
        "config_digest": "sha256:" + "c" * 64,
        "config": {},
    }
    return State(**{**defaults, **fields}, layers=tuple(Layer(**layer) for layer in layers or []))
