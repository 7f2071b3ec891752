"""The one reader of Dockerfiles: their ADD instructions."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Add:
    """One ADD instruction: its line number, source and destination; a malformed one has source ""
    and the whole line as destination."""

    line: int
    source: str
    dest: str


def add_instructions(text: str) -> list[Add]:
    """The ADD instructions of a Dockerfile, in order."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if words and words[0].upper() == "ADD":
            found.append(Add(number, words[1], words[2]) if len(words) == 3 else Add(number, "", line.strip()))
    return found
