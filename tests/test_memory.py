"""tools/memory: with the mmap threshold fixed, freed 1 MiB buffers leave the process (glibc, in a fresh process)."""

import subprocess
import sys

from lambdaimages.testbed import ROOT

PROGRAM = """
import sys
from lambdaimages.tools import memory

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

if sys.argv[1] == "fixed":
    assert memory.return_freed_buffers()
big = bytearray(16 << 20)  # freed, it raises glibc's dynamic threshold to 16 MiB
del big
chunks, kept = [], []
for _ in range(64):
    chunks.append(bytearray(1 << 20))  # export's chunks
    kept.append(bytearray(600 << 10))  # smaller buffers that live on between them
before = rss()
del chunks
print((before - rss()) >> 20)
"""


def _freed_mib(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], cwd=ROOT, capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_freed_chunks_go_back_to_the_system_with_the_threshold_fixed():
    assert _freed_mib("fixed") >= 60


def test_without_it_glibc_keeps_them_in_the_heap():
    # What the fix is for: the same program with glibc's default keeps the 64 MiB.
    assert _freed_mib("default") < 16
