""".NET packages: the libraries a `*.deps.json` lists for its runtime target, and the shared frameworks installed."""

from __future__ import annotations

import re
from collections.abc import Iterable

from lambdaimages.inventory.facts import Found, Package, json_object

LIBRARY_TYPES = ("package", "project")  # not "referenceassembly" and the like: no code of their own
# A shared framework is a directory named by its version: <dotnet root>/shared/<framework>/<version>/.
FRAMEWORK = re.compile(r"^((?:.*/)?shared/(Microsoft\.NETCore\.App|Microsoft\.AspNetCore\.App)/([0-9][^/]*))(?:/|$)")
# The CPE vendor:product scanners match each framework's CVEs by.
FRAMEWORK_CPES = {"Microsoft.NETCore.App": "microsoft:.net", "Microsoft.AspNetCore.App": "microsoft:asp.net_core"}


def deps_packages(path: str, data: bytes) -> Found:
    """The NuGet packages and projects of a `*.deps.json` file, from its runtime target (`runtimeTarget.name`;
    a file naming none counts when it has only one target)."""
    document, notes = json_object(data)
    if document is None:
        return [], notes
    targets = document.get("targets") if isinstance(document.get("targets"), dict) else {}
    libraries = document.get("libraries") if isinstance(document.get("libraries"), dict) else {}
    runtime = document.get("runtimeTarget")
    name = runtime.get("name") if isinstance(runtime, dict) else None
    if not isinstance(name, str):
        if len(targets) != 1:
            return [], [f"no runtimeTarget and {len(targets)} targets: not read"]
        name = next(iter(targets))
    target = targets.get(name)
    if not isinstance(target, dict):
        return [], [f"the runtime target {name!r} is not among the targets"]
    packages = []
    for key in target:
        library = libraries.get(key)
        if not isinstance(library, dict) or library.get("type") not in LIBRARY_TYPES:
            continue
        library_name, _, version = key.rpartition("/")
        if library_name:
            packages.append(Package("nuget", library_name, version, path))
    return packages, []


def shared_frameworks(paths: Iterable[str]) -> list[Package]:
    """The shared frameworks (Microsoft.NETCore.App, Microsoft.AspNetCore.App) an image's paths hold, one per
    version directory, as packages of kind `dotnet` whose path is that directory."""
    found: dict[str, Package] = {}
    for path in paths:
        if "shared/Microsoft." in path and (match := FRAMEWORK.match(path)) and match[1] not in found:
            found[match[1]] = Package("dotnet", match[2], match[3], match[1])
    return list(found.values())
