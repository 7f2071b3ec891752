"""The merged filesystem of an image, read from its layer tars as streams, and readable diffs of two such trees."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import lzma
import os
import posixpath
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lambdaimages.tools.layers import MAX_HOPS, apply_layer, member_role, normalize_path
from lambdaimages.tools.tarstream import CHUNK, Member, TarError, TarReader, Writer, read_stream

LayerSource = BinaryIO | str | os.PathLike


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a merged tree, with what survives a rebuild (so no mtime: Docker zeroes pre-1970 ones).

    `hardlinks` is every path of the entry's hardlink group, itself included, sorted; empty if it has none.
    """

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    linkname: str | None = None
    devmajor: int | None = None
    devminor: int | None = None
    hardlinks: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class _Node:
    """What a path holds while merging; hardlinked paths share one node as they share one inode."""

    type: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    linkname: str | None = None
    devmajor: int | None = None
    devminor: int | None = None


@dataclass
class _Layer:
    entries: dict[str, _Node] = field(default_factory=dict)
    whiteouts: set[str] = field(default_factory=set)  # paths deleted, with what is below them
    opaques: set[str] = field(default_factory=set)  # directories whose lower content is hidden


@dataclass(frozen=True)
class _Hardlink:
    """A hardlink member, resolved when its layer lands: Docker links it against the merged tree."""

    path: str
    member: str
    linkname: str  # normalized, as the tree names paths
    uid: int
    gid: int
    mode: int
    stored: str = ""  # the linkname as the tar has it, for messages


@dataclass
class LayerContents:
    """What one layer tar does to the layers below it, read once (file content hashed, never kept).

    Its members in tar order (entries and hardlinks, which resolve against the tree they land on), whiteouts
    and opaque directories: `combine` stacks such layers in any order, as often as asked, so that two orders
    of the same layers cost one read of each.
    """

    name: str
    steps: list[_Node | _Hardlink] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # the path of each entry step
    whiteouts: set[str] = field(default_factory=set)
    opaques: set[str] = field(default_factory=set)


def merge_layers(layers: Iterable[LayerSource]) -> dict[str, Entry]:
    """The filesystem an image's layers make, read as streams (nothing is extracted), by path in tree order.

    Layers apply lowest first as `tools.layers` combines them, with OCI whiteouts: `.wh.<name>` deletes `name`
    and what is below it from lower layers, `.wh..wh..opq` hides everything lower layers put in its directory; a
    whiteout never hides an entry of its own layer. Missing parent directories appear as Docker creates them (0755,
    root). Each layer is a tar, plain or gzip, bzip2 or xz compressed, read by `tools.tarstream` up to its end.
    Paths are recorded as Docker cleans them, never followed or written.

    Args:
        layers: open binary streams or paths of the layer tars.

    Raises:
        ValueError: a layer is not a readable tar, or holds a hardlink to nothing or an unknown entry type.
    """
    return combine(read_layer(layer, index) for index, layer in enumerate(layers))  # each read as it lands


def read_layer(layer: LayerSource, index: int = 0) -> LayerContents:
    """One layer tar (a stream or a path) read to its end into what `combine` stacks.

    Raises:
        ValueError: not a readable tar, or an unknown entry type.
    """
    with ExitStack() as stack:
        if isinstance(layer, str | os.PathLike):
            name, stream = os.fspath(layer), stack.enter_context(open(layer, "rb"))
        else:
            name, stream = getattr(layer, "name", f"layer {index}"), layer
        reading = _LayerReading(LayerContents(name))
        try:
            read_stream(stream, reading)
        except TarError as error:
            raise ValueError(f"{name}: not a readable layer tar: {error}") from error
        return reading.layer


def combine(layers: Iterable[LayerContents]) -> dict[str, Entry]:
    """The tree that `layers` make stacked in the order given, lowest first (see `merge_layers`).

    Raises:
        ValueError: a hardlink to nothing (in its own layer or below it), naming the layer.
    """
    tree: dict[str, _Node] = {}
    for layer in layers:
        entries: dict[str, _Node] = {}
        paths = iter(layer.paths)
        for step in layer.steps:
            if isinstance(step, _Node):
                entries[next(paths)] = dataclasses.replace(step)  # a copy: hardlinks change the nodes they reach
                continue
            target = entries.get(step.linkname) or tree.get(step.linkname)
            if target is None or target.type == "dir":
                raise ValueError(f"{layer.name}: hardlink {step.member} to {step.stored}, which is not in the tree")
            # Docker resolves a hardlink against the merged tree, then chowns and chmods the shared inode.
            target.uid, target.gid = step.uid, step.gid
            if target.type != "symlink":
                target.mode = step.mode
            entries[step.path] = target
        _apply(tree, _Layer(entries, layer.whiteouts, layer.opaques))
    return _entries(tree)


class _LayerReading:
    """The `tarstream.Visitor` that records one layer's members, hashing each file's content as it streams by."""

    def __init__(self, layer: LayerContents) -> None:
        self.layer = layer
        self._node: _Node | None = None
        self._digest = hashlib.sha256()

    def member(self, member: Member) -> Writer | None:
        role, path = member_role(normalize_path(member.name))
        if role == "opaque":
            self.layer.opaques.add(path)
        elif role == "whiteout":
            self.layer.whiteouts.add(path)
        elif role == "entry" and member.kind == "hardlink":
            link = normalize_path(member.linkname)
            hardlink = _Hardlink(path, member.name, link, member.uid, member.gid, member.mode & 0o7777, member.linkname)
            self.layer.steps.append(hardlink)
        elif role == "entry":
            node = self._node_of(member)
            self.layer.steps.append(node)
            self.layer.paths.append(path)
            if node.type == "file":
                self._node, self._digest = node, hashlib.sha256()
                return self._digest.update
        return None

    def content_end(self) -> None:
        self._node.sha256 = self._digest.hexdigest()

    def _node_of(self, member: Member) -> _Node:
        kind = member.kind
        if kind is None:
            raise ValueError(f"{self.layer.name}: {member.name} has unsupported tar entry type {member.type!r}")
        # Tars from `docker save` carry file-type bits in the mode field; a symlink's own mode means nothing on Linux.
        node = _Node(kind, 0o777 if kind == "symlink" else member.mode & 0o7777, member.uid, member.gid)
        if kind == "file":
            node.size = member.size
        elif kind == "symlink":
            node.linkname = member.linkname
        elif kind in ("char", "block"):
            node.devmajor, node.devminor = member.devmajor, member.devminor
        return node


def _apply(tree: dict[str, _Node], layer: _Layer) -> None:
    apply_layer(
        tree, layer.entries, layer.whiteouts, layer.opaques, lambda node: node.type == "dir",
        parent=lambda: _Node("dir", 0o755, 0, 0),
    )  # fmt: skip


def open_layer(path: Path) -> BinaryIO:
    """A layer tar file, xz, gzip or plain (told by its first bytes, whatever its name), opened as its tar."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.open(path, "rb")
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def open_tarball(path: Path) -> BinaryIO:
    """A layer tarball (`.tar.xz` or `.tar.gz`) opened as its uncompressed layer tar.

    Raises:
        ValueError: the name has neither extension.
    """
    if path.name.endswith(".tar.xz"):
        return lzma.open(path)
    if path.name.endswith(".tar.gz"):
        return gzip.open(path)
    raise ValueError(f"{path.name}: not a .tar.xz or .tar.gz")


def _tree_order(path: str) -> list[str]:
    # Component-wise, so that a directory's descendants follow it ("a", "a/b", "a-c"; plain sorting puts "a-c" first).
    return path.split("/")


def _entries(tree: dict[str, _Node]) -> dict[str, Entry]:
    groups: dict[_Node, list[str]] = defaultdict(list)
    for path, node in tree.items():
        groups[node].append(path)
    hardlinks = {node: tuple(sorted(paths)) for node, paths in groups.items() if len(paths) > 1}
    entries = {}
    for path in sorted(tree, key=_tree_order):
        node = tree[path]
        fields = {name: getattr(node, name) for name in _Node.__slots__}
        entries[path] = Entry(path, **fields, hardlinks=hardlinks.get(node, ()))
    return entries


@contextmanager
def layers_of_docker_save(archive: BinaryIO | Iterable[bytes]) -> Iterator[list[BinaryIO]]:
    """Spool a `docker save` archive to an anonymous temp file and yield its layer tars as streams, lowest first.

    Reads the legacy layout (manifest.json, `<id>/layer.tar`, repeated layers as symlinks) and the OCI layout of
    newer engines (index.json, blobs/sha256/<hex>). The temp file is gone when the context ends.

    Args:
        archive: a binary stream, or the byte chunks `docker.models.images.Image.save()` returns.

    Raises:
        ValueError: the archive is not a docker save archive of exactly one image.
    """
    with tempfile.TemporaryFile(prefix="docker-save-") as spool:
        index = _SaveIndex(spool)
        reader = TarReader(index)  # indexed as it is spooled: one pass over the archive
        try:
            for chunk in iter(lambda: archive.read(CHUNK), b"") if hasattr(archive, "read") else archive:
                spool.write(chunk)
                reader.feed(chunk)
            reader.close()
            layers = [index.open(name) for name in _layer_names(index)]
        except (TarError, KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"not a docker save archive: {error}") from error
        yield layers


class _SaveIndex:
    """The `tarstream.Visitor` of a spooled `docker save` archive: where each member is, and its files opened."""

    def __init__(self, spool: BinaryIO) -> None:
        self.spool = spool
        self.members: dict[str, Member] = {}  # by name as stored, and by normalized name (links), the last wins

    def member(self, member: Member) -> None:
        self.members[member.name] = self.members[posixpath.normpath(member.name)] = member

    def content_end(self) -> None:
        pass

    def open(self, name: str) -> BinaryIO:
        """A member's content as a stream named `name`, symlinks and hardlinks followed as tarfile follows them.

        Raises:
            KeyError: no member has that name, or a link points to none.
            ValueError: the member is not a file.
        """
        member = self.members.get(name)
        if member is None:
            raise KeyError(f"filename {name!r} not found")
        for _ in range(MAX_HOPS):
            if member.kind not in ("symlink", "hardlink"):
                break
            link = member.linkname
            if member.kind == "symlink":  # relative to the link's directory
                link = "/".join(filter(None, (posixpath.dirname(member.name), link)))
            member = self.members.get(posixpath.normpath(link))
            if member is None:
                raise KeyError(f"linkname {link!r} not found")
        if member.kind != "file" or member.sparse is not None:
            raise ValueError(f"docker save archive: {name} is not a file")
        return _Slice(self.spool, member.offset_data, member.size, name)


class _Slice:
    """Part of a file read as a stream of its own; `name` names it in errors (the layer, not the spool)."""

    def __init__(self, source: BinaryIO, offset: int, size: int, name: str) -> None:
        self.source, self.offset, self.size, self.name = source, offset, size, name
        self.position = 0

    def read(self, size: int = -1) -> bytes:
        left = self.size - self.position
        size = left if size is None or size < 0 else min(size, left)
        if size <= 0:
            return b""
        self.source.seek(self.offset + self.position)
        data = self.source.read(size)
        self.position += len(data)
        return data


def _layer_names(index: _SaveIndex) -> list[str]:
    if "manifest.json" in index.members:
        images = json.load(index.open("manifest.json"))
        if len(images) != 1:
            raise ValueError(f"docker save archive holds {len(images)} images, expected 1")
        return images[0]["Layers"]
    document = json.load(index.open("index.json"))  # OCI layout only: follow the index to the manifest
    while "manifests" in document:
        if len(document["manifests"]) != 1:
            raise ValueError(f"OCI index lists {len(document['manifests'])} manifests, expected 1")
        document = json.load(index.open(_blob(document["manifests"][0]["digest"])))
    return [_blob(layer["digest"]) for layer in document["layers"]]


def _blob(digest: str) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return f"blobs/{algorithm}/{hex_digest}"


@dataclass(frozen=True)
class TreeDiff:
    """How two trees differ: entries only in the old one, only in the new one, and (old, new) pairs that differ."""

    removed: tuple[Entry, ...]
    added: tuple[Entry, ...]
    changed: tuple[tuple[Entry, Entry], ...]

    def __bool__(self) -> bool:
        return bool(self.removed or self.added or self.changed)

    @property
    def total(self) -> int:
        return len(self.removed) + len(self.added) + len(self.changed)

    def describe(self, limit: int = 20, old: str = "upstream", new: str = "built") -> list[str]:
        """Readable lines, one per difference in tree order (a whole missing directory is one line), then a count.

        Args:
            limit: at most this many difference lines.
            old, new: what to call the two trees.
        """
        if not self:
            return [f"no differences between {old} and {new}"]
        lines = [(entry.path, f"only {old}: {text}") for entry, text in _folded(self.removed)]
        lines += [(entry.path, f"only {new}: {text}") for entry, text in _folded(self.added)]
        lines += [(a.path, f"{a.path}: {_differences(a, b)}") for a, b in self.changed]
        lines.sort(key=lambda line: _tree_order(line[0]))
        shown = [text for _, text in lines[:limit]]
        if len(lines) > limit:
            shown.append(f"... and {len(lines) - limit} more lines")
        shown.append(
            f"{self.total} differences ({old} vs {new}): {len(self.removed)} only {old}, "
            f"{len(self.added)} only {new}, {len(self.changed)} changed"
        )
        return shown


def diff_trees(old: dict[str, Entry], new: dict[str, Entry]) -> TreeDiff:
    """Compare two trees from `merge_layers`; every attribute of `Entry` counts."""
    return TreeDiff(
        removed=tuple(old[path] for path in old if path not in new),
        added=tuple(new[path] for path in new if path not in old),
        changed=tuple((old[path], new[path]) for path in old if path in new and old[path] != new[path]),
    )


def _folded(entries: tuple[Entry, ...]) -> list[tuple[Entry, str]]:
    # Entries below one that is itself listed count on its line: a missing directory is one line, not thousands.
    folded: list[list] = []
    for entry in sorted(entries, key=lambda entry: _tree_order(entry.path)):
        if folded and entry.path.startswith(folded[-1][0].path + "/"):
            folded[-1][1] += 1
        else:
            folded.append([entry, 0])
    return [(entry, f"{entry.path} (and {below} below)" if below else entry.path) for entry, below in folded]


def _differences(a: Entry, b: Entry) -> str:
    def show(value: str | tuple[str, ...] | None) -> str:
        text = " ".join(value) if isinstance(value, tuple) else value
        return text or "-"

    parts = []
    if a.type != b.type:
        parts.append(f"type {a.type} vs {b.type}")
    if a.linkname != b.linkname:
        parts.append(f"target {show(a.linkname)} vs {show(b.linkname)}")
    if a.mode != b.mode:
        parts.append(f"mode {a.mode:04o} vs {b.mode:04o}")
    if a.uid != b.uid:
        parts.append(f"uid {a.uid} vs {b.uid}")
    if a.gid != b.gid:
        parts.append(f"gid {a.gid} vs {b.gid}")
    if a.sha256 != b.sha256:
        parts.append(f"sha256 {show(a.sha256 and a.sha256[:12] + '…')} vs {show(b.sha256 and b.sha256[:12] + '…')}")
    if a.size != b.size:
        parts.append(f"size {a.size} vs {b.size}")
    if (a.devmajor, a.devminor) != (b.devmajor, b.devminor):
        parts.append(f"device {a.devmajor},{a.devminor} vs {b.devmajor},{b.devminor}")
    if a.hardlinks != b.hardlinks:
        parts.append(f"hardlinks {show(a.hardlinks)} vs {show(b.hardlinks)}")
    return ", ".join(parts)


@dataclass(frozen=True)
class DirSummary:
    """Counts of one directory's differences, and how many bytes of file content it gained (negative: lost)."""

    added: int = 0
    removed: int = 0
    changed: int = 0
    bytes_delta: int = 0


def summarize_by_top_dir(diff: TreeDiff, depth: int = 2) -> dict[str, DirSummary]:
    """The differences per directory of the first `depth` path components (e.g. "usr/lib"), sorted, for changelogs."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])

    def count(entry: Entry, column: int, delta: int) -> None:
        row = counts["/".join(entry.path.split("/")[:depth])]
        row[column] += 1
        row[3] += delta

    for entry in diff.added:
        count(entry, 0, _bytes(entry))
    for entry in diff.removed:
        count(entry, 1, -_bytes(entry))
    for a, b in diff.changed:
        count(a, 2, _bytes(b) - _bytes(a))
    return {top: DirSummary(*counts[top]) for top in sorted(counts, key=_tree_order)}


def _bytes(entry: Entry) -> int:
    # A hardlink group's content is on disk once: count it for the group's first path only.
    if entry.type != "file" or (entry.hardlinks and entry.hardlinks[0] != entry.path):
        return 0
    return entry.size
