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
    """The archive's bytes in chunks: each layer file as it is on disk, the config, then manifest.json.

    `docker load` reads the whole archive before it looks at manifest.json, so the order of members is free.
    It decompresses each layer file itself (xz or gzip), checks it against the config's diff_ids, and gives
    the image the ID `sha256:` of the config's bytes: upstream's config digest. The layers are read from disk
    as they are streamed, never copied.

    Args:
        config: the image config's bytes, exactly upstream's.
        config_name: its member name (e.g. `<hex>.json`).
        layers: the layer tarballs in layer order.
        tags: the tags the engine gives the loaded image.
    """
    names = [f"{number}/{path.name}" for number, path in enumerate(layers, 1)]
    for name, path in zip(names, layers, strict=True):
        yield from file_member(name, path)
    yield from archive_end(config, config_name, names, tags)


def file_member(name: str, path: Path) -> Iterator[bytes]:
    """One member with a file's bytes, streamed from disk."""
    with open(path, "rb") as f:
        size = f.seek(0, io.SEEK_END)
        f.seek(0)
        yield member_header(name, size)
        sent = 0
        while sent < size:
            chunk = f.read(min(CHUNK, size - sent))
            if not chunk:
                raise OSError(f"{path}: shrank while being loaded")
            sent += len(chunk)
            yield chunk
        yield padding(size)


def archive_end(config: bytes, config_name: str, layer_names: list[str], tags: list[str]) -> Iterator[bytes]:
    """The config, manifest.json (naming the layer members in layer order) and the end of the archive."""
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]).encode()
    yield member_header(config_name, len(config)) + config + padding(len(config))
    yield member_header("manifest.json", len(manifest)) + manifest + padding(len(manifest))
    yield b"\0" * (2 * BLOCK)


def member_header(name: str, size: int) -> bytes:
    """The ustar header of a regular file member."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info.tobuf(tarfile.USTAR_FORMAT)


def padding(size: int) -> bytes:
    """The zeros that round a member of `size` bytes up to whole blocks."""
    return b"\0" * (-size % BLOCK)
