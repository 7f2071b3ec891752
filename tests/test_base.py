"""check_base: which snapshot an image is built on, through the real doit CLI, a real local registry and engine."""

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from doit_cli import run_doit

from lambdaimages.errors import ImageError
from lambdaimages.image import archive, base
from lambdaimages.inventory.facts import Package
from lambdaimages.inventory.merge import Inventory
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import samples

BOTO3 = "var/runtime/boto3-{v}.dist-info/METADATA"


def sample(name: str, version: str) -> samples.SampleImage:
    """The runtime's image at `version`: its function layer and a boto3 of that version change."""
    metadata = f"Metadata-Version: 2.1\nName: boto3\nVersion: {version}.0\n".encode()
    return samples.lambda_like_image(name, "x86_64", version=version, extra_files={BOTO3.format(v=version): metadata})


def build_on(docker_client, context: Path, parent: str, tag: str) -> str:
    """A user's function image: `FROM parent` plus one layer."""
    context.mkdir(parents=True)
    (context / "app.txt").write_text(f"the function of {tag}\n")
    (context / "Dockerfile").write_text(f"FROM {parent}\nCOPY app.txt /var/task/app.txt\n")
    docker_client.images.build(path=str(context), tag=tag, rm=True, pull=False)
    return tag


@pytest.fixture(scope="module")
def world(registry, docker_client, tmp_path_factory):
    """One runtime snapshotted and built at v1 (published), v2, then v3; function images built FROM each stage's
    `<rt>:local` and `<rt>:x86_64`, and one from busybox alone."""
    tmp = tmp_path_factory.mktemp("check_base")
    prefix = f"cb{uuid.uuid4().hex[:6]}"
    name = f"{prefix}.fn"
    client = RegistryClient(registry.url)
    catalog = tmp / "runtimes.yaml"
    catalog.write_text(
        f"defaults:\n  registry: {registry.url}\n  architectures: [x86_64]\nruntimes:\n"
        f"  {name}:\n    image: lambda/{name}:1\n"
    )
    out, repo = tmp / "out", tmp / "published.git"
    tags = []
    images = {}
    for version in ("1", "2", "3"):
        samples.push_image(client, f"lambda/{name}", "1", {"x86_64": sample(name, version)})
        run_doit(catalog, out, f"build:{name}")
        if version == "1":
            run_doit(catalog, out, f"publish:{name}", f"repo={repo}")
        for parent in ("local", "x86_64"):
            tag = build_on(
                docker_client, tmp / f"v{version}-{parent}", f"{name}:{parent}", f"{prefix}-on-{parent}:v{version}"
            )
            images[f"v{version}-{parent}"] = tag
            tags.append(tag)
    busybox = tmp / "busybox"
    busybox.mkdir()
    shutil.copy(samples.BUSYBOX, busybox / "busybox")
    (busybox / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\nENTRYPOINT ["/bin/busybox"]\n')
    docker_client.images.build(path=str(busybox), tag=f"{prefix}-busybox:1", rm=True, pull=False)
    images["busybox"] = f"{prefix}-busybox:1"
    tags.append(images["busybox"])
    yield {"catalog": catalog, "out": out, "repo": repo, "name": name, "images": images, "tmp": tmp}
    for tag in [*tags, f"{name}:local", f"{name}:x86_64"]:
        try:
            docker_client.images.remove(tag, force=True)
        except Exception:
            pass


def check(world, *args: str) -> subprocess.CompletedProcess:
    return run_doit(world["catalog"], world["out"], "check_base", *args, check=False)


def line_of(stdout: str, image: str) -> str:
    found = [line for line in stdout.splitlines() if line.startswith(f"{image}: ") or line.startswith(f"{image} (")]
    assert len(found) == 1, stdout
    return found[0]


def test_an_image_on_the_current_snapshot_exits_0(world):
    images = world["images"]
    proc = check(world, f"image={images['v3-x86_64']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = line_of(proc.stdout, images["v3-x86_64"])
    assert f"current: {world['name']} x86_64 sha256:" in line
    assert "(the current snapshot); 1 layer added" in line
    assert "check_base: 1 image: 1 on a current base, 0 behind, 0 on no known base" in proc.stdout


def test_an_image_built_from_the_local_build_is_named_through_its_recorded_layers(world):
    images = world["images"]
    proc = check(world, f"image={images['v3-local']}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(the current snapshot, via {world['name']}:local); 1 layer added" in line_of(
        proc.stdout, images["v3-local"]
    )


def test_an_image_on_the_previous_snapshot_exits_1_with_the_package_changes(world):
    images = world["images"]
    proc = check(world, f"image={images['v2-x86_64']}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = line_of(proc.stdout, images["v2-x86_64"])
    assert "behind: " in line and "(the previous snapshot); 1 layer added; upstream moved to sha256:" in line
    assert "1 package change: boto3 2.0 -> 3.0" in line
    log = (world["out"] / ".logs" / "check_base.log").read_text()
    assert "  pypi: boto3 2.0 -> 3.0" in log


def test_several_images_one_line_each_and_one_summary(world):
    images = world["images"]
    proc = check(world, f"image={images['v3-local']},{images['v2-local']}", f"image={images['busybox']}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert line_of(proc.stdout, images["v3-local"]).startswith(f"{images['v3-local']}: current: ")
    behind = line_of(proc.stdout, images["v2-local"])
    assert f"behind: {world['name']} x86_64" in behind and f"via {world['name']}:local" in behind
    assert "boto3 2.0 -> 3.0" in behind
    assert line_of(proc.stdout, images["busybox"]) == (
        f"{images['busybox']}: no known base (1 layer; no snapshot known here is under it)"
    )
    assert "check_base: 3 images: 1 on a current base, 1 behind, 1 on no known base" in proc.stdout
    assert "FAILED check_base: 2 of 3 images not on a current base" in proc.stdout
    assert proc.stdout.count(f"{images['busybox']}: no known base") == 1  # the failure does not repeat the lines


def test_behind_only_is_1_and_unknown_wins_over_behind(world):
    images = world["images"]
    assert check(world, f"image={images['v2-local']},{images['v3-local']}").returncode == 1
    assert check(world, f"image={images['busybox']}").returncode == 2


def test_archive_of_a_docker_save(world, docker_client):
    images = world["images"]
    path = world["tmp"] / "saved.tar"
    with open(path, "wb") as f:
        subprocess.run(["docker", "save", images["v2-x86_64"], images["v3-local"]], stdout=f, check=True)
    proc = check(world, f"archive={path}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "boto3 2.0 -> 3.0" in line_of(proc.stdout, f"{images['v2-x86_64']} ({path})")
    assert ": current: " in line_of(proc.stdout, f"{images['v3-local']} ({path})")
    assert "check_base: 2 images: 1 on a current base, 1 behind, 0 on no known base" in proc.stdout


def test_a_published_branch_is_a_base_when_a_repository_is_given(world):
    images = world["images"]
    # v1 is neither the current nor the previous snapshot any more: only the published branch holds it.
    proc = check(world, f"image={images['v1-x86_64']},{images['v1-local']}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "2 on no known base" in proc.stdout
    proc = check(world, f"image={images['v1-x86_64']},{images['v1-local']}", f"repo={world['repo']}")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for image in (images["v1-x86_64"], images["v1-local"]):
        line = line_of(proc.stdout, image)
        assert "behind: " in line and "(published commit " in line
        assert "boto3 1.0 -> 3.0" in line
    assert "check_base: 2 images: 0 on a current base, 2 behind, 0 on no known base" in proc.stdout


def test_an_image_the_engine_lacks_and_a_file_that_is_no_archive(world):
    images = world["images"]
    junk = world["tmp"] / "junk.tar"
    junk.write_bytes(b"not a tar")
    proc = check(world, f"image={images['v3-local']},no-such-image-{uuid.uuid4().hex[:6]}:1", f"archive={junk}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no-such-image-" in proc.stdout and "not readable: no such image in the engine" in proc.stdout
    assert f"{junk}: not readable: " in proc.stdout
    assert "check_base: 3 images: 1 on a current base, 0 behind, 0 on no known base, 2 not readable" in proc.stdout


def test_without_an_image_it_says_how_to_ask(world):
    proc = check(world)
    assert proc.returncode == 2
    assert "doit check_base image=NAME" in proc.stdout


def test_the_local_build_records_its_layers_by_upstream_manifest(world):
    recorded = json.loads((world["out"] / ".state" / world["name"] / "local-builds.json").read_text())
    assert len(recorded) == 3  # v1, v2, v3
    current = json.loads((world["out"] / ".state" / world["name"] / "x86_64.json").read_text())
    local = subprocess.run(
        ["docker", "inspect", "-f", "{{json .RootFS.Layers}}", f"{world['name']}:local"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert recorded[current["manifest_digest"]] == json.loads(local)
    assert list(recorded)[-1] == current["manifest_digest"]


# -- the matching alone -----------------------------------------------------------------------------


def ids(*names: str) -> tuple[str, ...]:
    return tuple(f"sha256:{n * 64}"[:71] for n in names)


def packages(version: str) -> Inventory:
    package = Package(
        kind="rpm",
        name="openssl",
        version=version,
        release="1.amzn2023",
        arch="x86_64",
        path="var/lib/rpm/rpmdb.sqlite",
    )
    return Inventory(packages=(package,))


def test_the_longest_base_under_an_image_wins_and_current_breaks_ties():
    shared = base.Base("provided", "x86_64", "sha256:p", ids("a"), "the current snapshot", True)
    python_old = base.Base("python", "x86_64", "sha256:o", ids("a", "b"), "the previous snapshot", False)
    python_new = base.Base("python", "x86_64", "sha256:n", ids("a", "c"), "the current snapshot", True)
    twin = base.Base("twin", "x86_64", "sha256:t", ids("a", "c"), "the current snapshot", False)
    bases = [twin, shared, python_old, python_new]
    assert base.match(ids("a", "b", "x"), bases) == (python_old, False)
    assert base.match(ids("a", "c"), bases) == (python_new, False)
    assert base.match(ids("a", "x"), bases) == (shared, False)
    assert base.match(ids("x", "a"), bases) is None
    assert base.match(ids("a"), [python_new]) is None  # a base is all of its layers, not some


def test_check_gives_verdicts_changes_and_the_worst_exit_status():
    old = base.Base("python", "x86_64", "sha256:o", ids("a", "b"), "the previous snapshot", False, (ids("l", "m"),))
    new = base.Base("python", "x86_64", "sha256:n", ids("a", "c"), "the current snapshot", True)
    inventories = {"sha256:o": packages("3.0.8"), "sha256:n": packages("3.0.9")}
    asked = []

    def inventory_of(found):
        asked.append(found.manifest_digest)
        return inventories[found.manifest_digest]

    subjects = [
        base.Subject("on-new", ids("a", "c", "x")),
        base.Subject("on-old", ids("a", "b", "x", "y")),
        base.Subject("on-old-local", ids("l", "m", "x")),
        base.Subject("alone", ids("z")),
    ]
    verdicts = base.check(subjects, [new, old, new], inventory_of)
    assert [v.status for v in verdicts] == [base.CURRENT, base.BEHIND, base.BEHIND, base.UNKNOWN]
    assert [v.added for v in verdicts] == [1, 2, 1, 1]
    assert verdicts[2].via_build and not verdicts[1].via_build
    assert "1 package change: openssl 3.0.8-1.amzn2023 -> 3.0.9-1.amzn2023" in verdicts[1].line()
    assert sorted(asked) == ["sha256:n", "sha256:o"]  # each inventory once, and only for images behind
    assert base.exit_status(verdicts) == 2
    assert base.exit_status(verdicts[:3]) == 1
    assert base.exit_status(verdicts[:1]) == 0
    assert base.summary(verdicts) == "check_base: 4 images: 1 on a current base, 2 behind, 1 on no known base"


def test_saved_images_of_an_oci_layout_and_of_a_broken_archive(tmp_path):
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": list(ids("a", "b"))}}).encode()
    config_hex = "1" * 64
    manifest = json.dumps({"config": {"digest": f"sha256:{config_hex}"}, "layers": []}).encode()
    manifest_hex = "2" * 64
    index = {
        "manifests": [
            {"digest": f"sha256:{manifest_hex}", "annotations": {"org.opencontainers.image.ref.name": "fn:1"}}
        ]
    }
    path = tmp_path / "oci.tar"
    with tarfile.open(path, "w") as tar:
        for member, data in (
            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
            ("index.json", json.dumps(index).encode()),
            (f"blobs/sha256/{manifest_hex}", manifest),
            (f"blobs/sha256/{config_hex}", config),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert archive.saved_images(path) == [("fn:1", ids("a", "b"))]
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ImageError, match=r"neither manifest\.json"):
        archive.saved_images(empty)
    with pytest.raises(ImageError, match="not a readable image archive"):
        archive.saved_images(tmp_path / "missing.tar")
    assert os.path.exists(path)
