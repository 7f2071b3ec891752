"""`scripts/bench`: the pipeline against the plain docker way, side by side in one run, on this machine.

Upstream is benchdata's set (12 images) on a local registry whose storage is cached in bench/cache.
The baseline is what a maintainer scripts with the plain tools: per runtime and architecture
`docker pull --platform`, `docker save`, `xz -T0 -6` of each layer tar, a Dockerfile, and
`docker build` of the x86_64 one. Then, with lambdaimages: (a) cold `doit`, (b) no-op `doit`, and a no-op
`doit resolve` through the stand-in for public.ecr.aws at 1 request/s (seconds and the requests it saw), (c) one
runtime's tag moved to an image with one changed ~50 MB layer, (d) peak RSS of the doit process tree
during (a), (e) export throughput against `xz -T0 -6` alone on the same bytes, (f) `doit verify` (offline)
against one `xz -dc` pass over the same tarballs, and again as a no-op (its up-to-date check hashes the files),
(g) one runtime's inventory from its tarballs against `xz -dc`
of them (and the same task with the facts cached: its fixed cost), and the scanner's CPU, Go build info reader on,
against the cold run's, (h) a fresh machine (empty output and cache) with the v1 snapshots published as branches
(Git LFS, a local bare repository) and (c)'s layer moved: `doit snapshot repo=...` against `xz -T0 -6` of that layer
plus `git lfs fetch` of the other tarballs from the same remote, (i) two shards (two out directories standing for
two CI machines, half the runtimes each) sharing one registry layer cache: what each compressed, against the
distinct layer bytes once, and each shard's time, (j) `doit check_base` of 10 function images built on the set's
images, and cold `doit` with `compression: gzip`, plainly and on a pseudo-terminal (what the live view costs). The
cold run builds and loads every image, and is also compared with `xz -T0 -6` alone over the distinct layers. The
output is checked byte for byte (against the baseline's `xz -T0` tarballs, across compressor thread counts, and
(h)'s snapshots against (c)'s). It reports; it never fails on a number.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import lzma
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil

from lambdaimages import layout, platforms
from lambdaimages.digest import Digest
from lambdaimages.inventory import tarscan
from lambdaimages.inventory.tarscan import LayerScanner
from lambdaimages.mediatypes import OCI_INDEX, OCI_MANIFEST
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import ROOT, doit_command
from lambdaimages.testbed import benchdata as data
from lambdaimages.testbed.localregistry import LocalRegistry
from lambdaimages.testbed.standin import PublicEcrStandIn

BENCH = ROOT / "bench"
PREFERRED_PORT = 5125
TARGETS = {
    "cold_ratio": 0.5,
    "noop_s": 1.5,
    "standin_rate": 1.0,  # public.ecr.aws's anonymous limit; the no-op through it: tags / rate + 1 s
    "standin_plus_s": 1.0,
    "verify_noop_s": 3.0,
    "change_factor": 1.5,
    "change_plus_s": 3.0,
    "throughput_ratio": 0.9,
    "rss_mb": 300,
    "cold_vs_xz": 1.1,
    "verify_vs_xz_dc": 1.5,
    "inventory_vs_xz_dc": 1.2,
    "inventory_share": 0.05,
    "live_view_share": 0.02,
    "check_base_s": 2.0,
    "fresh_factor": 1.5,  # (h): <= 1.5 x xz -T0 of the moved layer + git lfs fetch of the rest + 10 s
    "fresh_plus_s": 10.0,
}
BY_NAME = {rt.name: rt for rt in data.RUNTIMES}
_start = time.monotonic()


def say(message: str) -> None:
    elapsed = int(time.monotonic() - _start)
    print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {message}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _run(cmd: list[str], log: Path, stdout=None, **kwargs) -> float:
    """Run a command, output (or only its stderr) appended to `log`; its wall time. A failure stops the run."""
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        f.flush()
        start = time.monotonic()
        proc = subprocess.run(cmd, stdout=stdout or f, stderr=f, **kwargs)
        took = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd[:4])} ... failed ({proc.returncode}); see {log}")
    return took


# -- upstream: generated once, cached in bench/cache --------------------------------------------------


def _build(spec: data.LayerSpec, folder: str) -> data.BuiltLayer:
    return data.build_layer(spec, Path(folder))


def prepare_upstream(client: RegistryClient, cache: Path, scale: float = 1.0) -> dict:
    """Push the set unless the cache already holds it; the description of the set (upstream.json)."""
    record = cache / "upstream.json"
    if record.exists():
        try:
            upstream = json.loads(record.read_text())
            if upstream["generator"] == data.GENERATOR and upstream.get("scale", 1.0) == scale:
                for name, versions in upstream["index"].items():
                    for digest in versions.values():
                        client.get_manifest(BY_NAME[name].repository, digest)
                say(f"upstream: cached in {cache} ({len(upstream['layers'])} distinct layers)")
                return upstream
        except Exception as exc:  # any doubt about the cache: generate again
            say(f"upstream: cache not usable ({str(exc)[:100]}); generating again")
    specs = data.all_layer_specs(scale)
    total = sum(s.size for s in specs.values())
    say(f"upstream: generating {len(specs)} distinct layers, ~{total / 1e6:.0f} MB uncompressed (once, then cached)")
    blobs = cache / "blobs"
    layers: dict[str, data.BuiltLayer] = {}
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {key: pool.submit(_build, spec, str(blobs)) for key, spec in specs.items()}
        for key, future in futures.items():
            layers[key] = future.result()
            say(f"upstream: {key}: {layers[key].uncompressed / 1e6:.1f} MB, gzip {layers[key].size / 1e6:.1f} MB")
    index: dict[str, dict] = {}
    images: dict[str, dict] = {}
    for runtime in data.RUNTIMES:
        for version in (1, 2) if runtime.name == data.CHANGED else (1,):
            manifests = {}
            for arch in data.ARCHES:
                specs_of = data.layer_specs(runtime, arch, version if arch == "x86_64" else 1, scale)
                built = [layers[s.key] for s in specs_of]
                for lay in built:
                    client.push_blob(runtime.repository, Path(lay.blob).read_bytes())
                config = data.image_config(runtime, arch, [b.diff_id for b in built], version)
                client.push_blob(runtime.repository, config)
                body = data.image_manifest(config, built)
                client.push_manifest(runtime.repository, Digest.of(body), OCI_MANIFEST, body)
                manifests[arch] = body
                images.setdefault(runtime.name, {}).setdefault(f"v{version}", {})[arch] = [s.key for s in specs_of]
            body = data.image_index(manifests)
            digest = client.push_manifest(runtime.repository, Digest.of(body), OCI_INDEX, body)
            index.setdefault(runtime.name, {})[f"v{version}"] = digest
    shutil.rmtree(blobs, ignore_errors=True)
    upstream = {
        "generator": data.GENERATOR,
        "scale": scale,
        "layers": {
            k: {"diff_id": b.diff_id, "digest": b.digest, "size": b.size, "uncompressed": b.uncompressed}
            for k, b in layers.items()
        },
        "images": images,
        "index": index,
    }
    record.write_text(json.dumps(upstream, indent=2) + "\n")
    say(f"upstream: pushed {len(data.RUNTIMES) * len(data.ARCHES)} images (+1 changed), cached in {cache}")
    return upstream


def point_tag(client: RegistryClient, runtime: str, upstream: dict, version: str) -> None:
    """Move `<repository>:latest` to version v1 or v2 of a runtime's index."""
    repo = BY_NAME[runtime].repository
    body = client.get_manifest(repo, upstream["index"][runtime][version]).body
    client.push_manifest(repo, data.TAG, OCI_INDEX, body)


def distinct_layers(upstream: dict, version: str = "v1") -> dict[str, dict]:
    """diff_id -> layer of every distinct layer the images carry at `version` (the tags' state)."""
    found = {}
    for name, versions in upstream["images"].items():
        for keys in versions["v1" if version == "v1" or name != data.CHANGED else version].values():
            for key in keys:
                lay = upstream["layers"][key]
                found[lay["diff_id"]] = {**lay, "key": key}
    return found


# -- the baseline: plain docker + xz ---------------------------------------------------------------------


def baseline_dockerfile(config: dict, tarballs: list[str]) -> str:
    """What a maintainer's script writes: the same instructions as ours, so the builds cost the same."""
    cfg = config.get("config") or {}
    lines = ["FROM scratch", ""] + [f"ADD {t} /" for t in tarballs] + [""]
    lines += [f'ENV {k}="{v}"' for k, _, v in (e.partition("=") for e in cfg.get("Env") or [])]
    lines += [f'LABEL "{k}"="{v}"' for k, v in sorted((cfg.get("Labels") or {}).items())]
    if cfg.get("WorkingDir"):
        lines.append(f"WORKDIR {cfg['WorkingDir']}")
    lines.append(f"ENTRYPOINT {json.dumps(cfg.get('Entrypoint'))}")
    lines.append(f"CMD {json.dumps(cfg.get('Cmd'))}")
    return "\n".join(lines) + "\n"


def run_baseline(docker: str, host: str, work: Path, logs: Path) -> dict:
    """The plain-tools way for all 12 images; phase totals, per-layer xz times, what it left in the engine."""
    shutil.rmtree(work, ignore_errors=True)
    log = logs / "baseline.log"
    env = {**os.environ, "DOCKER_BUILDKIT": "0"}  # the legacy builder, the one our builds use too
    phases = {"pull": 0.0, "save": 0.0, "xz": 0.0, "dockerfile": 0.0, "build": 0.0}
    xz_times: dict[str, list[float]] = {}
    tarballs: dict[str, Path] = {}
    pulled, built = set(), []
    start = time.monotonic()
    for runtime in data.RUNTIMES:
        folder = work / runtime.name
        ref = f"{host}/{runtime.repository}:{data.TAG}"
        for arch in data.ARCHES:
            seconds = {"pull": _run([docker, "pull", "-q", "--platform", platforms.get(arch).platform, ref], log)}
            image_id = subprocess.run(
                [docker, "image", "inspect", "-f", "{{.Id}}", ref], capture_output=True, text=True, check=True
            ).stdout.strip()
            pulled.add(image_id)
            saved = work / "saved"
            shutil.rmtree(saved, ignore_errors=True)
            saved.mkdir(parents=True)
            t = time.monotonic()
            with open(log, "ab") as f:
                save = subprocess.Popen([docker, "save", ref], stdout=subprocess.PIPE, stderr=f)
                untar = subprocess.run(["tar", "-x", "-C", str(saved)], stdin=save.stdout, stderr=f)
                save.stdout.close()
                if save.wait() != 0 or untar.returncode != 0:
                    sys.exit(f"bench: docker save {ref} | tar -x failed; see {log}")
            seconds["save"] = time.monotonic() - t
            manifest = json.loads((saved / "manifest.json").read_text())[0]
            config = json.loads((saved / manifest["Config"]).read_text())
            diff_ids = config["rootfs"]["diff_ids"]
            (folder / arch).mkdir(parents=True, exist_ok=True)
            seconds["xz"] = 0.0
            for layer_tar, diff_id in zip(manifest["Layers"], diff_ids, strict=True):
                dest = folder / arch / layout.tarball_name(diff_id, "tar.xz")
                with open(dest, "wb") as out:
                    took = _run(["xz", "-T0", "-6", "-c", str(saved / layer_tar)], log, stdout=out)
                xz_times.setdefault(diff_id, []).append(took)
                tarballs.setdefault(diff_id, dest)
                seconds["xz"] += took
            t = time.monotonic()
            names = [layout.tarball_name(d, "tar.xz") for d in diff_ids]
            (folder / arch / f"Dockerfile.{runtime.name}").write_text(baseline_dockerfile(config, names))
            if arch == "x86_64":
                text = baseline_dockerfile(config, [f"x86_64/{n}" for n in names])
                (folder / f"Dockerfile.{runtime.name}").write_text(text)
                (folder / ".dockerignore").write_text("arm64/\n")
            seconds["dockerfile"] = time.monotonic() - t
            shutil.rmtree(saved)
            for k, v in seconds.items():
                phases[k] += v
            say(
                f"baseline: {runtime.name} {arch}: pull {seconds['pull']:.1f} s, save {seconds['save']:.1f} s, "
                f"xz {len(diff_ids)} layers {seconds['xz']:.1f} s"
            )
        tag = layout.local_tag(f"bench-baseline-{runtime.name}")
        took = _run(
            [docker, "build", "-q", "-t", tag, "-f", f"Dockerfile.{runtime.name}", "."], log, cwd=folder, env=env
        )
        built.append(tag)
        phases["build"] += took
        say(f"baseline: {runtime.name}: docker build {took:.1f} s")
    total = time.monotonic() - start
    return {
        "seconds": total,
        "phases": phases,
        "xz_times": xz_times,
        "tarballs": tarballs,
        "pulled": sorted(pulled),
        "built": built,
    }


# -- lambdaimages runs -----------------------------------------------------------------------------------


def catalog_text(registry_url: str, compression: str = "xz") -> str:
    lines = [
        "# Written by scripts/bench.",
        "defaults:",
        f"  registry: {registry_url}",
        f"  compression: {compression}",
        "  level: 6",
        "runtimes:",
    ]
    for runtime in data.RUNTIMES:
        lines += [f"  {runtime.name}:", f"    image: {runtime.repository}:{data.TAG}"]
    return "\n".join(lines) + "\n"


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_doit(
    catalog: Path,
    out: Path,
    log: Path,
    *tasks: str,
    label: str,
    env: dict | None = None,
    terminal: bool = False,
    accept: tuple[int, ...] = (0,),
) -> dict:
    """`doit catalog=... out=... TASKS` as a user runs it; wall time, CPU time, peak RSS of its process tree and exit
    status (any other than `accept` stops the benchmark).

    With `terminal`, doit runs on a pseudo-terminal (`script`), so it draws its live view.
    """
    cmd = doit_command(catalog, out, *tasks)
    if terminal:
        cmd = ["script", "-qfec", shlex.join(cmd), "/dev/null"]
    peak = 0
    cpu_before = _children_cpu()
    with open(log, "ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        f.flush()
        start = time.monotonic()
        child = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
        proc = psutil.Process(child.pid)
        last = start
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(proc))
            except psutil.Error:
                pass
            now = time.monotonic()
            if now - last >= 30:
                last = now
                say(f"{label}: running for {now - start:.0f} s, peak RSS so far {peak / 1e6:.0f} MB")
            time.sleep(0.05)
        seconds = time.monotonic() - start
    if child.returncode not in accept:
        sys.exit(f"bench: {label}: doit failed ({child.returncode}); see {log}")
    return {"seconds": seconds, "peak_rss": peak, "cpu_s": _children_cpu() - cpu_before, "status": child.returncode}


def standin_noop(upstream_url: str, out: Path, logs: Path) -> dict:
    """A no-op `doit resolve` of the set through the stand-in for public.ecr.aws at its anonymous 1 request/s.

    A first resolve through it makes the snapshot (the registry URL is part of each state's reference, so the
    cold run's states would not do); then, once the stand-in's bucket has refilled, the measured no-op, whose
    requests the stand-in counts. The client paces itself: the token challenge names service public.ecr.aws.
    """
    env = {k: v for k, v in os.environ.items() if k != "LAMBDAIMAGES_RATE"}  # the client's own pace is measured
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with PublicEcrStandIn(upstream_url, rate=TARGETS["standin_rate"], burst=1) as standin:
        catalog = out / "runtimes.yaml"
        catalog.write_text(catalog_text(standin.url))
        snapshot = out / "snapshot"
        first = run_doit(catalog, snapshot, logs / "standin.log", "resolve", label="(b) stand-in, first", env=env)
        time.sleep(1.5)  # the bucket holds one token: >= 1.1 s since the first run's last request
        seen = len(standin.log), len(standin.storage.log)
        noop = run_doit(catalog, snapshot, logs / "standin.log", "resolve", label="(b) stand-in, no-op", env=env)
        requests = standin.log[seen[0] :] + standin.storage.log[seen[1] :]
    statuses: dict[str, int] = {}
    for entry in requests:
        statuses[str(entry.status)] = statuses.get(str(entry.status), 0) + 1
    noop.update(
        first_s=first["seconds"],
        requests=len(requests),
        too_many=statuses.get("429", 0),
        statuses=statuses,
        heads=sum(entry.method == "HEAD" for entry in requests),
    )
    shutil.rmtree(out, ignore_errors=True)
    return noop


def sharded_exports(catalog: Path, out: Path, logs: Path, distinct_bytes: int) -> dict:
    """(i) Two shards sharing a registry layer cache (a registry of its own, temporary), one after the other as CI
    jobs that start apart: `doit cache=URL export:<rt>...` of half the runtimes each, into an empty out directory
    standing for a fresh machine. What each compressed (the uncompressed bytes of the layers it compressed itself,
    from its cache records) and took from the cache, and its time.
    """
    names = [runtime.name for runtime in data.RUNTIMES]
    halves = (names[: len(names) // 2], names[len(names) // 2 :])
    shards = []
    with LocalRegistry() as cache_registry:
        cache = f"cache={cache_registry.url}/bench/layer-cache"
        for number, half in enumerate(halves, 1):
            shard_out = out / f"shard{number}"
            shutil.rmtree(shard_out, ignore_errors=True)
            label = f"(i) shard {number}"
            run = run_doit(catalog, shard_out, logs / "sharded.log", cache, *(f"export:{n}" for n in half), label=label)
            records = [json.loads(p.read_bytes()) for p in (shard_out / ".cache" / "xz6").glob("*.tar.xz.json")]
            run["runtimes"] = half
            run["compressed_bytes"] = sum(r.get("uncompressed", 0) for r in records if "source" not in r)
            run["taken_bytes"] = sum(r.get("uncompressed", 0) for r in records if "source" in r)
            say(
                f"{label}: {run['seconds']:.1f} s, compressed {run['compressed_bytes'] / 1e6:.1f} MB, "
                f"took {run['taken_bytes'] / 1e6:.1f} MB from the registry cache"
            )
            shards.append(run)
            shutil.rmtree(shard_out, ignore_errors=True)
    compressed = sum(shard["compressed_bytes"] for shard in shards)
    return {"shards": shards, "compressed_bytes": compressed, "distinct_bytes": distinct_bytes}


def _children_cpu() -> float:
    """CPU seconds (user + system) of every child process waited for so far, and of their children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def image_ids(docker: str, tags: list[str]) -> dict[str, str | None]:
    ids = {}
    for tag in tags:
        proc = subprocess.run([docker, "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True, text=True)
        ids[tag] = proc.stdout.strip() if proc.returncode == 0 else None
    return ids


def remove_images(docker: str, refs: list[str]) -> None:
    for ref in refs:
        subprocess.run([docker, "rmi", "-f", ref], capture_output=True)


def remove_bench_images(docker: str) -> int:
    """Remove every image of the benchmark's set, tagged or not: pulled, built by the baseline or by doit.

    An untagged image left by an earlier run (a build replaced by a newer one) would otherwise serve
    the legacy builder's cache. Removing an image removes its untagged parents (the build steps) too.
    """
    listed = subprocess.run(
        [docker, "images", "-aq", "--no-trunc", "--filter", f"label={data.VERSION_LABEL}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    ours = []
    for image in dict.fromkeys(listed):
        label = subprocess.run(
            [docker, "image", "inspect", "-f", f'{{{{index .Config.Labels "{data.VERSION_LABEL}"}}}}', image],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if label.startswith("bench-"):
            ours.append(image)
    remove_images(docker, ours)
    return len(ours)


def local_tags() -> list[str]:
    return [layout.local_tag(rt.name) for rt in data.RUNTIMES]


def loaded_tags() -> list[str]:
    return [layout.loaded_tag(rt.name, arch) for rt in data.RUNTIMES for arch in data.ARCHES]


CHECKED_IMAGES = 10  # check_base's measure: function images built on the set's images


def function_images(docker: str, work: Path, logs: Path) -> list[str]:
    """`CHECKED_IMAGES` function images, each one small layer `FROM` a runtime's `<rt>:local` or `<rt>:x86_64`."""
    parents = [*local_tags(), *(layout.loaded_tag(rt.name, "x86_64") for rt in data.RUNTIMES)][:CHECKED_IMAGES]
    tags = []
    for number, parent in enumerate(parents):
        context = work / f"function-{number}"
        context.mkdir(parents=True, exist_ok=True)
        (context / "handler.txt").write_text(f"function {number} on {parent}\n")
        (context / "Dockerfile").write_text(f"FROM {parent}\nCOPY handler.txt /var/task/handler.txt\n")
        tag = f"bench-function-{number}:1"
        _run([docker, "build", "-q", "-t", tag, str(context)], logs / "functions.log", stdout=subprocess.DEVNULL)
        tags.append(tag)
    return tags


def fetch_layer_tar(client: RegistryClient, repository: str, layer: dict, dest: Path) -> None:
    """The uncompressed tar of one layer, from the registry."""
    unpack = zlib.decompressobj(wbits=31)
    with open(dest, "wb") as f:
        for chunk in client.iter_blob(repository, layer["digest"], layer["size"]):
            f.write(unpack.decompress(chunk))
        f.write(unpack.flush())


THREADS_CHECK = """
import hashlib, io, sys
from pathlib import Path
from lambdaimages.tools import xzblocks
buf = io.BytesIO()
xzblocks.compress_file(Path(sys.argv[1]), buf, 6, Path(sys.argv[2]))
print(hashlib.sha256(buf.getvalue()).hexdigest())
"""


def scanner_cpu(cache: Path, layers: dict, content_readers: bool = True) -> float:
    """CPU seconds the inventory scanner takes for every distinct layer (what export's stream feeds it), measured
    by decompressing the cached tarballs and timing only the scanner; without `content_readers`, with the readers
    that files are offered to by their first bytes (the Go build info reader) taken out, for comparison."""
    if not content_readers:
        kept = dict(tarscan.CONTENT_READERS)
        tarscan.CONTENT_READERS.clear()
        try:
            return scanner_cpu(cache, layers)
        finally:
            tarscan.CONTENT_READERS.update(kept)
    spent = 0.0
    for diff_id in layers:
        scanner = LayerScanner(diff_id)
        with lzma.open(cache / layout.tarball_name(diff_id, "tar.xz")) as stream:
            while chunk := stream.read(1 << 20):
                began = time.process_time()
                scanner.feed(chunk)
                spent += time.process_time() - began
        began = time.process_time()
        scanner.close()
        spent += time.process_time() - began
    return spent


def threads_identical(source: Path, spool: Path, expected: str, counts=(1, 3)) -> dict[str, bool]:
    """Compress `source` with 1 and 3 compressor threads in fresh processes; compare with `expected`."""
    result = {}
    for count in counts:
        env = {**os.environ, "LAMBDAIMAGES_XZ_THREADS": str(count), "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", THREADS_CHECK, str(source), str(spool)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result[f"threads={count}"] = proc.stdout.strip() == expected
    return result


# -- the whole benchmark ---------------------------------------------------------------------------------


def cache_bytecode() -> int:
    """Compile the checkout's modules once, as a user's Python keeps them after a first run; how many were written.

    With PYTHONDONTWRITEBYTECODE set (as on these machines) and no __pycache__, every doit run compiled the
    package's modules from source again: ~0.15 CPU s of each start, which the short runs measured as theirs.
    """
    before = len(list(ROOT.glob("lambdaimages/**/__pycache__/*.pyc")))
    compileall.compile_dir(ROOT / "lambdaimages", quiet=1)
    compileall.compile_file(ROOT / "dodo.py", quiet=1)
    return len(list(ROOT.glob("lambdaimages/**/__pycache__/*.pyc"))) - before


def _port() -> int | None:
    with socket.socket() as s:
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the registry binds
            s.bind(("127.0.0.1", PREFERRED_PORT))
        except OSError:
            return None
    return PREFERRED_PORT


def _versions(docker: str) -> dict:
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            return None

    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "xz": first_line(["xz", "--version"]),
        "engine": first_line([docker, "version", "-f", "{{.Server.Version}}"]),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def summary_layers(log: Path, kinds: tuple[str, ...]) -> dict[str, int]:
    """How many layers a run's summary lines (`compressed 1 layer, ...`) count per kind; 0 when a kind has none."""
    text = log.read_text(errors="replace")
    found = {}
    for kind in kinds:
        counts = re.findall(rf"^{re.escape(kind)} (\d+) layers?\b", text, re.M)
        found[kind] = int(counts[-1]) if counts else 0
    return found


def lfs_fetch_seconds(repo: Path, diff_ids: set[str], bare: Path, log: Path) -> float:
    """(h)'s reference: the time git and git-lfs take to fetch every branch tip of `repo` (depth 1) and only the
    tarballs of `diff_ids` into a new bare repository, each object once."""
    shutil.rmtree(bare, ignore_errors=True)
    subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    url = repo.absolute().as_uri()
    hexes = {Digest(d).hex for d in diff_ids}

    def git(*args: str) -> str:
        done = subprocess.run(["git", "--git-dir", str(bare), *args], capture_output=True, text=True)
        with open(log, "a") as f:
            f.write(f"$ git {' '.join(args[:3])} ...\n{done.stderr}")
        if done.returncode != 0:
            sys.exit(f"bench: git {' '.join(args[:2])} failed; see {log}")
        return done.stdout

    start = time.monotonic()
    git("fetch", "--quiet", "--no-tags", "--depth", "1", url, "+refs/heads/*:refs/heads/*")
    for branch in git("for-each-ref", "--format=%(refname:short)", "refs/heads/").split():
        names = git("ls-tree", "-r", "--name-only", branch).split()
        paths = [p for p in names if "/" in p and p.rsplit("/", 1)[1].split(".")[0] in hexes]
        if paths:
            git("lfs", "fetch", url, branch, "--include", ",".join(paths))
    seconds = time.monotonic() - start
    shutil.rmtree(bare, ignore_errors=True)
    return seconds


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def run(bench: Path = BENCH, skip_baseline: bool = False, scale: float = 1.0) -> dict:
    docker = shutil.which("docker") or "/usr/bin/docker"
    cache, out = bench / "cache", bench / "out"
    logs = out / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    results: dict = {"machine": _versions(docker), "targets": TARGETS}
    results["machine"]["bytecode_compiled"] = cache_bytecode()
    # Other work on the machine slows every phase: the 1-minute load average after each one says how much.
    load = results["machine"]["loadavg_1min_after"] = {}

    def phase_done(name: str) -> None:
        load[name] = round(os.getloadavg()[0], 2)

    with LocalRegistry(storage=cache / "registry", port=_port()) as registry:
        client = RegistryClient(registry.url)
        say(f"registry {registry.url}, storage {cache / 'registry'}")
        upstream = prepare_upstream(client, cache, scale)
        for name in BY_NAME:
            point_tag(client, name, upstream, "v1")
        layers = distinct_layers(upstream)
        per_image = sum(
            upstream["layers"][k]["uncompressed"]
            for v in upstream["images"].values()
            for keys in v["v1"].values()
            for k in keys
        )
        unique = sum(lay["uncompressed"] for lay in layers.values())
        results["upstream"] = {
            "images": len(data.RUNTIMES) * len(data.ARCHES),
            "distinct_layers": len(layers),
            "distinct_mb": round(unique / 1e6, 1),
            "all_images_mb": round(per_image / 1e6, 1),
            "gzip_mb": round(sum(lay["size"] for lay in layers.values()) / 1e6, 1),
        }
        say(
            f"upstream: 12 images, {len(layers)} distinct layers, {unique / 1e6:.0f} MB distinct, "
            f"{per_image / 1e6:.0f} MB summed over images"
        )
        if removed := remove_bench_images(docker):
            say(f"removed {removed} image(s) of the set that an earlier run left")

        # Baseline. Its images go before our builds: the legacy builder's cache would serve them.
        base = None
        if not skip_baseline:
            say("baseline: docker pull --platform, docker save, xz -T0 -6 per layer, Dockerfile, docker build")
            base = run_baseline(docker, registry.host, out / "baseline", logs)
            remove_images(docker, base["built"] + base["pulled"])
            say(f"baseline: {base['seconds']:.1f} s in all; its images removed")
            phase_done("baseline")

        catalog = out / "runtimes.yaml"
        catalog.write_text(catalog_text(registry.url))
        cold_out = out / "cold"
        shutil.rmtree(cold_out, ignore_errors=True)
        say("(a) cold: plain doit, empty output and cache")
        cold = run_doit(catalog, cold_out, logs / "cold.log", label="(a) cold")
        say(f"(a) cold: {cold['seconds']:.1f} s, (d) peak RSS {cold['peak_rss'] / 1e6:.0f} MB")
        phase_done("cold")
        built_ids = image_ids(docker, local_tags())
        xz_cache = cold_out / ".cache" / "xz6"
        xz_bytes = sum((xz_cache / layout.tarball_name(d, "tar.xz")).stat().st_size for d in layers)
        results["upstream"]["xz6_mb"] = round(xz_bytes / 1e6, 1)

        say("(b) no-op: doit again")
        noop = run_doit(catalog, cold_out, logs / "noop.log", label="(b) no-op")
        noop["rebuilt"] = [t for t, i in image_ids(docker, local_tags()).items() if i != built_ids[t]]
        say(f"(b) no-op: {noop['seconds']:.2f} s, images rebuilt: {noop['rebuilt'] or 'none'}")
        phase_done("noop")

        say("(b) no-op through the stand-in for public.ecr.aws at 1 request/s: doit resolve (a first run makes it)")
        standin = standin_noop(registry.url, out / "standin", logs)
        say(
            f"(b) stand-in no-op: {standin['seconds']:.2f} s, {standin['requests']} requests "
            f"({standin['too_many']} answered 429), statuses {standin['statuses']}; "
            f"first run {standin['first_s']:.1f} s"
        )
        phase_done("standin_noop")

        say("(f) verify, offline: doit verify (no registry asked), and one xz -dc pass over the same tarballs")
        verify = run_doit(catalog, cold_out, logs / "verify.log", "verify", label="(f) verify")
        tarballs = sorted(p for p in cold_out.glob("*/*/*.tar.xz"))
        with open(os.devnull, "wb") as sink:
            verify["xz_dc_s"] = _run(["xz", "-dc", *map(str, tarballs)], logs / "xz.log", stdout=sink)
        verify["tarballs_mb"] = sum(p.stat().st_size for p in tarballs) / 1e6
        say(f"(f) verify: {verify['seconds']:.1f} s; xz -dc of {len(tarballs)} tarballs: {verify['xz_dc_s']:.1f} s")
        verify["noop"] = run_doit(catalog, cold_out, logs / "verify.log", "verify", label="(f) verify, no-op")
        say(f"(f) verify again, no-op (files hashed): {verify['noop']['seconds']:.2f} s")
        phase_done("verify")

        # (g) inventories: one runtime's from its tarballs on disk (no facts cached), against one xz -dc pass over
        # them; and what the scanner costs a cold run (all distinct layers fed to it, CPU), against (a)'s CPU.
        say(f"(g) inventory of {data.CHANGED} from its tarballs, and one xz -dc pass over them")
        facts = cold_out / ".cache" / "facts"
        kept = cold_out / ".cache" / "facts-kept"
        facts.rename(kept)
        inventory = run_doit(catalog, cold_out, logs / "inventory.log", "-a", f"inventory:{data.CHANGED}",
                             label="(g) inventory")  # fmt: skip
        # The same task with every layer's facts cached: what it costs besides reading the tarballs (doit's start,
        # the catalog, merging the facts, writing the SBOMs), which dominates at small scales.
        inventory["fixed_s"] = run_doit(catalog, cold_out, logs / "inventory.log", "-a", f"inventory:{data.CHANGED}",
                                        label="(g) inventory, facts cached")["seconds"]  # fmt: skip
        shutil.rmtree(facts, ignore_errors=True)
        kept.rename(facts)
        own = sorted(cold_out.glob(f"{data.CHANGED}/*/*.tar.xz"))
        with open(os.devnull, "wb") as sink:
            inventory["xz_dc_s"] = _run(["xz", "-dc", *map(str, own)], logs / "xz.log", stdout=sink)
        inventory["scan_cpu_s"] = scanner_cpu(xz_cache, layers)
        inventory["scan_cpu_no_content_readers_s"] = scanner_cpu(xz_cache, layers, content_readers=False)
        inventory["cold_cpu_s"] = cold["cpu_s"]
        say(
            f"(g) inventory: {inventory['seconds']:.1f} s ({inventory['fixed_s']:.1f} s of it with the facts cached), "
            f"xz -dc {inventory['xz_dc_s']:.1f} s; scanner {inventory['scan_cpu_s']:.1f} CPU s of the cold run's "
            f"{cold['cpu_s']:.0f} ({inventory['scan_cpu_no_content_readers_s']:.1f} without the Go reader)"
        )
        phase_done("inventory")

        # (j) check_base: function images on the set's images, checked after (c) moved one runtime.
        say(f"(j) check_base: building {CHECKED_IMAGES} function images on the set's images")
        functions = function_images(docker, out / "functions", logs)

        identical: dict = {}
        if base is not None:
            say("identity: every tarball of (a) against the baseline's xz -T0 -6 output")
            cache_dir = cold_out / ".cache" / "xz6"
            same = sum(
                sha256_file(cache_dir / layout.tarball_name(d, "tar.xz")) == sha256_file(base["tarballs"][d])
                for d in layers
            )
            identical["tarballs_vs_xz_T0"] = f"{same}/{len(layers)}"

        # (h) needs the v1 snapshots published: branches in a local bare repository, tarballs in Git LFS.
        published = out / "branches.git"
        shutil.rmtree(published, ignore_errors=True)
        say(f"(h) publishing the v1 snapshots as branches to {published}")
        run_doit(catalog, cold_out, logs / "publish.log", "publish", f"repo={published}", label="publish")
        phase_done("publish")

        # (c) one change: the reference is xz -T0 -6 on that one layer, measured now.
        changed_key = upstream["images"][data.CHANGED]["v2"]["x86_64"][1]
        changed = upstream["layers"][changed_key]
        work = out / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        layer_tar = work / "changed.tar"
        fetch_layer_tar(client, BY_NAME[data.CHANGED].repository, changed, layer_tar)
        with open(work / "changed.tar.xz", "wb") as f:
            xz_one = _run(["xz", "-T0", "-6", "-c", str(layer_tar)], logs / "xz.log", stdout=f)
        say(f"(c) reference: xz -T0 -6 of the changed {changed['uncompressed'] / 1e6:.0f} MB layer: {xz_one:.1f} s")
        point_tag(client, data.CHANGED, upstream, "v2")
        say(f"(c) one change: {data.CHANGED}:latest moved (x86_64 runtime layer changed); doit")
        change = run_doit(catalog, cold_out, logs / "change.log", label="(c) one change")
        change["rebuilt"] = [t for t, i in image_ids(docker, local_tags()).items() if i != built_ids[t]]
        change["xz_T0_layer_s"] = xz_one
        ours = cold_out / ".cache" / "xz6" / layout.tarball_name(changed["diff_id"], "tar.xz")
        expected = sha256_file(work / "changed.tar.xz")
        identical["changed_layer_vs_xz_T0"] = sha256_file(ours) == expected
        say(f"(c) one change: {change['seconds']:.1f} s, images rebuilt: {change['rebuilt']}")
        phase_done("one_change")

        fresh_out = out / "fresh"
        shutil.rmtree(fresh_out, ignore_errors=True)
        say("(h) a fresh machine, the branches published, one layer moved: doit snapshot repo=..., empty output")
        fresh = run_doit(catalog, fresh_out, logs / "fresh.log", "snapshot", f"repo={published}",
                         label="(h) fresh machine")  # fmt: skip
        fresh.update(summary_layers(logs / "fresh.log", ("compressed", "from published branches")))
        fresh["xz_T0_layer_s"] = xz_one
        others = {d for d in distinct_layers(upstream, "v2") if d != changed["diff_id"]}
        fresh["lfs_fetch_s"] = lfs_fetch_seconds(published, others, work / "lfs-fetch.git", logs / "fresh.log")
        identical["fresh_machine_vs_cold"] = all(
            _files(fresh_out / name) == _files(cold_out / name) for name in BY_NAME
        )
        say(
            f"(h) fresh machine: {fresh['seconds']:.1f} s, {fresh['compressed']} layer(s) compressed, "
            f"{fresh['from published branches']} from the branches; git lfs fetch of those {fresh['lfs_fetch_s']:.1f} s"
        )
        phase_done("fresh_machine")
        shutil.rmtree(fresh_out, ignore_errors=True)
        point_tag(client, data.CHANGED, upstream, "v1")

        say(f"(j) check_base of {len(functions)} images, offline, snapshots on disk")
        images = ",".join(functions)
        check = run_doit(catalog, cold_out, logs / "check_base.log", "check_base", f"image={images}",
                         label="(j) check_base", accept=(0, 1))  # fmt: skip
        check["images"] = len(functions)
        say(f"(j) check_base: {check['seconds']:.2f} s, exit status {check['status']}")
        phase_done("check_base")
        remove_images(docker, functions)
        shutil.rmtree(out / "functions", ignore_errors=True)

        say("identity: the changed layer compressed with 1 and 3 compressor threads")
        identical.update(threads_identical(layer_tar, work, expected))

        export_out = out / "export"
        shutil.rmtree(export_out, ignore_errors=True)
        say("(e) export throughput: doit export, empty output and cache")
        export = run_doit(catalog, export_out, logs / "export.log", "export", label="(e) export")
        export["mb_s"] = unique / export["seconds"] / 1e6
        if base is not None:
            xz_alone = sum(sum(base["xz_times"][d]) / len(base["xz_times"][d]) for d in layers)
            export["xz_T0_alone_s"] = xz_alone
            export["xz_T0_alone_mb_s"] = unique / xz_alone / 1e6
        say(f"(e) export: {export['seconds']:.1f} s, {export['mb_s']:.2f} MB/s")
        phase_done("export")
        shutil.rmtree(export_out, ignore_errors=True)

        say("(i) two shards sharing a registry layer cache: doit cache=URL export of half the runtimes each")
        sharded = sharded_exports(catalog, out, logs, unique)
        phase_done("sharded")

        remove_images(docker, local_tags() + loaded_tags() + [i for i in built_ids.values() if i])
        gzip_catalog = out / "runtimes-gzip.yaml"
        gzip_catalog.write_text(catalog_text(registry.url, "gzip"))
        gzip_out = out / "gzip"
        shutil.rmtree(gzip_out, ignore_errors=True)
        say("cold with compression: gzip (upstream blobs stored as-is)")
        gzip = run_doit(gzip_catalog, gzip_out, logs / "gzip.log", label="gzip cold")
        # The same run again on a pseudo-terminal: what the live view costs (CPU), against the plain run's.
        remove_images(docker, local_tags() + loaded_tags())
        shutil.rmtree(gzip_out, ignore_errors=True)
        say("gzip cold again, on a terminal (live view)")
        gzip["live"] = run_doit(gzip_catalog, gzip_out, logs / "gzip-live.log", label="gzip live", terminal=True)
        as_is = sum(
            sha256_file(gzip_out / ".cache" / "gzip" / layout.tarball_name(d, "tar.gz")) == lay["digest"][7:]
            for d, lay in layers.items()
        )
        identical["gzip_tarballs_are_upstream_blobs"] = f"{as_is}/{len(layers)}"
        say(f"gzip cold: {gzip['seconds']:.1f} s")
        phase_done("gzip_cold")
        remove_bench_images(docker)
        # The big folders go (bench/out/logs and the results stay); the cache in bench/cache stays.
        for folder in (gzip_out, work, cold_out, out / "baseline", published):
            shutil.rmtree(folder, ignore_errors=True)

    results["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results.update(summarise(base, cold, noop, standin, change, export, gzip, verify, inventory, check, fresh, sharded))
    results["identical"] = identical
    return results


def summarise(base, cold, noop, standin, change, export, gzip, verify, inventory, check, fresh, sharded) -> dict:
    t = TARGETS
    rows = {}
    if base is not None:
        rows["baseline"] = {
            "seconds": round(base["seconds"], 1),
            "phases": {k: round(v, 1) for k, v in base["phases"].items()},
        }
    ratio = cold["seconds"] / base["seconds"] if base else None
    rows["cold"] = {"seconds": round(cold["seconds"], 1), "ratio": _r(ratio), "met": _met(ratio, t["cold_ratio"])}
    rows["noop"] = {
        "seconds": round(noop["seconds"], 2),
        "met": noop["seconds"] <= t["noop_s"],
        "rebuilt": noop["rebuilt"],
    }
    tags = len(data.RUNTIMES)
    standin_limit = tags / t["standin_rate"] + t["standin_plus_s"]
    rows["standin_noop"] = {
        "seconds": round(standin["seconds"], 2),
        "limit_s": round(standin_limit, 2),
        "tags": tags,
        "requests": standin["requests"],
        "too_many": standin["too_many"],
        "statuses": standin["statuses"],
        "first_s": round(standin["first_s"], 1),
        "requests_target": tags + 2,  # one HEAD per tag, and the one challenge and one token that open a run
        "met": standin["seconds"] <= standin_limit and standin["requests"] <= tags + 2,
    }
    limit = t["change_factor"] * change["xz_T0_layer_s"] + t["change_plus_s"]
    rows["one_change"] = {
        "seconds": round(change["seconds"], 1),
        "xz_T0_layer_s": round(change["xz_T0_layer_s"], 1),
        "limit_s": round(limit, 1),
        "met": change["seconds"] <= limit,
        "rebuilt": change["rebuilt"],
    }
    rss = cold["peak_rss"] / 1e6
    rows["peak_rss"] = {"mb": round(rss), "met": rss <= t["rss_mb"]}
    tr = export["mb_s"] / export["xz_T0_alone_mb_s"] if "xz_T0_alone_mb_s" in export else None
    rows["export"] = {
        "seconds": round(export["seconds"], 1),
        "mb_s": round(export["mb_s"], 2),
        "xz_T0_alone_mb_s": _r(export.get("xz_T0_alone_mb_s")),
        "ratio": _r(tr),
        "met": None if tr is None else tr >= t["throughput_ratio"],
    }
    xz_alone = export.get("xz_T0_alone_s")
    cx = cold["seconds"] / xz_alone if xz_alone else None
    rows["cold_vs_xz"] = {"xz_T0_alone_s": _r(xz_alone), "ratio": _r(cx), "met": _met(cx, t["cold_vs_xz"])}
    vr = verify["seconds"] / verify["xz_dc_s"]
    rows["verify"] = {
        "seconds": round(verify["seconds"], 1),
        "xz_dc_s": round(verify["xz_dc_s"], 1),
        "tarballs_mb": round(verify["tarballs_mb"], 1),
        "ratio": _r(vr),
        "met": _met(vr, t["verify_vs_xz_dc"]),
    }
    rows["verify_noop"] = {
        "seconds": round(verify["noop"]["seconds"], 2),
        "met": verify["noop"]["seconds"] <= t["verify_noop_s"],
    }
    ir = inventory["seconds"] / inventory["xz_dc_s"]
    share = inventory["scan_cpu_s"] / inventory["cold_cpu_s"]
    rows["inventory"] = {
        "seconds": round(inventory["seconds"], 1),
        "xz_dc_s": round(inventory["xz_dc_s"], 1),
        "ratio": _r(ir),
        "met": _met(ir, t["inventory_vs_xz_dc"]),
        "fixed_s": round(inventory["fixed_s"], 2),
        "ratio_above_fixed": _r((inventory["seconds"] - inventory["fixed_s"]) / inventory["xz_dc_s"]),
        "scan_cpu_s": round(inventory["scan_cpu_s"], 2),
        "scan_cpu_no_content_readers_s": round(inventory["scan_cpu_no_content_readers_s"], 2),
        "cold_cpu_s": round(inventory["cold_cpu_s"], 1),
        "share": _r(share),
        "share_met": _met(share, t["inventory_share"]),
    }
    fresh_limit = t["fresh_factor"] * fresh["xz_T0_layer_s"] + fresh["lfs_fetch_s"] + t["fresh_plus_s"]
    rows["fresh_machine"] = {
        "seconds": round(fresh["seconds"], 1),
        "compressed": fresh["compressed"],
        "from_branches": fresh["from published branches"],
        "xz_T0_layer_s": round(fresh["xz_T0_layer_s"], 1),
        "lfs_fetch_s": round(fresh["lfs_fetch_s"], 1),
        "limit_s": round(fresh_limit, 1),
        "met": fresh["seconds"] <= fresh_limit,
    }
    rows["check_base"] = {
        "seconds": round(check["seconds"], 2),
        "images": check["images"],
        "status": check["status"],
        "met": check["seconds"] <= t["check_base_s"],
    }
    extra = gzip["live"]["cpu_s"] - gzip["cpu_s"]
    per_second = extra / gzip["live"]["seconds"]  # the view's cost per second of a run
    rows["live_view"] = {
        "plain_cpu_s": round(gzip["cpu_s"], 2),
        "live_cpu_s": round(gzip["live"]["cpu_s"], 2),
        "extra_cpu_s": round(extra, 2),
        "share_of_cold": _r(per_second * cold["seconds"] / cold["cpu_s"]),
        "met": _met(per_second * cold["seconds"] / cold["cpu_s"], t["live_view_share"]),
    }
    rows["sharded"] = {
        "shards": [
            {
                "runtimes": shard["runtimes"],
                "seconds": round(shard["seconds"], 1),
                "compressed_mb": round(shard["compressed_bytes"] / 1e6, 1),
                "taken_mb": round(shard["taken_bytes"] / 1e6, 1),
            }
            for shard in sharded["shards"]
        ],
        "compressed_mb": round(sharded["compressed_bytes"] / 1e6, 1),
        "distinct_mb": round(sharded["distinct_bytes"] / 1e6, 1),
        "met": sharded["compressed_bytes"] == sharded["distinct_bytes"],
    }
    gr = gzip["seconds"] / base["seconds"] if base else None
    rows["gzip_cold"] = {"seconds": round(gzip["seconds"], 1), "ratio": _r(gr)}
    return rows


def _r(x: float | None) -> float | None:
    """A ratio to 3 places: 0.503 against a 0.5 target must not print as 0.5."""
    return None if x is None else round(x, 3)


def _met(ratio: float | None, target: float) -> bool | None:
    return None if ratio is None else ratio <= target


def table(results: dict) -> str:
    def yes(v):
        return "-" if v is None else ("yes" if v else "NO")

    r = results
    base = r.get("baseline", {}).get("seconds")
    rows = [("measure", "lambdaimages", "reference", "ratio", "target", "met")]
    rows.append(
        (
            "(a) cold, 12 images",
            f"{r['cold']['seconds']} s",
            f"baseline {base} s" if base else "-",
            str(r["cold"]["ratio"]),
            "<= 0.5 x baseline",
            yes(r["cold"]["met"]),
        )
    )
    cx = r["cold_vs_xz"]
    rows.append(
        (
            "(a) cold vs xz alone",
            f"{r['cold']['seconds']} s",
            f"xz -T0 -6 of the distinct layers {cx['xz_T0_alone_s']} s",
            str(cx["ratio"]),
            "<= 1.1 x xz",
            yes(cx["met"]),
        )
    )
    rows.append(("(b) no-op", f"{r['noop']['seconds']} s", "-", "-", "<= 1.5 s", yes(r["noop"]["met"])))
    if s := r.get("standin_noop"):
        rows.append(
            (
                "(b) no-op resolve, stand-in 1 req/s",
                f"{s['seconds']} s, {s['requests']} requests ({s['too_many']} x 429)",
                f"{s['tags']} tags",
                "-",
                f"<= {s['requests_target']} requests, <= {s['limit_s']} s",
                yes(s["met"]),
            )
        )
    c = r["one_change"]
    rows.append(
        (
            "(c) one change",
            f"{c['seconds']} s",
            f"xz -T0 -6 of the layer {c['xz_T0_layer_s']} s",
            "-",
            f"<= 1.5 x + 3 s = {c['limit_s']} s",
            yes(c["met"]),
        )
    )
    rows.append(
        ("(d) peak RSS, doit tree", f"{r['peak_rss']['mb']} MB", "-", "-", "<= 300 MB", yes(r["peak_rss"]["met"]))
    )
    e = r["export"]
    rows.append(
        (
            "(e) export throughput",
            f"{e['mb_s']} MB/s",
            f"xz -T0 -6 alone {e['xz_T0_alone_mb_s']} MB/s",
            str(e["ratio"]),
            ">= 0.9 x xz",
            yes(e["met"]),
        )
    )
    v = r["verify"]
    rows.append(
        (
            "(f) verify, offline",
            f"{v['seconds']} s",
            f"xz -dc of its {v['tarballs_mb']} MB of tarballs {v['xz_dc_s']} s",
            str(v["ratio"]),
            "<= 1.5 x xz -dc",
            yes(v["met"]),
        )
    )
    if vn := r.get("verify_noop"):
        rows.append(("(f) verify, no-op, files hashed", f"{vn['seconds']} s", "-", "-", "<= 3 s", yes(vn["met"])))
    i = r["inventory"]
    rows.append(
        (
            "(g) inventory, from tarballs",
            f"{i['seconds']} s ({i['fixed_s']} s fixed)",
            f"xz -dc of the runtime's tarballs {i['xz_dc_s']} s",
            str(i["ratio"]),
            "<= 1.2 x xz -dc",
            yes(i["met"]),
        )
    )
    rows.append(
        (
            "(g) inventory above its fixed cost",
            f"{round(i['seconds'] - i['fixed_s'], 2)} s",
            f"xz -dc {i['xz_dc_s']} s",
            str(i["ratio_above_fixed"]),
            "(reported)",
            "-",
        )
    )
    rows.append(
        (
            "(g) scanner in a cold run, Go reader on",
            f"{i['scan_cpu_s']} CPU s ({i['scan_cpu_no_content_readers_s']} without it)",
            f"the cold run's {i['cold_cpu_s']} CPU s",
            str(i["share"]),
            "<= 0.05",
            yes(i["share_met"]),
        )
    )
    if h := r.get("fresh_machine"):
        rows.append(
            (
                "(h) fresh machine, branches published",
                f"{h['seconds']} s ({h['compressed']} compressed, {h['from_branches']} from branches)",
                f"xz -T0 -6 of the layer {h['xz_T0_layer_s']} s, git lfs fetch of the rest {h['lfs_fetch_s']} s",
                "-",
                f"<= 1.5 x + fetch + 10 s = {h['limit_s']} s",
                yes(h["met"]),
            )
        )
    if sh := r.get("sharded"):
        times = ", ".join(f"shard {n} {shard['seconds']} s" for n, shard in enumerate(sh["shards"], 1))
        rows.append(
            (
                "(i) two shards, one registry cache",
                f"compressed {sh['compressed_mb']} MB in all ({times})",
                f"distinct layers {sh['distinct_mb']} MB",
                "-",
                "= the distinct bytes once",
                yes(sh["met"]),
            )
        )
    j = r["check_base"]
    rows.append(
        (
            f"(j) check_base, {j['images']} images",
            f"{j['seconds']} s (exit {j['status']})",
            "-",
            "-",
            "<= 2 s",
            yes(j["met"]),
        )
    )
    lv = r["live_view"]
    rows.append(
        (
            "live view, CPU",
            f"+{lv['extra_cpu_s']} CPU s",
            f"plain run {lv['plain_cpu_s']} CPU s",
            str(lv["share_of_cold"]),
            "<= 0.02 of a cold run",
            yes(lv["met"]),
        )
    )
    g = r["gzip_cold"]
    rows.append(
        (
            "cold, compression: gzip",
            f"{g['seconds']} s",
            f"baseline {base} s" if base else "-",
            str(g["ratio"]),
            "(reported)",
            "-",
        )
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if base:
        p = r["baseline"]["phases"]
        lines.append("baseline phases: " + ", ".join(f"{k} {v} s" for k, v in p.items()))
    lines.append("byte-identical: " + ", ".join(f"{k} {v}" for k, v in r["identical"].items()))
    m = r["machine"]
    lines.append(
        f"machine: {m['cpus']} cores, {m['memory_gb']} GB, {m['xz']}, engine {m['engine']}, "
        f"load average {m['loadavg_at_start']} at start, {m['loadavg_at_end']} at end"
    )
    if m.get("loadavg_1min_after"):
        lines.append(
            "1-min load average after each phase: " + ", ".join(f"{k} {v}" for k, v in m["loadavg_1min_after"].items())
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    parser.add_argument("--skip-baseline", action="store_true", help="measure lambdaimages only (no ratios)")
    parser.add_argument("--dir", type=Path, default=BENCH, help="cache/ and out/ go here (default bench/)")
    parser.add_argument("--scale", type=float, default=1.0, help="layer sizes x SCALE (a quick trial run; default 1)")
    args = parser.parse_args(argv)
    results = run(args.dir.resolve(), args.skip_baseline, args.scale)
    out = args.dir / "out"
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = table(results)
    (out / "results.txt").write_text(text + "\n")
    print("\n" + text)
    say(f"results in {out / 'results.json'} and {out / 'results.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
