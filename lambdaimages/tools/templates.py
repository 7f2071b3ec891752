"""The Jinja environment of templates/ (Dockerfiles, .dockerignore, branch README, CHANGES.md, .gitattributes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
Filters = Mapping[str, Callable]


def environment(folder: Path = TEMPLATES, filters: Filters | None = None) -> jinja2.Environment:
    """Templates rendered as plain text: strict about undefined names, trailing newline kept, no escaping.

    Each stage brings the filters its templates use (the Dockerfile's quoting, CHANGES.md's sizes).
    """
    import jinja2  # on first use: ~40 ms of every doit start that renders nothing (an inventory, a verify)

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(filters or {})
    return env


def render_template(name: str, context: Mapping, folder: Path = TEMPLATES, filters: Filters | None = None) -> str:
    """The text of template `name` with `context`."""
    return environment(folder, filters).get_template(name).render(context)
