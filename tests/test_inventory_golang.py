"""Go binaries' build info read from layer streams, against `go version -m` of binaries Debian's Go built here."""

import struct
from pathlib import Path

import pytest
from inventory_samples import GO_BUILDS, feed, go_binaries, go_version_m, tar_of

from lambdaimages.inventory import golang, images, merge
from lambdaimages.inventory.facts import LayerFacts
from lambdaimages.inventory.sbom import ImageInfo, package_url, to_cyclonedx


def _lines(info: golang.BuildInfo) -> list[tuple[str, ...]]:
    """The build info as `go version -m` lists it, each line split at tabs, empty columns at the end dropped."""
    lines = [("path", info.path)] if info.path else []
    for word, module in (("mod", info.main), *(("dep", dep) for dep in info.deps)):
        if module is None:
            continue
        lines.append((word, module.path, module.version, module.sum))
        if module.replace:
            lines.append(("=>", module.replace.path, module.replace.version, module.replace.sum))
    lines += [("build", f"{key}={value}") for key, value in info.settings]
    return [_trim(line) for line in lines]


def _trim(line: tuple[str, ...]) -> tuple[str, ...]:
    while line and not line[-1]:
        line = line[:-1]
    return line


def _expected(binary: Path) -> tuple[str, list[tuple[str, ...]]]:
    version, lines = go_version_m(binary)
    return version, [_trim(line) for line in lines if _trim(line)]


def _stream(binary: Path, chunk: int) -> golang.BuildInfo | None:
    data = binary.read_bytes()
    reader = golang.BuildInfoReader(len(data))
    for pos in range(0, len(data), chunk):
        if not reader.feed(data[pos : pos + chunk]):
            break
    return reader.info()


@pytest.mark.parametrize("name", sorted(GO_BUILDS))
def test_build_info_equals_go_version_m(name):
    binary = go_binaries()[name]
    version, lines = _expected(binary)
    for chunk in (7, 4099, 1 << 20):
        info = _stream(binary, chunk)
        assert info is not None and info.go_version == version
        assert _lines(info) == lines
    assert ("dep", "example.com/greet", "v1.2.3") in lines and ("=>", "../greet", "(devel)") in lines


def test_go_binaries_of_this_machine_equal_go_version_m():
    # Binaries built elsewhere by other Go versions (Debian's docker, containerd; maybe newer tools).
    checked = 0
    for binary in sorted(Path("/usr/bin").iterdir()):
        if not binary.is_file() or binary.open("rb").read(4) != golang.ELF_MAGIC:
            continue
        info = _stream(binary, 1 << 20)
        if info is None:
            assert "not a Go" in run_go_version(binary) or not run_go_version(binary).strip()
            continue
        version, lines = _expected(binary)
        assert info.go_version == version and _lines(info) == lines, binary
        checked += 1
    assert checked >= 3  # docker, containerd, docker-registry at least


def run_go_version(binary: Path) -> str:
    import subprocess

    done = subprocess.run(["go", "version", binary], capture_output=True, text=True)
    return done.stdout + done.stderr


def test_layer_stream_gives_components_with_binary_path():
    binaries = go_binaries()
    facts = feed(
        tar_of({"usr/local/bin/aws-lambda-rie": binaries["hello-amd64"], "opt/bin/tool": binaries["hello-pie"]})
    )
    found = facts.packages["usr/local/bin/aws-lambda-rie"]
    assert [(p.kind, p.name, p.version) for p in found] == [
        ("golang", "stdlib", "1.19.8"),
        ("golang", "example.com/hello", "(devel)"),
        ("golang", "example.com/greet", "v1.2.3"),
        ("golang", "example.com/util", "v0.0.0-20240101000000-abcdefabcdef"),
    ]
    assert found[2].source == "../greet" and found[0].source == "go1.19.8"
    assert "opt/bin/tool" in facts.packages and facts.notes == {}
    purls = [str(package_url(p)) for p in found]
    assert purls[0] == "pkg:golang/stdlib@1.19.8"
    assert purls[2] == "pkg:golang/example.com/greet@v1.2.3"
    inventory = merge.merge([facts])
    bom = to_cyclonedx(inventory, ImageInfo("r/x:1", "sha256:" + "a" * 64, "sha256:" + "b" * 64, "x86_64"))
    assert '"cpe": "cpe:2.3:a:golang:go:1.19.8:-:*:*:*:*:*:*"' in bom
    assert '"value": "usr/local/bin/aws-lambda-rie"' in bom


def test_non_go_elf_files_and_others_give_nothing():
    ls = Path("/usr/bin/ls").read_bytes()  # a C program: ELF without Go build info
    facts = feed(
        tar_of(
            {
                "bin/ls": ls,
                "lib/libc.so.6": Path("/lib/x86_64-linux-gnu/libc.so.6").read_bytes(),
                "x/elfish": b"\x7fELF" + b"\0" * 200,
                "x/short": b"\x7fELF",
            }
        )
    )
    assert facts.packages == {} and facts.notes == {}


def test_a_damaged_build_info_is_a_note():
    data = bytearray(go_binaries()["hello-amd64"].read_bytes())
    at = data.find(golang.MAGIC)
    data[at + 32 : at + 40] = b"\xff" * 8  # the version's varint length runs past the data
    facts = feed(tar_of({"usr/bin/broken": bytes(data)}))
    assert "usr/bin/broken" not in facts.packages
    assert facts.notes["usr/bin/broken"] == ["Go build info not readable: no Go version in the build info"]


def test_pointer_format_resolves_strings_kept_in_the_stream():
    # Before Go 1.18 the blob points at string headers; here they lie in the same data segment.
    vaddr, offset = 0x500000, 0x1000
    version, modinfo = (
        b"go1.17.13",
        b"\x30" * 16 + b"path\texample.com/old\nmod\texample.com/old\t(devel)\t\n" + b"\xf9" * 16,
    )
    blob = bytearray(golang.MAGIC + bytes([8, 0]))
    blob += struct.pack("<QQ", vaddr + 64, vaddr + 80) + b"\0" * 0
    blob = blob.ljust(64, b"\0")
    blob += struct.pack("<QQ", vaddr + 128, len(version)) + struct.pack("<QQ", vaddr + 256, len(modinfo))
    blob = blob.ljust(128, b"\0") + version
    blob = blob.ljust(256, b"\0") + modinfo
    segment = bytes(blob)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 32, 64)  # phoff
    struct.pack_into("<HH", header, 54, 56, 1)
    phdr = struct.pack(
        "<IIQQQQQQ", golang.PT_LOAD, golang.PF_W | 4, offset, vaddr, vaddr, len(segment), len(segment), 0x1000
    )
    elf = bytes(header + phdr).ljust(offset, b"\0") + segment
    reader = golang.BuildInfoReader(len(elf))
    reader.feed(elf)
    info = reader.info()
    assert info.go_version == "go1.17.13" and info.main == golang.Module("example.com/old", "(devel)")


def test_modinfo_replacement_by_a_module_version_is_that_version():
    text = (
        "path\tx/cmd\nmod\tx\t(devel)\t\ndep\tgolang.org/x/net\tv0.10.0\th1:a=\n=>\tgolang.org/x/net\tv0.17.0\th1:b=\n"
    )
    info = golang.parse_modinfo("go1.21.5 X:boringcrypto", text)
    stdlib, _main, net = golang.packages("bin/x", info)
    assert (stdlib.version, stdlib.source) == ("1.21.5", "go1.21.5 X:boringcrypto")
    assert (net.name, net.version, net.source) == ("golang.org/x/net", "v0.17.0", "golang.org/x/net@v0.17.0")
    with pytest.raises(ValueError):
        golang.parse_modinfo("go1.21.5", "=>\ta\tb\tc\n")


def test_facts_with_go_packages_survive_the_cache(tmp_path):
    facts = feed(tar_of({"usr/local/bin/rie": go_binaries()["hello-arm64"]}))
    facts.save(tmp_path / "f.json")
    assert LayerFacts.load(tmp_path / "f.json").packages == facts.packages
    assert images.FORMAT >= 2  # cached facts of the format before Go binaries are read again
