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
import re
import sqlite3
import struct
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lambdaimages.tools.tree import CHUNK, Entry, merge_layers

TEXT_LIMIT = 1 << 20  # version files are small; a bigger one is not read
DATABASE_LIMIT = 256 << 20

# Files whose content names a version, by path in the image (no leading slash).
TEXT_FILES = re.compile(
    r"^(?:etc/os-release|usr/lib/os-release|etc/system-release|var/lang/version|var/lang/release"
    r"|var/lang/include/python[0-9][^/]*/patchlevel\.h|var/lang/include/node/node_version\.h"
    r"|var/lang/lib/ruby/[^/]+/[^/]+/rbconfig\.rb)$"
)
RPMDB = "var/lib/rpm/rpmdb.sqlite"
DPKG_STATUS = "var/lib/dpkg/status"
DOTNET_RE = re.compile(r"^var/lang/(?:.+/)?shared/Microsoft\.NETCore\.App/([0-9][^/]*)$")


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
    result: dict[str, str] = {}
    os_release = found.text("etc/os-release") or found.text("usr/lib/os-release")
    if os_release:
        fields = dict(_os_release_fields(os_release))
        name = fields.get("PRETTY_NAME") or " ".join(filter(None, (fields.get("NAME"), fields.get("VERSION_ID"))))
        if name:
            result["os"] = name
    system_release = found.text("etc/system-release")
    if system_release and system_release.strip() and "os" not in result:
        result["os"] = system_release.strip().splitlines()[0]
    for path in found.tree:
        if not path.startswith("var/lang/"):
            continue
        text = found.text(path) if TEXT_FILES.match(path) else None
        if text is None:
            if match := DOTNET_RE.match(path):
                result["dotnet"] = " ".join(filter(None, (result.get("dotnet"), match[1])))
            continue
        if path.endswith("patchlevel.h") and (match := re.search(r'#define\s+PY_VERSION\s+"([^"]+)"', text)):
            result["python"] = match[1]
        elif path.endswith("node_version.h"):
            parts = [re.search(rf"#define\s+NODE_{p}_VERSION\s+(\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
            if all(parts):
                result["node"] = ".".join(m[1] for m in parts)
        elif path.endswith("rbconfig.rb") and (match := re.search(r'"RUBY_PROGRAM_VERSION"\]\s*=\s*"([^"]+)"', text)):
            result["ruby"] = match[1]
        elif path == "var/lang/release" and (match := re.search(r'^JAVA_VERSION="?([^"\n]+)"?', text, re.M)):
            result["java"] = match[1]
        elif path == "var/lang/version" and text.strip():
            result["runtime"] = text.strip().splitlines()[0]
    return dict(sorted(result.items()))


def packages(found: Scan) -> dict[str, str] | None:
    """name -> version of the packages the image's package database lists (rpm sqlite or dpkg), or None."""
    for path in (RPMDB, DPKG_STATUS):
        entry = found.resolve(path)
        if entry is not None and isinstance(found.contents.get(entry.sha256), dict):
            return found.contents[entry.sha256]
    return None


def _os_release_fields(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            yield key.strip(), value.strip().strip("\"'")


def _dpkg_packages(text: str) -> dict[str, str]:
    result = {}
    for paragraph in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", paragraph, re.M))
        if "Package" in fields and "Version" in fields and fields.get("Status", "installed").endswith("installed"):
            name = fields["Package"]
            if fields.get("Architecture") not in (None, "all", ""):
                name = f"{name}:{fields['Architecture']}" if name in result else name
            result[name] = fields["Version"]
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
    try:
        connection = sqlite3.connect(f"file:{database}?immutable=1", uri=True)
        try:
            rows = connection.execute("SELECT blob FROM Packages").fetchall()
        finally:
            connection.close()
    except sqlite3.Error:
        return None
    found: dict[str, list[tuple[str, str]]] = {}
    for (blob,) in rows:
        header = _rpm_header(bytes(blob))
        if header is None or "name" not in header:
            continue
        version = f"{header.get('version', '?')}-{header.get('release', '?')}"
        if header.get("epoch"):
            version = f"{header['epoch']}:{version}"
        found.setdefault(header["name"], []).append((header.get("arch", ""), version))
    result = {}
    for name, items in found.items():
        if len(items) == 1:
            result[name] = items[0][1]
        else:
            for arch, version in items:
                result[f"{name}.{arch}"] = version
    return dict(sorted(result.items()))


RPM_TAGS = {1000: "name", 1001: "version", 1002: "release", 1003: "epoch", 1022: "arch"}


def _rpm_header(blob: bytes) -> dict[str, str] | None:
    """The few tags we need of an rpm header blob: index count, data length, 16-byte index entries, data."""
    try:
        count, length = struct.unpack_from(">II", blob, 0)
        data = blob[8 + 16 * count :]
        if len(data) < length:
            return None
        result = {}
        for number in range(count):
            tag, kind, offset, _ = struct.unpack_from(">iiii", blob, 8 + 16 * number)
            if tag not in RPM_TAGS:
                continue
            if kind == 4:  # INT32
                result[RPM_TAGS[tag]] = str(struct.unpack_from(">i", data, offset)[0])
            elif kind in (6, 8, 9):  # STRING, STRING_ARRAY, I18NSTRING: NUL-terminated
                result[RPM_TAGS[tag]] = data[offset : data.index(b"\0", offset)].decode("utf-8", "replace")
        return result
    except (struct.error, ValueError):
        return None
