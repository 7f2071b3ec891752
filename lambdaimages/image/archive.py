"""Docker-archives: one streamed from upstream's config and the layer tarballs on disk (what `docker load` reads),
and the images a saved archive holds (`docker save`'s, or an OCI layout in a tar), read back."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from lambdaimages.errors import ImageError

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


# -- reading a saved archive -----------------------------------------------------------------------

MAX_DOCUMENT = 16 << 20  # a manifest or config bigger than this is not one


def saved_images(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(name, diff_ids) of every image a saved archive holds, in its order; the layers themselves are not read.

    A `docker save` archive names its images in `manifest.json` (`RepoTags`, else the config file), whose configs
    list the diff_ids; an OCI layout (`index.json`, `blobs/sha256/...`, as `docker save` of newer engines and
    skopeo write) names them by `org.opencontainers.image.ref.name`, else by manifest digest. The tar may be
    gzip- or xz-compressed.

    Raises:
        ImageError: the file cannot be read, or is neither kind of archive.
    """
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {_member_name(m.name): m for m in tar.getmembers() if m.isfile()}

            def document(name: str) -> object:
                member = members.get(_member_name(name))
                if member is None or member.size > MAX_DOCUMENT:
                    raise ImageError(f"{path}: {name} is missing or too big")
                try:
                    return json.loads(tar.extractfile(member).read())
                except ValueError:
                    raise ImageError(f"{path}: {name} is not JSON") from None

            if "manifest.json" in members:
                return [_docker_image(path, entry, document) for entry in _list(document("manifest.json"))]
            if "index.json" in members:
                return _oci_images(path, document("index.json"), document)
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ImageError(f"{path}: not a readable image archive ({exc})") from None
    raise ImageError(f"{path}: neither manifest.json (docker save) nor index.json (OCI layout) in it")


def _member_name(name: str) -> str:
    return name.removeprefix("./")


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _diff_ids(path: Path, config: object, where: str) -> tuple[str, ...]:
    diff_ids = (config.get("rootfs") or {}).get("diff_ids") if isinstance(config, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise ImageError(f"{path}: {where} has no rootfs.diff_ids")
    return tuple(diff_ids)


def _docker_image(path: Path, entry: object, document) -> tuple[str, tuple[str, ...]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
        raise ImageError(f"{path}: manifest.json entry without Config")
    tags = [tag for tag in _list(entry.get("RepoTags")) if isinstance(tag, str)]
    name = tags[0] if tags else entry["Config"]
    return name, _diff_ids(path, document(entry["Config"]), entry["Config"])


def _oci_images(path: Path, index: object, document, depth: int = 0) -> list[tuple[str, tuple[str, ...]]]:
    found = []
    manifests = _list(index.get("manifests")) if isinstance(index, dict) else []
    for descriptor in manifests:
        digest = descriptor.get("digest") if isinstance(descriptor, dict) else None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            continue
        body = document(f"blobs/sha256/{digest.removeprefix('sha256:')}")
        if isinstance(body, dict) and "manifests" in body and depth < 2:  # an index inside the index
            found += _oci_images(path, body, document, depth + 1)
            continue
        config = (body.get("config") or {}).get("digest") if isinstance(body, dict) else None
        if not isinstance(config, str):
            continue
        annotations = descriptor.get("annotations") or {}
        name = annotations.get("io.containerd.image.name") or annotations.get("org.opencontainers.image.ref.name")
        config_body = document(f"blobs/sha256/{config.removeprefix('sha256:')}")
        found.append((name or digest, _diff_ids(path, config_body, digest)))
    return found
