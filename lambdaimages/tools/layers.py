"""How an image's layers combine: tar member names, OCI whiteouts, opaque directories, replacement, symlinks.

The one owner of these rules for every merged view of an image: the file tree `tools.tree.merge_layers` builds
(verify's tree check, the file diff of CHANGES.md) and the inventory `inventory.merge` builds from layer facts.
A view is a dict from path (as `normalize_path` cleans it) to entries of any type; the callers say which entries
are directories and where a symlink points.

Symlinks have one meaning here, `resolve`: every component of a path is followed through the merged view, the
directories' symlinks as well as the last one's, as the image itself would (`lib64 -> usr/lib64`), at most
`MAX_HOPS` links, ".." at the root staying at the root. Before this module, `publish/contents.Scan.resolve` (the
versions and packages CHANGES.md read when a snapshot had no SBOM) followed only the last component's symlinks;
that reading is gone (CHANGES.md takes versions and packages from the inventory), so the two meanings differ only
for a version file reached through a symlinked directory, which the old reading did not find.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from typing import TypeVar

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_HOPS = 16

T = TypeVar("T")


def normalize_path(name: str) -> str:
    """A tar member's path as Docker cleans it, lexically: "/a" and "./a" are "a", "a/../b" is "b", "../x" stays."""
    path = posixpath.normpath(name.lstrip("/"))
    return "" if path == "." else path


def member_role(path: str) -> tuple[str, str]:
    """What a layer member at `path` (normalized) does to the image, and the path it does it to.

    Returns:
        ("opaque", directory) for `.wh..wh..opq`; ("whiteout", deleted path) for `.wh.<name>`; ("skip", path)
        for aufs bookkeeping (`.wh..wh.plnk`, never content) and for the root itself (Docker's layers never carry
        it, so it is no entry of an image); ("entry", path) for everything else.
    """
    parent, base = posixpath.split(path)
    if base == OPAQUE:
        return "opaque", parent
    if base.startswith(WHITEOUT + WHITEOUT):
        return "skip", path
    if base.startswith(WHITEOUT) and base != WHITEOUT:
        return "whiteout", posixpath.join(parent, base.removeprefix(WHITEOUT))
    return ("entry", path) if path else ("skip", path)


def hidden(path: str, deleted: set[str], opaques: set[str]) -> bool:
    """Whether a lower layer's `path` is hidden by a whiteout of it or of a parent, or by an opaque parent."""
    if path in deleted:
        return True
    while path:
        path = posixpath.dirname(path)
        if path in deleted or path in opaques:
            return True
    return False


def apply_layer(
    view: dict[str, T],
    entries: dict[str, T],
    whiteouts: Iterable[str],
    opaques: Iterable[str],
    is_dir: Callable[[T], bool],
    attached: Iterable[dict[str, object]] = (),
    parent: Callable[[], T] | None = None,
) -> None:
    """Apply one layer to `view` (the lower layers merged), as Docker applies it.

    A layer's deletions hit only lower layers, so they go before its own entries land: `whiteouts` delete their
    paths and what is below them, `opaques` hide what lower layers put in those directories, and a non-directory
    replacing a directory deletes what was below it. Then the layer's entries land, replacing lower ones.

    Args:
        view: path -> entry of the lower layers, changed in place.
        entries: path -> entry of this layer.
        whiteouts, opaques: this layer's whiteouts and opaque directories.
        is_dir: whether an entry is a directory.
        attached: dicts keyed by path of what was read from the view's files; a path deleted or replaced by this
            layer loses its key there too.
        parent: makes the entry of a missing parent directory, as Docker creates them (root-owned 0755); None: a
            missing parent stays missing.
    """
    replaced = {path for path, entry in entries.items() if not is_dir(entry) and path in view and is_dir(view[path])}
    deleted = set(whiteouts) | replaced
    opaque = set(opaques)
    attached = list(attached)
    if deleted or opaque:
        for found in (view, *attached):
            for path in [path for path in found if hidden(path, deleted, opaque)]:
                del found[path]
    for found in attached:
        for path in [path for path in found if path in entries]:
            del found[path]
    view.update(entries)
    if parent is not None:
        for path in entries:
            up = posixpath.dirname(path)
            while up and up not in view and up.split("/")[0] != "..":
                view[up] = parent()
                up = posixpath.dirname(up)


def resolve(view: dict[str, T], path: str, symlink: Callable[[T], str | None]) -> str:
    """`path` with the symlinks of its directories and itself followed through `view`, as the image would.

    Args:
        view: path -> entry of the merged layers.
        path: a path of the image, with or without a leading slash.
        symlink: an entry's link target if it is a symlink, else None.
    """
    parts = [part for part in path.split("/") if part]
    done: list[str] = []
    hops = MAX_HOPS
    while parts:
        part = parts.pop(0)
        entry = view.get("/".join([*done, part]))
        link = symlink(entry) if entry is not None else None
        if link is None or not hops:
            done.append(part)
            continue
        hops -= 1
        target = normalize_path(posixpath.join("" if link.startswith("/") else "/".join(done), link))
        parts = [p for p in target.split("/") if p not in ("", "..")] + parts  # ".." at the root is the root
        done = []
    return "/".join(done)
