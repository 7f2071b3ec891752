"""`doit verify_branch` on branches in AWS's own layout, written from the sample images (real engine, real local
registry): tarballs matched to layers by content whatever their names, ADD lines sorted by name, one branch where
sorting changes the tree and one where it does not, a tampered tarball, upstream's documents from the registry
(`image=`) and then offline from the output folder (`manifest=`)."""

import lzma
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from lambdaimages.digest import Digest
from lambdaimages.errors import BranchError
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import ROOT, awsbranch, doit_command, samples
from lambdaimages.testbed.localregistry import LocalRegistry
from lambdaimages.verify import branch

ARCHES = ("x86_64", "arm64")
# Layers of the sample: 1 base, 2 runtime, 3 function, 4 whiteouts, 5 an extra layer that rewrites
# /var/lang/version (which layer 2 has). Where each layer's tarball sorts, per branch and architecture:
SAME_TREE = {"x86_64": [0, 2, 1, 3, 4], "arm64": [0, 1, 2, 3, 4]}  # ADD 1 3 2 4 5: 2 and 3 share no path
OTHER_TREE = {"x86_64": [0, 2, 3, 4, 1], "arm64": [0, 1, 2, 3, 4]}  # ADD 1 5 2 3 4: layer 2 overwrites layer 5


def _verify_branch(out: Path, clone: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = doit_command(ROOT / "runtimes.yaml", out, "verify_branch", f"clone={clone}", *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)


def _failed(run: subprocess.CompletedProcess) -> str:
    assert run.returncode != 0, run.stdout
    return next(line for line in run.stdout.splitlines() if line.startswith("FAILED verify_branch"))


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    """Two AWS-layout branches of one sample image, verified once through the registry (`image=`), which
    leaves upstream's documents in `out`; the registry is stopped afterwards."""
    tmp = tmp_path_factory.mktemp("awsbranch")
    name = f"a{uuid.uuid4().hex[:6]}.py"
    images = {arch: samples.lambda_like_image(name, arch, extra_files={"/var/lang/version": b"5\n"}) for arch in ARCHES}
    same = awsbranch.write_branch(tmp / "same", name, images, SAME_TREE)
    other = awsbranch.write_branch(tmp / "other", name, images, OTHER_TREE)
    out = tmp / "out"
    registry = LocalRegistry().start()
    try:
        index = samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", images)
        first = _verify_branch(out, same, f"image={registry.url}/lambda/{name}:1")
    finally:
        registry.stop()
    yield {"tmp": tmp, "name": name, "images": images, "same": same, "other": other, "out": out, "index": index,
           "first": first}  # fmt: skip


def test_the_layout_is_told_apart(aws, tmp_path):
    assert branch.layout_of(aws["same"]) == "AWS's"
    with pytest.raises(BranchError, match="neither a published branch of this project"):
        branch.layout_of(tmp_path)


def test_an_aws_branch_is_proven_through_the_registry_whatever_its_tarballs_are_named(aws):
    run = aws["first"]
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{aws['same']}: AWS's branch layout; upstream's documents from the registry" in run.stdout
    for arch in ARCHES:
        names = awsbranch.tarball_names(arch, SAME_TREE[arch])
        for number, (layer, tarball) in enumerate(zip(aws["images"][arch].layers, names, strict=True), 1):
            assert tarball.removesuffix(".tar.xz") != layer.diff_id.removeprefix("sha256:")
            assert f"note: {arch}/{tarball} is upstream's layer {number} of 5 ({layer.diff_id})" in run.stdout
    dockerfile = f"x86_64/Dockerfile.{aws['name']}"
    assert f"note: {dockerfile}: the ADD lines add layers 1, 3, 2, 4, 5, not in upstream's layer order, which " \
        "builds the same tree" in run.stdout  # fmt: skip
    assert f"note: Dockerfile.{aws['name']}: the ADD lines add layers 1, 3, 2, 4, 5" in run.stdout  # the top one
    assert f"note: arm64/Dockerfile.{aws['name']}: the ADD lines are in upstream's layer order" in run.stdout
    assert "no LABEL line: the image it builds lacks upstream's labels com.amazonaws.lambda.platform" in run.stdout
    assert "Labels: upstream" not in run.stdout  # said once, by the config lines' check, not again by the build's
    x86, arm = (f"verify {aws['name']} {arch}: " for arch in ARCHES)
    assert x86 + "tarballs pass, identity pass, tree pass, config pass, invoke skipped" in run.stdout
    assert arm + "tarballs pass, identity pass, tree skipped, config pass, invoke skipped" in run.stdout
    manifests = [Digest.of(aws["images"][arch].manifest()) for arch in ARCHES]
    assert f"branch {aws['name']} is upstream's image" in run.stdout
    assert f"arm64 {manifests[1]}; AWS's layout)" in run.stdout and f"x86_64 {manifests[0]}, " in run.stdout


def test_offline_from_the_output_folder_by_the_index_or_one_manifest(aws):
    run = _verify_branch(aws["out"], aws["same"], f"manifest={aws['index']}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"upstream's documents from {aws['out']} (offline)" in run.stdout
    arm = Digest.of(aws["images"]["arm64"].manifest())
    run = _verify_branch(aws["out"], aws["same"], f"manifest={arm}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"verify {aws['name']} x86_64: tarballs skipped" in run.stdout and "manifest is arm64 only" in run.stdout


def test_without_upstreams_documents_it_says_how_to_name_them(aws, tmp_path):
    run = _verify_branch(tmp_path / "out", aws["same"])
    assert run.returncode != 0 and "is in AWS's layout (no manifest or config on the branch)" in run.stdout
    run = _verify_branch(tmp_path / "out", aws["same"], f"manifest={aws['index']}")
    assert run.returncode != 0 and f"upstream's document {aws['index']} is not in {tmp_path / 'out'}" in run.stdout


def test_sorting_that_changes_the_tree_fails_naming_the_first_path(aws):
    run = _verify_branch(aws["out"], aws["other"], f"manifest={aws['index']}")
    failed = _failed(run)
    assert (
        f"x86_64 tarballs: x86_64/Dockerfile.{aws['name']}: the ADD lines add layers 1, 5, 2, 3, 4, not in upstream's "
        "layer order, and that changes the tree: var/lang/version: sha256 "
    ) in failed, failed
    assert "(layer order vs ADD order; var/lang/version is in layers 2, 5)" in failed, failed
    assert "x86_64 tree: 1 difference, first: var/lang/version: sha256" in failed, failed  # the build shows it too
    assert "arm64" not in failed, failed


def test_a_tampered_tarball_fails_naming_it(aws, tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(aws["same"], clone, symlinks=True)
    tarball = clone / "x86_64" / awsbranch.tarball_names("x86_64", SAME_TREE["x86_64"])[2]  # layer 3
    tar = bytearray(lzma.decompress(tarball.read_bytes()))
    at = tar.index(b"echo the event back")
    tar[at : at + 4] = b"ECHO"  # same size, the tar stays a tar
    tarball.write_bytes(lzma.compress(bytes(tar)))
    failed = _failed(_verify_branch(aws["out"], clone, f"manifest={aws['index']}"))
    assert f"x86_64 tarballs: x86_64/{tarball.name}: decompresses to sha256 " in failed, failed
    assert "which is none of upstream's layers" in failed, failed
    assert "arm64" not in failed, failed
    run = _verify_branch(aws["out"], clone, f"manifest={aws['index']}")
    assert f"x86_64/: no tarball of upstream's layer 3 ({aws['images']['x86_64'].layers[2].diff_id})" in run.stdout


def test_an_edited_config_line_fails_naming_the_file_and_line(aws, tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(aws["same"], clone, symlinks=True)
    dockerfile = clone / "arm64" / f"Dockerfile.{aws['name']}"
    lines = dockerfile.read_text().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.startswith("ENV TZ="))
    lines[at] = "ENV TZ=UTC\n"
    lines.append("USER nobody\n")
    dockerfile.write_text("".join(lines))
    run = _verify_branch(aws["out"], clone, f"manifest={aws['index']}")
    failed = _failed(run)
    label = f"arm64/Dockerfile.{aws['name']}"
    assert f"arm64 config: {label}:{at + 1}: ENV TZ is 'UTC', upstream's config has ':/etc/localtime'" in failed
    assert f"{label}:{len(lines)}: sets User 'nobody', upstream's config has none" in run.stdout
    assert "x86_64" not in failed, failed


def test_an_lfs_pointer_left_for_a_tarball_says_to_pull(aws, tmp_path):
    clone = tmp_path / "clone"
    shutil.copytree(aws["same"], clone, symlinks=True)
    tarball = clone / "arm64" / awsbranch.tarball_names("arm64", SAME_TREE["arm64"])[0]
    tarball.write_text(f"version https://git-lfs.github.com/spec/v1\noid sha256:{'0' * 64}\nsize 1234\n")
    failed = _failed(_verify_branch(aws["out"], clone, f"manifest={aws['index']}"))
    assert f"arm64 tarballs: arm64/{tarball.name}: a Git LFS pointer, not the tarball: run `git lfs pull`" in failed
