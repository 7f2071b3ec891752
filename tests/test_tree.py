"""Tests of merged layer trees and their diffs, on small in-memory tars and on an image built by the engine."""

import bz2
import gzip
import hashlib
import io
import json
import lzma
import tarfile
import uuid
from pathlib import Path

import pytest

from lambdaimages.tools.tree import (
    DirSummary,
    Entry,
    combine,
    diff_trees,
    layers_of_docker_save,
    merge_layers,
    read_layer,
    summarize_by_top_dir,
)

MTIME = 1_600_000_000


def _info(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0, **fields) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, MTIME
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def file(name: str, data: bytes = b"", mode: int = 0o644, **fields) -> tuple[tarfile.TarInfo, bytes]:
    return _info(name, tarfile.REGTYPE, mode, size=len(data), **fields), data


def directory(name: str, mode: int = 0o755, **fields) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.DIRTYPE, mode, **fields), None


def symlink(name: str, target: str, mode: int = 0o777) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.SYMTYPE, mode, linkname=target), None


def hardlink(name: str, target: str, mode: int = 0o644, **fields) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.LNKTYPE, mode, linkname=target, **fields), None


def device(name: str, kind: bytes, major: int, minor: int) -> tuple[tarfile.TarInfo, None]:
    return _info(name, kind, 0o666, devmajor=major, devminor=minor), None


def fifo(name: str) -> tuple[tarfile.TarInfo, None]:
    return _info(name, tarfile.FIFOTYPE, 0o600), None


def layer(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def merge(*layers: bytes) -> dict[str, Entry]:
    return merge_layers(io.BytesIO(data) for data in layers)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_entries_are_normalized_and_described():
    tree = merge(layer(directory("./etc/"), file("./etc/a", b"hello", mode=0o640, uid=1000, gid=2000)))
    assert list(tree) == ["etc", "etc/a"]
    assert tree["etc"] == Entry("etc", "dir", 0o755, 0, 0)
    assert tree["etc/a"] == Entry("etc/a", "file", 0o640, 1000, 2000, 5, sha(b"hello"))


def test_later_entry_replaces_and_whiteout_deletes_a_subtree():
    lower = layer(
        directory("etc"), file("etc/a", b"old"), directory("opt"), directory("opt/dir"),
        file("opt/dir/x"), directory("opt/dir/sub"), file("opt/dir/sub/y"), file("opt/dirx"),
    )  # fmt: skip
    upper = layer(file("etc/a", b"new!", mode=0o600), file("opt/.wh.dir"))
    tree = merge(lower, upper)
    assert list(tree) == ["etc", "etc/a", "opt", "opt/dirx"]
    assert (tree["etc/a"].sha256, tree["etc/a"].size, tree["etc/a"].mode) == (sha(b"new!"), 4, 0o600)


def test_whiteout_never_hides_its_own_layer():
    lower = layer(directory("d"), file("d/x", b"lower"))
    upper = layer(file("d/x", b"upper"), file("d/.wh.x"), file("d/.wh.y"), file("d/y", b"y"))
    tree = merge(lower, upper)
    assert tree["d/x"].sha256 == sha(b"upper")
    assert tree["d/y"].sha256 == sha(b"y")


def test_opaque_directory_hides_lower_content_and_keeps_its_layers_entries():
    lower = layer(directory("d", mode=0o700), file("d/old"), directory("d/sub"), file("d/sub/z"), file("e"))
    upper = layer(file("d/before"), file("d/.wh..wh..opq"), directory("d/sub2"), file("d/sub2/after"))
    tree = merge(lower, upper)
    assert list(tree) == ["d", "d/before", "d/sub2", "d/sub2/after", "e"]
    assert tree["d"].mode == 0o700  # the directory itself stays, as lower layers made it


def test_non_directory_replacing_a_directory_removes_its_children_and_directories_merge():
    lower = layer(directory("x"), file("x/a"), directory("y"), file("y/a"))
    upper = layer(symlink("x", "/elsewhere"), directory("y", mode=0o700, uid=5), file("y/b"))
    tree = merge(lower, upper)
    assert list(tree) == ["x", "y", "y/a", "y/b"]
    assert tree["x"] == Entry("x", "symlink", 0o777, 0, 0, linkname="/elsewhere")
    assert (tree["y"].mode, tree["y"].uid) == (0o700, 5)


def test_missing_parents_become_root_owned_directories_as_docker_makes_them():
    tree = merge(layer(file("a/b/c", b"c")))
    assert tree["a"] == Entry("a", "dir", 0o755, 0, 0)
    assert tree["a/b"] == Entry("a/b", "dir", 0o755, 0, 0)


def test_hardlink_groups_compare_equal_whichever_name_is_stored_as_the_file():
    # Docker's re-tar may store any name of a group as the file and the others as links to it.
    bin_dir = directory("bin")
    stored_first = layer(bin_dir, file("bin/a", b"tool"), hardlink("bin/b", "bin/a"), hardlink("bin/c", "./bin/a"))
    stored_last = layer(bin_dir, file("bin/c", b"tool"), hardlink("bin/a", "bin/c"), hardlink("bin/b", "bin/c"))
    one, other = merge(stored_first), merge(stored_last)
    assert one == other
    assert not diff_trees(one, other)
    assert {entry.hardlinks for entry in one.values() if entry.type == "file"} == {("bin/a", "bin/b", "bin/c")}
    assert {entry.sha256 for entry in one.values() if entry.type == "file"} == {sha(b"tool")}
    alone = merge(layer(directory("bin"), file("bin/a", b"tool"), file("bin/b", b"tool"), file("bin/c", b"tool")))
    assert diff_trees(alone, one).describe()[0] == "bin/a: hardlinks - vs bin/a bin/b bin/c"


def test_hardlinks_keep_their_content_when_the_target_goes_and_share_the_inode_mode():
    lower = layer(directory("d"), file("d/a", b"A", mode=0o755), hardlink("d/b", "d/a", mode=0o700))
    assert merge(lower)["d/a"].mode == 0o700  # the link's header chmods the one inode both names share
    tree = merge(lower, layer(file("d/.wh.a")))
    assert tree["d/b"] == Entry("d/b", "file", 0o700, 0, 0, 1, sha(b"A"))
    tree = merge(lower, layer(file("d/a", b"new")))
    assert (tree["d/a"].hardlinks, tree["d/b"].hardlinks, tree["d/b"].sha256) == ((), (), sha(b"A"))


def test_hardlink_to_nothing_is_an_error_naming_the_layer():
    with pytest.raises(ValueError, match=r"layer 0: hardlink b to a"):
        merge(layer(hardlink("b", "a")))


def test_layers_read_once_combine_in_any_order_and_as_often_as_asked():
    base = layer(directory("d"), file("d/a", b"A", mode=0o755), file("d/gone", b"x"))
    links = layer(hardlink("d/b", "d/a", mode=0o700), file("d/.wh.gone"))
    other = layer(file("d/a", b"other"))
    read = [read_layer(io.BytesIO(data), number) for number, data in enumerate((base, links, other))]
    assert combine(read) == merge(base, links, other)
    assert combine([read[0], read[2], read[1]]) == merge(base, other, links)
    assert combine(read) == merge(base, links, other)  # a second combine sees the layers as read, unchanged
    assert combine(read) != combine([read[0], read[2], read[1]])  # d/a is in two layers with different content
    assert combine([read[2], read[0]]) == merge(other, base)
    with pytest.raises(ValueError, match=r"layer 1: hardlink d/b to d/a"):
        combine([read[1]])


def test_special_mode_bits_owners_and_docker_file_type_bits():
    tree = merge(layer(
        file("suid", mode=0o4755), file("sgid", mode=0o2711, gid=50), directory("tmp", mode=0o1777),
        file("none", mode=0), file("saved", mode=0o100755, uid=4294967294),  # `docker save` style mode field
        symlink("link", "suid", mode=0o120755),
    ))  # fmt: skip
    assert {path: oct(entry.mode) for path, entry in tree.items()} == {
        "suid": "0o4755", "sgid": "0o2711", "tmp": "0o1777", "none": "0o0", "saved": "0o755", "link": "0o777",
    }  # fmt: skip
    assert (tree["sgid"].gid, tree["saved"].uid) == (50, 4294967294)


def test_symlinks_devices_and_escaping_paths_are_only_recorded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tree = merge(layer(
        directory("dev"), device("dev/null", tarfile.CHRTYPE, 1, 3), device("dev/sda", tarfile.BLKTYPE, 8, 0),
        fifo("dev/pipe"), symlink("dev/log", "../../../etc/shadow"),
        file("../../escape", b"x"), file("/abs/file", b"y"), file("a/../../up", b"z"),
    ))  # fmt: skip
    assert tree["dev/null"] == Entry("dev/null", "char", 0o666, 0, 0, devmajor=1, devminor=3)
    assert (tree["dev/sda"].type, tree["dev/sda"].devmajor) == ("block", 8)
    assert tree["dev/pipe"].type == "fifo"
    assert tree["dev/log"].linkname == "../../../etc/shadow"
    assert {"../../escape", "abs/file", "abs", "../up"} <= set(tree)
    assert list(tmp_path.iterdir()) == []
    assert not Path("/abs").exists() and not (tmp_path.parent.parent / "escape").exists()


def test_compressed_layers_and_paths_read_alike(tmp_path):
    plain = layer(directory("d"), file("d/f", b"x" * 100_000), hardlink("d/g", "d/f"))
    expected = merge(plain)
    for data in (gzip.compress(plain, mtime=0), lzma.compress(plain), bz2.compress(plain)):
        assert merge(data) == expected
    (tmp_path / "layer.tar.xz").write_bytes(lzma.compress(plain))
    assert merge_layers([tmp_path / "layer.tar.xz"]) == expected
    assert merge_layers([str(tmp_path / "layer.tar.xz")]) == expected


def test_unreadable_layer_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "layer.tar.zst"
    bad.write_bytes(b"\x28\xb5\x2f\xfd" + bytes(2000))  # zstd: not a codec tarfile knows
    with pytest.raises(ValueError, match=r"layer\.tar\.zst: not a readable layer tar"):
        merge_layers([bad])
    truncated = gzip.compress(layer(file("f", b"x" * 10_000)), mtime=0)[:-100]
    with pytest.raises(ValueError, match="layer 0: not a readable layer tar"):
        merge(truncated)


def test_describe_reads_as_one_line_per_difference():
    upstream = merge(layer(
        directory("etc"), file("etc/a", b"0123456789"), directory("usr"), file("usr/x", mode=0o755),
        directory("var"), directory("var/y"), file("var/y/1"), file("var/y/2"), symlink("l", "a"),
    ))  # fmt: skip
    built = merge(layer(
        directory("etc"), file("etc/a", b"0123456789ab"), directory("usr"), file("usr/x", mode=0o775),
        directory("var"), file("var/z"), symlink("l", "b"),
    ))  # fmt: skip
    diff = diff_trees(upstream, built)
    old_hash, new_hash = sha(b"0123456789")[:12], sha(b"0123456789ab")[:12]
    assert diff.describe() == [
        f"etc/a: sha256 {old_hash}… vs {new_hash}…, size 10 vs 12",
        "l: target a vs b",
        "usr/x: mode 0755 vs 0775",
        "only upstream: var/y (and 2 below)",
        "only built: var/z",
        "7 differences (upstream vs built): 3 only upstream, 1 only built, 3 changed",
    ]
    assert diff.describe(limit=2, old="2024", new="2025")[2:] == [
        "... and 3 more lines",
        "7 differences (2024 vs 2025): 3 only 2024, 1 only 2025, 3 changed",
    ]
    assert diff_trees(built, built).describe() == ["no differences between upstream and built"]


def test_summary_by_top_directory_counts_entries_and_bytes_once_per_hardlink_group():
    old = merge(layer(directory("usr"), directory("usr/lib"), file("usr/lib/a", b"1234"), file("top", b"12")))
    new = merge(layer(
        directory("usr"), directory("usr/lib"), file("usr/lib/a", b"123456"), file("usr/lib/b", b"xyz"),
        hardlink("usr/lib/c", "usr/lib/b"), directory("opt"),
    ))  # fmt: skip
    assert summarize_by_top_dir(diff_trees(old, new)) == {
        "opt": DirSummary(added=1),
        "top": DirSummary(removed=1, bytes_delta=-2),
        "usr/lib": DirSummary(added=2, changed=1, bytes_delta=2 + 3),
    }
    assert summarize_by_top_dir(diff_trees(old, new), depth=1)["usr"] == DirSummary(added=2, changed=1, bytes_delta=5)


def _archive(members: dict[str, bytes], links: dict[str, str] = {}) -> bytes:  # noqa: B006
    return layer(*(file(name, data) for name, data in members.items()), *(symlink(n, t) for n, t in links.items()))


def test_docker_save_legacy_archive_with_a_repeated_layer_as_symlink():
    lower, upper = layer(file("a", b"1"), file("b", b"2")), layer(file(".wh.a"))
    manifest = [{"Config": "c.json", "RepoTags": None, "Layers": ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"]}]
    archive = _archive(
        {"l1/layer.tar": lower, "l2/layer.tar": upper, "manifest.json": json.dumps(manifest).encode()},
        {"l3/layer.tar": "../l1/layer.tar"},
    )
    chunks = (archive[i : i + 1000] for i in range(0, len(archive), 1000))  # as Image.save() streams it
    with layers_of_docker_save(chunks) as layers:
        assert [stream.name for stream in layers] == ["l1/layer.tar", "l2/layer.tar", "l3/layer.tar"]
        assert merge_layers(layers) == merge(lower, upper, lower)


def test_docker_save_oci_layout_without_manifest_json():
    lower = layer(file("a", b"1"))
    blob = f"sha256:{sha(lower)}"
    manifest = json.dumps({"layers": [{"digest": blob}, {"digest": blob}]}).encode()
    index = {"manifests": [{"digest": f"sha256:{sha(manifest)}"}]}
    archive = _archive({
        f"blobs/sha256/{sha(lower)}": lower, f"blobs/sha256/{sha(manifest)}": manifest,
        "index.json": json.dumps(index).encode(),
    })  # fmt: skip
    with layers_of_docker_save(io.BytesIO(archive)) as layers:
        assert merge_layers(layers) == merge(lower)
    with pytest.raises(ValueError, match="not a docker save archive"), layers_of_docker_save(io.BytesIO(lower)):
        pass


@pytest.mark.timeout(300)
def test_image_built_from_layer_tars_has_exactly_their_tree(docker_client, tmp_path):
    lower = layer(
        directory("opt"), file("opt/gone", b"old"), directory("opt/dir"), file("opt/dir/x"),
        directory("var"), directory("var/cache"), file("var/cache/old", b"o"), directory("etc"), file("etc/conf", b"1"),
    )  # fmt: skip
    upper = layer(
        file("opt/.wh.gone"), file("opt/.wh.dir"), directory("var/cache", mode=0o700),
        file("var/cache/.wh..wh..opq"), file("var/cache/new", b"n"),
        file("etc/conf", b"22", mode=0o600, uid=1000, gid=1001),
        directory("usr"), directory("usr/bin"), file("usr/bin/su", b"#!/bin/su", mode=0o4755),
        hardlink("usr/bin/su-too", "usr/bin/su", mode=0o4755), file("usr/bin/sg", mode=0o2755),
        symlink("usr/bin/sh", "/bin/bash"), directory("tmp", mode=0o1777), directory("dev"),
        device("dev/null", tarfile.CHRTYPE, 1, 3), fifo("dev/fifo"),
        file("implicit/parents/file", b"f"), file("old-mtime", b"m", mtime=-86400),
    )  # fmt: skip
    (tmp_path / "lower.tar").write_bytes(lower)
    (tmp_path / "upper.tar").write_bytes(upper)
    (tmp_path / "Dockerfile").write_text("FROM scratch\nADD lower.tar /\nADD upper.tar /\n")
    tag = f"lambdaimages-test-tree:{uuid.uuid4().hex[:12]}"
    try:
        for line in docker_client.api.build(
            path=str(tmp_path), tag=tag, rm=True, forcerm=True, network_mode="none", decode=True
        ):
            assert "error" not in line, line
        with layers_of_docker_save(docker_client.images.get(tag).save()) as layers:
            assert len(layers) == 2
            built = merge_layers(layers)
    finally:
        docker_client.images.remove(tag, force=True)
    expected = merge(lower, upper)
    diff = diff_trees(expected, built)
    assert not diff, "\n".join(diff.describe(limit=50, old="tars", new="image"))
    assert built["usr/bin/su"].hardlinks == ("usr/bin/su", "usr/bin/su-too")
    assert "opt/gone" not in built and "var/cache/old" not in built and built["var/cache"].mode == 0o700
