"""Small, byte-for-byte reproducible Lambda-like images, and pushing them as multi-arch images.

Reproducible means: same inputs, same host busybox and same zlib give the same digests. Every tar
member has a fixed mtime, uid/gid as given (0 by default), no user or group names, and members are
sorted by path (PAX format); gzip runs at level 6 with mtime 0.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path

from lambdaimages import platforms
from lambdaimages.digest import Digest
from lambdaimages.mediatypes import OCI_INDEX, OCI_MANIFEST, config_for, gzip_layer_for, is_index, manifest_for
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import ROOT

BUSYBOX = Path("/usr/bin/busybox")  # Debian busybox-static: one static binary, runs in FROM-scratch images
# The other architecture's busybox-static, unpacked by scripts/setup from Debian's .deb (run under qemu).
FOREIGN_BUSYBOX = ROOT / ".venv" / "share" / "busybox-static"
APPLETS = ("sh", "cat", "echo", "sed", "wget", "mkdir", "rm", "printf", "tr", "head", "grep", "cut")
MTIME = 1704067200  # 2024-01-01T00:00:00Z, for every tar member
CREATED = "2024-01-01T00:00:00Z"
# What the entrypoint prints (then exits 1) when started without a Runtime API: there is no emulator.
NO_API_MESSAGE = "AWS_LAMBDA_RUNTIME_API is not set and this sample image has no emulator"
TRICKY_VALUE = "two  spaces 'single' \"double\" $HOME a=b back\\slash"

_SAFE_WORD = re.compile(r"[A-Za-z0-9._-]+")


# -- layers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One member of a layer tar: `kind` is file, dir, symlink or hardlink (`target` for the links)."""

    path: str
    kind: str = "file"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def file(path: str, data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, "file", data, mode=mode, uid=uid, gid=gid)


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, "dir", mode=mode, uid=uid, gid=gid)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, "symlink", target=target, mode=0o777)


def hardlink(path: str, target: str) -> Entry:
    """A second name for `target`, a file of the same layer whose path sorts before `path`."""
    return Entry(path, "hardlink", target=target)


def whiteout(path: str) -> Entry:
    """Deletes `path` of a lower layer."""
    parent, _, name = _clean(path).rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", b"")


def opaque(path: str) -> Entry:
    """Hides everything lower layers have in the directory `path`."""
    return file(f"{_clean(path)}/.wh..wh..opq", b"")


@dataclass(frozen=True)
class Layer:
    """An image layer: the uncompressed tar, and its gzip blob as pushed."""

    tar: bytes = field(repr=False)

    @cached_property
    def diff_id(self) -> str:
        return Digest.of(self.tar)

    @cached_property
    def blob(self) -> bytes:
        return gzip.compress(self.tar, compresslevel=6, mtime=0)

    @cached_property
    def digest(self) -> str:
        return Digest.of(self.blob)

    def __repr__(self) -> str:
        return f"Layer(diff_id={self.diff_id!r}, size={len(self.tar)})"


def layer_from_files(entries: Iterable[Entry]) -> Layer:
    """Build a layer tar from entries, in path order, adding missing parent directories (0755, root).

    Raises:
        ValueError: a path appears twice, or a hardlink's target is not an earlier file of the layer.
    """
    members: dict[str, Entry] = {}
    for entry in entries:
        path = _clean(entry.path)
        if path in members:
            raise ValueError(f"{path} appears twice in the layer")
        members[path] = entry
    for path in list(members):
        parent = path.rpartition("/")[0]
        while parent and parent not in members:
            members[parent] = directory(parent)
            parent = parent.rpartition("/")[0]
    buf = io.BytesIO()
    written: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members):
            entry = members[path]
            info = tarfile.TarInfo(path)
            info.mtime, info.mode, info.uid, info.gid = MTIME, entry.mode & 0o7777, entry.uid, entry.gid
            content = None
            if entry.kind == "file":
                info.size, content = len(entry.data), io.BytesIO(entry.data)
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
            elif entry.kind == "hardlink":
                target = _clean(entry.target)
                if target not in written or members[target].kind != "file":
                    raise ValueError(f"hardlink {path}: target {target} is not an earlier file of the layer")
                info.type, info.linkname = tarfile.LNKTYPE, target
            else:
                raise ValueError(f"{path}: unknown entry kind {entry.kind!r}")
            tar.addfile(info, content)
            written.add(path)
    return Layer(buf.getvalue())


def _clean(path: str) -> str:
    return path.strip("/").removeprefix("./")


# -- images -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleImage:
    """Layers plus an OCI image config; the config's rootfs.diff_ids match the layers."""

    layers: tuple[Layer, ...]
    config: dict = field(hash=False)

    @property
    def platform(self) -> dict[str, str]:
        return {"architecture": self.config["architecture"], "os": self.config["os"]}

    @property
    def config_bytes(self) -> bytes:
        return json.dumps(self.config, sort_keys=True, separators=(",", ":")).encode()

    @property
    def config_digest(self) -> str:
        return Digest.of(self.config_bytes)

    def manifest(self, media_type: str = OCI_MANIFEST) -> bytes:
        """The image manifest, OCI or Docker v2 schema 2."""
        config_type, layer_type = config_for(media_type), gzip_layer_for(media_type)
        body = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": self.config_digest, "size": len(self.config_bytes)},
            "layers": [{"mediaType": layer_type, "digest": lay.digest, "size": len(lay.blob)} for lay in self.layers],
        }
        return json.dumps(body, indent=2).encode()


# The Env of Lambda's base images, in their order (LANG and TZ before PATH).
LAMBDA_ENV = (
    "LANG=en_US.UTF-8",
    "TZ=:/etc/localtime",
    "PATH=/var/lang/bin:/usr/local/bin:/usr/bin/:/bin:/opt/bin",
    "LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    "LAMBDA_TASK_ROOT=/var/task",
    "LAMBDA_RUNTIME_DIR=/var/runtime",
)


def lambda_like_image(
    name: str, arch: str, version: str = "1", extra_files: dict[str, bytes] | None = None
) -> SampleImage:
    """A small image shaped like a Lambda base image, whose entrypoint and bootstrap really work.

    Layers: (1) busybox base rootfs, the same for every name (and differing between arches in
    /etc/arch), (2) runtime: entrypoint, bootstrap, /var/lang/version, (3) the function, the only
    layer `version` changes, (4) whiteouts, an opaque directory, a setuid file and a hardlink pair,
    (5) `extra_files` (path -> bytes, mode 0644), only when given.

    Args:
        name: runtime name, e.g. "python3.12" (letters, digits, `.`, `_`, `-`).
        arch: amd64/x86_64 or arm64/aarch64; busybox is a static binary of that architecture (see busybox_path).
        version: the function's version, as a moved upstream tag would change it.
        extra_files: files for an extra last layer.
    """
    found = platforms.lookup(arch)
    if found is None:
        raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(platforms.KNOWN_NAMES)})")
    architecture = found.oci
    for what, value in (("name", name), ("version", version)):
        if not _SAFE_WORD.fullmatch(value):
            raise ValueError(f"sample image {what} {value!r}: use letters, digits, '.', '_', '-'")
    layers = [_base_layer(architecture), _runtime_layer(name), _function_layer(name, version), _quirks_layer()]
    history = ["base rootfs (busybox)", "runtime: entrypoint and bootstrap", "function", "whiteouts and links"]
    if extra_files:
        layers.append(layer_from_files(file(path, data) for path, data in extra_files.items()))
        history.append("extra files")
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": [*LAMBDA_ENV, f"SAMPLE_TRICKY={TRICKY_VALUE}"],
            "Entrypoint": ["/lambda-entrypoint.sh"],
            "Cmd": ["function.handler"],
            "WorkingDir": "/var/task",
            "Labels": {
                "com.amazonaws.lambda.platform.kernel": "k6.1",
                "com.amazonaws.lambda.platform.version": f"sample-{name}-{version}",
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": CREATED, "created_by": f"sample layer: {text}"} for text in history],
    }
    return SampleImage(tuple(layers), config)


def busybox_path(architecture: str) -> Path:
    """The static busybox of an architecture (OCI name): the host's own, or the one scripts/setup fetched."""
    arch = platforms.get(platforms.catalog_name(architecture))
    if arch.name == platforms.host():
        return BUSYBOX
    return FOREIGN_BUSYBOX / arch.oci / "busybox"


@cache
def _base_layer(architecture: str) -> Layer:
    path = busybox_path(architecture)
    try:
        busybox = path.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"sample images need {path} (busybox-static; run scripts/setup): {exc}") from exc
    os_release = b'NAME="Lambda Sample Linux"\nID=lambda-sample\nVERSION_ID="1"\nPRETTY_NAME="Lambda Sample Linux 1"\n'
    return layer_from_files(
        [
            file("/usr/bin/busybox", busybox, 0o755),
            *(symlink(f"/bin/{applet}", "/usr/bin/busybox") for applet in APPLETS),
            file("/etc/os-release", os_release),
            file("/etc/arch", f"{architecture}\n".encode()),
            file("/etc/motd", b"removed by a whiteout in layer 4\n"),
            file("/opt/replaced/old-1", b"hidden by the opaque directory of layer 4\n"),
            file("/opt/replaced/old-2", b"hidden by the opaque directory of layer 4\n"),
            directory("/tmp", 0o1777),
            directory("/var/task"),
            directory("/var/lang/bin"),
            directory("/var/runtime"),
        ]
    )


def _runtime_layer(name: str) -> Layer:
    return layer_from_files(
        [
            file("/lambda-entrypoint.sh", ENTRYPOINT.encode(), 0o755),
            file("/var/runtime/bootstrap", BOOTSTRAP.encode(), 0o755),
            file("/var/lang/version", f"{name} sample runtime\n".encode()),
        ]
    )


def _function_layer(name: str, version: str) -> Layer:
    return layer_from_files([file("/var/task/function.sh", FUNCTION.format(name=name, version=version).encode())])


@cache
def _quirks_layer() -> Layer:
    return layer_from_files(
        [
            whiteout("/etc/motd"),
            opaque("/opt/replaced"),
            file("/opt/replaced/new", b"the only file left in /opt/replaced\n"),
            file("/usr/local/bin/setuid-sample", b"#!/bin/sh\necho setuid sample\n", 0o4755),
            file("/opt/links/a", b"one file, two names\n"),
            hardlink("/opt/links/b", "/opt/links/a"),
            file("/opt/owned", b"owned by 1000:1000\n", 0o600, uid=1000, gid=1000),
        ]
    )


ENTRYPOINT = f"""\
#!/bin/sh
# Sample of Lambda's entrypoint: the handler is the one argument.
if [ $# -ne 1 ]; then
  echo "entrypoint requires the handler name to be the first argument" >&2
  exit 142
fi
export _HANDLER="$1"
if [ -z "${{AWS_LAMBDA_RUNTIME_API:-}}" ]; then
  echo "{NO_API_MESSAGE} (handler $_HANDLER)" >&2
  exit 1
fi
exec /var/runtime/bootstrap
"""

BOOTSTRAP = r"""#!/bin/sh
# Sample custom runtime: the Lambda Runtime API spoken with busybox wget only.
api="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
file="${_HANDLER%%.*}"
func="${_HANDLER#*.}"
source_file="${LAMBDA_TASK_ROOT:-/var/task}/$file.sh"
work="/tmp/bootstrap.$$"
mkdir -p "$work"

post() {  # post PATH FILE [ERROR_TYPE]
  if [ -n "$3" ]; then
    wget -q -O /dev/null --header 'Content-Type: application/json' \
      --header "Lambda-Runtime-Function-Error-Type: $3" --post-file "$2" "$api/$1"
  else
    wget -q -O /dev/null --header 'Content-Type: application/json' --post-file "$2" "$api/$1"
  fi || echo "bootstrap: POST $api/$1 failed" >&2
}

error_json() {  # error_json TYPE MESSAGE > FILE
  message=$(printf '%s' "$2" | tr -d '[:cntrl:]' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
  printf '{"errorMessage":"%s","errorType":"%s"}' "$message" "$1"
}

# `.` of a missing or broken file ends a non-interactive shell: try it in a subshell first.
if [ -r "$source_file" ] && (. "$source_file" && command -v "$func") > /dev/null 2>&1; then
  . "$source_file"
else
  error_json Runtime.ImportModuleError "cannot load handler $func from $source_file" > "$work/init-error"
  post init/error "$work/init-error" Runtime.ImportModuleError
  echo "bootstrap: cannot load handler $func from $source_file" >&2
  exit 1
fi

while true; do
  # busybox wget -S writes the response headers to stderr, one per line, indented.
  if ! wget -q -S -O "$work/event" "$api/invocation/next" 2> "$work/headers"; then
    echo "bootstrap: GET $api/invocation/next failed: $(cat "$work/headers")" >&2
    exit 1
  fi
  id=$(grep -i '^ *lambda-runtime-aws-request-id:' "$work/headers" | head -n 1 | cut -d: -f2- | tr -d ' \r')
  if ("$func" "$(cat "$work/event")") > "$work/out" 2> "$work/err"; then
    post "invocation/$id/response" "$work/out"
  else
    status=$?
    error_json HandlerError "$func exited $status: $(head -n 1 "$work/err")" > "$work/error"
    post "invocation/$id/error" "$work/error" HandlerError
  fi
done
"""

FUNCTION = """\
# Sample function of the {name} sample image, version {version}: echo the event back.
handler() {{
  case "$1" in
    *'"fail"'*) echo "the event asked to fail" >&2; return 3 ;;
  esac
  printf '{{"echo": %s, "runtime": "%s", "version": "%s"}}\\n' "${{1:-null}}" "{name}" "{version}"
}}
"""


# -- push ---------------------------------------------------------------------------------------


def push_single(
    client: RegistryClient,
    repository: str,
    image: SampleImage,
    reference: str | None = None,
    media_type: str = OCI_MANIFEST,
) -> str:
    """Push the layers, config and manifest of one image under `reference` (default: its digest).

    Returns:
        The manifest digest.
    """
    for layer in image.layers:
        client.push_blob(repository, layer.blob)
    client.push_blob(repository, image.config_bytes)
    body = image.manifest(media_type)
    return client.push_manifest(repository, reference or Digest.of(body), media_type, body)


def image_index(images: dict[str, SampleImage], index_type: str = OCI_INDEX) -> bytes:
    """The multi-arch index (OCI) or manifest list (Docker) of `images`, in dict order."""
    manifest_type = _manifest_type(index_type)
    manifests = []
    for image in images.values():
        body = image.manifest(manifest_type)
        manifests.append(
            {"mediaType": manifest_type, "digest": Digest.of(body), "size": len(body), "platform": image.platform}
        )
    return json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": manifests}, indent=2).encode()


def push_image(
    client: RegistryClient, repository: str, tag: str, images: dict[str, SampleImage], index_type: str = OCI_INDEX
) -> str:
    """Push `images` (keys name them, e.g. by arch) as one multi-arch image under `tag`.

    With `index_type` OCI_INDEX the per-arch manifests are OCI manifests, with DOCKER_LIST they
    are Docker v2 schema 2 manifests.

    Returns:
        The digest of the index.
    """
    manifest_type = _manifest_type(index_type)
    for image in images.values():
        push_single(client, repository, image, media_type=manifest_type)
    return client.push_manifest(repository, tag, index_type, image_index(images, index_type))


def _manifest_type(index_type: str) -> str:
    if not is_index(index_type):
        raise ValueError(f"not an index media type: {index_type!r}")
    return manifest_for(index_type)


# -- package databases for the demo's inventories ---------------------------------------------------

RPM_CACHE = ROOT / ".venv" / "share" / "lambdaimages-samples"
SAMPLE_RPMS = (
    ("sample-base", "0", "1.0", "1"),
    ("sample-libs", "2", "3.4.5", "7.amzn2023"),
    ("sample-tools", "0", "0.9", "2"),
)
_SPEC = """Name: {name}
Epoch: {epoch}
Version: {version}
Release: {release}
Summary: a sample package of lambdaimages' demo
License: MIT
BuildArch: noarch
%description
A package whose only job is to be listed by the demo's inventory.
%install
mkdir -p %{{buildroot}}/usr/share/{name}
echo {name} > %{{buildroot}}/usr/share/{name}/README
%files
/usr/share/{name}/README
"""


def rpm_database() -> bytes:
    """A real rpm sqlite database (`var/lib/rpm/rpmdb.sqlite`) listing SAMPLE_RPMS, made once with rpmbuild and rpm.

    rpm stamps install times into it, so it is made once per checkout and kept (in .venv/share) for the
    sample images to stay byte for byte the same from run to run.
    """
    cached = RPM_CACHE / "rpmdb.sqlite"
    if cached.is_file():
        return cached.read_bytes()
    with tempfile.TemporaryDirectory(prefix="lambdaimages-rpm-") as tmp:
        top, root = Path(tmp) / "build", Path(tmp) / "root"
        for name, epoch, version, release in SAMPLE_RPMS:
            spec = Path(tmp) / f"{name}.spec"
            spec.write_text(_SPEC.format(name=name, epoch=epoch, version=version, release=release))
            subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", str(spec)],
                           check=True, capture_output=True)  # fmt: skip
        rpms = sorted(str(p) for p in top.glob("RPMS/*/*.rpm"))
        db = ("--root", str(root), "--dbpath", "/var/lib/rpm")
        subprocess.run(["rpm", *db, "--initdb"], check=True, capture_output=True)
        subprocess.run(
            ["rpm", *db, "--nodeps", "--noscripts", "--justdb", "-i", *rpms], check=True, capture_output=True
        )
        data = (root / "var/lib/rpm/rpmdb.sqlite").read_bytes()
    RPM_CACHE.mkdir(parents=True, exist_ok=True)
    tmp_file = cached.with_name(f".{cached.name}.{os.getpid()}")
    tmp_file.write_bytes(data)
    os.replace(tmp_file, cached)
    return data


def demo_files(name: str) -> dict[str, bytes]:
    """What the demo's sample images add so that `doit demo` shows an inventory: an rpm database, and a Python
    or npm package for the runtimes named so."""
    files = {"/var/lib/rpm/rpmdb.sqlite": rpm_database()}
    if "python" in name:
        metadata = b"Metadata-Version: 2.1\nName: sample-sdk\nVersion: 1.2.3\nLicense: Apache-2.0\n"
        files["/var/runtime/sample_sdk-1.2.3.dist-info/METADATA"] = metadata
    if "nodejs" in name:
        package = {"name": "sample-sdk", "version": "3.2.1", "license": "Apache-2.0"}
        files["/var/runtime/node_modules/sample-sdk/package.json"] = json.dumps(package).encode()
    return files
