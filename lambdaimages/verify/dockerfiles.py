"""Check 1's proof of the Dockerfiles: each is, byte for byte, what the template renders from upstream's config
and diff_ids, so that the one users build says nothing upstream's config does not (an ENV changed, a USER or RUN
line added). The ADD lines themselves are compared by `checks.compare_adds`, which names each wrong one.

A Dockerfile of AWS's own branches is not our template's rendering; `compare_settings` says whether its config
lines (ENV, WORKDIR, ENTRYPOINT, ...) set what the rendering of upstream's config sets, line by line.
"""

from __future__ import annotations

from itertools import zip_longest
from pathlib import Path

from lambdaimages import layout
from lambdaimages.errors import RenderError
from lambdaimages.snapshot import render
from lambdaimages.snapshot.view import SnapshotView
from lambdaimages.state import State
from lambdaimages.tools.dockerfile import Settings, add_instructions


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


def compare_settings(label: str, have: Settings, want: Settings) -> tuple[list[str], list[str]]:
    """How what a Dockerfile sets (`have`) differs from what upstream's rendering sets (`want`); (problems, notes).

    Every problem names `<label>:<line>` where the Dockerfile has a line. Env and Labels compare as name ->
    value (an order of ENV lines other than upstream's is a note); a Dockerfile with no LABEL line at all, where
    upstream's config has labels, is a note (AWS's published Dockerfiles drop them): its image lacks them.
    """
    problems, notes = [], []
    if have.base != want.base:
        problems.append(f"{label}: FROM {have.base or '(none)'}, upstream's image is FROM {want.base}")
    for step in have.other:
        problems.append(f"{label}:{step.line}: {step.keyword} {step.args}: upstream's config makes no such line")
    problems += _compare_named(label, "ENV", have.env, want.env)
    common = [name for name in have.env if name in want.env]
    if [name for name in want.env if name in have.env] != common:
        notes.append(f"{label}: ENV order {' '.join(common)}, upstream's config has {' '.join(want.env)}")
    if want.labels and not have.labels:
        notes.append(f"{label}: no LABEL line: the image it builds lacks upstream's labels {', '.join(want.labels)}")
    else:
        problems += _compare_named(label, "LABEL", have.labels, want.labels)
    for key in dict.fromkeys([*want.config, *have.config]):
        if key not in have.config:
            problems.append(f"{label}: no line sets {key} (upstream's config has {want.config[key][0]!r})")
        elif key not in want.config:
            value, line = have.config[key]
            problems.append(f"{label}:{line}: sets {key} {value!r}, upstream's config has none")
        elif have.config[key][0] != want.config[key][0]:
            value, line = have.config[key]
            problems.append(f"{label}:{line}: sets {key} {value!r}, upstream's config has {want.config[key][0]!r}")
    return problems, notes


def _compare_named(
    label: str, keyword: str, have: dict[str, tuple[str, int]], want: dict[str, tuple[str, int]]
) -> list[str]:
    problems = []
    for name in dict.fromkeys([*want, *have]):
        if name not in have:
            problems.append(f"{label}: no {keyword} {name} (upstream's config has {want[name][0]!r})")
        elif name not in want:
            problems.append(f"{label}:{have[name][1]}: {keyword} {name}: upstream's config has no {name}")
        elif have[name][0] != want[name][0]:
            value, line = have[name]
            problems.append(f"{label}:{line}: {keyword} {name} is {value!r}, upstream's config has {want[name][0]!r}")
    return problems
