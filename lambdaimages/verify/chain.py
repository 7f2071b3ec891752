"""The offline chain from upstream's manifest digest to the tarballs, checked on the files of one architecture.

The manifest's bytes hash to the digest upstream shows (registry, ECR console, `imagetools inspect`); the
manifest names the config's digest; the config's bytes hash to it and list the diff_ids; the tarballs are
named by them, in that order. Every link is checked on the files themselves: no registry is asked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lambdaimages import layout
from lambdaimages.digest import Digest
from lambdaimages.snapshot.view import SnapshotView


@dataclass
class Chain:
    """Where the chain of one architecture led: the config (if reached), its diff_ids, and what was wrong."""

    manifest_digest: str
    config_digest: str | None = None
    config: dict | None = None
    diff_ids: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def follow(snapshot: SnapshotView, arch: str, manifest_digest: str) -> Chain:
    """Follow the chain in the folder of `arch` from `manifest_digest`; problems name files as `<arch>/<name>`."""
    chain = Chain(manifest_digest)
    label = f"{arch}/"
    manifest = _read(snapshot, arch, manifest_digest, "manifest", chain)
    if manifest is None:
        return chain
    try:
        chain.config_digest = manifest["config"]["digest"]
        manifest_layers = list(manifest["layers"])
    except (KeyError, TypeError):
        name = snapshot.document(arch, manifest_digest, "manifest").name
        chain.problems.append(f"{label}{name}: not an image manifest")
        return chain
    config = _read(snapshot, arch, chain.config_digest, "config", chain)
    if config is None:
        return chain
    chain.config = config
    config_name = snapshot.document(arch, chain.config_digest, "config").name
    chain.diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(chain.diff_ids) != len(manifest_layers):
        chain.problems.append(
            f"{label}{config_name}: {len(chain.diff_ids)} diff_ids, "
            f"but the manifest lists {len(manifest_layers)} layers"
        )
    wanted = {snapshot.document(arch, manifest_digest, "manifest").name, config_name}
    for stray in sorted(snapshot.arch_folder(arch).glob(layout.DOCUMENT_GLOB)):
        if stray.name not in wanted and layout.split_document_name(stray.name) is not None:
            chain.problems.append(f"{label}{stray.name}: not part of upstream's image {manifest_digest}")
    return chain


def _read(snapshot: SnapshotView, arch: str, digest: str, kind: str, chain: Chain) -> dict | None:
    path = snapshot.document(arch, digest, kind)
    label, name = f"{arch}/", path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        chain.problems.append(f"{label}{name}: missing (upstream's {kind} {digest})")
        return None
    except OSError as exc:
        chain.problems.append(f"{label}{name}: cannot be read: {exc.strerror}")
        return None
    actual = Digest.of(data)
    if actual != digest:
        chain.problems.append(f"{label}{name}: hashes to {actual}, not to its name (upstream's {kind} digest)")
        return None
    try:
        found = json.loads(data)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        chain.problems.append(f"{label}{name}: not JSON")
        return None
    return found
