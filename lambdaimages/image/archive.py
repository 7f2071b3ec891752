"""A docker-archive (what `docker load` reads) streamed from upstream's config and the layer tarballs on disk."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

CHUNK = 1 << 20
BLOCK = 512


def docker_archive(config: bytes, config_name: str, layers: list[Path], tags: list[str]) -> Iterator[bytes]:
    """The archive's bytes in chunks: manifest.json, the config, then each layer file as it is on disk.

    `docker load` decompresses each layer file itself (xz or gzip), checks it against the config's diff_ids,
    and gives the image the ID `sha256:` of the config's bytes: upstream's config digest. The layers are
    read from disk as they are streamed, never copied.

    Args:
        config: the image config's bytes, exactly upstream's.
        config_name: its member name (e.g. `<hex>.json`).
        layers: the layer tarballs in layer order.
        tags: the tags the engine gives the loaded image.
    """
    names = [f"{number}/{path.name}" for number, path in enumerate(layers, 1)]
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": names}]).encode()
    yield _member("manifest.json", len(manifest)) + _padded(manifest)
    yield _member(config_name, len(config)) + _padded(config)
    for name, path in zip(names, layers, strict=True):
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            yield _member(name, size)
            sent = 0
            while sent < size:
                chunk = f.read(min(CHUNK, size - sent))
                if not chunk:
                    raise OSError(f"{path}: shrank while being loaded")
                sent += len(chunk)
                yield chunk
            yield b"\0" * (-size % BLOCK)
    yield b"\0" * (2 * BLOCK)


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(tarfile.USTAR_FORMAT)


def _padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)
