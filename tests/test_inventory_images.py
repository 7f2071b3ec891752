"""Inventories in the pipeline: an SBOM per runtime and architecture from export's stream, on the branch, and the
package changes of CHANGES.md, for Amazon Linux 2 (Berkeley DB) and 2023 (sqlite) shaped images."""

import json
import shutil
import subprocess
import uuid

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from doit_cli import run_doit
from inventory_samples import make_bdb, rpm_sample

from lambdaimages import layout
from lambdaimages.inventory.rpmdb import parse_header
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import samples

ARCHES = ("x86_64", "arm64")


def _metadata(name: str, version: str) -> bytes:
    return f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: Apache-2.0\n".encode()


def _images(name: str, database: dict[str, bytes], boto3: str, version: str = "1") -> dict:
    files = {**database, f"/var/runtime/boto3-{boto3}.dist-info/METADATA": _metadata("boto3", boto3)}
    return {arch: samples.lambda_like_image(name, arch, version, extra_files=files) for arch in ARCHES}


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inventory")
    sample = rpm_sample()
    rows = [(n, blob) for n, blob in enumerate(sample.blobs, 1)]
    make_bdb(tmp / "Packages", rows)
    tag = uuid.uuid4().hex[:6]
    names = {"al2": f"n{tag}.al2", "al2023": f"n{tag}.al2023"}
    databases = {
        "al2": {"/var/lib/rpm/Packages": (tmp / "Packages").read_bytes()},
        "al2023": {"/var/lib/rpm/rpmdb.sqlite": sample.sqlite.read_bytes()},
    }
    client = RegistryClient(registry.url)
    for key, name in names.items():
        samples.push_image(client, f"lambda/{name}", "1", _images(name, databases[key], "1.34.1"))
    catalog, out, repo = tmp / "runtimes.yaml", tmp / "out", tmp / "branches.git"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64, arm64]\nruntimes:\n"
        + "".join(f"  {name}:\n    image: lambda/{name}:1\n" for name in names.values())
    )
    run_doit(catalog, out, "export")
    exported = sorted(p.name for p in layout.facts_cache(out).glob("*.json"))
    run_doit(catalog, out, "snapshot", "publish", f"repo={repo}")
    yield {
        "tmp": tmp, "sample": sample, "rows": rows, "names": names, "catalog": catalog, "out": out, "repo": repo,
        "client": client, "exported": exported, "databases": databases,
    }  # fmt: skip


def _sbom(out, name: str, arch: str) -> dict:
    return json.loads(layout.sbom_path(out, name, arch).read_text())


def _rpms(sbom: dict) -> set[tuple[str, str]]:
    return {(c["name"], c["version"]) for c in sbom["components"] if c.get("purl", "").startswith("pkg:rpm/")}


def test_sbom_lists_what_rpm_says_for_both_database_formats(world):
    expected = {(name, version) for name, _, version, *_ in world["sample"].expected}
    for name in world["names"].values():
        for arch in ARCHES:
            text = layout.sbom_path(world["out"], name, arch).read_text()
            assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
            sbom = json.loads(text)
            assert {(n, v.split("-")[0].split(":")[-1]) for n, v in _rpms(sbom)} == expected, name
            pypi = [c for c in sbom["components"] if c.get("purl", "").startswith("pkg:pypi/")]
            assert [(c["name"], c["version"]) for c in pypi] == [("boto3", "1.34.1")]
            properties = {p["name"]: p["value"] for p in sbom["metadata"]["component"]["properties"]}
            assert any(value.startswith("sha256:") for value in properties.values())


def test_export_reads_each_layer_once_for_the_inventory(world):
    layers = {
        layer.diff_id.removeprefix("sha256:")
        for key, name in world["names"].items()
        for image in _images(name, world["databases"][key], "1.34.1").values()
        for layer in image.layers
    }
    assert {name.split(".")[0] for name in world["exported"]} == layers  # facts written by export, from its stream


def test_the_published_branch_holds_each_sbom(world):
    name = world["names"]["al2"]
    for arch in ARCHES:
        shown = subprocess.run(
            ["git", "-C", str(world["repo"]), "show", f"{name}:{arch}/{layout.SBOM}"],
            capture_output=True, check=True,
        ).stdout  # fmt: skip
        assert shown == layout.sbom_path(world["out"], name, arch).read_bytes()


def test_an_sbom_is_the_same_file_when_made_again_from_the_tarballs(world, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(world["out"], out, symlinks=True, ignore=shutil.ignore_patterns(".doit.json*", ".lock"))
    name = world["names"]["al2023"]
    before = {arch: layout.sbom_path(out, name, arch).read_bytes() for arch in ARCHES}
    shutil.rmtree(layout.facts_cache(out))  # a snapshot made before inventories: one pass over its tarballs
    for arch in ARCHES:
        layout.sbom_path(out, name, arch).unlink()
    run_doit(world["catalog"], out, f"inventory:{name}")
    assert {arch: layout.sbom_path(out, name, arch).read_bytes() for arch in ARCHES} == before


def test_changes_list_package_changes_from_the_inventories_also_for_al2(world):
    name = world["names"]["al2"]
    kept = world["rows"][:5] + world["rows"][6:]  # one package removed
    folder = world["tmp"] / "moved"
    folder.mkdir()
    make_bdb(folder / "Packages", kept)
    moved = _images(name, {"/var/lib/rpm/Packages": (folder / "Packages").read_bytes()}, "1.35.0", version="2")
    samples.push_image(world["client"], f"lambda/{name}", "1", moved)
    run = run_doit(world["catalog"], world["out"], f"changes:{name}", f"repo={world['repo']}")
    removed = parse_header(world["rows"][5][1])  # the header blob taken out of the Berkeley DB
    assert "`pypi: boto3` `1.34.1` → `1.35.0`" in run.stdout, run.stdout
    assert f"- removed `rpm: {removed.name}` `{removed.version}-{removed.release}`" in run.stdout
    assert f"{len(kept) + 1} packages: 0 added, 1 removed, 1 changed." in run.stdout
