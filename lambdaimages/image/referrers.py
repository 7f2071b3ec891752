"""Attach an architecture's SBOM to its pushed image manifest as an OCI referrer (distribution spec 1.1).

The referrer is an OCI image manifest with `artifactType` CycloneDX, the empty config, one layer (the SBOM,
byte for byte) and `subject` = the image manifest. It carries no date or other varying annotation, so the same
SBOM and manifest always give the same referrer digest, and pushing again adds nothing. A registry with the
referrers API (`GET /v2/<name>/referrers/<digest>` answers an index, or the manifest PUT answers `OCI-Subject`)
lists it by itself; on any other registry the client keeps the list, as the spec's fallback asks: an OCI image
index under the tag `sha256-<hex of the subject>`, to which the referrer is added unless it is listed already
(entries others put there are kept). The image index under the pushed tag is never touched: Lambda refuses
indexes with attestation entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lambdaimages.digest import Digest
from lambdaimages.errors import RegistryError
from lambdaimages.mediatypes import CYCLONEDX, OCI_INDEX, OCI_MANIFEST
from lambdaimages.registry.client import RegistryClient
from lambdaimages.registry.descriptor import EMPTY_BLOB, Descriptor, empty_descriptor, file_descriptor

TITLE = "org.opencontainers.image.title"
VIA_API = "referrers API"


@dataclass(frozen=True)
class Artifact:
    """A referrer to push: its manifest bytes and digest, its subject, and the blobs it lists (digest, source)."""

    manifest: bytes
    digest: str
    subject: Descriptor
    blobs: tuple[tuple[str, bytes | Path], ...]

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(OCI_MANIFEST, self.digest, len(self.manifest))


@dataclass(frozen=True)
class Attached:
    """What `attach` did: the referrer's digest, what lists it (VIA_API or the fallback tag), whether it wrote."""

    digest: str
    listed_by: str
    wrote: bool


def artifact_manifest(subject: Descriptor, sbom: Descriptor, title: str) -> bytes:
    """The referrer's manifest bytes: the same subject and SBOM always give the same bytes."""
    layer = {**sbom.json(), "annotations": {TITLE: title}}
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": CYCLONEDX,
        "config": empty_descriptor().json(),
        "layers": [layer],
        "subject": subject.json(),
    }
    return json.dumps(body, indent=3).encode()


def sbom_artifact(subject: Descriptor, sbom: Path) -> Artifact:
    """The referrer attaching the CycloneDX file `sbom` to the manifest `subject`."""
    layer = file_descriptor(CYCLONEDX, sbom)
    manifest = artifact_manifest(subject, layer, sbom.name)
    digest = Digest.of(manifest)
    return Artifact(manifest, digest, subject, ((empty_descriptor().digest, EMPTY_BLOB), (layer.digest, sbom)))


def fallback_tag(digest: str) -> str:
    """The referrers tag scheme: `<alg>-<encoded>`, alg cut to 32 and encoded to 64 characters."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm[:32]}-{encoded[:64]}"


def index_entry(artifact: Artifact) -> dict:
    """The referrer as the fallback index lists it: its descriptor and its artifactType (and annotations)."""
    entry = {**artifact.descriptor.json(), "artifactType": CYCLONEDX}
    annotations = json.loads(artifact.manifest).get("annotations")
    if annotations:
        entry["annotations"] = annotations
    return entry


def merged_index(existing: bytes | None, entry: dict, where: str) -> bytes | None:
    """The fallback index with `entry` added (a new index when there is none); None when it lists it already.

    Raises:
        RegistryError: `existing` is not an OCI image index (the tag holds something else: it is not replaced).
    """
    if existing is None:
        body: dict = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    else:
        try:
            body = json.loads(existing)
        except ValueError:
            body = None
        if (
            not isinstance(body, dict)
            or body.get("mediaType", OCI_INDEX) != OCI_INDEX
            or not isinstance(body.get("manifests", []), list)
        ):
            raise RegistryError(f"{where} holds something other than an OCI image index of referrers: not replaced")
    manifests = body.get("manifests", [])
    if any(isinstance(m, dict) and m.get("digest") == entry["digest"] for m in manifests):
        return None
    body["manifests"] = [*manifests, entry]
    return json.dumps(body, indent=3).encode()


def attach(client: RegistryClient, repository: str, artifact: Artifact) -> Attached:
    """Push the referrer's manifest (its blobs are pushed already) and make the registry list it.

    Raises:
        RegistryError: the registry refused or failed, or the fallback tag holds something else.
    """
    subject = artifact.subject.digest
    api = client.referrers(repository, subject) is not None
    wrote = False
    if client.manifest_digest(repository, artifact.digest) != artifact.digest:
        answered = client.push_artifact(repository, artifact.digest, OCI_MANIFEST, artifact.manifest)
        api = api or answered == subject
        wrote = True
    if api:
        return Attached(artifact.digest, VIA_API, wrote)
    tag = fallback_tag(subject)
    existing = client.find_manifest(repository, tag)
    where = f"{client.name}/{repository}:{tag}"
    index = merged_index(existing.body if existing else None, index_entry(artifact), where)
    if index is not None:
        client.push_manifest(repository, tag, OCI_INDEX, index)
        wrote = True
    return Attached(artifact.digest, tag, wrote)
