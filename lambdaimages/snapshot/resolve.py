"""Resolve a runtime's upstream tag to the manifest, config and layers of one architecture."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lambdaimages import mediatypes, platforms
from lambdaimages.catalog import Runtime
from lambdaimages.errors import RegistryError
from lambdaimages.registry import credentials
from lambdaimages.registry.client import Manifest, RegistryClient, client_settings
from lambdaimages.snapshot import documents
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import Layer, State

_clients: dict[str, RegistryClient] = {}
_clients_lock = threading.Lock()


def client_for(registry: str) -> RegistryClient:
    """One client (connection pool, tokens) per registry for the whole process.

    It carries the registry's credentials (see credentials.lookup) and the retry and timeout
    settings of the environment (see registry.client_settings).
    """
    with _clients_lock:
        if registry not in _clients:
            found = credentials.lookup(registry)
            _clients[registry] = RegistryClient(
                registry,
                credentials=found.pair() if found else None,
                credentials_source=found.source if found else None,
                **client_settings(),
            )
        return _clients[registry]


@dataclass
class Poll:
    """What one run learned of a runtime's tag, shared by its architectures: each is asked at most once."""

    digest: str | None = None  # what the tag names (HEAD)
    headed: bool = False
    index: Manifest | None = None  # the tag's index or manifest (GET), when it moved

    def digest_of(self, runtime: Runtime, client: RegistryClient) -> str | None:
        if not self.headed:
            self.digest = client.manifest_digest(runtime.repository, runtime.reference, pull_only=True)
            self.headed = True
        return self.digest

    def index_of(self, runtime: Runtime, client: RegistryClient) -> Manifest:
        if self.index is None:
            self.index = client.get_manifest(runtime.repository, runtime.reference)
        return self.index


def resolve(
    runtime: Runtime,
    arch: str,
    client: RegistryClient,
    out: Path,
    previous: State | None = None,
    polled: Poll | None = None,
) -> State:
    """The upstream state of `runtime` on `arch`: digests, the whole config, layers with diff_ids.

    With the previous state of the same reference, the tag is polled with one HEAD (as `crane digest`
    does): when it still names the digest on disk, nothing else is asked. `polled` keeps that answer, and
    the tag's index when it moved, for the runtime's other architectures: a poll where nothing moved costs
    one request per tag, and the index is read once. A HEAD that fails fails the poll, as the GET would.
    Otherwise an unchanged digest is not fetched below: a digest commits to everything under it.
    The index, manifest and config bytes go to the documents cache of `out` (see snapshot.documents).
    """
    context = {"runtime": runtime.name, "arch": arch, "reference": runtime.image}
    if previous is not None and previous.reference != runtime.image:
        previous = None
    try:
        fetched: dict[str, bytes] = {}
        polled = Poll() if polled is None else polled
        if previous is not None and polled.digest_of(runtime, client) == (
            previous.index_digest or previous.manifest_digest
        ):
            documents.fetch_missing(out, previous, client)
            return previous
        state = _resolve(runtime, arch, client, previous, fetched, polled)
        for digest, data in fetched.items():
            documents.keep(out, digest, data)
        documents.fetch_missing(out, state, client)
        return state
    except RegistryError as exc:
        exc.within(**context)
        raise  # the same error, its cause kept
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Verified bytes, but not the manifest or config structure the OCI spec describes.
        detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0][:200]
        raise RegistryError(f"malformed manifest or image config: {detail}", **context) from exc


def snapshot_written(snapshot: SnapshotView) -> str | None:
    """When the states a run falls back on were written (`2026-12-07 09:40:12 UTC`), or None without them.

    A run that cannot reach upstream keeps the snapshot on disk when every architecture of the catalog entry
    has a readable state that follows the catalog's reference; the time is the newest state file's, i.e. when
    upstream last moved as this output folder saw it.
    """
    written = []
    for arch in snapshot.runtime.architectures:
        state = snapshot.state_or_none(arch)
        if state is None or state.reference != snapshot.runtime.image:
            return None
        try:
            written.append(snapshot.state_path(arch).stat().st_mtime)
        except OSError:
            return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(max(written))) if written else None


def platform_manifest(index: dict, arch: str) -> str:
    """The digest of the linux image manifest for `arch` that an index lists (the first, as engines pick).

    Raises:
        RegistryError: the index lists none (naming the platforms it offers).
    """
    platform = platforms.get(arch).oci
    entries = index.get("manifests") or []
    matches = [
        m
        for m in entries
        if (m.get("platform") or {}).get("architecture") == platform
        and (m.get("platform") or {}).get("os") == "linux"
        and mediatypes.is_manifest(m.get("mediaType", mediatypes.OCI_MANIFEST))
    ]
    if not matches:
        offered = sorted(
            f"{(m.get('platform') or {}).get('os')}/{(m.get('platform') or {}).get('architecture')}" for m in entries
        )
        raise RegistryError(f"no linux/{platform} image in the index (it offers {', '.join(offered) or 'none'})")
    return matches[0]["digest"]


def _resolve(
    runtime: Runtime, arch: str, client: RegistryClient, previous: State | None, fetched: dict[str, bytes], polled: Poll
) -> State:
    platform = platforms.get(arch).oci
    top = polled.index_of(runtime, client)  # the tag's index once per run, for all architectures
    fetched[top.digest] = top.body
    index_digest = None
    if mediatypes.is_index(top.media_type):
        index_digest = top.digest
        if previous is not None and previous.index_digest == index_digest:
            return previous
        digest = platform_manifest(top.json(), arch)
        manifest = client.get_manifest(runtime.repository, digest)
        fetched[manifest.digest] = manifest.body
    elif mediatypes.is_manifest(top.media_type):
        manifest = top
    else:
        raise RegistryError(f"unsupported manifest type {top.media_type!r}")
    body = manifest.json()
    config_digest = body["config"]["digest"]
    if previous is not None and previous.config_digest == config_digest:
        config = previous.config
    else:
        config_bytes = client.get_blob(runtime.repository, config_digest, body["config"].get("size"))
        fetched[config_digest] = config_bytes
        config = json.loads(config_bytes)
    if config.get("architecture") != platform or config.get("os", "linux") != "linux":
        raise RegistryError(
            f"wrong architecture under the tag: asked for linux/{platform}, "
            f"the image config says {config.get('os')}/{config.get('architecture')}"
        )
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
    layers = body.get("layers") or []
    if len(diff_ids) != len(layers):
        raise RegistryError(f"manifest lists {len(layers)} layers but the config has {len(diff_ids)} diff_ids")
    for layer in layers:
        if not mediatypes.is_layer(layer.get("mediaType")):
            raise RegistryError(f"layer {layer.get('digest')} has unsupported media type {layer.get('mediaType')!r}")
    return State(
        runtime=runtime.name,
        architecture=arch,
        reference=runtime.image,
        repository=runtime.repository,
        index_digest=index_digest,
        manifest_digest=manifest.digest,
        config_digest=config_digest,
        config=config,
        layers=tuple(
            Layer(digest=layer["digest"], media_type=layer["mediaType"], size=layer["size"], diff_id=diff_id)
            for layer, diff_id in zip(layers, diff_ids, strict=True)
        ),
    )
