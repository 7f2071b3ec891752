"""A registry repository as the shared layer cache: each compressed tarball a blob, found by a tag of its layer.

Every CI system already runs a registry, and a registry is a content-addressed store: so machines that share one
share their compression work. An entry is a small OCI artifact manifest (`artifactType` CACHED_LAYER, the empty
config, one layer: the tarball, byte for byte; annotations: diff_id, codec, level) under the tag
`<codec><level>-<diff_id hex>`, e.g. `xz6-4dba66...`. The same layer, codec and level always give the same
manifest bytes, so storing it again changes nothing.

The cache only ever makes a run faster. A cache that is down, refuses writes or errs is used no more for the
rest of the run (reads, or only writes when only a write failed), with one note for the run; an entry that is not
ours, or whose blob is gone, is a miss; one whose bytes fail their digest raises DigestMismatch, which export
reports as a wrong tarball (then compressed here), as it does for every source.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lambdaimages import mediatypes, output
from lambdaimages.digest import Digest
from lambdaimages.errors import DigestMismatch, RegistryError, RegistryUnreachable
from lambdaimages.mediatypes import CACHED_LAYER, CACHED_TARBALLS, OCI_MANIFEST
from lambdaimages.reference import Repository
from lambdaimages.registry.client import Manifest, RegistryClient
from lambdaimages.registry.descriptor import EMPTY_BLOB, Descriptor, empty_descriptor, file_descriptor

if TYPE_CHECKING:
    from lambdaimages.catalog import Runtime
    from lambdaimages.state import Layer

NAME = "registry cache"  # how the run's summary and notes name this source of tarballs
DIFF_ID = "dev.lambdaimages.layer.diff_id"
CODEC = "dev.lambdaimages.layer.codec"
LEVEL = "dev.lambdaimages.layer.level"


@dataclass(frozen=True)
class Entry:
    """One tarball the cache may hold: a layer (its diff_id) compressed with `codec` ("xz", "gzip") at `level`."""

    diff_id: str
    codec: str
    level: int

    @classmethod
    def of(cls, runtime: Runtime, layer: Layer) -> Entry:
        """The tarball export makes of `layer` for `runtime` (its compression and level)."""
        return cls(layer.diff_id, runtime.compression, runtime.level)

    @property
    def tag(self) -> str:
        """`<codec><level>-<hex>`: 68 or 70 characters, within the 128 a tag may have."""
        return f"{self.codec}{self.level}-{Digest(self.diff_id).hex}"

    def annotations(self) -> dict[str, str]:
        return {DIFF_ID: self.diff_id, CODEC: self.codec, LEVEL: str(self.level)}

    def manifest(self, tarball: Descriptor) -> bytes:
        """The artifact's manifest bytes: the same entry and tarball always give the same bytes."""
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": CACHED_LAYER,
            "config": empty_descriptor().json(),
            "layers": [{**tarball.json(), "annotations": self.annotations()}],
            "annotations": self.annotations(),
        }
        return json.dumps(body, indent=3).encode()

    def tarball_of(self, manifest: Manifest) -> Descriptor | None:
        """The tarball a fetched manifest lists when it is our artifact for this entry, else None."""
        try:
            body = manifest.json()
            (layer,) = body["layers"]
            found = Descriptor(layer["mediaType"], layer["digest"], layer["size"])
            ours = body.get("artifactType") == CACHED_LAYER and body.get("annotations") == self.annotations()
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not ours or found.media_type != CACHED_TARBALLS.get(self.codec) or not isinstance(found.size, int):
            return None
        return found


READ, WRITE = "reads", "writes"


class RegistryLayerCache:
    """The layer cache in one registry repository, through a RegistryClient (its credentials, pacing, retries).

    One instance per cache and run (see `for_run`): it remembers what failed, so that a cache that is down costs
    one failed request and one note, not one per layer. Safe to share between doit's threads.
    """

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client, self.repository = client, repository
        self.name = f"{client.name}/{repository}"
        self._off: dict[str, str] = {}  # READ or WRITE -> why it is no longer used
        self._noted = False
        self._empty_pushed = False
        self._lock = threading.Lock()

    def fetch(self, entry: Entry, dest: Path) -> bool:
        """Write the cached tarball of `entry` to `dest` (created or truncated); False when there is none to use.

        The bytes are the blob's digest checked at end of stream; `dest` holds a partial or wrong file after a
        False or an error, for the caller to discard.

        Raises:
            DigestMismatch: the entry's bytes do not hash to their digest (damaged in the registry or on the way):
                this entry is wrong, the cache is not turned off.
        """
        if self.is_off(READ):
            return False
        try:
            manifest = self.client.find_manifest(self.repository, entry.tag)
            if manifest is None:
                return False
            tarball = entry.tarball_of(manifest)
            if tarball is None:
                output.say(f"registry cache {self.name}: {entry.tag} is not a layer tarball of ours: not used")
                return False
            with open(dest, "wb") as f:
                for chunk in self.client.iter_blob(self.repository, tarball.digest, tarball.size):
                    output.check()
                    f.write(chunk)
            return True
        except DigestMismatch:
            raise  # the caller reports a wrong tarball, as from any source
        except RegistryError as exc:
            if exc.status == 404:  # the manifest names a blob the registry no longer has: this entry only
                output.say(f"registry cache {self.name}: {entry.tag}: {exc.detail}: not used")
                return False
            self._turn_off(READ, exc)
            return False

    def store(self, entry: Entry, tarball: Path) -> bool:
        """Put `tarball` (the compressed layer of `entry`) into the cache; False when the cache took nothing.

        The blob is uploaded only when the registry lacks it (HEAD), then the manifest goes under the entry's tag.
        """
        if self.is_off(WRITE):
            return False
        try:
            blob = file_descriptor(CACHED_TARBALLS[entry.codec], tarball)
            if not self.client.has_blob(self.repository, blob.digest):
                self.client.upload_blob(self.repository, blob.digest, blob.size, tarball)
            if not self._empty_pushed:
                self.client.push_blob(self.repository, EMPTY_BLOB)
                self._empty_pushed = True
            self.client.push_manifest(self.repository, entry.tag, OCI_MANIFEST, entry.manifest(blob))
            return True
        except RegistryError as exc:
            self._turn_off(WRITE, exc)
            return False

    def is_off(self, direction: str) -> bool:
        """The cache is no longer used for `direction` (READ or WRITE) in this run."""
        with self._lock:
            return direction in self._off

    def _turn_off(self, direction: str, error: RegistryError) -> None:
        """Use the cache no more for `direction` (for both when it is unreachable or unreadable); say so once."""
        both = isinstance(error, RegistryUnreachable) or direction == READ
        with self._lock:
            for turned in (READ, WRITE) if both else (direction,):
                self._off.setdefault(turned, error.detail)
            first, self._noted = not self._noted, True
        what = "not used" if both else "not written to (reads go on)"
        line = f"note: registry cache {self.name} {what} for the rest of this run: {error.detail}"
        output.say(line, show=first)  # one note on the console for the run; the task logs say it each time


_caches: dict[Repository, RegistryLayerCache] = {}
_caches_lock = threading.Lock()


def for_run(location: Repository, client: RegistryClient) -> RegistryLayerCache:
    """The one RegistryLayerCache of `location` in this process (a doit run), so that its failures count once."""
    with _caches_lock:
        if location not in _caches:
            _caches[location] = RegistryLayerCache(client, location.repository)
        return _caches[location]


class LayerCacheSource:
    """The registry cache as one of the places export looks for a layer's tarball before compressing it, and
    where it stores what it compressed (`snapshot.sources.LayerSource`, with `store`).

    A gzip catalog's tarball of a gzip blob is upstream's blob as it is: nothing was compressed, so there is
    nothing to share, and upstream serves it as fast; such layers are neither fetched nor stored.
    """

    name = NAME

    def __init__(self, cache: RegistryLayerCache) -> None:
        self.cache = cache

    def fetch(self, runtime: Runtime, layer: Layer, dest: Path) -> bool:
        return _compressed_here(runtime, layer) and self.cache.fetch(Entry.of(runtime, layer), dest)

    def store(self, runtime: Runtime, layer: Layer, tarball: Path) -> bool:
        return _compressed_here(runtime, layer) and self.cache.store(Entry.of(runtime, layer), tarball)


def _compressed_here(runtime: Runtime, layer: Layer) -> bool:
    return not (runtime.compression == "gzip" and mediatypes.layer_compression(layer.media_type) == "gzip")
