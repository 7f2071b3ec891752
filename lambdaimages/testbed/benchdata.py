"""The benchmark's upstream: a realistic, seeded set of Lambda-like images, generated once and cached.

6 runtimes x 2 architectures. Per architecture, one ~150 MB base layer is shared by 4 runtimes and
another by 2; each runtime adds one 20-80 MB layer; every image ends with small layers (a ~1.5 MB
emulator binary shared by all runtimes of an architecture, an entrypoint and a config layer).
Layer content is a realistic mix, all drawn from seeded generators (same seed, same bytes):

- text: source files and configs from a Zipf-weighted vocabulary, many of them small;
- ELF binaries: an ELF header, skewed-byte "code" with repeated stretches, string tables;
- already-compressed files (jars, .gz, images): incompressible bytes;
- data files with long runs (locale archives, sparse tables).

Blobs are gzip level 6 with mtime 0, as registries serve them. Nothing here is timed.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lambdaimages import platforms
from lambdaimages.digest import Digest, Verifier
from lambdaimages.mediatypes import OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from lambdaimages.testbed.samples import LAMBDA_ENV

GENERATOR = "lambdaimages-bench-2"  # change it when the content changes: the cache is then rebuilt
MB = 1_000_000
MTIME = 1704067200
ARCHES = platforms.NAMES
LAYER_TYPE = OCI_LAYER_GZIP
CONFIG_TYPE = OCI_CONFIG
TAG = "latest"
VERSION_LABEL = "com.amazonaws.lambda.platform.version"  # "<runtime>-<version>" on every image of the set


@dataclass(frozen=True)
class Mix:
    """Shares of a layer's bytes by kind of file (they sum to 1)."""

    text: float
    elf: float
    packed: float
    data: float


@dataclass(frozen=True)
class RuntimeSpec:
    name: str  # the catalog name, also `<name>:local` in the engine
    repository: str
    base: str  # key of BASES
    size: int  # bytes of its runtime layer
    mix: Mix


BASE_SIZE = 150 * MB
BASES = {"al2023": Mix(0.35, 0.45, 0.10, 0.10), "al2": Mix(0.35, 0.47, 0.08, 0.10)}
RUNTIMES = (
    RuntimeSpec("bench-python", "bench/python", "al2023", 50 * MB, Mix(0.50, 0.25, 0.15, 0.10)),
    RuntimeSpec("bench-nodejs", "bench/nodejs", "al2023", 40 * MB, Mix(0.35, 0.55, 0.05, 0.05)),
    RuntimeSpec("bench-java", "bench/java", "al2023", 80 * MB, Mix(0.10, 0.30, 0.55, 0.05)),
    RuntimeSpec("bench-dotnet", "bench/dotnet", "al2023", 65 * MB, Mix(0.10, 0.65, 0.20, 0.05)),
    RuntimeSpec("bench-ruby", "bench/ruby", "al2", 30 * MB, Mix(0.55, 0.30, 0.10, 0.05)),
    RuntimeSpec("bench-provided", "bench/provided", "al2", 20 * MB, Mix(0.20, 0.60, 0.15, 0.05)),
)
CHANGED = "bench-python"  # its x86_64 runtime layer is what the "one change" step replaces
RIE_SIZE = 1_500_000


@dataclass(frozen=True)
class LayerSpec:
    """One layer to generate: `key` seeds it, `size` is the target tar size in bytes."""

    key: str
    size: int
    mix: Mix
    root: str  # where its files go, e.g. "usr" or "var/lang"


def layer_specs(runtime: RuntimeSpec, arch: str, version: int = 1, scale: float = 1.0) -> list[LayerSpec]:
    """The layers of one image, bottom first. `version` 2 changes the runtime layer only."""
    suffix = "" if version == 1 else f"/v{version}"
    return [
        LayerSpec(f"base/{runtime.base}/{arch}", int(BASE_SIZE * scale), BASES[runtime.base], "usr"),
        LayerSpec(f"runtime/{runtime.name}/{arch}{suffix}", int(runtime.size * scale), runtime.mix, "var/lang"),
        LayerSpec(f"rie/{arch}", int(RIE_SIZE * scale), Mix(0, 1, 0, 0), "usr/local/bin"),
        LayerSpec(f"entrypoint/{runtime.name}/{arch}", 0, Mix(1, 0, 0, 0), ""),
        LayerSpec(f"config/{runtime.name}/{arch}", 0, Mix(1, 0, 0, 0), "var/runtime"),
    ]


# -- content ----------------------------------------------------------------------------------------


def _zipf_cum(n: int, s: float = 1.1) -> list[float]:
    total, cum = 0.0, []
    for rank in range(1, n + 1):
        total += 1 / rank**s
        cum.append(total)
    return cum


class _Content:
    """The seeded generators of one layer."""

    def __init__(self, key: str) -> None:
        self.rng = random.Random(f"{GENERATOR}/{key}")
        letters = "etaoinshrdlucmfwypvbgkjqxz_"
        self.words = ["".join(self.rng.choices(letters, k=self.rng.randint(2, 10))) for _ in range(6000)] + [
            "\n",
            "\n    ",
            "\n        ",
            "(",
            "):",
            " = ",
            ", ",
            ".",
            "self",
            "return",
            "def",
            "import",
            "{",
            "}",
        ] * 40
        self.rng.shuffle(self.words)
        self.word_cum = _zipf_cum(len(self.words))
        # Machine code is skewed towards few byte values (opcodes, small immediates, zero bytes).
        skew = [self.rng.randrange(256) for _ in range(48)]
        table = bytes(skew[min(47, int(self.rng.expovariate(0.12)))] for _ in range(256))
        self.code_table = table

    def text(self, size: int) -> bytes:
        words = self.rng.choices(self.words, cum_weights=self.word_cum, k=max(1, size // 5))
        return " ".join(words).encode()[:size]

    def elf(self, size: int) -> bytes:
        header = b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00\x3e\x00\x01\x00\x00\x00" + bytes(40)
        parts = [header]
        made = len(header)
        code_end = made + int(size * 0.75)
        recent: list[bytes] = []
        while made < code_end:
            if recent and self.rng.random() < 0.4:
                chunk = recent[self.rng.randrange(len(recent))]  # a repeated stretch (inlined code, PLT)
            else:
                chunk = self.rng.randbytes(256).translate(self.code_table)
                recent.append(chunk)
                if len(recent) > 4096:
                    recent.pop(0)
            parts.append(chunk)
            made += len(chunk)
        parts.append(self.text(max(0, size - made - 4096)).replace(b" ", b"\0"))  # string tables
        parts.append(bytes(4096))  # section alignment
        return b"".join(parts)[:size]

    def packed(self, size: int) -> bytes:
        return self.rng.randbytes(size)

    def data(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size:
            out += bytes([self.rng.randrange(4)]) * self.rng.randint(64, 4096)
            out += self.rng.randbytes(self.rng.randint(16, 256))
        return bytes(out[:size])


def _files(spec: LayerSpec) -> Iterator[tuple[str, int, bytes]]:
    """(path, mode, content) of a layer's files; paths are unique."""
    content = _Content(spec.key)
    rng = content.rng
    if spec.key.startswith("entrypoint/"):
        name = spec.key.split("/")[1]
        yield "lambda-entrypoint.sh", 0o755, f'#!/bin/sh\n# {name}\nexec /var/runtime/bootstrap "$@"\n'.encode()
        yield "var/runtime/bootstrap", 0o755, content.text(6000)
        # The config's WorkingDir exists in the layers, as in Lambda's images (else a Dockerfile build's WORKDIR
        # would add it, and the build's tree would not be upstream's).
        yield "var/task/.keep", 0o644, b""
        return
    if spec.key.startswith("config/"):
        for i in range(8):
            yield f"{spec.root}/conf.d/{i:02d}.conf", 0o644, content.text(rng.randint(200, 2000))
        return
    kinds = (
        ("text", spec.mix.text, (200, 24_000), 0o644, ".py"),
        ("elf", spec.mix.elf, (40_000, 4_000_000), 0o755, ".so"),
        ("packed", spec.mix.packed, (20_000, 3_000_000), 0o644, ".jar"),
        ("data", spec.mix.data, (100_000, 2_000_000), 0o644, ".dat"),
    )
    for kind, share, (low, high), mode, ext in kinds:
        budget = int(spec.size * share)
        n = 0
        while budget > 0:
            size = min(budget, int(low * (high / low) ** rng.random()))  # log-uniform: many small files
            folder = f"{spec.root}/{kind}/d{n % 37:02d}/s{n % 11}"
            yield f"{folder}/{kind}{n:05d}{ext}", mode, getattr(content, kind)(size)
            budget -= size + 512  # the tar header
            n += 1


def write_layer_tar(spec: LayerSpec, dest: io.RawIOBase | io.BufferedIOBase) -> None:
    """The layer as a tar (PAX, sorted paths, fixed mtime, root-owned, parent directories first)."""
    files = sorted(_files(spec))
    dirs = sorted({"/".join(path.split("/")[:i]) for path, _, _ in files for i in range(1, path.count("/") + 1)})
    entries = [(d, None, None) for d in dirs] + files
    entries.sort(key=lambda e: e[0])
    with tarfile.open(fileobj=dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, mode, data in entries:
            info = tarfile.TarInfo(path)
            info.mtime = MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = mode, len(data)
                tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class BuiltLayer:
    key: str
    diff_id: str
    digest: str
    size: int  # gzip blob bytes
    uncompressed: int
    blob: str  # path of the gzip blob file


def build_layer(spec: LayerSpec, folder: Path) -> BuiltLayer:
    """Write `<folder>/<digest hex>.gz`; hashes of the tar and of the blob, streamed."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{hashlib.sha256(spec.key.encode()).hexdigest()[:16]}.gz"
    sink = _GzipSink(tmp)
    write_layer_tar(spec, sink)
    sink.finish()
    final = folder / f"{Digest(sink.digest).hex}.gz"
    tmp.replace(final)
    return BuiltLayer(spec.key, sink.diff_id, sink.digest, sink.size, sink.uncompressed, str(final))


class _GzipSink(io.RawIOBase):
    """A write-only file: hashes what is written (diff_id), gzips it to `path`, hashes the blob."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "wb")
        self.tar_hash, self.blob_hash = Verifier(), Verifier()
        self.gz = zlib.compressobj(6, zlib.DEFLATED, 31)

    def writable(self) -> bool:
        return True

    @property
    def uncompressed(self) -> int:
        return self.tar_hash.received

    @property
    def size(self) -> int:
        return self.blob_hash.received

    def tell(self) -> int:
        return self.uncompressed

    def write(self, data) -> int:
        data = bytes(data)
        self.tar_hash.update(data)
        self._out(self.gz.compress(data))
        return len(data)

    def _out(self, data: bytes) -> None:
        self.file.write(self.blob_hash.update(data))

    def finish(self) -> None:
        self._out(self.gz.flush())
        self.file.close()
        self.diff_id = self.tar_hash.finish()
        self.digest = self.blob_hash.finish()


# -- images ------------------------------------------------------------------------------------------


def image_config(runtime: RuntimeSpec, arch: str, diff_ids: list[str], version: int) -> bytes:
    config = {
        "architecture": platforms.get(arch).oci,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": list(LAMBDA_ENV),
            "Entrypoint": ["/lambda-entrypoint.sh"],
            "Cmd": ["function.handler"],
            "WorkingDir": "/var/task",
            "Labels": {VERSION_LABEL: f"{runtime.name}-{version}"},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def image_manifest(config: bytes, layers: list[BuiltLayer]) -> bytes:
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": CONFIG_TYPE, "digest": Digest.of(config), "size": len(config)},
        "layers": [{"mediaType": LAYER_TYPE, "digest": lay.digest, "size": lay.size} for lay in layers],
    }
    return json.dumps(body, indent=2).encode()


def image_index(manifests: dict[str, bytes]) -> bytes:
    entries = [
        {
            "mediaType": OCI_MANIFEST,
            "digest": Digest.of(body),
            "size": len(body),
            "platform": {"architecture": platforms.get(arch).oci, "os": "linux"},
        }
        for arch, body in manifests.items()
    ]
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, indent=2).encode()


def all_layer_specs(scale: float = 1.0) -> dict[str, LayerSpec]:
    """Every distinct layer of the set (shared layers once), by key."""
    specs: dict[str, LayerSpec] = {}
    for runtime in RUNTIMES:
        for arch in ARCHES:
            for spec in layer_specs(runtime, arch, 1, scale):
                specs.setdefault(spec.key, spec)
    changed = next(r for r in RUNTIMES if r.name == CHANGED)
    for spec in layer_specs(changed, "x86_64", 2, scale):
        specs.setdefault(spec.key, spec)
    return specs
