"""Merging layers' facts: replaced databases, whiteouts, opaque folders, versions, and the files no rpm owns."""

import io
import os
from collections import defaultdict

from inventory_samples import feed, image_layers, rpm_sample, run, tar_of, workdir

from lambdaimages.inventory.merge import DirCount, Inventory, merge
from lambdaimages.tools.tree import merge_layers


def test_merge_honors_replacements_and_whiteouts():
    layers, truth = image_layers()
    inventory = merge(feed(layer, name=f"layer{n}") for n, layer in enumerate(layers))
    rpms = sorted((p.name, p.version, p.release) for p in inventory.of_kind("rpm"))
    assert rpms == sorted((name, version, release) for name, _, version, release, *_ in truth["rpm"])
    assert "sample-05" not in {name for name, *_ in rpms} and len(rpms) == len(rpm_sample().expected) - 1
    pypi = {(p.name, p.version) for p in inventory.of_kind("pypi")}
    assert ("boto3", "1.35.0") in pypi and "six" not in {name for name, _ in pypi} and ("eggy", "0.3") in pypi
    assert {(p.name, p.version) for p in inventory.of_kind("npm")} == {("debug", "4.4.0")}
    assert inventory.versions == {"os": "Amazon Linux 2023", "python": "3.12.7"}
    assert inventory.os_release["VERSION_ID"] == "2023"
    [note] = inventory.notes
    assert note == "/var/lib/rpm/Packages: another rpm database than /var/lib/rpm/rpmdb.sqlite, not counted"
    assert Inventory.from_dict(inventory.to_dict()) == inventory


def test_files_no_rpm_owns_per_top_directory():
    layers, truth = image_layers()
    inventory = merge(feed(layer) for layer in layers)
    # The ground truth: the project's own merged tree, less what rpm lists, resolved in the real filesystem.
    root = truth["root"]
    listed = run("rpm", "--root", root, "--dbpath", "/var/lib/rpm", "-qa", "--qf", "[%{FILENAMES}\n]").splitlines()
    owned = {os.path.relpath(os.path.realpath(root / path.lstrip("/")), root) for path in listed}
    tree = merge_layers(io.BytesIO(layer) for layer in layers)
    expected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for path, entry in tree.items():
        if entry.type != "dir" and path not in owned:
            top = "/" + "/".join(path.split("/")[:-1][:2])
            expected[top][0] += 1
            expected[top][1] += entry.size
    assert inventory.unowned == {top: DirCount(*expected[top]) for top in sorted(expected)}
    assert inventory.unowned["/usr/lib64"] == DirCount(1, len(b"not from rpm"))  # libsample.so.1 is owned
    assert inventory.unowned["/var/runtime"].files > 10
    assert inventory.unowned["/usr/share"] == DirCount(1, 2)  # sample-05's data: its files stay, rpm forgot it
    assert inventory.files == sum(1 for e in tree.values() if e.type != "dir")


def test_an_image_without_rpm_has_no_unowned_summary():
    status = b"Package: a\nVersion: 1\nStatus: install ok installed\n"
    inventory = merge([feed(tar_of({"var/lib/dpkg/status": status}))])
    assert inventory.unowned is None
    assert [(p.kind, p.name) for p in inventory.packages] == [("deb", "a")]


def test_a_whiteout_of_the_database_removes_its_packages_and_notes():
    sample = rpm_sample()
    broken = workdir() / "broken.sqlite"
    broken.write_bytes(sample.sqlite.read_bytes()[:5000])
    lower = feed(tar_of({"var/lib/rpm/rpmdb.sqlite": broken, "usr/lib/sysimage/rpm/rpmdb.sqlite": sample.sqlite}))
    assert lower.notes["var/lib/rpm/rpmdb.sqlite"]
    upper = feed(tar_of({"var/lib/rpm/.wh.rpmdb.sqlite": b""}))
    inventory = merge([lower, upper])
    assert len(inventory.of_kind("rpm")) == len(sample.expected)
    assert inventory.notes == ()
    assert {p.path for p in inventory.of_kind("rpm")} == {"usr/lib/sysimage/rpm/rpmdb.sqlite"}
