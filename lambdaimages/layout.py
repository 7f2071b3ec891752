"""Where everything lives in the output folder.

`<out>/<rt>` holds exactly what a runtime's branch publishes; the resolved upstream state and the
content-addressed layer cache live in dot-folders beside it (a runtime name never starts with a dot).
"""

from __future__ import annotations

from pathlib import Path

from lambdaimages.digest import Digest

STATE = ".state"
CACHE = ".cache"
REPORTS = ".reports"
PUBLISH = ".publish"


def output_folder(spelling: str | Path) -> Path:
    """The output folder that `out=` names, as one absolute path (symlinks resolved), decided once.

    Every path below it is joined to this, so doit's records (file names, the saved fingerprints, what a
    verification was made from) are the same whichever spelling of the folder a run was given.
    """
    return Path(spelling).resolve()


def runtime_dir(out: Path, runtime: str) -> Path:
    return Path(out) / runtime


def arch_dir(out: Path, runtime: str, arch: str) -> Path:
    return runtime_dir(out, runtime) / arch


def state_path(out: Path, runtime: str, arch: str) -> Path:
    """The resolved upstream state of one runtime and architecture (rewritten only when it changed)."""
    return Path(out) / STATE / runtime / f"{arch}.json"


def previous_state_path(out: Path, runtime: str, arch: str) -> Path:
    """The state that `state_path` held before upstream last moved: the last snapshot kept locally."""
    return Path(out) / STATE / runtime / f"{arch}.previous.json"


def builds_path(out: Path, runtime: str) -> Path:
    """The diff_ids of the runtime's `<rt>:local` builds, by the upstream manifest each was built from."""
    return Path(out) / STATE / runtime / "local-builds.json"


def publish_dir(out: Path, runtime: str) -> Path:
    """The private git directory (bare, own index) in which a runtime's branch commits are made."""
    return Path(out) / PUBLISH / f"{runtime}.git"


def dockerfile(out: Path, runtime: str, arch: str | None = None) -> Path:
    """`<rt>/Dockerfile.<rt>` (the default build) or `<rt>/<arch>/Dockerfile.<rt>`."""
    folder = runtime_dir(out, runtime) if arch is None else arch_dir(out, runtime, arch)
    return folder / f"Dockerfile.{runtime}"


def cache_dir(out: Path, codec: str) -> Path:
    return Path(out) / CACHE / codec


def reports_dir(out: Path) -> Path:
    return Path(out) / REPORTS


TARBALL_EXTENSIONS = ("tar.xz", "tar.gz")
TARBALL_GLOB = "*.tar.*"  # every tarball of a folder, and the temp files of unfinished ones (dot-names)


def tarball_name(diff_id: str, extension: str) -> str:
    """A layer tarball's name: the hex of its diff_id, so `xz -dc <name> | sha256sum` proves it."""
    return f"{Digest(diff_id).hex}.{extension}"


def split_tarball_name(name: str) -> tuple[str, str] | None:
    """(hex, extension) of a tarball's file name, or None for any other name."""
    for extension in TARBALL_EXTENSIONS:
        if name.endswith(f".{extension}") and "/" not in name:
            return name.removesuffix(f".{extension}"), extension
    return None


# Upstream's own JSON documents, byte for byte, beside the tarballs and named by their digests like them:
# `sha256sum <hex>.manifest.json` prints <hex>. Manifests and configs in `<rt>/<arch>/`, the index in `<rt>/`.
DOCUMENT_KINDS = ("index", "manifest", "config")
DOCUMENT_GLOB = "*.json"


def document_name(digest: str, kind: str) -> str:
    """The file name of an upstream index, manifest or config: `<hex>.<kind>.json`."""
    return f"{Digest(digest).hex}.{kind}.json"


def split_document_name(name: str) -> tuple[str, str] | None:
    """(hex, kind) of an upstream document's file name, or None for any other name."""
    parts = name.split(".")
    if len(parts) == 3 and parts[1] in DOCUMENT_KINDS and parts[2] == "json" and len(parts[0]) == 64:
        return parts[0], parts[1]
    return None


def documents_cache(out: Path) -> Path:
    """Where resolve keeps every upstream index, manifest and config it fetched, by hex digest."""
    return Path(out) / CACHE / "documents"


def branch_cache(out: Path, runtime: str) -> Path:
    """The bare repository in which a runtime's published branch tip (depth 1) and the LFS objects export takes
    from it are fetched: no work tree, no tarball history."""
    return Path(out) / CACHE / "branches" / f"{runtime}.git"


def facts_cache(out: Path) -> Path:
    """What each layer holds for inventories (packages, paths), by diff_id: read from a layer once, ever."""
    return Path(out) / CACHE / "facts"


SBOM = "sbom.cdx.json"


def sbom_path(out: Path, runtime: str, arch: str) -> Path:
    """The inventory of one architecture's image, CycloneDX 1.6 JSON, published with the snapshot."""
    return arch_dir(out, runtime, arch) / SBOM


def local_tag(runtime: str) -> str:
    """The tag of a runtime's Dockerfile build in the engine (the engine's own architecture)."""
    return f"{runtime}:local"


def loaded_tag(runtime: str, arch: str) -> str:
    """The tag of a runtime's image loaded from upstream's config and layers: `<rt>:<arch>`, identical to upstream's."""
    return f"{runtime}:{arch}"


def default_arch(architectures: tuple[str, ...]) -> str:
    """The architecture the top-level Dockerfile builds: x86_64 as upstream publishes, else the first."""
    return "x86_64" if "x86_64" in architectures else architectures[0]
