"""Upstream's index, manifest and config, byte for byte: kept by resolve, placed beside the tarballs by export.

They anchor a chain anyone can check offline: the manifest's bytes hash to the digest upstream shows, the
manifest names the config's digest, the config's bytes hash to it and list the diff_ids, which name the
tarballs. Every file is named by its own digest (`layout.document_name`), like the tarballs.
"""

from __future__ import annotations

from pathlib import Path

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.digest import Digest, verify
from lambdaimages.registry.client import RegistryClient
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.files import atomic_file, link_or_copy


def keep(out: Path, digest: str, data: bytes) -> None:
    """Put verified bytes into the documents cache (once: the name commits to the content)."""
    verify(data, digest, f"document {digest}")
    path = layout.documents_cache(out) / Digest(digest).hex
    if not path.is_file():
        with atomic_file(path) as f:
            f.write(data)


def cached(out: Path, digest: str) -> Path | None:
    """The cached bytes of an upstream document, or None when resolve has not kept them."""
    path = layout.documents_cache(out) / Digest(digest).hex
    return path if path.is_file() else None


def find(out: Path, digest: str) -> bytes | None:
    """Upstream's document `digest`, verified, from what `out` holds offline: the documents cache, else any
    snapshot folder (`<rt>/<hex>.index.json`, `<rt>/<arch>/<hex>.<kind>.json`); None when neither has it.

    Raises:
        DigestMismatch: a file named by `digest` holds other bytes.
    """
    hex_digest = Digest(digest).hex
    found = [cached(out, digest)] if cached(out, digest) is not None else []
    for pattern in (f"*/{hex_digest}.*.json", f"*/*/{hex_digest}.*.json"):
        found += [path for path in sorted(Path(out).glob(pattern)) if layout.split_document_name(path.name)]
    if not found:
        return None
    data = found[0].read_bytes()
    verify(data, digest, str(found[0]))
    return data


def fetch_missing(out: Path, state: State, client: RegistryClient) -> None:
    """Fetch (by digest, verified) what the cache lacks of a state's manifest and config.

    States resolved before documents were kept gain them this way; their layers are not fetched again.
    """
    if cached(out, state.manifest_digest) is None:
        keep(out, state.manifest_digest, client.get_manifest(state.repository, state.manifest_digest).body)
    if cached(out, state.config_digest) is None:
        keep(out, state.config_digest, client.get_blob(state.repository, state.config_digest))
    if state.index_digest and cached(out, state.index_digest) is None:
        keep(out, state.index_digest, client.get_manifest(state.repository, state.index_digest).body)


def place(out: Path, runtime: Runtime, states: dict[str, State]) -> list[Path]:
    """Link every state's documents from the cache into the snapshot; drop the documents of older snapshots."""
    snapshot = SnapshotView(out, runtime)
    wanted = []
    for state in states.values():
        for path in snapshot.documents(state):
            hex_digest = layout.split_document_name(path.name)[0]
            link_or_copy(layout.documents_cache(out) / hex_digest, path)
            wanted.append(path)
    folders = [snapshot.folder, *(snapshot.arch_folder(a) for a in states)]
    for folder in folders:
        for stale in folder.glob(layout.DOCUMENT_GLOB):
            if layout.split_document_name(stale.name) is not None and stale not in wanted:
                stale.unlink()
    return wanted
