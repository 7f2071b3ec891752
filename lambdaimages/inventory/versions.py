"""The OS release and the language runtime's version, read from the few small files of an image that name them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

# Files whose content names a version, by path in the image (no leading slash).
TEXT_FILES = re.compile(
    r"^(?:etc/os-release|usr/lib/os-release|etc/system-release|var/lang/version|var/lang/release"
    r"|var/lang/include/python[0-9][^/]*/patchlevel\.h|var/lang/include/node/node_version\.h"
    r"|var/lang/lib/ruby/[^/]+/[^/]+/rbconfig\.rb)$"
)
OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
DOTNET_RE = re.compile(r"^var/lang/(?:.+/)?shared/Microsoft\.NETCore\.App/([0-9][^/]*)$")
RUNTIMES = ("python", "node", "ruby", "java", "dotnet")  # the keys of `runtime_versions` that name a language


def os_release_fields(text: str) -> dict[str, str]:
    """The `KEY=value` fields of an os-release file, quotes removed."""
    return dict(_fields(text))


def _fields(text: str) -> Iterator[tuple[str, str]]:
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            yield key.strip(), value.strip().strip("\"'")


def runtime_versions(paths: Iterable[str], text: Callable[[str], str | None]) -> dict[str, str]:
    """Version strings read from well-known places of an image, by what they name (os, python, node, java...).

    Args:
        paths: every path of the image (no leading slash); .NET's version is the name of a directory.
        text: the content of a file of the image named by `TEXT_FILES` (symlinks followed), or None.
    """
    result: dict[str, str] = {}
    os_release = next(filter(None, map(text, OS_RELEASE)), None)
    if os_release:
        fields = os_release_fields(os_release)
        name = fields.get("PRETTY_NAME") or " ".join(filter(None, (fields.get("NAME"), fields.get("VERSION_ID"))))
        if name:
            result["os"] = name
    system_release = text("etc/system-release")
    if system_release and system_release.strip() and "os" not in result:
        result["os"] = system_release.strip().splitlines()[0]
    for path in paths:
        if not path.startswith("var/lang/"):
            continue
        content = text(path) if TEXT_FILES.match(path) else None
        if content is None:
            if match := DOTNET_RE.match(path):
                result["dotnet"] = " ".join(filter(None, (result.get("dotnet"), match[1])))
            continue
        result.update(_language_version(path, content))
    return dict(sorted(result.items()))


def _language_version(path: str, text: str) -> dict[str, str]:
    if path.endswith("patchlevel.h") and (match := re.search(r'#define\s+PY_VERSION\s+"([^"]+)"', text)):
        return {"python": match[1]}
    if path.endswith("node_version.h"):
        parts = [re.search(rf"#define\s+NODE_{p}_VERSION\s+(\d+)", text) for p in ("MAJOR", "MINOR", "PATCH")]
        if all(parts):
            return {"node": ".".join(m[1] for m in parts if m)}
    elif path.endswith("rbconfig.rb") and (match := re.search(r'"RUBY_PROGRAM_VERSION"\]\s*=\s*"([^"]+)"', text)):
        return {"ruby": match[1]}
    elif path == "var/lang/release" and (match := re.search(r'^JAVA_VERSION="?([^"\n]+)"?', text, re.M)):
        return {"java": match[1]}
    elif path == "var/lang/version" and text.strip():
        return {"runtime": text.strip().splitlines()[0]}
    return {}
