"""`doit demo`: the whole pipeline offline, on sample images pushed to a local registry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

from lambdaimages import layout, output
from lambdaimages.errors import ProjectError
from lambdaimages.inventory import images as inventories
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import ROOT, doit_command, samples
from lambdaimages.testbed.localregistry import LocalRegistry
from lambdaimages.testbed.standin import PublicEcrStandIn
from lambdaimages.tools import files

PREFERRED_PORT = 5123  # stable across demo runs, so a rerun finds everything up to date
# The demo's upstream is the stand-in for public.ecr.aws (token realm, 307 to a storage host, a rate limit) in front
# of the local registry. Its limit, and the pace the demo's client is told, keep the demo about as quick as a plain
# registry; the real service allows about 1 request/s (the client's own default for it).
DEMO_RATE = 40.0
EVENT = {"hello": "world"}
# name -> (repository:tag, architectures, compression)
RUNTIMES = {
    "demo.python": ("lambda/demo-python:3.12", ("x86_64", "arm64"), "xz"),
    "demo.nodejs": ("lambda/demo-nodejs:22", ("x86_64", "arm64"), "xz"),
    "demo.provided": ("lambda/demo-provided:al2023", ("x86_64",), "gzip"),
}
TASKS = ("snapshot", "build", "verify")


class DemoFailed(ProjectError):
    """The demo's inner doit run failed; that run has already shown which task failed and why."""


def catalog_text(registry_url: str) -> str:
    lines = [
        "# Written by `doit demo`: sample images on a local registry.",
        "defaults:",
        f"  registry: {registry_url}",
        "runtimes:",
    ]
    for name, (image, arches, compression) in RUNTIMES.items():
        expect = {"echo": EVENT, "runtime": name, "version": "1"}
        lines += [
            f"  {name}:",
            f"    image: {image}",
            f"    architectures: [{', '.join(arches)}]",
            f"    compression: {compression}",
            "    smoke:",
            "      handler: function.handler",
            f"      event: {json.dumps(EVENT)}",
            f"      expect: {json.dumps(expect)}",
            "      timeout: 20",
        ]
    return "\n".join(lines) + "\n"


def push_samples(client: RegistryClient) -> None:
    for name, (image, arches, _) in RUNTIMES.items():
        repository, tag = image.rsplit(":", 1)
        images = {arch: samples.lambda_like_image(name, arch, extra_files=samples.demo_files(name)) for arch in arches}
        samples.push_image(client, repository, tag, images)
        output.say(f"demo: pushed {image} ({', '.join(arches)})", show=True)


def _port_free(port: int) -> bool:
    # SO_REUSEADDR as the registry itself binds: a port left in TIME_WAIT by the last demo is free to it.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def run(out: Path, tasks: tuple[str, ...] = TASKS) -> int:
    """Start a registry, push the samples, run doit on them into `out`, summarise; the exit code."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    port = PREFERRED_PORT if _port_free(PREFERRED_PORT) else 0
    with LocalRegistry() as registry, PublicEcrStandIn(registry.url, rate=DEMO_RATE, burst=8, port=port) as upstream:
        output.say(
            f"demo: upstream {upstream.url}: a stand-in for public.ecr.aws (token realm, blobs by 307 from "
            f"{upstream.storage.host}, {DEMO_RATE:g} requests/s) in front of a local registry; the client paces to it",
            show=True,
        )
        push_samples(RegistryClient(registry.url))
        catalog = out / "runtimes.yaml"
        files.write_if_changed(catalog, catalog_text(upstream.url).encode())  # a rerun leaves it untouched
        cmd = doit_command(catalog, out, *tasks)
        output.say(f"demo: {' '.join(cmd[2:])}", show=True)
        env = {**os.environ}
        env.setdefault("LAMBDAIMAGES_RATE", f"{DEMO_RATE:g}")
        code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    if code == 0:  # an interrupted or failed run shows no table of what it made
        output.say(summary(out), show=True)
    return code


def run_task(out: Path) -> None:
    """`doit demo`'s action: the demo run; a failed inner doit run is a one-line failure."""
    code = run(out)
    if code != 0:
        raise DemoFailed(f"the demo's doit run failed (exit {code}); see above")


def summary(out: Path) -> str:
    """A table of what the demo made: per runtime and architecture, layers and tarball sizes."""
    rows = [("runtime", "arch", "layers", "tarballs MB", "inventory", "Dockerfile")]
    for name, (_, arches, _) in RUNTIMES.items():
        for arch in arches:
            folder = layout.arch_dir(out, name, arch)
            tarballs = sorted(folder.glob(layout.TARBALL_GLOB))
            size = sum(p.stat().st_size for p in tarballs) / 1e6
            dockerfile = layout.dockerfile(out, name, arch)
            found = inventories.read(layout.sbom_path(out, name, arch))
            kinds = Counter(package.kind for package in found.packages) if found else {}
            listed = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "-"
            rows.append(
                (name, arch, str(len(tarballs)), f"{size:.2f}", listed, str(dockerfile.relative_to(out.parent)))
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["", f"demo: output in {out}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(f"What is in one: {layout.sbom_path(out, 'demo.python', 'x86_64')} (CycloneDX)")
    lines.append(f"Build one yourself: cd {layout.runtime_dir(out, 'demo.python')} && "
                 f"docker build -t {layout.local_tag('demo.python')} -f Dockerfile.demo.python .")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build-demo"))
