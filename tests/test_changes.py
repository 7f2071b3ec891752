"""Changelogs between snapshots: streamed layer reading, version strings, package databases, CHANGES.md."""

import gzip
import json
import lzma
import sqlite3
import struct
import threading
from pathlib import Path

import pytest
from states import make_state

from lambdaimages import layout
from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.inventory import images as inventories
from lambdaimages.inventory import report
from lambdaimages.publish import changes, snapshots
from lambdaimages.state import State
from lambdaimages.testbed.samples import directory, file, layer_from_files, symlink, whiteout

OS_RELEASE = b'NAME="Amazon Linux"\nVERSION_ID="2023"\nPRETTY_NAME="Amazon Linux 2023.6.20241010"\n'
NODE_H = b"#define NODE_MAJOR_VERSION 20\n#define NODE_MINOR_VERSION 18\n#define NODE_PATCH_VERSION 0\n"
RBCONFIG = b'  CONFIG["MAJOR"] = "3"\n  CONFIG["RUBY_PROGRAM_VERSION"] = "3.3.6"\n'
DPKG = b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n\n"
DPKG += b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n"


def write_layer(folder: Path, entries, codec: str = "xz") -> Path:
    """A layer tarball as export writes it (named by diff_id), xz, gzip or plain."""
    layer = layer_from_files(entries)
    hex_digest = layer.diff_id.removeprefix("sha256:")
    if codec == "xz":
        path, data = folder / f"{hex_digest}.tar.xz", lzma.compress(layer.tar)
    elif codec == "gzip":
        path, data = folder / f"{hex_digest}.tar.gz", gzip.compress(layer.tar)
    else:
        path, data = folder / f"{hex_digest}.tar", layer.tar
    path.write_bytes(data)
    return path


def arch_snapshot(paths: list[Path], arch: str = "x86_64", digest: str = "sha256:1", dockerfile: str = "") -> dict:
    layers = tuple(snapshots.Layer(p.name.split(".")[0], p.stat().st_size, p) for p in paths)
    return {arch: snapshots.ArchSnapshot(arch, digest, layers, dockerfile)}


def snapshot(label: str, archs: dict) -> snapshots.Snapshot:
    return snapshots.Snapshot("python3.12", "public.ecr.aws/lambda/python:3.12", label, archs)


def rpm_blob(name: str, version: str, release: str, arch: str = "x86_64", epoch: int | None = None) -> bytes:
    """An rpm header blob as rpmdb.sqlite stores it: counts, 16-byte index entries, then the data."""
    tags = [(1000, 6, name), (1001, 6, version), (1002, 6, release), (1022, 6, arch)]
    if epoch is not None:
        tags.append((1003, 4, epoch))
    index, data = b"", b""
    for tag, kind, value in tags:
        if kind == 4:
            data += b"\0" * (-len(data) % 4)
            index += struct.pack(">iiii", tag, kind, len(data), 1)
            data += struct.pack(">i", value)
        else:
            index += struct.pack(">iiii", tag, kind, len(data), 1)
            data += value.encode() + b"\0"
    return struct.pack(">II", len(tags), len(data)) + index + data


def rpmdb(path: Path, packages: list[bytes]) -> bytes:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
    connection.executemany("INSERT INTO Packages (blob) VALUES (?)", [(blob,) for blob in packages])
    connection.commit()
    connection.close()
    return path.read_bytes()


def test_versions_from_well_known_places_across_codecs(tmp_path):
    base = write_layer(
        tmp_path,
        [
            file("/usr/lib/os-release", OS_RELEASE),
            symlink("/etc/os-release", "../usr/lib/os-release"),
            file("/var/lang/include/python3.12/patchlevel.h", b'#define PY_VERSION "3.12.7"\n'),
            file("/var/lang/include/node/node_version.h", NODE_H),
            file("/var/lang/release", b'IMPLEMENTOR="Amazon.com Inc."\nJAVA_VERSION="21.0.5"\n'),
            file("/var/lang/lib/ruby/3.3.0/x86_64-linux/rbconfig.rb", RBCONFIG),
            directory("/var/lang/bin/shared/Microsoft.NETCore.App/8.0.10"),
            file("/var/lib/dpkg/status", DPKG),
        ],
        "gzip",
    )
    upper = write_layer(tmp_path, [file("/var/lang/include/python3.12/patchlevel.h", b'#define PY_VERSION "3.12.8"\n')])
    plain = write_layer(tmp_path, [file("/var/task/handler.py", b"x")], "plain")
    tree, found = inventories.tree_and_inventory([base, upper, plain])
    assert found.versions == {
        "dotnet": "8.0.10",
        "java": "21.0.5",
        "node": "20.18.0",
        "os": "Amazon Linux 2023.6.20241010",
        "python": "3.12.8",  # the upper layer's copy, as in the merged filesystem
        "ruby": "3.3.6",
    }
    assert report.package_versions(found) == {"libc6": "2.36-9"}
    assert "var/task/handler.py" in tree


def test_a_deleted_version_file_is_no_longer_read(tmp_path):
    base = write_layer(tmp_path, [file("/etc/os-release", OS_RELEASE), file("/etc/system-release", b"Old 1\n")])
    top = write_layer(tmp_path, [whiteout("/etc/os-release")])
    assert inventories.tree_and_inventory([base, top])[1].versions == {"os": "Old 1"}


def test_rpm_database_changes(tmp_path):
    old_db = rpmdb(
        tmp_path / "old.sqlite",
        [rpm_blob("openssl-libs", "3.0.8", "1.amzn2023", epoch=1), rpm_blob("bash", "5.2.15", "1"),
         rpm_blob("gone", "1", "1")],
    )  # fmt: skip
    new_db = rpmdb(
        tmp_path / "new.sqlite",
        [rpm_blob("openssl-libs", "3.0.8", "2.amzn2023", epoch=1), rpm_blob("bash", "5.2.15", "1"),
         rpm_blob("tzdata", "2024a", "1", "noarch")],
    )  # fmt: skip
    old = write_layer(tmp_path, [file("/var/lib/rpm/rpmdb.sqlite", old_db)])
    assert report.package_versions(inventories.tree_and_inventory([old])[1]) == {
        "bash": "5.2.15-1", "gone": "1-1", "openssl-libs": "1:3.0.8-1.amzn2023",
    }  # fmt: skip
    new = write_layer(tmp_path, [file("/var/lib/rpm/rpmdb.sqlite", new_db)])
    log = changes.compare(
        snapshot("old", arch_snapshot([old])), snapshot("new", arch_snapshot([new], digest="sha256:2"))
    )
    (arch,) = log.archs
    assert arch.packages == {
        "added": (("tzdata", "2024a-1"),),
        "removed": (("gone", "1-1"),),
        "changed": (("openssl-libs", "1:3.0.8-1.amzn2023", "1:3.0.8-2.amzn2023"),),
        "count": 3,
    }
    text = changes.render_markdown(log)
    assert "3 packages: 1 added, 1 removed, 1 changed." in text
    assert "- `openssl-libs` `1:3.0.8-1.amzn2023` → `1:3.0.8-2.amzn2023`" in text
    assert "- added `tzdata` `2024a-1`" in text


def test_compare_lists_every_file_difference_with_sizes(tmp_path):
    base = write_layer(
        tmp_path,
        [
            file("/usr/bin/tool", b"v1", 0o755),
            file("/etc/config", b"same size 1"),
            file("/etc/old", b"12345"),
            symlink("/usr/bin/alias", "tool"),
        ],
    )
    app_old = write_layer(tmp_path, [file("/var/task/app.py", b"print(1)\n")])
    app_new = write_layer(
        tmp_path,
        [
            file("/var/task/app.py", b"print('two')\n"),
            file("/etc/config", b"same size 2"),
            whiteout("/etc/old"),
            file("/usr/bin/tool", b"v1", 0o700),
            symlink("/usr/bin/alias", "other"),
            file("/opt/new/data.bin", b"z" * 1500),
        ],
    )
    dockerfile_old = '# generated\nFROM scratch\nADD a.tar.xz /\nENV A=1\nENTRYPOINT ["/x"]\n'
    dockerfile_new = '# generated 2\nFROM scratch\nADD b.tar.xz /\nENV A=2\nENTRYPOINT ["/x"]\n'
    old = snapshot("old", arch_snapshot([base, app_old], dockerfile=dockerfile_old))
    new = snapshot("new", arch_snapshot([base, app_new], digest="sha256:2", dockerfile=dockerfile_new))
    log = changes.compare(old, new)
    (arch,) = log.archs
    assert log.changed and arch.changed
    assert [layer.hex for layer in arch.layers_added] == [app_new.name.split(".")[0]]
    assert [layer.hex for layer in arch.layers_removed] == [app_old.name.split(".")[0]]
    assert arch.layers_kept == 1
    assert arch.config == ("-ENV A=1", "+ENV A=2")
    listed = {kind: {line.path: line.text for line in lines} for kind, (lines, _) in arch.listed.items()}
    assert listed == {
        "added": {"opt": "dir", "opt/new": "dir", "opt/new/data.bin": "1.5 kB"},
        "removed": {"etc/old": "5 B"},
        "changed": {
            "etc/config": "11 B, content",
            "usr/bin/alias": "target tool → other",
            "usr/bin/tool": "mode 0755 → 0700",
            "var/task/app.py": "9 B → 13 B",
        },
    }
    assert arch.by_dir["opt/new"] == changes.DirSummary(added=2, bytes_delta=1500)
    assert arch.by_dir["etc/old"] == changes.DirSummary(removed=1, bytes_delta=-5)
    text = changes.render_markdown(log)
    assert "3 added, 1 removed, 4 changed." in text
    assert "| /etc/old | 0 | 1 | 0 | -5 B |" in text
    assert "- `/var/task/app.py` (9 B → 13 B)" in text
    assert "```diff\n-ENV A=1\n+ENV A=2\n```" in text


def test_listing_is_bounded(tmp_path):
    old = write_layer(tmp_path, [file("/a/keep", b"")])
    new = write_layer(tmp_path, [file("/a/keep", b""), *(file(f"/a/f{i:02}", b"x") for i in range(12))])
    log = changes.compare(snapshot("old", arch_snapshot([old])), snapshot("new", arch_snapshot([new])), listed=5)
    lines, more = log.archs[0].listed["added"]
    assert [line.path for line in lines] == ["a/f00", "a/f01", "a/f02", "a/f03", "a/f04"] and more == 7
    assert "- … and 7 more" in changes.render_markdown(log)


def test_unchanged_and_first_snapshots(tmp_path):
    layer = write_layer(tmp_path, [file("/etc/os-release", OS_RELEASE), file("/bin/x", b"1234")])
    same = changes.compare(snapshot("a", arch_snapshot([layer])), snapshot("b", arch_snapshot([layer])))
    assert not same.changed
    assert "Nothing changed." in changes.render_markdown(same)
    assert "No file changed." in changes.render_markdown(same)
    first = changes.compare(None, snapshot("b", arch_snapshot([layer])))
    assert first.changed
    text = changes.render_markdown(first)
    assert "First snapshot of `public.ecr.aws/lambda/python:3.12`" in text
    assert f"- Files: 4 entries, {4 + len(OS_RELEASE)} B of file content" in text  # bin, bin/x, etc, etc/os-release
    assert "| os | - | Amazon Linux 2023.6.20241010 |" in text


def test_previous_layers_not_available_give_a_note(tmp_path):
    layer = write_layer(tmp_path, [file("/x", b"1")])
    lost = {"x86_64": snapshots.ArchSnapshot("x86_64", "sha256:1", (snapshots.Layer("ab" * 32, 10, None),), "")}
    log = changes.compare(snapshot("old", lost), snapshot("new", arch_snapshot([layer], digest="sha256:2")))
    (arch,) = log.archs
    assert arch.files is None and arch.note.startswith("the previous layers abababababab are not available here")
    assert "- Note: the previous layers" in changes.render_markdown(log)


def test_a_broken_tarball_is_a_clear_error_and_leaves_no_thread(tmp_path):
    good = write_layer(tmp_path, [file("/x", b"1")])
    broken = tmp_path / "broken.tar.xz"
    broken.write_bytes(lzma.compress(b"this is not a tar archive" * 100))
    before = threading.active_count()
    with pytest.raises(ValueError, match=r"broken\.tar\.xz: not a readable layer tar"):
        inventories.tree_and_inventory([good, broken])
    assert threading.active_count() == before


def test_previous_state_is_kept_when_resolve_replaces_it(tmp_path):
    # state.write keeps the replaced state; local_previous reads its layers from the layer cache.
    runtime = Runtime("python3.12", "https://r", "lambda/python", "3.12", ("x86_64",))
    cache = layout.cache_dir(tmp_path, "xz6")
    cache.mkdir(parents=True)
    old_layer = write_layer(cache, [file("/var/task/app.py", b"1")])
    new_layer = write_layer(cache, [file("/var/task/app.py", b"22")])

    def state(layer: Path, digest: str) -> State:
        hex_digest = layer.name.split(".")[0]
        return make_state(
            [{"diff_id": f"sha256:{hex_digest}", "digest": "sha256:0", "size": 1, "media_type": "x"}],
            reference="r/lambda/python:3.12",
            manifest_digest=digest,
            config={"config": {}, "history": [{"created_by": f"made {digest}"}]},
        )

    assert states_on_disk.write(tmp_path, state(old_layer, "sha256:1"))
    assert snapshots.local_previous(tmp_path, runtime) is None  # nothing replaced yet
    assert states_on_disk.write(tmp_path, state(new_layer, "sha256:2"))
    assert not states_on_disk.write(tmp_path, state(new_layer, "sha256:2"))
    kept = json.loads(layout.previous_state_path(tmp_path, "python3.12", "x86_64").read_text())
    assert kept["manifest_digest"] == "sha256:1"
    previous = snapshots.local_previous(tmp_path, runtime)
    (layer,) = previous.archs["x86_64"].layers
    assert layer.source == old_layer and layer.created_by == "made sha256:1"
    assert "FROM scratch" in previous.archs["x86_64"].dockerfile  # rendered again from the kept state


def test_markdown_code_and_sizes():
    assert changes.code("a`b") == "``a`b``"
    assert changes.code("`x") == "`` `x ``"
    assert changes.human_size(999) == "999 B"
    assert changes.human_size(117_000_000) == "117.0 MB"
    assert changes.signed_size(-1500) == "-1.5 kB"
    assert snapshots.dockerfile_layers("FROM scratch\nADD ab.tar.xz /\nADD x86_64/cd.tar.xz /\nADD ef.tar.gz /\n") == [
        ("ab", "tar.xz"),
        ("ef", "tar.gz"),
    ]
