"""Catalog validation: every bad input is one line naming file, line and runtime."""

from pathlib import Path

import pytest

from lambdaimages import catalog
from lambdaimages.catalog import CatalogError

ROOT = Path(__file__).resolve().parent.parent


def parse(text: str) -> catalog.Catalog:
    return catalog.parse(text, Path("cat.yaml"))


def error_of(text: str) -> str:
    with pytest.raises(CatalogError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_shipped_catalog_lists_every_current_runtime():
    names = {rt.name for rt in catalog.load(ROOT / "runtimes.yaml").runtimes}
    expected = {
        *(f"nodejs{v}.x" for v in (18, 20, 22, 24)),
        *(f"python3.{v}" for v in range(9, 15)),
        "java8.al2", "java11", "java17", "java21", "java25",
        "dotnet8", "dotnet9", "dotnet10", "ruby3.2", "ruby3.3", "ruby3.4",
        "provided.al2", "provided.al2023",
    }  # fmt: skip
    assert names == expected
    for rt in catalog.load(ROOT / "runtimes.yaml").runtimes:
        assert rt.architectures == ("x86_64", "arm64")
        assert rt.registry == "https://public.ecr.aws"


def test_defaults_and_overrides():
    cat = parse(
        "defaults:\n  registry: public.ecr.aws\n  architectures: [x86_64, arm64]\n"
        "runtimes:\n  python3.12:\n    image: lambda/python:3.12\n"
        "  demo.x:\n    image: lambda/demo:1\n    registry: http://127.0.0.1:5000\n    architectures: [x86_64]\n"
        "    compression: gzip\n"
    )
    py, demo = cat.runtimes
    assert (py.registry, py.repository, py.reference, py.architectures) == (
        "https://public.ecr.aws", "lambda/python", "3.12", ("x86_64", "arm64"),
    )  # fmt: skip
    assert py.image == "public.ecr.aws/lambda/python:3.12"
    assert (demo.registry, demo.architectures, demo.compression, demo.extension) == (
        "http://127.0.0.1:5000", ("x86_64",), "gzip", "tar.gz",
    )  # fmt: skip
    assert py.compression == "xz" and py.level == 6


def test_digest_reference():
    rt = parse(f"runtimes:\n  a:\n    image: lambda/a@sha256:{'0' * 64}\n").runtimes[0]
    assert rt.reference == "sha256:" + "0" * 64
    assert rt.image.endswith("lambda/a@sha256:" + "0" * 64)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runtimes:\n  a:\n    image: [unclosed\n", "cat.yaml:4: YAML syntax error"),
        ("runtimes:\n  a:\n    imgae: x:1\n", "cat.yaml:3: runtime a: unknown key 'imgae'"),
        ("runtimes:\n  a:\n    registry: x\n", "cat.yaml:3: runtime a: missing 'image'"),
        (
            "runtimes:\n  a:\n    image: x:1\n    architectures: [mips]\n",
            "cat.yaml:4: runtime a: unknown architecture 'mips'",
        ),
        (
            "runtimes:\n  a:\n    image: x:1\n  a:\n    image: y:1\n",
            "cat.yaml:4: runtimes: duplicate runtime 'a' (first on line 2)",
        ),
        ("runtimes:\n  ../x:\n    image: x:1\n", "cat.yaml:2: runtime '../x': unsafe runtime name"),
        ("runtimes:\n  a b:\n    image: x:1\n", "cat.yaml:2: runtime 'a b': unsafe runtime name"),
        ("runtimes:\n  Py3:\n    image: x:1\n", "cat.yaml:2: runtime 'Py3': unsafe runtime name"),
        ("runtimes:\n  x.lock:\n    image: x:1\n", "cat.yaml:2: runtime 'x.lock': unsafe runtime name"),
        ("runtimes:\n  .hidden:\n    image: x:1\n", "cat.yaml:2: runtime '.hidden': unsafe runtime name"),
        ("", "cat.yaml:1: empty catalog"),
        ("# only a comment\n", "cat.yaml:1: empty catalog"),
        ("runtimes: {}\n", "cat.yaml:1: empty catalog: 'runtimes' lists no runtime"),
        ("runtimes:\n  a: 3\n", "cat.yaml:2: runtime a: expected a mapping"),
        ("runtimes:\n  a:\n    image: 12\n", "cat.yaml:3: runtime a: 'image' must be a non-empty string"),
        ("runtimes:\n  a:\n    image: Bad/Repo:1\n", "cat.yaml:3: runtime a: image must be repository:tag"),
        ("runtimes:\n  a:\n    image: x:1\n    level: 11\n", "cat.yaml:4: runtime a: level must be a whole number"),
        ("runtimes:\n  a:\n    image: x:1\n    compression: zstd\n", "cat.yaml:4: runtime a: compression must be"),
        ("defaults:\n  registry: 'ftp://x'\nruntimes:\n  a:\n    image: x:1\n", "cat.yaml:2: defaults: registry must"),
        ("defaults:\n  colour: red\nruntimes:\n  a:\n    image: x:1\n", "cat.yaml:2: defaults: unknown key 'colour'"),
        ("runtime:\n  a:\n    image: x:1\n", "cat.yaml:1: catalog: unknown key 'runtime'"),
        ("- a\n- b\n", "cat.yaml:1: catalog: expected a mapping"),
    ],
)
def test_bad_catalogs(text, expected):
    assert error_of(text).startswith(expected)


def test_an_uppercase_repository_is_refused_in_one_line_naming_the_image():
    error = error_of("runtimes:\n  a:\n    image: lambda/Python:3.12\n")
    assert error == (
        "cat.yaml:3: runtime a: image must be repository:tag or repository@sha256:..., got 'lambda/Python:3.12': "
        "repository 'lambda/Python': component 'Python' has uppercase letters (lowercase letters and digits, "
        "joined by '.', '_', '__' or '-', separated by '/')"
    )


def test_smoke_test_files_must_exist(tmp_path):
    (tmp_path / "fn").mkdir()
    good = (
        "runtimes:\n  a:\n    image: x:1\n    smoke:\n"
        "      handler: f.h\n      files: fn\n      event: {a: 1}\n      expect: 2\n"
    )
    rt = catalog.parse(good, tmp_path / "c.yaml").runtimes[0]
    assert rt.smoke.files == str((tmp_path / "fn").resolve()) and rt.smoke.event == {"a": 1}
    with pytest.raises(CatalogError, match=r"c\.yaml:6: runtime a smoke: files folder .* does not exist"):
        catalog.parse(good.replace("files: fn", "files: nope"), tmp_path / "c.yaml")


def test_unreadable_catalog(tmp_path):
    with pytest.raises(CatalogError, match=r"missing\.yaml: cannot read catalog"):
        catalog.load(tmp_path / "missing.yaml")


def test_the_registry_cache_names_a_repository():
    found = parse("cache:\n  to: http://127.0.0.1:5000/lambda-cache\nruntimes:\n  a:\n    image: x:1\n")
    assert (found.cache_to.registry, found.cache_to.repository) == ("http://127.0.0.1:5000", "lambda-cache")
    assert str(found.cache_to) == "http://127.0.0.1:5000/lambda-cache"
    assert str(parse("cache:\n  to: reg.example.com/team/cache\nruntimes:\n  a:\n    image: x:1\n").cache_to) == (
        "reg.example.com/team/cache"
    )
    assert parse("runtimes:\n  a:\n    image: x:1\n").cache_to is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://cache.example.com/c", "plain http:// only to this machine"),
        ("127.0.0.1:5000", "expected [http://]HOST[:PORT]/REPOSITORY"),
        ("127.0.0.1:5000/c:latest", "name a repository, without a tag or digest"),
        ("127.0.0.1:5000/Cache", "component 'Cache' has uppercase letters"),
    ],
)
def test_a_bad_registry_cache_is_one_line_naming_the_line(value, expected):
    error = error_of(f"cache:\n  to: {value}\nruntimes:\n  a:\n    image: x:1\n")
    assert error.startswith(f"cat.yaml:2: cache: 'to' must name a registry repository, got {value!r}: ")
    assert expected in error
    assert error_of("cache:\n  from: x\nruntimes:\n  a:\n    image: x:1\n").startswith(
        "cat.yaml:2: cache: unknown key 'from'"
    )
