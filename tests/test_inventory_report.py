"""The inventory summary and the diff of two inventories that CHANGES.md shows."""

from inventory_samples import feed, image_layers

from lambdaimages.inventory import report
from lambdaimages.inventory.facts import Package
from lambdaimages.inventory.merge import DirCount, Inventory, merge


def _pypi(name: str, version: str, path: str = "var/runtime") -> Package:
    return Package("pypi", name, version, f"{path}/{name}-{version}.dist-info")


def _rpm(name: str, version: str, release: str, arch: str = "x86_64", epoch: int | None = None) -> Package:
    return Package("rpm", name, version, "var/lib/rpm/Packages", epoch, release, arch)


OLD = Inventory(
    packages=(
        _pypi("boto3", "1.34.1"),
        _pypi("awslambdaric", "2.0.0"),
        _rpm("bash", "4.2.46", "34.amzn2"),
        _rpm("glibc", "2.26", "60.amzn2", "x86_64"),
        _rpm("glibc", "2.26", "60.amzn2", "i686"),
        Package("npm", "semver", "6.3.0", "a/node_modules/semver"),
    ),
    versions={"os": "Amazon Linux 2", "python": "3.11.6"},
)
NEW = Inventory(
    packages=(
        _pypi("boto3", "1.35.0"),
        _pypi("awslambdaric", "2.0.0"),
        _rpm("bash", "4.2.46", "35.amzn2", epoch=1),
        _rpm("glibc", "2.26", "61.amzn2", "x86_64"),
        _rpm("glibc", "2.26", "60.amzn2", "i686"),
        _rpm("openssl", "1.0.2k", "24.amzn2"),
        Package("npm", "semver", "6.3.0", "a/node_modules/semver"),
        Package("npm", "semver", "7.5.4", "b/node_modules/semver"),
    ),
    versions={"os": "Amazon Linux 2", "python": "3.11.9"},
)


def test_diff_lists_what_changed():
    changes = report.diff(OLD, NEW)
    assert changes.lines() == [
        "version: python 3.11.6 -> 3.11.9",
        "npm: semver 6.3.0 -> 6.3.0, 7.5.4",
        "pypi: boto3 1.34.1 -> 1.35.0",
        "rpm: bash 4.2.46-34.amzn2 -> 1:4.2.46-35.amzn2",
        "rpm: glibc.x86_64 2.26-60.amzn2 -> 2.26-61.amzn2",
        "rpm: openssl 1.0.2k-24.amzn2 (new)",
    ]
    back = report.diff(NEW, OLD)
    assert [str(c) for c in back.removed] == ["openssl 1.0.2k-24.amzn2 (removed)"]
    assert not report.diff(NEW, NEW)


def test_summary_of_a_real_sample():
    layers, _ = image_layers()
    lines = report.summary(merge(feed(layer) for layer in layers))
    assert lines[0] == "OS: Amazon Linux 2023"
    assert lines[1] == "runtime: python 3.12.7"
    assert lines[2].startswith("packages: 31 rpm, ") and "Python" in lines[2] and "1 npm" in lines[2]
    assert lines[3].startswith("not from rpm: /var/runtime (")
    assert lines[4].startswith("notes: 1 ")


def test_summary_without_anything():
    assert report.summary(Inventory(unowned={"/opt": DirCount(0, 0)})) == [
        "OS: unknown",
        "runtime: unknown",
        "packages: none found",
        "not from rpm: /opt (0 files, 0 B)",
    ]
