"""Image references: parse and format round trips, the distribution spec's names, loopback registries."""

import pytest

from lambdaimages.reference import Reference, display_name, is_loopback, registry_url, split_name

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "text",
    [
        "public.ecr.aws/lambda/python:3.12",
        "reg:5000/m/py:1",
        "http://127.0.0.1:5000/mirror/lambda/python:3.12.2024.10.14.16-x86_64",
        f"public.ecr.aws/lambda/provided@{DIGEST}",
        "localhost/a.b/c_d/e__f/g-h/i---j:_tag",
    ],
)
def test_parse_and_format_round_trip(text):
    found = Reference.parse(text)
    assert str(found) == text
    assert Reference.parse(str(found)) == found
    assert Reference.of(found.registry, found.repository, found.reference) == found


def test_the_parts():
    found = Reference.parse("http://127.0.0.1:5000/mirror/x:1")
    parts = (found.registry, found.repository, found.tag, found.digest)
    assert parts == ("http://127.0.0.1:5000", "mirror/x", "1", None)
    assert found.name == "http://127.0.0.1:5000/mirror/x"
    assert Reference.parse("https://reg/x:1") == Reference("reg", "x", tag="1")
    assert Reference.parse("reg/x", default_tag="3.12").tag == "3.12"
    by_digest = Reference.parse(f"reg/x@{DIGEST}")
    assert (by_digest.tag, by_digest.digest, by_digest.reference) == (None, DIGEST, DIGEST)
    assert Reference.of("https://public.ecr.aws", "lambda/python", "3.12").tag == "3.12"
    assert Reference.of("https://public.ecr.aws", "lambda/python", DIGEST).digest == DIGEST


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("reg/Lambda/python:1", "repository 'Lambda/python': component 'Lambda' has uppercase letters"),
        ("reg/lambda/PYTHON:1", "component 'PYTHON' has uppercase letters"),
        ("reg/a..b:1", "component 'a..b' is not allowed"),
        ("reg/a_-b:1", "component 'a_-b' is not allowed"),
        ("reg/-a:1", "component '-a' is not allowed"),
        ("reg/a//b:1", "component '' is not allowed"),
        ("reg/a:.1", "tag '.1' is not allowed"),
        ("reg/a:" + "t" * 129, "is not allowed"),
        ("reg/a@sha256:abc", "digest 'sha256:abc' is not sha256:<64 hex digits>"),
        (f"reg/a:1@{DIGEST}", "a tag and a digest"),
        ("reg/a", "no tag"),
        ("reg", "expected HOST[:PORT]/REPOSITORY[:TAG]"),
        ("/a:1", "expected HOST[:PORT]/REPOSITORY[:TAG]"),
    ],
)
def test_names_the_spec_refuses(text, why):
    with pytest.raises(ValueError) as caught:
        Reference.parse(text)
    assert why in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_tag_of_128_characters_and_a_port_colon_are_fine():
    assert Reference.parse("reg:5000/a:" + "t" * 128).tag == "t" * 128
    assert split_name("a/b") == ("a/b", None, None)  # a name without tag: the caller decides
    assert split_name(f"a/b@{DIGEST}") == ("a/b", None, DIGEST)


def test_registries():
    assert registry_url("reg:5000") == "https://reg:5000"
    assert registry_url("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert display_name("https://public.ecr.aws") == display_name("public.ecr.aws") == "public.ecr.aws"
    assert display_name("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    for loopback in ("127.0.0.1:5999", "127.9.8.7", "localhost:5000", "https://[::1]:5000", "http://127.0.0.1:1"):
        assert is_loopback(loopback), loopback
    for other in ("public.ecr.aws", "10.0.0.1:5000", "localhost.example.com", "128.0.0.1"):
        assert not is_loopback(other), other
