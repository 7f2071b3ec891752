"""The one template environment: plain text, strict about undefined names, each stage's own filters."""

import jinja2
import pytest

from lambdaimages.tools.templates import TEMPLATES, render_template


def test_plain_text_with_the_filters_a_stage_brings(tmp_path):
    (tmp_path / "t.j2").write_text("{{ value | shout }} <&>\n")
    assert render_template("t.j2", {"value": "a"}, tmp_path, {"shout": str.upper}) == "A <&>\n"
    with pytest.raises(jinja2.TemplateAssertionError):
        render_template("t.j2", {"value": "a"}, tmp_path)  # filters are per call, not shared


def test_undefined_names_fail(tmp_path):
    (tmp_path / "t.j2").write_text("{{ missing }}")
    with pytest.raises(jinja2.UndefinedError):
        render_template("t.j2", {}, tmp_path)


def test_the_project_templates():
    text = render_template("gitattributes.j2", {"patterns": ["*.tar.xz"]}, TEMPLATES)
    assert text.splitlines()[1:] == ["*.tar.xz filter=lfs diff=lfs merge=lfs -text"]
