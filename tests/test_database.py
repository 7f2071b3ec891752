"""doit's database write under interrupts: Ctrl-C twice while .doit.json is saved leaves it whole (issue 21)."""

import json
import os
import signal
import threading
import time

import pytest
from doit.dependency import JsonDB

from lambdaimages import output
from lambdaimages.tasks import database, reporter
from lambdaimages.tools.files import TMP_PREFIX


class _SlowCodec:
    """JSON, slowly: a save that takes ~1 s, as a database of thousands of tasks does, so signals land inside it."""

    def encode(self, data):
        for _ in range(50):
            time.sleep(0.02)  # a signal handler runs between these, inside the save
        return json.dumps(data)

    def decode(self, text):
        return json.loads(text)


@pytest.fixture
def interrupts():
    """The run's own SIGINT handler, as the reporter installs it; restored and forgotten afterwards."""
    before = signal.signal(signal.SIGINT, reporter._interrupt)
    yield
    signal.signal(signal.SIGINT, before)
    reporter._signalled.clear()
    output._cancelled.clear()


def test_ctrl_c_twice_during_the_database_write_keeps_the_last_one_whole(tmp_path, interrupts):
    database.atomic_doit_db()
    path = tmp_path / ".doit.json"
    path.write_text(json.dumps({"build:x": {"_values_:": {}}}))
    previous = path.read_bytes()
    db = JsonDB(str(path), codec=_SlowCodec())
    db._db = {f"task{i}": {"file": [i]} for i in range(1000)}

    def press_ctrl_c_twice():
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=press_ctrl_c_twice)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        db.dump()
        time.sleep(2)  # not reached when the first Ctrl-C interrupts the save, as it must
    presser.join()
    time.sleep(0.3)  # the second Ctrl-C has come and was ignored: nothing raised here
    assert reporter._signalled == [signal.SIGINT]
    assert path.read_bytes() == previous  # the last complete record, not a half-written one
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(TMP_PREFIX)] == []
