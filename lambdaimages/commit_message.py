"""The commit message of a published branch: the one writer and reader of what it names.

publish writes it on every branch commit (its bytes are part of the commit id, so they never change for the
same snapshot); publish reads it back to find the previous snapshot, and verify_branch to find what a clone
claims to be. Both import it from here, below both of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lambdaimages.state import State

INDEX = "Index"
_TITLE = re.compile(r"Update source for (\S+) image")
_UPSTREAM = re.compile(r"^Upstream: (\S+)$", re.M)
_DIGEST = re.compile(r"^([\w.-]+): (sha256:[0-9a-f]{64})$", re.M)


@dataclass(frozen=True)
class CommitMessage:
    """What a branch commit names: the runtime, the upstream reference, index digests, manifest digest per arch.

    The text, as `format` writes it:

        Update source for <rt> image

        Upstream: <reference>
        Index: <digest>            (one line per distinct index digest, sorted)
        <arch>: <manifest digest>  (one line per architecture, in the catalog's order)

    `parse` reads any text: a field the text does not name is None (runtime, reference) or empty.
    """

    runtime: str | None
    reference: str | None
    indexes: tuple[str, ...]
    manifests: dict[str, str]

    @classmethod
    def of(cls, runtime: str, states: dict[str, State]) -> CommitMessage:
        """The message of a commit that publishes `states` (architecture -> state, in the catalog's order)."""
        first = next(iter(states.values()))
        indexes = tuple(sorted({s.index_digest for s in states.values() if s.index_digest}))
        return cls(runtime, first.reference, indexes, {arch: s.manifest_digest for arch, s in states.items()})

    def format(self) -> str:
        lines = [f"Update source for {self.runtime} image", "", f"Upstream: {self.reference}"]
        lines += [f"{INDEX}: {digest}" for digest in self.indexes]
        lines += [f"{arch}: {digest}" for arch, digest in self.manifests.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> CommitMessage:
        title = _TITLE.match(text)
        upstream = _UPSTREAM.search(text)
        indexes, manifests = [], {}
        for name, digest in _DIGEST.findall(text):
            if name == INDEX:
                indexes.append(digest)
            else:
                manifests[name] = digest
        return cls(title[1] if title else None, upstream[1] if upstream else None, tuple(indexes), manifests)
