"""Check 1's proof of the Dockerfiles: each is, byte for byte, what the template renders from upstream's config
and diff_ids, so that the one users build says nothing upstream's config does not (an ENV changed, a USER or RUN
line added). The ADD lines themselves are compared by `checks.compare_adds`, which names each wrong one.
"""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

from lambdaimages import layout
from lambdaimages.errors import RenderError
from lambdaimages.snapshot import render
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.dockerfile import add_instructions


def adding(snapshot: SnapshotView, arch: str) -> list[tuple[Path, str]]:
    """The Dockerfiles that ADD `arch`'s tarballs, each with the folder prefix of its ADD sources: the
    architecture's own and, for the default architecture, the top-level one (`ADD <arch>/<hex>... /`)."""
    files = [(snapshot.dockerfile(arch), "")]
    if arch == layout.default_arch(snapshot.runtime.architectures):
        files.append((snapshot.dockerfile(), f"{arch}/"))
    return files


def rendering_problems(snapshot: SnapshotView, arch: str, state: State) -> list[str]:
    """The first line where each Dockerfile of `arch` differs from the template's rendering of `state`.

    A Dockerfile that cannot be read, or whose ADD lines are not upstream's layers in order, is left to the ADD
    comparison, which already names it.
    """
    problems = []
    expected = [layer.tarball(snapshot.runtime.extension) for layer in state.layers]
    for path, prefix in adding(snapshot, arch):
        label = str(path.relative_to(snapshot.folder))
        try:
            data = path.read_bytes()
            sources = [add.source for add in add_instructions(data.decode("utf-8"))]
        except (OSError, UnicodeDecodeError):
            continue
        if sources != [prefix + name for name in expected]:
            continue
        try:
            rendered = render.render_dockerfile(snapshot.runtime, state, prefix=prefix)
        except RenderError as exc:
            problems.append(f"{label}: upstream's config cannot be rendered to compare it with: {exc.detail}")
            continue
        difference = first_difference(label, data.decode("utf-8"), rendered)
        if difference is not None:
            problems.append(difference)
    return problems


def first_difference(label: str, text: str, rendered: str) -> str | None:
    """`<label>:<line>: ...` at the first line where `text` differs from `rendered`; None when they are equal."""
    if text == rendered:
        return None
    have, want = text.splitlines(keepends=True), rendered.splitlines(keepends=True)
    for number, (got, wanted) in enumerate(zip_longest(have, want), 1):
        if got == wanted:
            continue
        if wanted is None:
            return f"{label}:{number}: {_shown(got)} is not in upstream's Dockerfile (which ends at line {number - 1})"
        if got is None:
            return f"{label}:{number}: the file ends where upstream's Dockerfile has {_shown(wanted)}"
        if got.rstrip("\r\n") == wanted.rstrip("\r\n"):  # the same words: show what is invisible
            return f"{label}:{number}: {got!r} differs from upstream's {wanted!r}"
        return f"{label}:{number}: {_shown(got)} differs from upstream's {_shown(wanted)}"
    return None  # not reached: equal line lists mean equal texts


def _shown(line: str) -> str:
    return line.rstrip("\r\n") or repr(line)
