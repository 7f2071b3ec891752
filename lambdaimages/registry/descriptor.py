"""OCI descriptors (media type, digest, size) of the blobs an artifact lists: of a file, and the spec's empty one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lambdaimages.digest import Digest, Verifier
from lambdaimages.mediatypes import EMPTY

EMPTY_BLOB = b"{}"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Descriptor:
    """What an OCI descriptor says of a blob or manifest: its media type, digest and size."""

    media_type: str
    digest: str
    size: int

    def json(self) -> dict:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def file_descriptor(media_type: str, path: Path) -> Descriptor:
    """The descriptor of a file as a blob of `media_type`, its bytes hashed in chunks."""
    verifier = Verifier(what=str(path))
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            verifier.update(chunk)
    return Descriptor(media_type, verifier.finish(), verifier.received)


def empty_descriptor() -> Descriptor:
    """The spec's empty descriptor: `{}`, 2 bytes, as the config of an artifact that has none."""
    return Descriptor(EMPTY, Digest.of(EMPTY_BLOB), len(EMPTY_BLOB))
