"""Where everything lives in the output folder.

`<out>/<rt>` holds exactly what a runtime's branch publishes; the resolved upstream state and the
content-addressed layer cache live in dot-folders beside it (a runtime name never starts with a dot).
"""

from __future__ import annotations

from pathlib import Path

STATE = ".state"
CACHE = ".cache"
REPORTS = ".reports"
PUBLISH = ".publish"


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
    return f"{diff_id.removeprefix('sha256:')}.{extension}"


def split_tarball_name(name: str) -> tuple[str, str] | None:
    """(hex, extension) of a tarball's file name, or None for any other name."""
    for extension in TARBALL_EXTENSIONS:
        if name.endswith(f".{extension}") and "/" not in name:
            return name.removesuffix(f".{extension}"), extension
    return None


def local_tag(runtime: str) -> str:
    """The tag of a runtime's Dockerfile build in the engine."""
    return f"{runtime}:local"


def default_arch(architectures: tuple[str, ...]) -> str:
    """The architecture the top-level Dockerfile builds: x86_64 as upstream publishes, else the first."""
    return "x86_64" if "x86_64" in architectures else architectures[0]
