"""Sample inputs for the inventory tests, made once per session by the real tools, with what those tools say.

rpm packages come from `rpmbuild`, are installed into a root with `rpm --root`, which writes a sqlite database;
a Berkeley DB `Packages` is made from its header blobs with `db5.3_load -t hash` (both byte orders) and must be
listed by rpm's own `bdb_ro` backend. Python packages come from `pip install --target`, npm packages from
`npm install`, gemspecs from this machine's Ruby, a jar from `zip`.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import random
import shutil
import sqlite3
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lambdaimages.inventory.facts import LayerFacts
from lambdaimages.inventory.tarscan import LayerScanner

QUERY = "%{NAME}\t%{EPOCH}\t%{VERSION}\t%{RELEASE}\t%{ARCH}\t%{LICENSE}\t%{SOURCERPM}\n"
PACKAGES = 32
BIG = "sample-big"  # the package whose file list puts its header on a chain of overflow pages
NPM_PACKAGES = ("is-odd@3.0.1", "is-number@7.0.0", "debug@4.3.4", "@types/ms@0.7.34")
PIP_PACKAGES = ("six==1.17.0", "packaging")


@functools.cache
def workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="inventory-samples-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def run(*args: str | Path, **kwargs) -> str:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def query(*args: str | Path) -> list[tuple[str, ...]]:
    """rpm's own answer: one (name, epoch, version, release, arch, license, sourcerpm) per package, sorted."""
    return sorted(tuple(line.split("\t")) for line in run("rpm", *args, "-qa", "--queryformat", QUERY).splitlines())


@dataclass(frozen=True)
class RpmSample:
    root: Path  # an installed tree: var/lib/rpm/rpmdb.sqlite, the packages' files, lib64 -> usr/lib64
    sqlite: Path
    expected: list[tuple[str, ...]]  # rpm -qa of the sqlite database
    owned: set[str]  # every path the packages list, no leading slash
    bdb: dict[str, Path]  # byte order -> folder holding a Packages file
    bdb_expected: dict[str, list[tuple[str, ...]]]  # rpm -qa through bdb_ro
    blobs: list[bytes]


def _spec() -> str:
    rnd = random.Random(12)
    lines = [
        "%global debug_package %{nil}",
        "%global __os_install_post %{nil}",
        "Name: sample-base\nVersion: 1.0\nRelease: 1.amzn2\nSummary: base\nLicense: MIT\n%description\nbase",
    ]
    install = ["%install", "mkdir -p %{buildroot}/usr/share %{buildroot}/lib64 %{buildroot}/etc"]
    files = ["%files", "/usr/share/sample-base"]
    install.append("mkdir -p %{buildroot}/usr/share/sample-base && echo base > %{buildroot}/usr/share/sample-base/a")
    licenses = ["MIT", "GPLv2+", "ASL 2.0", "BSD and MIT", "GPL-2.0-or-later", "Apache-2.0 OR MIT"]
    for n in range(PACKAGES - 2):
        name = f"sample-{n:02d}"
        epoch = f"Epoch: {n % 4}\n" if n % 3 == 0 else ""
        arch = "BuildArch: noarch\n" if n % 2 else ""
        version = f"{rnd.randint(0, 9)}.{rnd.randint(0, 30)}.{rnd.randint(0, 99)}"
        lines.append(
            f"%package -n {name}\nSummary: {name}\nVersion: {version}\nRelease: {n + 1}.amzn2023.0.{n % 3}\n"
            f"{epoch}{arch}License: {licenses[n % len(licenses)]}\n%description -n {name}\n{name}"
        )
        install.append(f"mkdir -p %{{buildroot}}/usr/share/{name} && echo {n} > %{{buildroot}}/usr/share/{name}/data")
        files += [f"%files -n {name}", f"%dir /usr/share/{name}", f"/usr/share/{name}/data"]
    lines.append(f"%package -n {BIG}\nSummary: long file list\nVersion: 2.0\nLicense: MIT\n%description -n {BIG}\nbig")
    install.append(f"mkdir -p %{{buildroot}}/usr/share/{BIG}")
    install.append(f"for i in $(seq 1500); do : > %{{buildroot}}/usr/share/{BIG}/file-with-a-long-name-$i.txt; done")
    install.append("echo lib > %{buildroot}/lib64/libsample.so.1 && echo conf > %{buildroot}/etc/sample.conf")
    files += [f"%files -n {BIG}", f"/usr/share/{BIG}", "/lib64/libsample.so.1", "%config /etc/sample.conf"]
    return "\n".join([*lines, *install, *files]) + "\n"


@functools.cache
def rpm_sample() -> RpmSample:
    base = workdir() / "rpm"
    (base / "SPECS").mkdir(parents=True)
    spec = base / "SPECS" / "sample.spec"
    spec.write_text(_spec())
    run("rpmbuild", "-bb", "--quiet", "--define", f"_topdir {base}", spec)
    rpms = sorted(base.glob("RPMS/*/*.rpm"))
    root = base / "root"
    (root / "usr/lib64").mkdir(parents=True)
    (root / "lib64").symlink_to("usr/lib64")
    rpm_root = ("--root", root, "--dbpath", "/var/lib/rpm")
    run("rpm", *rpm_root, "--initdb")
    run("rpm", *rpm_root, "--nodeps", "--noscripts", "-i", *rpms)
    for leftover in (root / "var/lib/rpm").glob("rpmdb.sqlite-*"):
        leftover.unlink()  # an empty WAL and the shared-memory index, which images do not ship
    (root / "var/lib/rpm/.rpm.lock").unlink(missing_ok=True)
    sqlite = root / "var/lib/rpm/rpmdb.sqlite"
    expected = query(*rpm_root)
    owned = {line.lstrip("/") for line in run("rpm", *rpm_root, "-qa", "--qf", "[%{FILENAMES}\n]").splitlines()}
    with sqlite3.connect(f"file:{sqlite}?mode=ro", uri=True) as connection:
        rows = [(hnum, bytes(blob)) for hnum, blob in connection.execute("SELECT hnum, blob FROM Packages")]
    bdb, bdb_expected = {}, {}
    for order, pagesize in (("1234", 4096), ("4321", 8192)):
        folder = base / f"bdb-{order}"
        folder.mkdir()
        make_bdb(folder / "Packages", rows, order, pagesize)
        bdb[order] = folder
        bdb_expected[order] = query("--dbpath", folder, "--define", "_db_backend bdb_ro")
    assert len(expected) == PACKAGES and all(found == expected for found in bdb_expected.values())
    return RpmSample(root, sqlite, expected, owned, bdb, bdb_expected, [blob for _, blob in rows])


def make_bdb(path: Path, rows: list[tuple[int, bytes]], order: str = "1234", pagesize: int = 4096) -> None:
    """A Berkeley DB hash file of rpm header blobs, as rpm < 4.16 keeps them: 4-byte hnum keys, by db5.3_load."""
    dump = ["VERSION=3", "format=bytevalue", "type=hash", "HEADER=END"]
    for hnum, blob in rows:
        dump += [" " + struct.pack("<I" if order == "1234" else ">I", hnum).hex(), " " + blob.hex()]
    dump.append("DATA=END\n")
    config = ("-c", f"db_lorder={order}", "-c", f"db_pagesize={pagesize}")
    run("db5.3_load", *config, "-t", "hash", "-f", "/dev/stdin", path, input="\n".join(dump))


@functools.cache
def pip_tree() -> Path:
    """`pip install --target` of a few wheels, and one egg-info made by setuptools."""
    target = workdir() / "pip"
    run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target, *PIP_PACKAGES)
    project = workdir() / "eggy"
    project.mkdir()
    setup = "from setuptools import setup\nsetup(name='eggy', version='0.3', license='MIT')\n"
    (project / "setup.py").write_text(setup)
    run(sys.executable, "setup.py", "-q", "egg_info", "--egg-base", target, cwd=project)
    return target


@functools.cache
def npm_tree() -> tuple[Path, dict]:
    """`npm install` of a few tiny packages from the registry, and `npm ls --json --all` of the result."""
    target = workdir() / "npm"
    target.mkdir()
    run("npm", "install", "--prefix", target, "--no-audit", "--no-fund", "--loglevel=error", *NPM_PACKAGES)
    return target, json.loads(run("npm", "ls", "--prefix", target, "--json", "--all"))


def npm_ls_packages(tree: dict) -> set[tuple[str, str]]:
    """(name, version) of every package `npm ls --json --all` lists."""
    found = set()
    for name, node in tree.get("dependencies", {}).items():
        found.add((name, node["version"]))
        found |= npm_ls_packages(node)
    return found


def gem_specifications() -> Path:
    """The default gems' specifications of this machine's Ruby (written by RubyGems)."""
    found = run("ruby", "-e", "print Gem.default_specifications_dir")
    return Path(found)


def make_jar(path: Path, properties: dict[str, str], padding: int = 0) -> None:
    """A jar (by `zip`) holding META-INF/maven/<group>/<artifact>/pom.properties, and `padding` random bytes."""
    content = workdir() / f"jar-{path.stem}"
    pom = content / "META-INF/maven" / properties["groupId"] / properties["artifactId"] / "pom.properties"
    pom.parent.mkdir(parents=True)
    pom.write_text("#Generated by Maven\n" + "".join(f"{k}={v}\n" for k, v in properties.items()))
    (content / "META-INF/MANIFEST.MF").write_text("Manifest-Version: 1.0\n")
    if padding:
        (content / "blob.bin").write_bytes(random.Random(3).randbytes(padding))
    run("zip", "-q", "-r", "-0", path.resolve(), "META-INF", *(["blob.bin"] if padding else []), cwd=content)


def tar_of(files: dict[str, bytes | Path | tuple[str, str]], tar_format: int = tarfile.PAX_FORMAT) -> bytes:
    """A layer tar: path -> content bytes, a file or folder on disk (added recursively), or ("symlink", target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tar_format) as archive:
        for name, content in files.items():
            if isinstance(content, Path):
                archive.add(content, arcname=name)
            elif isinstance(content, tuple):
                info = tarfile.TarInfo(name)
                info.type = tarfile.SYMTYPE if content[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = content[1]
                archive.addfile(info)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    return out.getvalue()


def feed(data: bytes, name: str = "", seed: int = 0) -> LayerFacts:
    """Push a tar through a LayerScanner in chunks of random sizes (1 byte to 1 MiB), as a download would."""
    rnd = random.Random(seed)
    scanner = LayerScanner(name)
    pos = 0
    while pos < len(data):
        size = rnd.choice((1, 3, 100, 511, 512, 513, 4096, 65536, 1 << 20))
        scanner.feed(data[pos : pos + size])
        pos += size
    return scanner.close()


OS_RELEASE = b'NAME="Amazon Linux"\nVERSION="2023"\nID="amzn"\nVERSION_ID="2023"\nPRETTY_NAME="Amazon Linux 2023"\n'
PATCHLEVEL = b'#define PY_VERSION "3.12.7"\n'


@functools.cache
def image_layers() -> tuple[list[bytes], dict]:
    """Three layer tars of an Amazon Linux 2023-like image, and what the tools say of it.

    The base has the rpm tree, Python and npm packages, version files and files outside rpm; the next layer
    replaces the rpm database (sample-05 removed), deletes a dist-info, hides node_modules; the top adds a
    Berkeley DB database beside the sqlite one.
    """
    sample = rpm_sample()
    removed = workdir() / "root-without-sample-05"
    if not removed.exists():
        shutil.copytree(sample.root, removed, symlinks=True)
        run("rpm", "--root", removed, "--dbpath", "/var/lib/rpm", "-e", "--justdb", "--nodeps", "sample-05")
        for leftover in (removed / "var/lib/rpm").glob("rpmdb.sqlite-*"):
            leftover.unlink()
    npm, _ = npm_tree()
    base = {
        ".": sample.root,
        "usr/lib/os-release": OS_RELEASE,
        "etc/os-release": ("symlink", "../usr/lib/os-release"),
        "var/runtime/bootstrap": b"#!/bin/sh\n" * 10,
        "var/lang/include/python3.12/patchlevel.h": PATCHLEVEL,
        "var/lang/bin/python3.12": b"\x7fELF" * 500,
        "usr/lib64/libextra.so": b"not from rpm",  # beside libsample.so.1, which rpm installed through lib64
        "var/runtime": pip_tree(),
        "var/runtime/node_modules": npm / "node_modules",
    }
    upper = {
        "var/lib/rpm/rpmdb.sqlite": removed / "var/lib/rpm/rpmdb.sqlite",
        "var/runtime/.wh.six-1.17.0.dist-info": b"",
        "var/runtime/boto3-1.35.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: boto3\nVersion: 1.35.0\n\n",
        "var/runtime/node_modules/.wh..wh..opq": b"",
        "var/runtime/node_modules/debug/package.json": b'{"name": "debug", "version": "4.4.0"}',
    }
    top = {"var/lib/rpm/Packages": sample.bdb["1234"] / "Packages"}
    truth = {"rpm": query("--root", removed, "--dbpath", "/var/lib/rpm"), "root": removed}
    return [tar_of(base), tar_of(upper), tar_of(top)], truth


GO_BUILDS = {  # binary name -> (GOARCH, extra go build flags)
    "hello-amd64": ("amd64", []),
    "hello-arm64": ("arm64", ["-trimpath", "-ldflags=-s -w -buildid="]),
    "hello-386": ("386", []),
    "hello-pie": ("amd64", ["-buildmode=pie"]),
}


@functools.cache
def go_binaries() -> dict[str, Path]:
    """Go binaries built offline by Debian's golang-go: a main module using two local modules through `replace`
    (one required at a version, one at a pseudo-version), for amd64, arm64 (stripped, no build id), 386 and PIE."""
    root = workdir() / "go"
    for name, version in (("greet", "v1.2.3"), ("util", "v0.0.0-20240101000000-abcdefabcdef")):
        module = root / name
        module.mkdir(parents=True, exist_ok=True)
        (module / "go.mod").write_text(f"module example.com/{name}\n\ngo 1.19\n")
        (module / f"{name}.go").write_text(f'package {name}\n\nfunc Word() string {{ return "{name} {version}" }}\n')
    main = root / "hello"
    main.mkdir(exist_ok=True)
    (main / "go.mod").write_text(
        "module example.com/hello\n\ngo 1.19\n\n"
        "require (\n\texample.com/greet v1.2.3\n\texample.com/util v0.0.0-20240101000000-abcdefabcdef\n)\n\n"
        "replace example.com/greet => ../greet\n\nreplace example.com/util => ../util\n"
    )
    (main / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/greet"\n\t"example.com/util"\n)\n\n'
        "func main() { fmt.Println(greet.Word(), util.Word()) }\n"
    )
    environment = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "GOPATH": str(root / "gopath"),
        "GOCACHE": str(root / "cache"),
        "GOFLAGS": "-mod=mod",
        "GOPROXY": "off",
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOOS": "linux",
    }
    built = {}
    for name, (arch, flags) in GO_BUILDS.items():
        out = root / "bin" / name
        if not out.exists():
            run("go", "build", "-o", out, *flags, ".", cwd=main, env={**environment, "GOARCH": arch})
        built[name] = out
    return built


def go_version_m(binary: Path) -> tuple[str, list[tuple[str, ...]]]:
    """What `go version -m` prints of a binary: the Go version, and each build info line split at tabs."""
    first, *lines = run("go", "version", "-m", binary, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"}).splitlines()
    return first.rpartition(": ")[2], [tuple(line.strip("\t").split("\t")) for line in lines]
