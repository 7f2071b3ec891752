"""Load each architecture of a snapshot into the engine as `<rt>:<arch>`, identical to upstream's image.

The image is assembled from upstream's config file and the layer tarballs of `<out>/<rt>/<arch>/`, streamed
to the engine (no second copy of the layers on disk). Its ID is the sha256 of the config's bytes, so it
equals upstream's config digest.
"""

from __future__ import annotations

from pathlib import Path

from lambdaimages import engine, layout
from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.errors import EngineError, OutputError
from lambdaimages.image.archive import docker_archive
from lambdaimages.state import State


def archive_files(out: Path, runtime: Runtime, state: State) -> tuple[Path, list[Path]]:
    """The config file and the tarballs, in layer order, that the image of `state` is loaded from.

    Raises:
        OutputError: one of them is not in the snapshot (export has not run since it was resolved).
    """
    folder = layout.arch_dir(out, runtime.name, state.architecture)
    config = folder / layout.document_name(state.config_digest, "config")
    tarballs = [folder / layer.tarball(runtime.extension) for layer in state.layers]
    for path in (config, *tarballs):
        if not path.is_file():
            raise OutputError(f"{path} is missing: run doit snapshot:{runtime.name}", runtime=runtime.name)
    return config, tarballs


def load(out: Path, runtime: Runtime, arch: str) -> str:
    """Load one architecture from the snapshot on disk; the loaded image's ID (= upstream's config digest).

    Raises:
        OutputError: the snapshot lacks a file.
        EngineError: the engine refused the archive, or gave the image another ID.
    """
    state = states_on_disk.read(out, runtime.name, arch)
    config, tarballs = archive_files(out, runtime, state)
    tag = layout.loaded_tag(runtime.name, arch)
    engine.load(docker_archive(config.read_bytes(), config.name, tarballs, [tag]), label=f"{runtime.name} {arch}")
    found = engine.image_id(tag)
    if found != state.config_digest:
        raise EngineError(
            f"{runtime.name} {arch}: loaded {tag} has ID {found}, not upstream's config digest {state.config_digest}"
        )
    return found


def is_loaded(out: Path, runtime: Runtime, arch: str) -> bool:
    """`<rt>:<arch>` is in the engine with the ID of the snapshot's config digest (so it is that image)."""
    current = states_on_disk.read_or_none(out, runtime.name, arch)
    return current is not None and engine.image_id(layout.loaded_tag(runtime.name, arch)) == current.config_digest
