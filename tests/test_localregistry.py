"""Tests of the local registry process: start, serve, log parsing, persistence, stop."""

import socket

import pytest
import requests

from lambdaimages.digest import Digest
from lambdaimages.errors import RegistryUnreachable
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed.localregistry import LocalRegistry, _parse_access_log


def test_serves_v2_and_counts_requests(registry):
    assert registry.url == f"http://{registry.host}" and registry.host.startswith("127.0.0.1:")
    before = len(registry.requests_log())

    resp = requests.get(registry.url + "/v2/", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    missing = "sha256:" + "0" * 64
    assert requests.head(f"{registry.url}/v2/countme/blobs/{missing}", timeout=5).status_code == 404

    new = registry.requests_log()[before:]
    assert new == [("GET", "/v2/", 200), ("HEAD", f"/v2/countme/blobs/{missing}", 404)]
    assert registry.count("HEAD", "/v2/countme/blobs/", since=before) == 1
    assert registry.count("GET", "/blobs/", since=before) == 0


def test_counts_blob_pushes_and_fetches(registry):
    client = RegistryClient(registry.url)
    before = len(registry.requests_log())
    digest = client.push_blob("counted", b"some bytes")
    assert client.get_blob("counted", digest) == b"some bytes"
    client.push_blob("counted", b"some bytes")  # already there: a HEAD, no upload

    assert registry.count("PUT", "/v2/counted/blobs/uploads/", since=before) == 1
    assert registry.count("GET", f"/v2/counted/blobs/{digest}", since=before) == 1
    assert registry.count("HEAD", f"/v2/counted/blobs/{digest}", since=before) == 2


def test_parses_only_access_lines():
    text = (
        'time="2026-11-27T13:53:08Z" level=info msg="response completed" http.request.method=GET '
        "http.request.uri=/v2/ http.response.status=200\n"
        '127.0.0.1 - - [27/Nov/2026:13:53:08 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"\n'
        '127.0.0.1 - - [27/Nov/2026:13:53:08 +0000] "PUT /v2/a/blobs/uploads/u?digest=sha256%3Aab HTTP/1.1" '
        '201 0 "" "python-requests/2.34.2"\n'
    )
    assert _parse_access_log(text) == [("GET", "/v2/", 200), ("PUT", "/v2/a/blobs/uploads/u?digest=sha256%3Aab", 201)]


def test_stop_frees_port_and_removes_temp_dir():
    with LocalRegistry() as reg:
        port, workdir, storage = reg.port, reg.log_path.parent, reg.storage
        assert requests.get(reg.url + "/v2/", timeout=5).status_code == 200
        assert storage.is_dir() and reg.log_path.is_file()
    assert not workdir.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/v2/", timeout=5)
    with socket.socket() as sock:
        # Connections the registry closed linger in TIME_WAIT; Go servers bind with SO_REUSEADDR too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_given_storage_and_port_persist_between_runs(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = b"kept between runs"
    with LocalRegistry(tmp_path / "cache", port=port) as reg:
        assert reg.port == port
        RegistryClient(reg.url).push_blob("kept", data)
    assert (tmp_path / "cache" / "docker").is_dir()
    with LocalRegistry(tmp_path / "cache", port=port) as reg:
        assert RegistryClient(reg.url).get_blob("kept", Digest.of(data)) == data
        assert reg.count("PUT") == 0


def test_busy_port_fails_with_log_tail():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        reg = LocalRegistry(port=sock.getsockname()[1], startup_timeout=5)
        with pytest.raises(RegistryUnreachable, match="address already in use"):
            reg.start()
    assert reg.log_path is not None and not reg.log_path.exists()
