"""Tests of the sample images: reproducible bytes, layer structure, push and fetch back, and running them."""

import gzip
import io
import json
import subprocess
import sys
import tarfile
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lambdaimages.mediatypes import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed.samples import (
    MTIME,
    NO_API_MESSAGE,
    TRICKY_VALUE,
    directory,
    file,
    hardlink,
    lambda_like_image,
    layer_from_files,
    push_image,
    symlink,
)

PROJECT = Path(__file__).resolve().parent.parent


def _members(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return {member.name: member for member in archive.getmembers()}


def _read(tar: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        return archive.extractfile(name).read()


# -- bytes --------------------------------------------------------------------------------------


def test_same_inputs_give_same_digests_in_another_process():
    code = (
        "import json; from lambdaimages.testbed.samples import lambda_like_image as f\n"
        "img = f('python3.12', 'arm64', '7', {'/var/task/extra.txt': b'x'})\n"
        "print(json.dumps([img.config_digest, img.manifest().decode(), [layer.digest for layer in img.layers]]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True)
    image = lambda_like_image("python3.12", "arm64", "7", {"/var/task/extra.txt": b"x"})
    assert json.loads(out.stdout) == [image.config_digest, image.manifest().decode(), [x.digest for x in image.layers]]


def test_layer_is_sorted_normalized_and_independent_of_entry_order():
    entries = [
        file("/b/file", b"data", 0o640, uid=5, gid=6),
        symlink("/a/link", "/b/file"),
        directory("/a", 0o700),
        hardlink("/b/other", "/b/file"),
    ]
    layer = layer_from_files(entries)
    assert layer_from_files(reversed(entries)).tar == layer.tar
    members = _members(layer.tar)
    assert list(members) == ["a", "a/link", "b", "b/file", "b/other"]  # parent "b" added
    assert {m.mtime for m in members.values()} == {MTIME}
    assert {(m.uname, m.gname) for m in members.values()} == {("", "")}
    assert (members["a"].mode, members["b"].mode) == (0o700, 0o755)
    assert (members["b/file"].mode, members["b/file"].uid, members["b/file"].gid) == (0o640, 5, 6)
    assert members["b/other"].islnk() and members["b/other"].linkname == "b/file"
    assert gzip.decompress(layer.blob) == layer.tar
    assert layer.blob[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_hardlink_needs_an_earlier_target():
    with pytest.raises(ValueError, match="hardlink"):
        layer_from_files([file("/z", b""), hardlink("/a", "/z")])
    with pytest.raises(ValueError, match="twice"):
        layer_from_files([file("/a", b""), file("a", b"")])


def test_version_changes_exactly_the_function_layer():
    v1 = lambda_like_image("nodejs22", "x86_64", "1")
    v2 = lambda_like_image("nodejs22", "x86_64", "2")
    changed = [i for i, (a, b) in enumerate(zip(v1.layers, v2.layers, strict=True)) if a.digest != b.digest]
    assert changed == [2]
    assert b'"nodejs22" "2"' in _read(v2.layers[2].tar, "var/task/function.sh")
    assert v1.config_digest != v2.config_digest


def test_arches_differ_in_base_layer_and_config():
    amd = lambda_like_image("python3.12", "x86_64")
    arm = lambda_like_image("python3.12", "arm64")
    assert [a.digest != b.digest for a, b in zip(amd.layers, arm.layers, strict=True)] == [True, False, False, False]
    assert (amd.platform, arm.platform) == (
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    )
    assert _read(arm.layers[0].tar, "etc/arch") == b"arm64\n"
    assert amd.config["rootfs"]["diff_ids"] == [layer.diff_id for layer in amd.layers]
    with pytest.raises(ValueError, match="architecture"):
        lambda_like_image("python3.12", "riscv64")


def test_base_layer_is_shared_between_runtimes_and_extra_files_add_a_layer():
    python = lambda_like_image("python3.12", "x86_64")
    node = lambda_like_image("nodejs22", "x86_64", extra_files={"/opt/extra/data.bin": b"\0\1"})
    assert python.layers[0].digest == node.layers[0].digest and python.layers[3].digest == node.layers[3].digest
    assert len(node.layers) == 5 and _read(node.layers[4].tar, "opt/extra/data.bin") == b"\0\1"
    assert len(node.config["history"]) == 5


def test_layer_tars_carry_whiteouts_setuid_and_links():
    quirks = _members(lambda_like_image("python3.12", "x86_64").layers[3].tar)
    assert "etc/.wh.motd" in quirks and "opt/replaced/.wh..wh..opq" in quirks
    assert quirks["usr/local/bin/setuid-sample"].mode == 0o4755
    assert quirks["opt/links/b"].islnk()
    base = _members(lambda_like_image("python3.12", "x86_64").layers[0].tar)
    assert base["tmp"].mode == 0o1777 and base["bin/wget"].linkname == "/usr/bin/busybox"


# -- registry -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("index_type", "manifest_type"), [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)])
def test_push_then_fetch_back(registry, index_type, manifest_type):
    client = RegistryClient(registry.url)
    repo = f"samples/push-{index_type.split('.')[2]}"
    images = {"x86_64": lambda_like_image("python3.12", "x86_64"), "arm64": lambda_like_image("python3.12", "arm64")}

    digest = push_image(client, repo, "3.12", images, index_type)

    index = client.get_manifest(repo, "3.12")
    assert (index.digest, index.media_type) == (digest, index_type)
    entries = index.json()["manifests"]
    assert [e["platform"]["architecture"] for e in entries] == ["amd64", "arm64"]
    for entry, image in zip(entries, images.values(), strict=True):
        manifest = client.get_manifest(repo, entry["digest"])
        assert manifest.media_type == entry["mediaType"] == manifest_type
        assert len(manifest.body) == entry["size"]
        body = manifest.json()
        assert client.get_blob(repo, body["config"]["digest"]) == image.config_bytes
        for descriptor, layer in zip(body["layers"], image.layers, strict=True):
            assert gzip.decompress(client.get_blob(repo, descriptor["digest"])) == layer.tar

    # Pushing the same image again uploads nothing and gives the same index.
    before = len(registry.requests_log())
    assert push_image(client, repo, "3.12", images, index_type) == digest
    assert registry.count("PUT", "/blobs/uploads/", since=before) == 0
    assert registry.count("GET", "/blobs/", since=before) == 0


# -- engine -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pulled_image(registry, docker_client) -> Iterator[str]:
    """The x86_64+arm64 sample pushed to the local registry and pulled into the engine (removed after)."""
    repo = f"samples/run-{uuid.uuid4().hex[:8]}"
    images = {"x86_64": lambda_like_image("python3.12", "x86_64"), "arm64": lambda_like_image("python3.12", "arm64")}
    push_image(RegistryClient(registry.url), repo, "1", images)
    ref = f"{registry.host}/{repo}:1"
    image = docker_client.images.pull(ref)
    try:
        # The engine's image ID is the config digest: the amd64 config, unchanged.
        assert image.id == images["x86_64"].config_digest
        yield ref
    finally:
        docker_client.images.remove(ref, force=True)


def _run(docker_client, image: str, **kwargs) -> tuple[int, str]:
    """Run a container to its end; return exit status and output (stdout and stderr); always remove it."""
    container = docker_client.containers.run(image, detach=True, **kwargs)
    try:
        status = container.wait(timeout=60)["StatusCode"]
        return status, container.logs(stdout=True, stderr=True).decode()
    finally:
        container.remove(force=True)


def test_entrypoint_without_runtime_api_prints_message(docker_client, pulled_image):
    status, output = _run(docker_client, pulled_image, network_mode="none")
    assert status == 1
    assert output == f"{NO_API_MESSAGE} (handler function.handler)\n"


def test_container_sees_merged_layers_and_config(docker_client, pulled_image):
    script = (
        "pwd; cat /etc/arch; [ -e /etc/motd ] || echo motd-removed; busybox ls /opt/replaced; "
        "busybox stat -c '%a %u:%g' /usr/local/bin/setuid-sample /opt/owned; "
        "busybox stat -c %i /opt/links/a /opt/links/b | busybox uniq | busybox wc -l; "
        'printf "%s\\n" "$SAMPLE_TRICKY"'
    )
    status, output = _run(docker_client, pulled_image, network_mode="none", entrypoint=["/bin/sh", "-c", script])
    assert status == 0, output
    assert output.splitlines() == [
        "/var/task",
        "amd64",
        "motd-removed",
        "new",
        "4755 0:0",
        "600 1000:1000",
        "1",
        TRICKY_VALUE,
    ]


class _RuntimeAPIStub:
    """A Lambda Runtime API on 127.0.0.1 serving queued events; `next` answers 500 when none are left,
    which makes the bootstrap exit. Records every request as (method, path, headers, body)."""

    def __init__(self, events: list[tuple[str, bytes]]) -> None:
        self.events = list(events)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stub.requests.append(("GET", self.path, dict(self.headers), b""))
                if self.path != "/2018-06-01/runtime/invocation/next" or not stub.events:
                    self.send_error(500, "no more events")
                    return
                request_id, body = stub.events.pop(0)
                self.send_response(200)
                # Header names are case-insensitive: the bootstrap must find both spellings.
                name = "lambda-runtime-aws-request-id" if request_id.endswith("2") else "Lambda-Runtime-Aws-Request-Id"
                self.send_header(name, request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", "9999999999999")
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:us-east-1:0:function:f")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.requests.append(("POST", self.path, dict(self.headers), body))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "_RuntimeAPIStub":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def posts(self) -> list[tuple[str, dict[str, str], dict]]:
        return [(path, headers, json.loads(body)) for method, path, headers, body in self.requests if method == "POST"]


def test_bootstrap_answers_events_through_runtime_api(docker_client, pulled_image):
    event = {"hello": "world", "quote": 'it\'s "x"'}
    events = [("req-1", json.dumps(event).encode()), ("req-2", b'{"fail": true}')]
    with _RuntimeAPIStub(events) as api:
        status, output = _run(
            docker_client, pulled_image, network_mode="host", environment={"AWS_LAMBDA_RUNTIME_API": api.address}
        )
    assert status == 1 and "invocation/next failed" in output, output  # the stub ran out of events
    (ok_path, _, ok_body), (error_path, error_headers, error_body) = api.posts()
    assert ok_path == "/2018-06-01/runtime/invocation/req-1/response"
    assert ok_body == {"echo": event, "runtime": "python3.12", "version": "1"}
    assert error_path == "/2018-06-01/runtime/invocation/req-2/error"
    assert error_headers["Lambda-Runtime-Function-Error-Type"] == "HandlerError"
    assert error_body == {"errorType": "HandlerError", "errorMessage": "handler exited 3: the event asked to fail"}
    assert [r[1] for r in api.requests if r[0] == "GET"] == ["/2018-06-01/runtime/invocation/next"] * 3


def test_bootstrap_reports_a_missing_handler_as_init_error(docker_client, pulled_image):
    with _RuntimeAPIStub([("req-1", b"{}")]) as api:
        status, output = _run(
            docker_client,
            pulled_image,
            command=["missing.handler"],
            network_mode="host",
            environment={"AWS_LAMBDA_RUNTIME_API": api.address},
        )
    assert status == 1, output
    [(path, headers, body)] = api.posts()
    assert path == "/2018-06-01/runtime/init/error"
    assert body["errorType"] == headers["Lambda-Runtime-Function-Error-Type"] == "Runtime.ImportModuleError"
    assert "/var/task/missing.sh" in body["errorMessage"]
    assert not [r for r in api.requests if r[0] == "GET"]
