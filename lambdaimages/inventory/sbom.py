"""An inventory as a CycloneDX 1.6 JSON SBOM (written with cyclonedx-python-lib), and read back for changelogs."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from packageurl import PackageURL

from lambdaimages import platforms
from lambdaimages.inventory import dotnet
from lambdaimages.inventory.facts import Package
from lambdaimages.inventory.merge import DirCount, Inventory
from lambdaimages.inventory.versions import RUNTIMES
from lambdaimages.tools.files import write_if_changed

if TYPE_CHECKING:
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model import Property
    from cyclonedx.model.component import Component
    from cyclonedx.model.license import License

NS = "lambdaimages"  # the namespace of our CycloneDX property names
# CPE vendor:product of each language runtime, so that scanners matching CPEs find the runtime's CVEs.
RUNTIME_CPES = {
    "python": "python:python",
    "node": "nodejs:node.js",
    "ruby": "ruby-lang:ruby",
    "java": "oracle:openjdk",
    "dotnet": "microsoft:.net",
}
_OS_FIELDS = ("ID", "VERSION_ID", "NAME", "PRETTY_NAME")
# license-expression's parser, shared by every LicenseFactory, builds its tokenizer on first use; two tasks' threads
# doing that at once crashed it, which cyclonedx takes for "not an expression" (a license name instead): one at a time.
_LICENSE_PARSER = threading.Lock()


def _cdx() -> SimpleNamespace:
    """cyclonedx-python-lib, imported on first use: a doit run that writes no SBOM (a no-op, a resolve, reading
    SBOMs back for a changelog or check_base) does not pay its ~150 ms at every start."""
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    return SimpleNamespace(
        LicenseFactory=LicenseFactory,
        Property=Property,
        Bom=Bom,
        BomMetaData=BomMetaData,
        Component=Component,
        ComponentType=ComponentType,
        JsonV1Dot6=JsonV1Dot6,
    )


@dataclass(frozen=True)
class ImageInfo:
    """The image an SBOM describes: upstream reference, digests, architecture (the catalog's name) and runtime."""

    reference: str
    manifest_digest: str
    config_digest: str
    architecture: str
    runtime: str = ""


def to_cyclonedx(inventory: Inventory, image: ImageInfo, timestamp: datetime | None = None) -> str:
    """The inventory as CycloneDX 1.6 JSON text; the same inventory and image give the same text.

    Args:
        inventory: from `merge.merge`.
        image: the image, its metadata component.
        timestamp: when the SBOM was made (default: now); pass the snapshot's time for reproducible output.
    """
    cdx = _cdx()
    root = cdx.Component(
        type=cdx.ComponentType.CONTAINER,
        name=image.reference,
        version=image.manifest_digest,
        bom_ref=f"image:{image.config_digest}:{image.architecture}",
        purl=_image_purl(image),
        properties=[
            cdx.Property(name=f"{NS}:manifest-digest", value=image.manifest_digest),
            cdx.Property(name=f"{NS}:config-digest", value=image.config_digest),
            cdx.Property(name=f"{NS}:architecture", value=image.architecture),
            *([cdx.Property(name=f"{NS}:runtime", value=image.runtime)] if image.runtime else []),
        ],
    )
    metadata = cdx.BomMetaData(component=root, properties=_inventory_properties(inventory))
    if timestamp is not None:
        metadata.timestamp = timestamp
    metadata.tools.components.add(cdx.Component(type=cdx.ComponentType.APPLICATION, name=NS))
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"{image.reference}@{image.manifest_digest}#{image.architecture}")
    bom = cdx.Bom(metadata=metadata, serial_number=serial)
    components = _os_components(inventory) + _runtime_components(inventory) + _package_components(inventory)
    for component in components:
        bom.components.add(component)
    bom.register_dependency(root, components)
    return cdx.JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def write_sbom(path: Path, inventory: Inventory, image: ImageInfo, timestamp: datetime | None = None) -> None:
    """Write `to_cyclonedx` to `path`, atomically, when its bytes change (a rerun rewrites no file)."""
    write_if_changed(path, to_cyclonedx(inventory, image, timestamp).encode())


def _image_purl(image: ImageInfo) -> PackageURL:
    # Trivy's form: pkg:oci/<name>@<manifest digest>?arch=<oci arch>&repository_url=<registry>/<repository>
    repository = image.reference.split("@")[0]
    if ":" in repository.rpartition("/")[2]:
        repository = repository.rpartition(":")[0]
    architecture = platforms.lookup(image.architecture)
    return PackageURL(
        type="oci",
        name=repository.rpartition("/")[2],
        version=image.manifest_digest,
        qualifiers={"arch": architecture.oci if architecture else image.architecture, "repository_url": repository},
    )


def _inventory_properties(inventory: Inventory) -> list[Property]:
    cdx = _cdx()
    properties = [cdx.Property(name=f"{NS}:files", value=str(inventory.files))]
    properties.append(cdx.Property(name=f"{NS}:bytes", value=str(inventory.bytes)))
    properties += [cdx.Property(name=f"{NS}:version:{k}", value=v) for k, v in inventory.versions.items()]
    properties += [
        cdx.Property(name=f"{NS}:os-release:{k}", value=inventory.os_release[k])
        for k in _OS_FIELDS
        if k in inventory.os_release
    ]
    for top, count in (inventory.unowned or {}).items():
        properties.append(cdx.Property(name=f"{NS}:unowned:{top}", value=f"files={count.files} bytes={count.bytes}"))
    if inventory.unowned is not None and not inventory.unowned:
        properties.append(cdx.Property(name=f"{NS}:unowned", value="none"))
    properties += [cdx.Property(name=f"{NS}:note", value=_text(note)) for note in inventory.notes]
    return properties


def _os_components(inventory: Inventory) -> list[Component]:
    cdx = _cdx()
    # Scanners (syft, trivy, grype) take the distribution from an operating-system component.
    os_id = inventory.os_release.get("ID")
    if not os_id:
        return []
    return [
        cdx.Component(
            type=cdx.ComponentType.OPERATING_SYSTEM,
            name=os_id,
            version=inventory.os_release.get("VERSION_ID"),
            description=inventory.os_release.get("PRETTY_NAME"),
            bom_ref=f"os:{os_id}",
        )
    ]


def _runtime_components(inventory: Inventory) -> list[Component]:
    cdx = _cdx()
    components = []
    for name in RUNTIMES:
        version = inventory.versions.get(name)
        if not version:
            continue
        for one in version.split():  # .NET images may hold several runtimes
            vendor = RUNTIME_CPES[name]
            components.append(
                cdx.Component(
                    type=cdx.ComponentType.PLATFORM,
                    name=name,
                    version=one,
                    bom_ref=f"runtime:{name}@{one}",
                    purl=PackageURL(type="generic", name=name, version=one),
                    cpe=f"cpe:2.3:a:{vendor}:{one}:*:*:*:*:*:*:*",
                    properties=[cdx.Property(name=f"{NS}:kind", value="runtime")],
                )
            )
    return components


def _package_components(inventory: Inventory) -> list[Component]:
    cdx = _cdx()
    distro = inventory.os_release.get("ID", "")
    distro_version = inventory.os_release.get("VERSION_ID", "")
    licenses = cdx.LicenseFactory()
    refs: dict[str, int] = {}
    components = []
    for package in inventory.packages:
        purl = package_url(package, distro, distro_version)
        ref = str(purl)
        refs[ref] = refs.get(ref, 0) + 1
        properties = [
            cdx.Property(name=f"{NS}:kind", value=package.kind),
            cdx.Property(name=f"{NS}:path", value=_text(package.path)),
        ]
        if package.source:
            properties.append(cdx.Property(name=f"{NS}:source", value=package.source))
        components.append(
            cdx.Component(
                type=cdx.ComponentType.LIBRARY,
                name=package.name,
                version=package.full_version or None,
                group=package.group or None,
                purl=purl,
                bom_ref=ref if refs[ref] == 1 else f"{ref}#{refs[ref]}",
                licenses=[_license(licenses, package.license)] if package.license else None,
                cpe=package_cpe(package),
                properties=properties,
            )
        )
    return components


def _license(factory: LicenseFactory, text: str) -> License:
    with _LICENSE_PARSER:
        return factory.make_from_string(text)


def package_cpe(package: Package) -> str | None:
    """The CPE scanners match a package's CVEs by, where its purl is not enough: Go's standard library (syft's
    form) and the .NET shared frameworks."""
    if package.kind == "golang" and package.name == "stdlib":
        return f"cpe:2.3:a:golang:go:{package.version}:-:*:*:*:*:*:*"
    if package.kind == "dotnet" and package.name in dotnet.FRAMEWORK_CPES:
        return f"cpe:2.3:a:{dotnet.FRAMEWORK_CPES[package.name]}:{package.version}:*:*:*:*:*:*:*"
    return None


def package_url(package: Package, distro: str = "", distro_version: str = "") -> PackageURL:
    """The purl scanners use for a package: for rpm and deb, syft's form (`pkg:rpm/amzn/bash@4.2.46-34.amzn2
    ?arch=x86_64&distro=amzn-2&epoch=1&upstream=bash-4.2.46-34.amzn2.src.rpm`); pypi, npm, gem, maven, nuget and
    golang as the purl spec writes them (Go's toolchain as syft does: `pkg:golang/stdlib@1.19.8`); a .NET shared
    framework as `pkg:generic/microsoft/Microsoft.NETCore.App@8.0.1`.

    Args:
        package: the package.
        distro: the os-release ID of the image (amzn, debian), the namespace of rpm and deb purls.
        distro_version: the os-release VERSION_ID (2, 2023, 12).
    """
    if package.kind in ("rpm", "deb"):
        qualifiers = {"arch": package.arch}
        if package.kind == "rpm" and package.epoch is not None:
            qualifiers["epoch"] = str(package.epoch)
        if package.source:
            qualifiers["upstream"] = package.source
        if distro and distro_version:
            qualifiers["distro"] = f"{distro}-{distro_version}"
        version = f"{package.version}-{package.release}" if package.release else package.version
        return PackageURL(
            type=package.kind,
            namespace=distro or None,
            name=package.name,
            version=version,
            qualifiers={k: v for k, v in qualifiers.items() if v},
        )
    if package.kind == "npm" and package.name.startswith("@") and "/" in package.name:
        scope, name = package.name.split("/", 1)
        return PackageURL(type="npm", namespace=scope, name=name, version=package.version or None)
    if package.kind == "golang":  # pkg:golang/github.com/aws/aws-lambda-go@v1.47.0; the toolchain: stdlib@1.19.8
        namespace, _, name = package.name.rpartition("/")
        return PackageURL(type="golang", namespace=namespace or None, name=name, version=package.version or None)
    if package.kind == "dotnet":  # a shared framework: a directory, not a NuGet package
        return PackageURL(type="generic", namespace="microsoft", name=package.name, version=package.version or None)
    namespace = package.group or None
    return PackageURL(type=package.kind, namespace=namespace, name=package.name, version=package.version or None)


def _text(value: str) -> str:
    # Paths are kept as the tar named them (invalid UTF-8 as surrogates); JSON text must be valid Unicode.
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_sbom(path: Path) -> Inventory:
    """The inventory an SBOM of `write_sbom` holds (what a changelog compares), without reading layers again.

    Raises:
        ValueError: the file is not such an SBOM.
        OSError: the file cannot be read.
    """
    return parse_sbom(Path(path).read_text(), str(path))


def parse_sbom(text: str, path: str = "SBOM") -> Inventory:
    """The inventory of an SBOM's text (`read_sbom` of a file; a published branch's blob).

    Raises:
        ValueError: the text is not such an SBOM.
    """
    try:
        document = json.loads(text)
        properties = {p["name"]: p["value"] for p in document["metadata"].get("properties", [])}
        notes = tuple(p["value"] for p in document["metadata"].get("properties", []) if p["name"] == f"{NS}:note")
        packages = tuple(_package(c) for c in document.get("components", []) if _kind(c) not in (None, "runtime"))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise ValueError(f"{path}: not an SBOM of this tool: {error!r}") from error
    prefix = f"{NS}:unowned:"
    unowned = {
        name.removeprefix(prefix): DirCount(*(int(part.split("=")[1]) for part in value.split()))
        for name, value in properties.items()
        if name.startswith(prefix)
    }
    return Inventory(
        packages=packages,
        versions={k.removeprefix(f"{NS}:version:"): v for k, v in properties.items() if k.startswith(f"{NS}:version:")},
        os_release={
            k.removeprefix(f"{NS}:os-release:"): v for k, v in properties.items() if k.startswith(f"{NS}:os-release:")
        },
        unowned=unowned if unowned or f"{NS}:unowned" in properties else None,
        files=int(properties.get(f"{NS}:files", 0)),
        bytes=int(properties.get(f"{NS}:bytes", 0)),
        notes=notes,
    )


def _kind(component: dict) -> str | None:
    return next((p["value"] for p in component.get("properties", []) if p["name"] == f"{NS}:kind"), None)


def _package(component: dict) -> Package:
    fields = {p["name"].removeprefix(f"{NS}:"): p["value"] for p in component.get("properties", [])}
    purl = PackageURL.from_string(component["purl"])
    kind = fields["kind"]
    version = component.get("version", "")
    epoch, release = None, ""
    if kind == "rpm":
        if ":" in version:
            head, version = version.split(":", 1)
            epoch = int(head)
        version, _, release = version.rpartition("-") if "-" in version else (version, "", "")
    license = ""
    for item in component.get("licenses", []):
        license = item.get("expression") or item.get("license", {}).get("id") or item.get("license", {}).get("name", "")
    return Package(
        kind=kind,
        name=component["name"],
        version=version,
        path=fields["path"],
        epoch=epoch,
        release=release,
        arch=(purl.qualifiers or {}).get("arch", "") if kind in ("rpm", "deb") else "",
        license=license,
        source=fields.get("source", ""),
        group=component.get("group", ""),
    )
