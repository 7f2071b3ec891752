"""Push a snapshot to a registry as one multi-arch image: every architecture, then the index under the tag.

The config is upstream's bytes, so every config digest equals upstream's. With `compression: gzip` the layer
tarballs are upstream's blobs as they were, so the manifests are upstream's bytes too (same digests), and so is
the index when every platform of upstream's index is pushed. With `compression: xz` (which registries and
Lambda do not take as a layer type) each layer is re-encoded once as gzip (kept in the cache for the next
push) and the manifests list those blobs. A blob the registry has is not sent again (HEAD first; a blob
pushed earlier to another repository of the same registry is mounted). Each architecture's SBOM is attached
to its manifest as an OCI referrer (`image.referrers`), never as an entry of the index. The index goes last, so
the tag never names a half-pushed image.
"""

from __future__ import annotations

import json
import lzma
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest, Verifier, is_sha256
from lambdaimages.errors import UsageError
from lambdaimages.image import referrers
from lambdaimages.mediatypes import OCI_INDEX, OCI_MANIFEST, gzip_layer_for, index_for
from lambdaimages.reference import Reference
from lambdaimages.registry.client import RegistryClient
from lambdaimages.registry.descriptor import Descriptor
from lambdaimages.snapshot import documents
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.files import atomic_file

CHUNK = 1 << 20
GZIP_LEVEL = 6
PUSH_RECORDS = ".push"


@dataclass(frozen=True)
class Target:
    """Where to push: a registry (as the catalog writes registries), a repository and a tag."""

    registry: str
    repository: str
    tag: str

    @property
    def reference(self) -> Reference:
        return Reference(self.registry, self.repository, tag=self.tag)

    def __str__(self) -> str:
        return str(self.reference)


def parse_target(text: str, runtime: Runtime, *, mirror: bool = False) -> Target:
    """Where `text` says to push `runtime`.

    `[http://]HOST[:PORT]/REPO[:TAG]` names one image (without a tag: upstream's tag). With `mirror` (the
    catalog's `push: {to: ...}`), `text` is `[http://]HOST[:PORT][/PREFIX]` and the image is
    `PREFIX/<upstream repository>:<upstream tag>`, one per runtime.

    Raises:
        UsageError: not of that form, or a repository name or tag the distribution spec does not allow.
    """
    upstream_tag = runtime.reference if not is_sha256(runtime.reference) else "latest"
    image = text
    if mirror:
        if not text.removeprefix("http://").removeprefix("https://").partition("/")[0]:
            raise UsageError(f"push target {text!r}: expected HOST[:PORT][/PREFIX]", runtime=runtime.name)
        image = f"{text.rstrip('/')}/{runtime.repository}:{upstream_tag}"
    try:
        found = Reference.parse(image, default_tag=upstream_tag)
    except ValueError as exc:
        raise UsageError(f"push target {text!r}: {exc}", runtime=runtime.name) from None
    if found.digest is not None:
        raise UsageError(f"push target {text!r}: name a tag to push under, not a digest", runtime=runtime.name)
    return Target(found.registry, found.repository, found.tag)


@dataclass
class Pushed:
    """What a push did: the index digest under the tag, each manifest digest, and how many blobs moved."""

    target: Target
    index_digest: str = ""
    manifests: dict[str, str] = field(default_factory=dict)
    uploaded: int = 0
    uploaded_bytes: int = 0
    mounted: int = 0
    present: int = 0
    index_is_upstreams: bool = False
    sboms: dict[str, referrers.Attached] = field(default_factory=dict)  # arch -> the referrer of its SBOM


def push(out: Path, runtime: Runtime, target: Target, client: RegistryClient, *, sbom: bool = True) -> Pushed:
    """Push every architecture of the snapshot (with its SBOM as a referrer unless not `sbom`), then the index
    under `target.tag`.

    Raises:
        OutputError: the snapshot lacks a file (run `doit snapshot:<rt>`).
        RegistryError: the registry refused or failed (after retries).
    """
    pushed = Pushed(target)
    records = _Records(out, client.name)
    entries = []
    snapshot = SnapshotView(out, runtime)
    states = snapshot.states()
    if sbom:
        snapshot.require(snapshot.sbom(arch) for arch in states)
    for arch, state in states.items():
        manifest, media_type, blobs = _manifest_and_blobs(out, runtime, state)
        for digest, path in blobs:
            _push_blob(client, target.repository, digest, path, records, pushed)
        digest = Digest.of(manifest)
        if client.manifest_digest(target.repository, digest) != digest:
            client.push_manifest(target.repository, digest, media_type, manifest)
        pushed.manifests[arch] = digest
        entries.append((state, digest, media_type, len(manifest)))
        if sbom:
            subject = Descriptor(media_type, digest, len(manifest))
            artifact = referrers.sbom_artifact(subject, snapshot.sbom(arch))
            for blob_digest, source in artifact.blobs:
                _push_blob(client, target.repository, blob_digest, source, records, pushed)
            pushed.sboms[arch] = referrers.attach(client, target.repository, artifact)
    records.save()
    index, index_type, pushed.index_is_upstreams = _index(out, runtime, states, entries)
    pushed.index_digest = Digest.of(index)
    if client.manifest_digest(target.repository, target.tag) != pushed.index_digest:
        client.push_manifest(target.repository, target.tag, index_type, index)
    return pushed


def _manifest_and_blobs(out: Path, runtime: Runtime, state: State) -> tuple[bytes, str, list[tuple[str, Path]]]:
    """The manifest to push (bytes, media type) and its blobs (digest, file), the config first."""
    snapshot = SnapshotView(out, runtime)
    manifest_path, config_path = snapshot.manifest_file(state), snapshot.config_file(state)
    tarballs = snapshot.tarballs(state)
    snapshot.require([manifest_path, config_path, *tarballs])
    upstream = manifest_path.read_bytes()
    body = json.loads(upstream)
    media_type = body.get("mediaType") or OCI_MANIFEST
    blobs = [(state.config_digest, config_path)]
    if runtime.compression == "gzip":
        # The tarballs are upstream's gzip blobs byte for byte (export stores them as they came).
        return (
            upstream,
            media_type,
            blobs + [(layer.digest, p) for layer, p in zip(state.layers, tarballs, strict=True)],
        )
    layers = []
    for layer, tarball in zip(state.layers, tarballs, strict=True):
        digest, size, path = gzip_for_push(out, layer.diff_id, tarball)
        layers.append({"mediaType": gzip_layer_for(media_type), "size": size, "digest": digest})
        blobs.append((digest, path))
    body["layers"] = layers
    return json.dumps(body, indent=3).encode(), media_type, blobs


def gzip_for_push(out: Path, diff_id: str, tarball: Path) -> tuple[str, int, Path]:
    """The layer as a gzip blob (digest, size, file), re-encoded from its xz tarball once and cached.

    gzip level 6 without a name or time in its header, so the same layer always gives the same blob.
    """
    path = LayerCache(out).push_gzip(diff_id)
    record = LayerCache.record(path)
    try:
        data = json.loads(record.read_bytes())
        if path.stat().st_size == data["size"]:
            return data["digest"], data["size"], path
    except (OSError, ValueError, KeyError):
        pass
    blob = Verifier(what=str(path))
    with lzma.open(tarball) as source, atomic_file(path) as dest:
        gz = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
        while True:
            chunk = source.read(CHUNK)
            piece = gz.compress(chunk) if chunk else gz.flush()
            dest.write(blob.update(piece))
            if not chunk:
                break
    digest, size = blob.finish(), blob.received
    with atomic_file(record) as f:
        f.write(json.dumps({"digest": digest, "size": size}).encode())
    return digest, size, path


def _push_blob(
    client: RegistryClient, repository: str, digest: str, blob: Path | bytes, records, pushed: Pushed
) -> None:
    if client.has_blob(repository, digest):
        pushed.present += 1
    elif (source := records.repository_of(digest, repository)) and client.mount_blob(repository, digest, source):
        pushed.mounted += 1
    else:
        size = len(blob) if isinstance(blob, bytes) else blob.stat().st_size
        client.upload_blob(repository, digest, size, blob)
        pushed.uploaded += 1
        pushed.uploaded_bytes += size
    records.add(digest, repository)


def _index(out: Path, runtime: Runtime, states: dict[str, State], entries: list) -> tuple[bytes, str, bool]:
    """Upstream's index bytes when they list exactly the manifests pushed, else an index of those manifests."""
    pushed = {digest for _, digest, _, _ in entries}
    first = next(iter(states.values()))
    upstream_entries = []
    if first.index_digest and (path := documents.cached(out, first.index_digest)) is not None:
        data = path.read_bytes()
        upstream = json.loads(data)
        upstream_entries = upstream.get("manifests") or []
        if {entry.get("digest") for entry in upstream_entries} == pushed:
            return data, upstream.get("mediaType") or OCI_INDEX, True
    platforms = {entry.get("digest"): entry.get("platform") for entry in upstream_entries}
    manifests = []
    for state, digest, media_type, size in entries:
        platform = platforms.get(state.manifest_digest) or {
            "architecture": state.config.get("architecture"),
            "os": state.config.get("os", "linux"),
        }
        manifests.append({"mediaType": media_type, "digest": digest, "size": size, "platform": platform})
    index_type = index_for(entries[0][2])
    body = {"schemaVersion": 2, "mediaType": index_type, "manifests": manifests}
    return json.dumps(body, indent=3).encode(), index_type, False


class _Records:
    """Which repository of a registry each blob was pushed to, so another repository can mount it."""

    def __init__(self, out: Path, registry: str) -> None:
        safe = registry.replace("/", "_").replace(":", "_")
        self.path = Path(out) / PUSH_RECORDS / f"{safe}.json"
        try:
            self.blobs: dict[str, str] = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            self.blobs = {}
        self.changed = False

    def repository_of(self, digest: str, other_than: str) -> str | None:
        found = self.blobs.get(digest)
        return found if found and found != other_than else None

    def add(self, digest: str, repository: str) -> None:
        if self.blobs.get(digest) is None:
            self.blobs[digest] = repository
            self.changed = True

    def save(self) -> None:
        if self.changed:
            with atomic_file(self.path) as f:
                f.write(json.dumps(self.blobs, indent=1, sort_keys=True).encode())
