"""What the layers hold that names versions: streamed, never extracted, each tarball decompressed once and read by
two tar parsers at the same time, `tree.merge_layers` (the merged filesystem) and one that keeps the few small files
that name versions and package databases (os-release, language runtimes, rpm sqlite, dpkg status).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import lzma
import os
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lambdaimages.inventory import dpkg, rpmdb
from lambdaimages.inventory.versions import TEXT_FILES, runtime_versions
from lambdaimages.tools.tree import CHUNK, Entry, merge_layers

TEXT_LIMIT = 1 << 20  # version files are small; a bigger one is not read
DATABASE_LIMIT = 256 << 20

RPMDB = "var/lib/rpm/rpmdb.sqlite"
DPKG_STATUS = dpkg.STATUS


# -- reading layers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scan:
    """The merged filesystem of a snapshot's layers, and the version files found in it (by content sha256)."""

    tree: dict[str, Entry]
    contents: dict[str, object] = field(hash=False)

    def text(self, path: str) -> str | None:
        entry = self.resolve(path)
        value = self.contents.get(entry.sha256) if entry else None
        return value if isinstance(value, str) else None

    def resolve(self, path: str, hops: int = 16) -> Entry | None:
        """The entry at `path`, symlinks followed inside the tree (as the image itself would)."""
        entry = self.tree.get(path)
        while entry is not None and entry.type == "symlink" and hops:
            base = "" if entry.linkname.startswith("/") else os.path.dirname(path)
            path = os.path.normpath(os.path.join(base, entry.linkname)).lstrip("/")
            entry, hops = self.tree.get(path), hops - 1
        return entry if entry is not None and entry.type == "file" else None


def scan(tarballs: list[Path]) -> Scan:
    """Merge layer tarballs (xz, gzip or plain), lowest first, keeping the content of version files.

    Raises:
        ValueError: a tarball is not a readable layer.
    """
    contents: dict[str, object] = {}

    def streams() -> Iterator[BinaryIO]:
        for path in tarballs:
            with _tee(Path(path), contents) as stream:
                yield stream

    with contextlib.closing(streams()) as layers:
        tree = merge_layers(layers)
    return Scan(tree, contents)


class _TeeReader:
    """Reads the decompressed layer for `merge_layers` and copies every byte to the version-file parser."""

    def __init__(self, source: BinaryIO, sink: BinaryIO, name: str) -> None:
        self.source, self.sink, self.name = source, sink, name

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        if data:
            self.sink.write(data)
        return data


@contextlib.contextmanager
def _tee(path: Path, contents: dict[str, object]) -> Iterator[_TeeReader]:
    source = _open_decompressed(path)
    read_fd, write_fd = os.pipe()
    sink = os.fdopen(write_fd, "wb")
    failure: list[BaseException] = []
    worker = threading.Thread(target=_collect, args=(os.fdopen(read_fd, "rb"), contents, failure), daemon=True)
    worker.start()
    try:
        yield _TeeReader(source, sink, str(path))
        # merge_layers stops at the end-of-archive blocks; the other parser gets the rest as well.
        while chunk := source.read(CHUNK):
            sink.write(chunk)
    finally:
        with contextlib.suppress(BrokenPipeError):
            sink.close()
        worker.join()
        source.close()
    if failure:
        raise ValueError(f"{path}: not a readable layer tar: {failure[0]}")


def _open_decompressed(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _collect(stream: BinaryIO, contents: dict[str, object], failure: list[BaseException]) -> None:
    """The version-file parser: runs in its own thread, always reads its pipe to the end."""
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            while (member := archive.next()) is not None:
                archive.members.clear()
                path = os.path.normpath(member.name.lstrip("/")).lstrip("/")
                if not member.isreg():
                    continue
                if TEXT_FILES.match(path) and member.size <= TEXT_LIMIT:
                    data = archive.extractfile(member).read()
                    contents[hashlib.sha256(data).hexdigest()] = data.decode("utf-8", "replace")
                elif path == DPKG_STATUS and member.size <= DATABASE_LIMIT:
                    data = archive.extractfile(member).read()
                    contents[hashlib.sha256(data).hexdigest()] = _dpkg_packages(data.decode("utf-8", "replace"))
                elif path == RPMDB and member.size <= DATABASE_LIMIT:
                    digest, packages = _rpm_packages_from(archive.extractfile(member))
                    contents[digest] = packages
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        failure.append(error)
    finally:
        while stream.read(CHUNK):
            pass
        stream.close()


# -- versions and packages ------------------------------------------------------------------------


def versions(found: Scan) -> dict[str, str]:
    """Version strings read from well-known places of the image, by what they name."""
    return runtime_versions(found.tree, found.text)


def packages(found: Scan) -> dict[str, str] | None:
    """name -> version of the packages the image's package database lists (rpm sqlite or dpkg), or None."""
    for path in (RPMDB, DPKG_STATUS):
        entry = found.resolve(path)
        if entry is not None and isinstance(found.contents.get(entry.sha256), dict):
            return found.contents[entry.sha256]
    return None


def _dpkg_packages(text: str) -> dict[str, str]:
    result = {}
    for package in dpkg.status_packages(text):
        name = package.name
        if package.arch not in ("all", ""):
            name = f"{name}:{package.arch}" if name in result else name
        result[name] = package.version
    return dict(sorted(result.items()))


def _rpm_packages_from(stream: BinaryIO) -> tuple[str, dict[str, str] | None]:
    # sqlite reads a file, not a stream: the database alone goes through a temp file, deleted at once.
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(prefix="rpmdb-", suffix=".sqlite") as spool:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            spool.write(chunk)
        spool.flush()
        return digest.hexdigest(), rpm_packages(Path(spool.name))


def rpm_packages(database: Path) -> dict[str, str] | None:
    """name -> [epoch:]version-release of an rpm sqlite database (`Packages` table of rpm header blobs)."""
    found = rpmdb.read_sqlite(database, RPMDB)
    if found.notes and not found.packages:
        return None
    archs: dict[str, int] = {}
    for package in found.packages:
        archs[package.name] = archs.get(package.name, 0) + 1
    result = {f"{p.name}.{p.arch}" if archs[p.name] > 1 else p.name: p.full_version for p in found.packages}
    return dict(sorted(result.items()))
