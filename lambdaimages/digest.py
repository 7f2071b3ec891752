"""Content digests (`sha256:<hex>`): the value type, and the one reader that checks a stream against one."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import BinaryIO

from lambdaimages.errors import DigestMismatch

ALGORITHM = "sha256"
PREFIX = f"{ALGORITHM}:"
PATTERN = re.compile(rf"^{PREFIX}[0-9a-f]{{64}}$")


class Digest(str):
    """A digest as the OCI spec writes it, `sha256:<64 hex digits>`.

    It is a str, so that it compares equal to the digests read from state files and manifests and goes into
    JSON unchanged. `Digest(text)` takes any text as it is (like the registry's answers, unchecked);
    `Digest.parse` checks the form.
    """

    __slots__ = ()

    @classmethod
    def of(cls, data: bytes) -> Digest:
        """The digest of `data`."""
        return cls.from_hex(hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hex(cls, hex_digits: str) -> Digest:
        """The digest whose hex digits are `hex_digits` (a tarball's or document's name)."""
        return cls(PREFIX + hex_digits)

    @classmethod
    def parse(cls, text: str) -> Digest:
        """`text` as a digest.

        Raises:
            ValueError: `text` is not `sha256:` and 64 lowercase hex digits.
        """
        if not PATTERN.match(text):
            raise ValueError(f"not a sha256 digest: {text!r}")
        return cls(text)

    @property
    def hex(self) -> str:
        """The hex digits, as files are named (a text without the `sha256:` prefix is returned whole)."""
        return self.removeprefix(PREFIX)


def is_sha256(text: str) -> bool:
    """`text` is written as a sha256 digest: the one algorithm this project can check."""
    return text.startswith(PREFIX)


class Verifier:
    """A stream read through: every chunk hashed and counted, and at its end the size and digest checked.

    `expected` None only hashes and counts (a digest being computed, not checked). With `size`, a stream that
    runs over raises at the chunk that does, and one that ends short raises at `finish`: an HTTP body cut off
    mid-way reads as a clean end of stream. The errors are DigestMismatch naming `what` (`<what> hashes to
    <actual>`, and `, <claimed_by> says <expected>` when a document, not the request, named the digest), with
    `expected`, `actual` and `received` as data and `context` (runtime, arch, ...) as the error's context.
    """

    def __init__(
        self,
        expected: str | None = None,
        size: int | None = None,
        *,
        what: str = "stream",
        claimed_by: str | None = None,
        context: Mapping[str, str] | None = None,
    ) -> None:
        self.expected, self.size, self.what = expected, size, what
        self.claimed_by = claimed_by
        self.context = dict(context or {})
        self.received = 0
        self._hasher = hashlib.sha256()

    def update(self, chunk: bytes) -> bytes:
        """Hash and count `chunk`; return it.

        Raises:
            DigestMismatch: more bytes than `size`.
        """
        self._hasher.update(chunk)
        self.received += len(chunk)
        if self.size is not None and self.received > self.size:
            raise self._mismatch(f"{self.what}: expected {self.size} bytes, received more")
        return chunk

    @property
    def digest(self) -> Digest:
        """The digest of what was read so far."""
        return Digest.from_hex(self._hasher.hexdigest())

    def finish(self) -> Digest:
        """The end of the stream: the digest of all of it.

        Raises:
            DigestMismatch: fewer bytes than `size`, or they hash to another digest than `expected`.
        """
        if self.size is not None and self.received != self.size:
            raise self._mismatch(f"{self.what}: expected {self.size} bytes, received {self.received}")
        actual = self.digest
        if self.expected is not None and actual != self.expected:
            claim = f", {self.claimed_by} says {self.expected}" if self.claimed_by else ""
            raise self._mismatch(f"{self.what} hashes to {actual}{claim}", actual)
        return actual

    def chunks(self, source: Iterable[bytes]) -> Iterator[bytes]:
        """Yield the chunks of `source`, checked; the last is followed by `finish`.

        A consumer must not trust what it wrote until the iterator is exhausted without error. `source` is
        closed (if it can be) when the iterator stops, at its end or on an error.
        """
        try:
            for chunk in source:
                yield self.update(chunk)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        self.finish()

    def _mismatch(self, detail: str, actual: Digest | None = None) -> DigestMismatch:
        return DigestMismatch(detail, expected=self.expected, actual=actual, received=self.received, **self.context)


class Reader:
    """A binary file read through a Verifier: `read` as the file's, and at its end (`read` gives b"") `finish`.

    Like go-containerregistry's internal/verify ReadCloser: a reader that reaches the end has been checked,
    so a consumer that reads to the end (tarfile, a copy loop) needs no check of its own. `verifier` keeps
    the count and the digest for a caller that only computes one (`expected` None).
    """

    def __init__(self, stream: BinaryIO, verifier: Verifier) -> None:
        self.stream, self.verifier = stream, verifier
        self.digest: Digest | None = None  # set at the end of the stream, once checked

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left for -1); at the end, the check.

        Raises:
            DigestMismatch: as `Verifier.update` and, at the end, `Verifier.finish`.
        """
        if self.digest is not None:
            return b""
        data = self.stream.read(size)
        if data:
            return self.verifier.update(data)
        if size != 0:
            self.digest = self.verifier.finish()
        return data

    def close(self) -> None:
        self.stream.close()


def verify(data: bytes, expected: str | None, what: str) -> Digest:
    """The digest of `data`, which must be `expected` (None: anything).

    Raises:
        DigestMismatch: `{what} hashes to <actual>`.
    """
    verifier = Verifier(expected, what=what)
    verifier.update(data)
    return verifier.finish()
