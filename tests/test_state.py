"""The typed upstream state and its files: round trip, rewrite only on change, the previous state kept."""

import json

import pytest
from states import make_state

from lambdaimages import layout
from lambdaimages import state as states_on_disk
from lambdaimages.state import State

LAYERS = [
    {"digest": "sha256:" + "1" * 64, "media_type": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 7,
     "diff_id": "sha256:" + "a" * 64},
]  # fmt: skip


def test_state_file_round_trips_and_keeps_the_format():
    state = make_state(LAYERS, config={"architecture": "amd64", "config": {"Env": ["A=1"]}})
    data = json.loads(state.file_bytes())
    assert sorted(data) == [
        "architecture", "config", "config_digest", "index_digest", "layers", "manifest_digest", "reference",
        "repository", "runtime",
    ]  # fmt: skip
    assert data["layers"] == LAYERS
    assert State.from_json(data) == state
    assert state.file_bytes() == (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    assert state.layers[0].hex == "a" * 64


def test_write_only_on_change_and_keep_the_replaced_state(tmp_path):
    old = make_state(LAYERS, manifest_digest="sha256:" + "1" * 64)
    new = make_state(LAYERS, manifest_digest="sha256:" + "2" * 64)
    assert states_on_disk.write(tmp_path, old)
    assert not states_on_disk.write(tmp_path, old)
    assert states_on_disk.read_previous(tmp_path, old.runtime, old.architecture) is None
    assert states_on_disk.write(tmp_path, new)
    assert states_on_disk.read(tmp_path, new.runtime, new.architecture) == new
    assert states_on_disk.read_previous(tmp_path, new.runtime, new.architecture) == old


def test_a_file_that_is_not_a_state_is_a_value_error_naming_it(tmp_path):
    path = layout.state_path(tmp_path, "python3.12", "x86_64")
    path.parent.mkdir(parents=True)
    path.write_text('{"runtime": "python3.12"}')
    with pytest.raises(ValueError, match=r"x86_64\.json: not a state file"):
        states_on_disk.read(tmp_path, "python3.12", "x86_64")
    assert states_on_disk.read_or_none(tmp_path, "python3.12", "x86_64") is None
    with pytest.raises(FileNotFoundError):
        states_on_disk.read(tmp_path, "python3.12", "arm64")
