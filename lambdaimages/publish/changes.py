"""What changed between two snapshots of a runtime: layers, files, versions, packages and config, as CHANGES.md.

A snapshot is plain data (per architecture: manifest digest, layer tarballs in order, Dockerfile text). Layers are
read as streams, never extracted: each tarball is decompressed once and read by two tar parsers at the same time,
`tree.merge_layers` (the merged filesystem) and a parser that keeps the few small files that name versions.
"""

from __future__ import annotations

import contextlib
import difflib
import gzip
import hashlib
import json
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

from lambdaimages import layout
from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.errors import OutputError, RenderError
from lambdaimages.snapshot import export, render
from lambdaimages.state import State
from lambdaimages.tools.tree import CHUNK, DirSummary, Entry, TreeDiff, diff_trees, merge_layers, summarize_by_top_dir

CHANGES_TEMPLATE = "CHANGES.md.j2"
LISTED = 500  # file lines per kind (added, removed, changed) and architecture; the rest is counted
TEXT_LIMIT = 1 << 20  # version files are small; a bigger one is not read
DATABASE_LIMIT = 256 << 20
TARBALL_RE = re.compile(r"^ADD (?P<name>[^\s/]+)\.(?P<ext>tar\.xz|tar\.gz) /$")

# Files whose content names a version, by path in the image (no leading slash).
TEXT_FILES = re.compile(
    r"^(?:etc/os-release|usr/lib/os-release|etc/system-release|var/lang/version|var/lang/release"
    r"|var/lang/include/python[0-9][^/]*/patchlevel\.h|var/lang/include/node/node_version\.h"
    r"|var/lang/lib/ruby/[^/]+/[^/]+/rbconfig\.rb)$"
)
RPMDB = "var/lib/rpm/rpmdb.sqlite"
DPKG_STATUS = "var/lib/dpkg/status"
DOTNET_RE = re.compile(r"^var/lang/(?:.+/)?shared/Microsoft\.NETCore\.App/([0-9][^/]*)$")


# -- snapshots -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """One layer tarball of a snapshot: its name (diff_id hex), size, and where its bytes can be read here."""

    hex: str
    size: int | None = None
    source: Path | None = None
    created_by: str | None = None


@dataclass(frozen=True)
class ArchSnapshot:
    arch: str
    manifest_digest: str | None
    layers: tuple[Layer, ...]
    dockerfile: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A runtime's snapshot; `label` names it in CHANGES.md ("published commit 1a2b3c4d5e6f")."""

    runtime: str
    reference: str | None
    label: str
    archs: dict[str, ArchSnapshot] = field(hash=False)


def current_snapshot(out: Path, runtime: Runtime) -> Snapshot:
    """The snapshot in `<out>/<rt>` and its state files.

    Raises:
        OutputError: the runtime has not been snapshotted (run `doit snapshot:<rt>`).
    """
    archs = {}
    reference = None
    for arch in runtime.architectures:
        path = layout.state_path(out, runtime.name, arch)
        try:
            state = states_on_disk.read(out, runtime.name, arch)
        except FileNotFoundError:
            raise OutputError(f"{runtime.name}: {arch} not snapshotted ({path} is missing)") from None
        reference = state.reference
        folder = layout.arch_dir(out, runtime.name, arch)
        layers = []
        for layer, created_by in zip(state.layers, _layer_history(state), strict=True):
            tarball = folder / f"{layer.hex}.{runtime.extension}"
            if not tarball.is_file():
                raise OutputError(f"{runtime.name}: {tarball} is missing: run doit snapshot:{runtime.name}")
            layers.append(Layer(layer.hex, tarball.stat().st_size, tarball, created_by))
        dockerfile = _read_text(layout.dockerfile(out, runtime.name, arch))
        archs[arch] = ArchSnapshot(arch, state.manifest_digest, tuple(layers), dockerfile)
    return Snapshot(runtime.name, reference, "this snapshot", archs)


def local_previous(out: Path, runtime: Runtime) -> Snapshot | None:
    """The last snapshot kept locally: per architecture, the state before upstream last moved, or None.

    An architecture that never moved is its current state. Tarballs come from the shared layer cache (any codec),
    which keeps the layers that export removed from `<out>/<rt>`; Dockerfiles are rendered again from the state.
    """
    archs = {}
    reference = None
    kept = False
    for arch in runtime.architectures:
        previous = states_on_disk.read_previous(out, runtime.name, arch)
        kept |= previous is not None
        state = previous or states_on_disk.read_or_none(out, runtime.name, arch)
        if state is None:
            continue
        reference = reference or state.reference
        layers = tuple(
            Layer(layer.hex, *_cached_tarball(out, layer.hex), created_by)
            for layer, created_by in zip(state.layers, _layer_history(state), strict=True)
        )
        try:
            dockerfile = render.render_dockerfile(runtime, state)
        except RenderError:
            dockerfile = None
        archs[arch] = ArchSnapshot(arch, state.manifest_digest, layers, dockerfile)
    if not kept:
        return None
    return Snapshot(runtime.name, reference, "the previous local snapshot", archs)


def _cached_tarball(out: Path, hex_digest: str) -> tuple[int | None, Path | None]:
    path = export.find_cached(out, hex_digest)
    return (path.stat().st_size, path) if path is not None else (None, None)


def _layer_history(state: State) -> list[str | None]:
    # History entries that made a layer, in order; an image whose history does not add up gets no history.
    history = [h for h in state.config.get("history") or [] if not h.get("empty_layer")]
    if len(history) != len(state.layers):
        return [None] * len(state.layers)
    return [_short(h.get("created_by")) for h in history]


def _short(text: str | None, limit: int = 120) -> str | None:
    if not text:
        return None
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dockerfile_layers(text: str) -> list[tuple[str, str]]:
    """(name, extension) of each tarball an `<arch>/Dockerfile.<rt>` ADDs, in order."""
    found = []
    for line in text.splitlines():
        match = TARBALL_RE.match(line.strip())
        if match:
            found.append((match["name"], match["ext"]))
    return found


def _read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _read_text(path: Path) -> str | None:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


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


# -- the changelog --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileLine:
    path: str
    text: str


@dataclass(frozen=True)
class ArchChanges:
    """What changed on one architecture; `files` is None when the previous layers could not be read."""

    arch: str
    old_manifest: str | None
    new_manifest: str | None
    layers_added: tuple[Layer, ...]
    layers_removed: tuple[Layer, ...]
    layers_kept: int
    versions: tuple[tuple[str, str | None, str | None], ...]
    packages: dict[str, tuple] | None
    config: tuple[str, ...]
    files: TreeDiff | None
    by_dir: dict[str, DirSummary]
    listed: dict[str, tuple[tuple[FileLine, ...], int]]
    note: str | None = None
    totals: tuple[int, int] | None = None  # (entries, bytes) of a first snapshot's tree

    @property
    def changed(self) -> bool:
        return bool(
            self.old_manifest != self.new_manifest
            or self.layers_added
            or self.layers_removed
            or self.config
            or (self.files is not None and self.files)
        )


@dataclass(frozen=True)
class Changelog:
    runtime: str
    reference: str | None
    old_label: str | None
    new_label: str
    archs: tuple[ArchChanges, ...]

    @property
    def changed(self) -> bool:
        return self.old_label is None or any(arch.changed for arch in self.archs)


def compare(old: Snapshot | None, new: Snapshot, listed: int = LISTED) -> Changelog:
    """The changelog from `old` (None: a first snapshot) to `new`, every architecture of `new` in order."""
    archs = []
    for arch, now in new.archs.items():
        before = old.archs.get(arch) if old else None
        archs.append(_compare_arch(before, now, listed))
    return Changelog(new.runtime, new.reference, old.label if old else None, new.label, tuple(archs))


def _compare_arch(before: ArchSnapshot | None, now: ArchSnapshot, listed: int) -> ArchChanges:
    new_scan = _scan_layers(now)
    if before is None:
        sizes = sum(e.size for e in new_scan.tree.values() if e.type == "file" and e.hardlinks[:1] in ((), (e.path,)))
        return ArchChanges(
            now.arch, None, now.manifest_digest, now.layers, (), 0,
            tuple((name, None, value) for name, value in versions(new_scan).items()),
            None, (), None, {}, {}, None, (len(new_scan.tree), sizes),
        )  # fmt: skip
    old_names = {layer.hex for layer in before.layers}
    new_names = {layer.hex for layer in now.layers}
    added = tuple(layer for layer in now.layers if layer.hex not in old_names)
    removed = tuple(layer for layer in before.layers if layer.hex not in new_names)
    kept = len(now.layers) - len(added)
    config = _config_diff(before.dockerfile, now.dockerfile)
    note = None
    old_scan = None
    if [layer.hex for layer in before.layers] == [layer.hex for layer in now.layers]:
        old_scan = new_scan  # same layers in the same order: the same filesystem
    elif missing := [layer.hex for layer in before.layers if layer.source is None]:
        note = (
            f"the previous layers {', '.join(h[:12] for h in missing)} are not available here "
            "(neither in the layer cache nor fetched): no file-level comparison"
        )
    else:
        old_scan = _scan_layers(before)
    new_versions = versions(new_scan)
    if old_scan is None:
        return ArchChanges(
            now.arch, before.manifest_digest, now.manifest_digest, added, removed, kept,
            tuple((name, None, value) for name, value in new_versions.items()),
            None, config, None, {}, {}, note,
        )  # fmt: skip
    diff = diff_trees(old_scan.tree, new_scan.tree)
    old_versions = versions(old_scan)
    version_rows = tuple(
        (name, old_versions.get(name), new_versions.get(name)) for name in sorted(old_versions.keys() | new_versions)
    )
    return ArchChanges(
        now.arch, before.manifest_digest, now.manifest_digest, added, removed, kept, version_rows,
        _package_changes(packages(old_scan), packages(new_scan)), config, diff,
        summarize_by_top_dir(diff), _listed(diff, listed), note,
    )  # fmt: skip


def _scan_layers(snapshot: ArchSnapshot) -> Scan:
    missing = [layer.hex for layer in snapshot.layers if layer.source is None]
    if missing:
        raise OutputError(f"{snapshot.arch}: layer tarballs {', '.join(h[:12] for h in missing)} are not available")
    try:
        return scan([layer.source for layer in snapshot.layers])
    except ValueError as exc:
        raise OutputError(f"{snapshot.arch}: {exc}") from None


def _package_changes(old: dict[str, str] | None, new: dict[str, str] | None) -> dict[str, tuple] | None:
    if old is None and new is None:
        return None
    old, new = old or {}, new or {}
    return {
        "added": tuple((name, new[name]) for name in sorted(new.keys() - old.keys())),
        "removed": tuple((name, old[name]) for name in sorted(old.keys() - new.keys())),
        "changed": tuple(
            (name, old[name], new[name]) for name in sorted(old.keys() & new.keys()) if old[name] != new[name]
        ),
        "count": len(new),
    }


def _config_diff(old: str | None, new: str | None) -> tuple[str, ...]:
    """Dockerfile lines that differ other than ADD lines and comments (ENV, LABEL, ENTRYPOINT...), as -/+ lines."""
    if old is None or new is None:
        return ()

    def settings(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip() and not line.startswith(("#", "ADD "))]

    return tuple(
        line
        for line in difflib.unified_diff(settings(old), settings(new), lineterm="", n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def _listed(diff: TreeDiff, limit: int) -> dict[str, tuple[tuple[FileLine, ...], int]]:
    kinds = {
        "added": [FileLine(e.path, _entry_size(e)) for e in diff.added],
        "removed": [FileLine(e.path, _entry_size(e)) for e in diff.removed],
        "changed": [FileLine(a.path, _what_changed(a, b)) for a, b in diff.changed],
    }
    return {kind: (tuple(lines[:limit]), max(0, len(lines) - limit)) for kind, lines in kinds.items()}


def _entry_size(entry: Entry) -> str:
    if entry.type == "file":
        return human_size(entry.size)
    if entry.type == "symlink":
        return f"symlink to {entry.linkname}"
    return entry.type


def _what_changed(a: Entry, b: Entry) -> str:
    parts = []
    if a.type != b.type:
        parts.append(f"{a.type} → {b.type}")
    if a.type == b.type == "file":
        if a.size != b.size:
            parts.append(f"{human_size(a.size)} → {human_size(b.size)}")
        elif a.sha256 != b.sha256:
            parts.append(f"{human_size(b.size)}, content")
    if a.linkname != b.linkname and b.type == "symlink":
        parts.append(f"target {a.linkname or '-'} → {b.linkname}")
    if a.mode != b.mode:
        parts.append(f"mode {a.mode:04o} → {b.mode:04o}")
    if (a.uid, a.gid) != (b.uid, b.gid):
        parts.append(f"owner {a.uid}:{a.gid} → {b.uid}:{b.gid}")
    if (a.devmajor, a.devminor) != (b.devmajor, b.devminor):
        parts.append(f"device {a.devmajor},{a.devminor} → {b.devmajor},{b.devminor}")
    if a.hardlinks != b.hardlinks:
        parts.append("hardlinks " + (" ".join("/" + p for p in b.hardlinks) or "none"))
    return ", ".join(parts)


def human_size(size: int | None) -> str:
    """Bytes as people read them: `812 B`, `12.3 kB`, `117.0 MB` (SI units)."""
    if size is None:
        return "?"
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(size) >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def signed_size(size: int) -> str:
    return ("+" if size > 0 else "-" if size < 0 else "±") + human_size(abs(size))


def code(text: str) -> str:
    """Markdown inline code that holds any text (a fence longer than its longest run of backticks)."""
    runs = [len(run) for run in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def render_markdown(changelog: Changelog, templates: Path = render.TEMPLATES) -> str:
    """CHANGES.md for a changelog, from templates/CHANGES.md.j2."""
    env = render.environment(templates)
    env.filters.update(size=human_size, signed=signed_size, code=code, cell=cell)
    return env.get_template(CHANGES_TEMPLATE).render(log=changelog).rstrip("\n") + "\n"
