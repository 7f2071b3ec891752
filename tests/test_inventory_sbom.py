"""The CycloneDX SBOM: valid against the 1.6 schema, scanners' purls, the image as metadata, and read back."""

import json
from datetime import UTC, datetime

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from inventory_samples import feed, image_layers

from lambdaimages.inventory import report
from lambdaimages.inventory.facts import Package
from lambdaimages.inventory.merge import merge
from lambdaimages.inventory.sbom import ImageInfo, package_url, read_sbom, to_cyclonedx, write_sbom

IMAGE = ImageInfo(
    reference="public.ecr.aws/lambda/python:3.12",
    manifest_digest="sha256:" + "a" * 64,
    config_digest="sha256:" + "b" * 64,
    architecture="x86_64",
    runtime="python3.12",
)
WHEN = datetime(2024, 10, 14, 16, 0, tzinfo=UTC)


def _inventory():
    layers, truth = image_layers()
    return merge(feed(layer) for layer in layers), truth


def test_sbom_is_valid_cyclonedx_1_6_and_describes_the_image():
    inventory, _ = _inventory()
    text = to_cyclonedx(inventory, IMAGE, WHEN)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    document = json.loads(text)
    assert document["specVersion"] == "1.6" and document["metadata"]["timestamp"].startswith("2024-10-14T16:00")
    image = document["metadata"]["component"]
    assert image["type"] == "container" and image["name"] == IMAGE.reference
    assert image["purl"] == (f"pkg:oci/python@sha256:{'a' * 64}?arch=amd64&repository_url=public.ecr.aws/lambda/python")
    properties = {p["name"]: p["value"] for p in image["properties"]}
    assert properties["lambdaimages:config-digest"] == IMAGE.config_digest
    assert properties["lambdaimages:architecture"] == "x86_64"
    notes = [p["value"] for p in document["metadata"]["properties"] if p["name"] == "lambdaimages:note"]
    assert notes == list(inventory.notes) and notes
    assert text == to_cyclonedx(inventory, IMAGE, WHEN)  # reproducible


def test_os_packages_carry_the_purls_scanners_use():
    inventory, truth = _inventory()
    components = json.loads(to_cyclonedx(inventory, IMAGE, WHEN))["components"]
    rpms = {c["purl"] for c in components if c.get("purl", "").startswith("pkg:rpm/")}
    expected = set()
    for name, epoch, version, release, arch, _, source in truth["rpm"]:
        qualifiers = f"arch={arch}&distro=amzn-2023" + (f"&epoch={epoch}" if epoch != "(none)" else "")
        expected.add(f"pkg:rpm/amzn/{name}@{version}-{release}?{qualifiers}&upstream={source}")
    assert rpms == expected
    [os_component] = [c for c in components if c["type"] == "operating-system"]
    assert (os_component["name"], os_component["version"]) == ("amzn", "2023")
    [python] = [c for c in components if c["type"] == "platform"]
    assert python["version"] == "3.12.7" and python["cpe"].startswith("cpe:2.3:a:python:python:3.12.7:")
    boto3 = next(c for c in components if c["name"] == "boto3")
    assert boto3["purl"] == "pkg:pypi/boto3@1.35.0"
    licensed = next(c for c in components if c["name"] == "sample-03")
    assert licensed["licenses"] == [{"license": {"name": "BSD and MIT"}}]


def test_purls_of_every_kind():
    def purl(kind, name, version, **fields):
        return str(package_url(Package(kind, name, version, "p", **fields), "debian", "12"))

    assert purl("deb", "libc6", "2.36-9+deb12u4", arch="amd64", source="glibc") == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"
    )
    assert purl("npm", "@aws-sdk/client-s3", "3.600.0") == "pkg:npm/%40aws-sdk/client-s3@3.600.0"
    assert purl("npm", "debug", "4.3.4") == "pkg:npm/debug@4.3.4"
    assert purl("gem", "json", "2.6.3") == "pkg:gem/json@2.6.3"
    assert purl("maven", "aws-lambda-java-core", "1.2.3", group="com.amazonaws") == (
        "pkg:maven/com.amazonaws/aws-lambda-java-core@1.2.3"
    )
    assert purl("pypi", "PyYAML", "6.0.1") == "pkg:pypi/pyyaml@6.0.1"


def test_an_sbom_reads_back_as_the_same_inventory(tmp_path):
    inventory, _ = _inventory()
    write_sbom(tmp_path / "sbom.cdx.json", inventory, IMAGE, WHEN)
    back = read_sbom(tmp_path / "sbom.cdx.json")
    assert sorted(back.packages, key=repr) == sorted(inventory.packages, key=repr)
    assert (back.versions, back.os_release, back.unowned, back.notes) == (
        inventory.versions,
        {k: inventory.os_release[k] for k in ("ID", "VERSION_ID", "NAME", "PRETTY_NAME")},
        inventory.unowned,
        inventory.notes,
    )
    assert not report.diff(back, inventory)
    assert (back.files, back.bytes) == (inventory.files, inventory.bytes)
