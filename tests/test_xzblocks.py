"""The parallel block encoder writes exactly what `xz -T+N` writes, for any number of threads."""

import io
import lzma
import random
import subprocess
import threading
from pathlib import Path

import pytest

from lambdaimages.tools import xzblocks


def xz_cli(data: bytes, level: int, threads: int) -> bytes:
    return subprocess.run(
        ["xz", "-z", "-c", f"-{level}", f"-T+{threads}"], input=data, capture_output=True, check=True
    ).stdout


def ours(data: bytes, level: int, spool: Path) -> bytes:
    buf = io.BytesIO()
    writer = xzblocks.XzWriter(buf, level, spool)
    for start in range(0, len(data), 300_000):  # writes that straddle block boundaries
        writer.write(data[start : start + 300_000])
    writer.close()
    return buf.getvalue()


def mixed(size: int, seed: int = 1) -> bytes:
    """Compressible text, then a stretch of random bytes longer than a level-0 block (1 MiB)."""
    rng = random.Random(seed)
    words = [rng.randbytes(rng.randint(2, 8)).hex() for _ in range(500)]
    text = " ".join(rng.choices(words, k=size // 10)).encode()[: size // 2]
    return text + rng.randbytes(size - len(text))


@pytest.mark.parametrize("level", [0, 1])
def test_same_bytes_as_xz_multithreaded_mode(tmp_path, level):
    # Level 0: 1 MiB blocks, level 1: 3 MiB; 3.5 MB gives full blocks, an incompressible one and a partial last one.
    data = mixed(3_500_000)
    expected = xz_cli(data, level, 2)
    assert xz_cli(data, level, 1) == expected  # xz's own promise, which ours relies on
    assert ours(data, level, tmp_path) == expected
    assert lzma.decompress(expected) == data


def test_small_and_empty_inputs_at_level_6(tmp_path):
    for data in (b"", b"x", mixed(50_000, seed=2)):
        assert ours(data, 6, tmp_path) == xz_cli(data, 6, 2)


def test_thread_count_does_not_change_the_output(tmp_path, monkeypatch):
    data = mixed(2_500_000, seed=3)
    outputs = set()
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("LAMBDAIMAGES_XZ_THREADS", threads)
        assert xzblocks.threads() == int(threads)
        outputs.add(ours(data, 0, tmp_path))
    assert len(outputs) == 1


def test_block_size_is_xz_default():
    assert xzblocks.block_size(6) == 24 << 20
    assert xzblocks.block_size(9) == 192 << 20
    assert xzblocks.block_size(0) == 1 << 20


def test_abort_leaves_no_spool_files(tmp_path):
    writer = xzblocks.XzWriter(io.BytesIO(), 0, tmp_path)
    writer.write(mixed(2_600_000, seed=4))
    writer.abort()
    assert list((tmp_path / xzblocks.SPOOL_FOLDER).iterdir()) == []


def test_close_removes_spool_files(tmp_path):
    ours(mixed(2_600_000, seed=5), 0, tmp_path)
    assert list((tmp_path / xzblocks.SPOOL_FOLDER).iterdir()) == []


@pytest.mark.parametrize("level", [0, 1, 6])
def test_layout_check_accepts_what_the_writer_and_xz_T_write(tmp_path, level):
    data = mixed(3_500_000)
    for written in (ours(data, level, tmp_path), xz_cli(data, level, 2)):
        assert xzblocks.layout_problem(io.BytesIO(written), level) is None
        other = 9 if level != 9 else 0
        assert xzblocks.layout_problem(io.BytesIO(written), other) is not None
    assert xzblocks.layout_problem(io.BytesIO(ours(b"", level, tmp_path)), level) is None


def test_layout_check_refuses_single_threaded_xz_and_damaged_headers(tmp_path):
    data = mixed(500_000)
    problem = xzblocks.layout_problem(io.BytesIO(lzma.compress(data, preset=6)), 6)
    assert problem is not None and "both sizes" in problem
    written = bytearray(ours(data, 6, tmp_path))
    written[14] ^= 0x01  # inside the first block header: its CRC32 no longer matches
    assert xzblocks.layout_problem(io.BytesIO(bytes(written)), 6) == "block at byte 12: damaged block header"
    assert xzblocks.layout_problem(io.BytesIO(b"not xz at all, long enough"), 6) is not None


def test_the_pool_takes_blocks_of_an_earlier_section_first(monkeypatch):
    # One compressor thread, held busy: the blocks queued meanwhile run by section, then by arrival.
    monkeypatch.setenv("LAMBDAIMAGES_XZ_THREADS", "1")
    pool = xzblocks._executor()
    gate, ran = threading.Event(), []
    busy = pool.submit(-1, gate.wait)
    with xzblocks.ordered():
        first = xzblocks._current_order()
        with xzblocks.ordered():  # a later section (a task started after the first one)
            later = xzblocks._current_order()
            pending = [pool.submit(later, ran.append, "later 1")]
        pending.append(pool.submit(first, ran.append, "first 1"))
        pending.append(pool.submit(later, ran.append, "later 2"))
        pending.append(pool.submit(first, ran.append, "first 2"))
    cancelled = pool.submit(first, ran.append, "cancelled")
    assert cancelled.cancel()
    gate.set()
    for future in [busy, *pending]:
        future.result(timeout=10)
    assert ran == ["first 1", "first 2", "later 1", "later 2"]
