"""Whether the engine runs containers of an architecture that is not its own (binfmt_misc and qemu-user-static).

Asked once per process and architecture, by running a program of that architecture that only exits 0: a
static ELF of 132 bytes, loaded as a one-layer image. This works for any engine, local or remote.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import tarfile
import tempfile
from pathlib import Path

from lambdaimages import engine, platforms
from lambdaimages.digest import Digest
from lambdaimages.errors import EngineError
from lambdaimages.image.archive import docker_archive

# ELF machine number and the code of `exit(0)` for each architecture.
_EXIT_0 = {
    "arm64": (0xB7, struct.pack("<III", 0xD2800000, 0xD2800BA8, 0xD4000001)),  # mov x0,#0; mov x8,#93; svc #0
    "x86_64": (0x3E, bytes.fromhex("31ffb83c0000000f05")),  # xor edi,edi; mov eax,60; syscall
}
BASE = 0x400000
TIMEOUT = 60.0


def exit_program(arch: str) -> bytes:
    """A static Linux ELF executable for `arch` whose only instructions are `exit(0)`."""
    machine, code = _EXIT_0[arch]
    entry = BASE + 64 + 56
    size = 64 + 56 + len(code)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, entry, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, BASE, BASE, size, size, 0x1000)
    return header + program + code


@functools.cache
def cannot_run(arch: str) -> str | None:
    """None when the engine runs `arch` containers (natively or emulated), else why not, in a few words."""
    if arch == engine.native_arch():
        return None
    tag = f"lambdaimages-probe:{arch}"
    with tempfile.TemporaryDirectory(prefix="lambdaimages-probe-") as folder:
        layer = Path(folder) / "layer.tar"
        layer.write_bytes(_layer(exit_program(arch)))
        config = _config(arch, layer.read_bytes())
        try:
            engine.load(docker_archive(config, "config.json", [layer], [tag]), arch=arch, where="probe")
            code = engine.run_to_exit(tag, TIMEOUT, network_mode="none")
        except EngineError as exc:
            return f"the engine cannot run {arch} programs ({exc}); on x86_64 install qemu-user-static"
        finally:
            try:
                engine.remove_image(tag)
            except EngineError:
                pass
    if code != 0:
        return f"the engine cannot run {arch} programs (exit code {code}); on x86_64 install qemu-user-static"
    return None


def _layer(program: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("probe")
        info.size, info.mode = len(program), 0o755
        tar.addfile(info, io.BytesIO(program))
    return buffer.getvalue()


def _config(arch: str, layer: bytes) -> bytes:
    diff_id = Digest.of(layer)
    config = {
        "architecture": platforms.get(arch).oci,
        "os": "linux",
        "config": {"Entrypoint": ["/probe"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    return json.dumps(config, sort_keys=True).encode()
