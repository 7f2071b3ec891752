"""The shared layer cache: each layer's tarball once per codec, named by diff_id, linked into snapshots from here.

`<out>/.cache/<codec>/<hex>.<extension>` with a `<name>.json` record beside it (what the writer left, so an
entry replaced or edited in place since is not taken); `push-gzip` holds the gzip blobs a push re-encoded from
xz tarballs. A tarball removed from a snapshot stays here, for the previous snapshot's changelog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.state import Layer

PUSH_GZIP = "push-gzip"


def codec_name(runtime: Runtime) -> str:
    """The cache folder of a runtime's tarballs: codec and level (`xz6`), or `gzip` (upstream's blobs)."""
    return f"xz{runtime.level}" if runtime.compression == "xz" else "gzip"


@dataclass(frozen=True)
class LayerCache:
    """The layer cache of an output folder, as paths (a value: it opens nothing)."""

    out: Path

    def folder(self, codec: str) -> Path:
        return layout.cache_dir(self.out, codec)

    def tarball(self, runtime: Runtime, layer: Layer) -> Path:
        """Where the cache keeps `layer` in `runtime`'s codec."""
        return self.folder(codec_name(runtime)) / layer.tarball(runtime.extension)

    def push_gzip(self, diff_id: str) -> Path:
        """Where a push keeps the gzip blob it re-encoded from the layer's xz tarball."""
        return self.folder(PUSH_GZIP) / layout.tarball_name(diff_id, "tar.gz")

    @staticmethod
    def record(entry: Path) -> Path:
        """The record written beside a cache entry once it is complete."""
        return entry.with_name(entry.name + ".json")

    def find(self, hex_digest: str) -> Path | None:
        """A tarball of the layer `hex_digest`, whatever its codec (the first by codec name), or None."""
        for path in sorted(Path(self.out, layout.CACHE).glob(f"*/{hex_digest}.tar.*")):
            if layout.split_tarball_name(path.name) is not None:
                return path
        return None
