"""The snapshot of one runtime under an output folder: where each of its files is, and the states it follows.

`<out>/<rt>` holds exactly what the runtime's branch publishes: per architecture `<arch>/` with the layer
tarballs (named by diff_id), upstream's manifest and config, `Dockerfile.<rt>` and `sbom.cdx.json`; beside them
the top-level `Dockerfile.<rt>`, `.dockerignore` and upstream's index. The states it was made from are in
`<out>/.state/<rt>/`, its layers in the shared cache (`snapshot.cache`). Every stage asks a `SnapshotView`
instead of joining these paths, and a file the snapshot lacks is reported by `missing`, one error for all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lambdaimages import layout
from lambdaimages import state as states_on_disk
from lambdaimages.catalog import Runtime
from lambdaimages.errors import OutputError
from lambdaimages.snapshot.cache import LayerCache
from lambdaimages.state import Layer, State


@dataclass(frozen=True)
class SnapshotView:
    """The snapshot of `runtime` under `out`: a value that names files and reads states, holding nothing open."""

    out: Path
    runtime: Runtime

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))

    # -- folders -----------------------------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """`<out>/<rt>`: what the branch publishes."""
        return layout.runtime_dir(self.out, self.runtime.name)

    def arch_folder(self, arch: str) -> Path:
        """`<out>/<rt>/<arch>`: one architecture's tarballs, documents, Dockerfile and SBOM."""
        return layout.arch_dir(self.out, self.runtime.name, arch)

    # -- states ------------------------------------------------------------------------------------

    def state_path(self, arch: str) -> Path:
        return layout.state_path(self.out, self.runtime.name, arch)

    def state(self, arch: str) -> State:
        """The current state of `arch`.

        Raises:
            FileNotFoundError: not resolved yet.
            ValueError: the file is not a state file.
        """
        return states_on_disk.read(self.out, self.runtime.name, arch)

    def state_or_none(self, arch: str) -> State | None:
        """The current state of `arch`, or None when there is none (or it is unreadable)."""
        return states_on_disk.read_or_none(self.out, self.runtime.name, arch)

    def previous_state(self, arch: str) -> State | None:
        """The state of `arch` before upstream last moved, or None when it never moved."""
        return states_on_disk.read_previous(self.out, self.runtime.name, arch)

    def states(self) -> dict[str, State]:
        """The current state of every architecture of the catalog entry, in its order (raises as `state`)."""
        return {arch: self.state(arch) for arch in self.runtime.architectures}

    # -- tarballs ----------------------------------------------------------------------------------

    def tarball(self, arch: str, layer: Layer) -> Path:
        """`<rt>/<arch>/<diff_id hex>.<extension>`."""
        return self.arch_folder(arch) / layer.tarball(self.runtime.extension)

    def tarballs(self, state: State) -> list[Path]:
        """The tarballs of a state's layers, in layer order."""
        return [self.tarball(state.architecture, layer) for layer in state.layers]

    # -- upstream's documents ----------------------------------------------------------------------

    def document(self, arch: str, digest: str, kind: str) -> Path:
        """Upstream's document `digest` of `kind`: an index in `<rt>/`, a manifest or config in `<rt>/<arch>/`."""
        folder = self.folder if kind == "index" else self.arch_folder(arch)
        return folder / layout.document_name(digest, kind)

    def manifest_file(self, state: State) -> Path:
        return self.document(state.architecture, state.manifest_digest, "manifest")

    def config_file(self, state: State) -> Path:
        return self.document(state.architecture, state.config_digest, "config")

    def index_file(self, state: State) -> Path | None:
        """Upstream's index, in `<rt>/`; None when the tag named a manifest."""
        if not state.index_digest:
            return None
        return self.document(state.architecture, state.index_digest, "index")

    def documents(self, state: State) -> list[Path]:
        """A state's documents: manifest and config in `<rt>/<arch>/`, the index (if any) in `<rt>/`."""
        index = self.index_file(state)
        return [self.manifest_file(state), self.config_file(state), *([index] if index is not None else [])]

    # -- Dockerfiles and SBOMs ---------------------------------------------------------------------

    def dockerfile(self, arch: str | None = None) -> Path:
        """`<rt>/Dockerfile.<rt>` (the default build) or `<rt>/<arch>/Dockerfile.<rt>`."""
        return layout.dockerfile(self.out, self.runtime.name, arch)

    def dockerfiles(self) -> list[Path]:
        """Every Dockerfile of the snapshot: the top-level one, then each architecture's."""
        return [self.dockerfile(), *(self.dockerfile(arch) for arch in self.runtime.architectures)]

    def build_dockerfile(self, arch: str) -> Path:
        """The Dockerfile that builds `arch`, its folder the build context: the top-level one (what users
        build) for the default architecture, `<arch>/Dockerfile.<rt>` for the others."""
        return self.dockerfile(None if arch == layout.default_arch(self.runtime.architectures) else arch)

    @property
    def dockerignore(self) -> Path:
        return self.folder / ".dockerignore"

    def sbom(self, arch: str) -> Path:
        """`<rt>/<arch>/sbom.cdx.json`: the inventory of that architecture's image."""
        return layout.sbom_path(self.out, self.runtime.name, arch)

    # -- cached layers -----------------------------------------------------------------------------

    @property
    def cache(self) -> LayerCache:
        return LayerCache(self.out)

    def cached_tarball(self, layer: Layer) -> Path:
        """Where the shared cache keeps `layer` in this runtime's codec."""
        return self.cache.tarball(self.runtime, layer)

    # -- what is missing ---------------------------------------------------------------------------

    def missing(self, path: Path) -> OutputError:
        """The error for a file of the snapshot that is not there: export has not run since it was resolved."""
        return OutputError(f"{path} is missing: run doit snapshot:{self.runtime.name}", runtime=self.runtime.name)

    def require(self, paths: Iterable[Path]) -> None:
        """Raise `missing` for the first of `paths` that is not a file."""
        for path in paths:
            if not path.is_file():
                raise self.missing(path)

    def empty(self) -> OutputError:
        """The error for a snapshot folder with no file at all."""
        return OutputError(f"{self.folder} is empty: run doit snapshot", runtime=self.runtime.name)
