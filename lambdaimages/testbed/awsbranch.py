"""A branch written in AWS's own layout (aws/aws-lambda-base-images) from sample images, as `verify_branch` meets it.

Per architecture folder the layers as `.tar.xz` under names that are not their diff_ids, and `Dockerfile.<rt>`:
FROM scratch, the ADD lines sorted by file name, then ENV (unquoted where AWS's are), WORKDIR, ENTRYPOINT, CMD
and no LABEL; a top-level `Dockerfile.<rt>` adding `x86_64/<name>`; one commit `Update source for <rt> image`.
"""

from __future__ import annotations

import hashlib
import lzma
import re
import subprocess
from pathlib import Path

from lambdaimages import layout
from lambdaimages.snapshot.render import dquote, exec_form
from lambdaimages.testbed.samples import SampleImage

_PLAIN = re.compile(r"^[A-Za-z0-9_./:=-]*$")


def tarball_names(arch: str, ranks: list[int]) -> list[str]:
    """A name per layer (in layer order) that is no digest of it and sorts as `ranks` say: the layer given rank
    0 sorts first."""
    return [f"{rank:x}{hashlib.sha256(f'{arch} {n}'.encode()).hexdigest()[1:]}.tar.xz" for n, rank in enumerate(ranks)]


def write_branch(folder: Path, runtime: str, images: dict[str, SampleImage], ranks: dict[str, list[int]]) -> Path:
    """Write and commit the branch of `images` (by architecture) in `folder`; `ranks` per architecture sets
    where each layer's tarball sorts (see `tarball_names`)."""
    folder.mkdir(parents=True)
    for arch, image in images.items():
        names = tarball_names(arch, ranks[arch])
        (folder / arch).mkdir()
        for layer, name in zip(image.layers, names, strict=True):
            (folder / arch / name).write_bytes(lzma.compress(layer.tar, preset=0))
        (folder / arch / f"Dockerfile.{runtime}").write_text(dockerfile(image, sorted(names)))
    top = layout.default_arch(tuple(images))
    names = [f"{top}/{name}" for name in sorted(tarball_names(top, ranks[top]))]
    (folder / f"Dockerfile.{runtime}").write_text(dockerfile(images[top], names))
    (folder / ".gitattributes").write_text("*.tar.xz filter=lfs diff=lfs merge=lfs -text\n")
    git = ["git", "-C", str(folder), "-c", "user.name=AWS", "-c", "user.email=aws@example.com"]
    subprocess.run([*git, "init", "-q", "-b", runtime], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", f"Update source for {runtime} image"], check=True)
    return folder


def dockerfile(image: SampleImage, sources: list[str]) -> str:
    """AWS's Dockerfile of `image`: FROM scratch, `ADD <source> /` in the order given, then the config lines."""
    config = image.config["config"]
    lines = ["FROM scratch", "", *(f"ADD {source} /" for source in sources), ""]
    for entry in config.get("Env") or []:
        name, _, value = entry.partition("=")
        lines.append(f"ENV {name}={value if _PLAIN.match(value) else dquote(value)}")
    lines += ["", f"WORKDIR {config['WorkingDir']}", "", f"ENTRYPOINT {exec_form(config['Entrypoint'])}"]
    if config.get("Cmd"):
        lines.append(f"CMD {exec_form(config['Cmd'])}")
    return "\n".join(lines) + "\n"
