""".NET packages from `*.deps.json` (runtime target; package and project libraries) and shared framework versions."""

import json

from inventory_samples import feed, tar_of

from lambdaimages.inventory import dotnet, merge
from lambdaimages.inventory.sbom import package_cpe, package_url

DEPS = {
    "runtimeTarget": {"name": ".NETCoreApp,Version=v8.0/linux-x64", "signature": ""},
    "targets": {
        ".NETCoreApp,Version=v8.0": {"Unused/9.9.9": {}},
        ".NETCoreApp,Version=v8.0/linux-x64": {
            "Function/1.0.0": {"dependencies": {"Amazon.Lambda.Core": "2.2.0"}},
            "Amazon.Lambda.Core/2.2.0": {"runtime": {"lib/net6.0/Amazon.Lambda.Core.dll": {}}},
            "System.Text.Json/8.0.4": {},
            "Microsoft.NETCore.App.Ref/8.0.0": {},
        },
    },
    "libraries": {
        "Function/1.0.0": {"type": "project", "serviceable": False, "sha512": ""},
        "Amazon.Lambda.Core/2.2.0": {"type": "package", "serviceable": True, "sha512": "sha512-x"},
        "System.Text.Json/8.0.4": {"type": "package", "serviceable": True, "sha512": "sha512-y"},
        "Microsoft.NETCore.App.Ref/8.0.0": {"type": "referenceassembly"},
        "Unused/9.9.9": {"type": "package"},
    },
}


def test_deps_json_lists_the_runtime_targets_packages_and_projects():
    facts = feed(tar_of({"var/task/Function.deps.json": json.dumps(DEPS).encode()}))
    found = facts.packages["var/task/Function.deps.json"]
    assert [(p.kind, p.name, p.version) for p in found] == [
        ("nuget", "Function", "1.0.0"),
        ("nuget", "Amazon.Lambda.Core", "2.2.0"),
        ("nuget", "System.Text.Json", "8.0.4"),
    ]
    assert str(package_url(found[1])) == "pkg:nuget/Amazon.Lambda.Core@2.2.0"


def test_damaged_deps_json_is_a_note():
    facts = feed(tar_of({"var/task/a.deps.json": b"{not json", "var/task/b.deps.json": b'{"targets": {}}'}))
    assert facts.packages == {}
    assert facts.notes["var/task/a.deps.json"][0].startswith("not JSON")
    assert facts.notes["var/task/b.deps.json"] == ["no runtimeTarget and 0 targets: not read"]


def test_shared_frameworks_are_components_and_follow_whiteouts():
    base = feed(
        tar_of(
            {
                "var/lang/bin/shared/Microsoft.NETCore.App/8.0.7/libcoreclr.so": b"x",
                "var/lang/bin/shared/Microsoft.AspNetCore.App/8.0.7/Microsoft.AspNetCore.dll": b"x",
                "var/lang/bin/shared/Microsoft.NETCore.App/8.0.6/libcoreclr.so": b"x",
            }
        )
    )
    top = feed(tar_of({"var/lang/bin/shared/Microsoft.NETCore.App/.wh.8.0.6": b""}))
    inventory = merge.merge([base, top])
    frameworks = sorted((p.name, p.version) for p in inventory.of_kind("dotnet"))
    assert frameworks == [("Microsoft.AspNetCore.App", "8.0.7"), ("Microsoft.NETCore.App", "8.0.7")]
    aspnet = next(p for p in inventory.of_kind("dotnet") if p.name == "Microsoft.AspNetCore.App")
    assert package_cpe(aspnet) == "cpe:2.3:a:microsoft:asp.net_core:8.0.7:*:*:*:*:*:*:*"
    assert str(package_url(aspnet)) == "pkg:generic/microsoft/Microsoft.AspNetCore.App@8.0.7"
    assert dotnet.shared_frameworks(["usr/share/dotnet/shared/Microsoft.NETCore.App/9.0.0"])[0].version == "9.0.0"
