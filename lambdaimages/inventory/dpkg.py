"""Debian packages from dpkg's status file (`var/lib/dpkg/status`)."""

from __future__ import annotations

import re

from lambdaimages.inventory.facts import Package

STATUS = "var/lib/dpkg/status"
_FIELD = re.compile(r"^([A-Za-z0-9-]+):[ \t]*(.*)$", re.M)


def status_packages(text: str, path: str = STATUS) -> list[Package]:
    """The installed packages of a dpkg status file (paragraphs whose Status ends in `installed`), in file order."""
    found = []
    for paragraph in re.split(r"\n[ \t]*\n", text):
        fields = dict(_FIELD.findall(paragraph))
        status = fields.get("Status", "installed").split()
        if "Package" not in fields or "Version" not in fields or status[-1:] != ["installed"]:
            continue
        source = fields.get("Source", "").split(" ")[0]  # "src (version)" when the versions differ
        found.append(
            Package(
                "deb", fields["Package"], fields["Version"], path, arch=fields.get("Architecture", ""), source=source
            )
        )
    return found
