"""Layer export through the cache, against the local registry: ordering around other tasks, bounded memory."""

import lzma
import tarfile
import threading
import time

from states import export_peak_mb, make_state

from lambdaimages import layout
from lambdaimages.catalog import Runtime
from lambdaimages.registry.client import RegistryClient
from lambdaimages.snapshot import export
from lambdaimages.state import State
from lambdaimages.testbed import samples
from lambdaimages.tools.files import locked

GZIP_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _state(layers: list[samples.Layer]) -> State:
    return make_state(
        [
            {"digest": lay.digest, "media_type": GZIP_LAYER, "size": len(lay.blob), "diff_id": lay.diff_id}
            for lay in layers
        ]
    )


def _push(registry, repository: str, layers: list[samples.Layer]) -> tuple[Runtime, RegistryClient]:
    client = RegistryClient(registry.url)
    for layer in layers:
        client.push_blob(repository, layer.blob)
    return Runtime("t", registry.url, repository, "latest", ("x86_64",)), client


def test_a_layer_another_task_writes_is_waited_for_last(registry, tmp_path):
    shared = samples.layer_from_files([samples.file("shared.txt", b"base\n" * 1000)])
    own = samples.layer_from_files([samples.file("own.txt", b"mine\n" * 1000)])
    runtime, client = _push(registry, "export/order", [shared, own])
    cache = layout.cache_dir(tmp_path, "xz6")
    own_file = cache / f"{own.diff_id.removeprefix('sha256:')}.tar.xz"
    errors = []

    def fetch() -> None:
        try:
            export.fetch(runtime, {"x86_64": _state([shared, own])}, tmp_path, client)
        except Exception as exc:  # reported by the main thread
            errors.append(exc)

    # Another task holds the shared layer: this one must export its own layer meanwhile, then wait.
    with locked(cache / f"{shared.diff_id.removeprefix('sha256:')}.lock"):
        worker = threading.Thread(target=fetch)
        worker.start()
        deadline = time.monotonic() + 30
        while not own_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert own_file.exists(), "the unshared layer waited for the locked one"
        assert worker.is_alive()
    worker.join(30)
    assert not worker.is_alive() and not errors
    for layer in (shared, own):
        data = (cache / f"{layer.diff_id[7:]}.tar.xz").read_bytes()
        assert lzma.decompress(data) == layer.tar


def test_sparse_layer_inflates_in_bounded_pieces(registry, tmp_path):
    # 256 MiB of zeros gzip to about 250 KB, which the registry serves in a few chunks.
    member = tmp_path / "zeros"
    with open(member, "wb") as f:
        f.truncate(256 << 20)
    tar_path = tmp_path / "layer.tar"
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(member, arcname="zeros")
    layer = samples.Layer(tar_path.read_bytes())
    member.unlink()
    tar_path.unlink()
    _push(registry, "export/sparse", [layer])
    state = _state([layer])
    del layer
    # A fresh process, so its peak RSS is the export's.
    peak_mb = export_peak_mb(registry.url, "export/sparse", state, tmp_path / "out")
    assert peak_mb < 100, f"exporting a 256 MiB sparse layer peaked at {peak_mb:.0f} MB"
    assert (tmp_path / "out" / ".cache" / "gzip" / f"{state.layers[0].hex}.tar.gz").exists()
