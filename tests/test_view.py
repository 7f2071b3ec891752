"""The snapshot view: where each file of a runtime's snapshot is, the states it reads, the one missing-file error."""

import dataclasses

import pytest
from states import make_state

from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.errors import OutputError
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.snapshot.view import SnapshotView

RUNTIME = Runtime("python3.12", "https://r", "lambda/python", "3.12", ("x86_64", "arm64"))
LAYERS = [
    {"digest": "sha256:" + "1" * 64, "media_type": "x", "size": 1, "diff_id": "sha256:" + "a" * 64},
    {"digest": "sha256:" + "2" * 64, "media_type": "x", "size": 2, "diff_id": "sha256:" + "b" * 64},
]


def test_paths_of_a_snapshot(tmp_path):
    view = SnapshotView(tmp_path, RUNTIME)
    state = make_state(LAYERS, architecture="arm64", index_digest="sha256:" + "e" * 64)
    rt = tmp_path / "python3.12"
    assert view.folder == rt and view.arch_folder("arm64") == rt / "arm64"
    assert view.state_path("arm64") == tmp_path / ".state/python3.12/arm64.json"
    assert view.tarballs(state) == [rt / "arm64" / f"{'a' * 64}.tar.xz", rt / "arm64" / f"{'b' * 64}.tar.xz"]
    assert view.manifest_file(state) == rt / "arm64" / f"{'d' * 64}.manifest.json"
    assert view.config_file(state) == rt / "arm64" / f"{'c' * 64}.config.json"
    assert view.documents(state) == [view.manifest_file(state), view.config_file(state), rt / f"{'e' * 64}.index.json"]
    assert view.index_file(make_state(LAYERS)) is None
    assert view.documents(make_state(LAYERS)) == [
        view.manifest_file(make_state(LAYERS)),
        view.config_file(make_state(LAYERS)),
    ]
    assert view.dockerfile() == rt / "Dockerfile.python3.12"
    assert view.dockerfile("arm64") == rt / "arm64" / "Dockerfile.python3.12"
    assert view.dockerignore == rt / ".dockerignore"
    assert view.sbom("x86_64") == rt / "x86_64" / "sbom.cdx.json"
    assert view.cached_tarball(state.layers[0]) == tmp_path / ".cache/xz6" / f"{'a' * 64}.tar.xz"
    gzip = SnapshotView(tmp_path, dataclasses.replace(RUNTIME, compression="gzip"))
    assert gzip.tarballs(state)[0].name == f"{'a' * 64}.tar.gz"
    assert gzip.cached_tarball(state.layers[0]) == tmp_path / ".cache/gzip" / f"{'a' * 64}.tar.gz"


def test_documents_by_digest_and_the_dockerfile_each_architecture_builds_from(tmp_path):
    view = SnapshotView(tmp_path, RUNTIME)
    rt = tmp_path / "python3.12"
    assert view.document("arm64", "sha256:" + "d" * 64, "manifest") == rt / "arm64" / f"{'d' * 64}.manifest.json"
    assert view.document("arm64", "sha256:" + "e" * 64, "index") == rt / f"{'e' * 64}.index.json"
    assert view.dockerfiles() == [
        rt / "Dockerfile.python3.12",
        *(rt / a / "Dockerfile.python3.12" for a in ("x86_64", "arm64")),
    ]
    assert view.build_dockerfile("x86_64") == rt / "Dockerfile.python3.12"  # the one users build
    assert view.build_dockerfile("arm64") == rt / "arm64" / "Dockerfile.python3.12"
    arm_only = SnapshotView(tmp_path, dataclasses.replace(RUNTIME, architectures=("arm64",)))
    assert arm_only.build_dockerfile("arm64") == rt / "Dockerfile.python3.12"


def test_it_is_a_value(tmp_path):
    assert SnapshotView(str(tmp_path), RUNTIME) == SnapshotView(tmp_path, RUNTIME)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SnapshotView(tmp_path, RUNTIME).out = tmp_path / "other"


def test_states_in_catalog_order(tmp_path):
    view = SnapshotView(tmp_path, RUNTIME)
    with pytest.raises(FileNotFoundError):
        view.states()
    assert view.state_or_none("x86_64") is None
    for arch in ("arm64", "x86_64"):
        states_on_disk.write(tmp_path, make_state(LAYERS, architecture=arch))
    assert list(view.states()) == ["x86_64", "arm64"]
    assert view.state("arm64") == make_state(LAYERS, architecture="arm64")
    assert view.previous_state("arm64") is None
    states_on_disk.write(tmp_path, make_state(LAYERS[:1], architecture="arm64"))
    assert view.previous_state("arm64") == make_state(LAYERS, architecture="arm64")


def test_one_error_for_a_missing_file(tmp_path):
    view = SnapshotView(tmp_path, RUNTIME)
    present = tmp_path / "present"
    present.write_bytes(b"")
    view.require([present])
    with pytest.raises(OutputError) as caught:
        view.require([present, tmp_path / "gone.tar.xz"])
    assert str(caught.value) == f"python3.12: {tmp_path}/gone.tar.xz is missing: run doit snapshot:python3.12"
    assert caught.value.runtime == "python3.12"
    assert str(view.empty()) == f"python3.12: {tmp_path}/python3.12 is empty: run doit snapshot"


def test_the_layer_cache_finds_a_layer_in_any_codec(tmp_path):
    cache = LayerCache(tmp_path)
    assert cache.find("a" * 64) is None
    for codec, name in (
        ("xz6", "a" * 64 + ".tar.xz"),
        ("gzip", "a" * 64 + ".tar.gz"),
        ("xz6", "a" * 64 + ".tar.xz.json"),
    ):
        (tmp_path / ".cache" / codec).mkdir(parents=True, exist_ok=True)
        (tmp_path / ".cache" / codec / name).write_bytes(b"")
    assert cache.find("a" * 64) == tmp_path / ".cache/gzip" / f"{'a' * 64}.tar.gz"  # first by codec name
    assert (
        cache.record(cache.push_gzip("sha256:" + "a" * 64)) == tmp_path / ".cache/push-gzip" / f"{'a' * 64}.tar.gz.json"
    )
