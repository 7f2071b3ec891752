"""The registry client against the stand-in for public.ecr.aws: token realm, pacing, 429s, redirects, proxy, CA."""

import json
import subprocess
import uuid

import pytest
import requests
from doit_cli import run_doit

from lambdaimages import state
from lambdaimages.errors import RegistryError
from lambdaimages.reference import Reference, display_name, registry_url
from lambdaimages.registry import client as client_module
from lambdaimages.registry.client import RegistryClient
from lambdaimages.testbed import samples
from lambdaimages.testbed.standin import ForwardProxy, PublicEcrStandIn


@pytest.fixture(scope="module")
def pushed(registry):
    """One two-architecture sample image on the local registry: (repository, index digest, images)."""
    name = f"s{uuid.uuid4().hex[:6]}"
    images = {arch: samples.lambda_like_image(name, arch) for arch in ("x86_64", "arm64")}
    digest = samples.push_image(RegistryClient(registry.url), f"lambda/{name}", "1", images)
    return f"lambda/{name}", digest, images


@pytest.fixture(autouse=True)
def fresh_paces():
    """Each test's stand-in has a new port, but paces are per base URL and process: start from none."""
    RegistryClient._paces.clear()
    yield
    RegistryClient._paces.clear()


def _config_of(client: RegistryClient, repository: str) -> bytes:
    index = client.get_manifest(repository, "1").json()
    manifest = client.get_manifest(repository, index["manifests"][0]["digest"]).json()
    return client.get_blob(repository, manifest["config"]["digest"], manifest["config"]["size"])


def test_snapshot_through_the_standin_is_paced_to_one_request_a_second_without_a_429(registry, pushed, tmp_path):
    repository, digest, _ = pushed
    with PublicEcrStandIn(registry.url, rate=1.0, burst=1) as standin:
        catalog = tmp_path / "runtimes.yaml"
        name = repository.split("/")[1]
        catalog.write_text(
            f"defaults:\n  registry: {standin.url}\n  architectures: [x86_64, arm64]\n"
            f"runtimes:\n  {name}:\n    image: {repository}:1\n"
        )
        run_doit(catalog, tmp_path / "out", "snapshot")
        log = standin.requests()
    states = {arch: state.read(tmp_path / "out", name, arch) for arch in ("x86_64", "arm64")}
    assert {state.index_digest for state in states.values()} == {digest}
    statuses = [entry.status for entry in log if entry.host == standin.host]
    assert 429 not in statuses, statuses
    assert statuses.count(307) >= 2  # configs and layers came by redirect
    storage = [entry for entry in log if entry.host == standin.storage.host]
    assert storage and all(entry.status == 200 and not entry.authorization for entry in storage)


def test_the_storage_host_rejects_a_request_with_authorization_as_s3_does(registry, pushed):
    repository, _, _ = pushed
    with PublicEcrStandIn(registry.url, rate=0) as standin:
        client = RegistryClient(standin.url)
        index = client.get_manifest(repository, "1").json()
        manifest = client.get_manifest(repository, index["manifests"][0]["digest"]).json()
        token = requests.get(f"{standin.url}/token/", params={"service": "public.ecr.aws", "scope": "aws"}).json()
        blob = f"{standin.url}/v2/{repository}/blobs/{manifest['config']['digest']}"
        headers = {"Authorization": f"Bearer {token['token']}"}
        redirect = requests.get(blob, headers=headers, allow_redirects=False)
        assert redirect.status_code == 307
        assert redirect.headers["Location"].startswith(standin.storage.url)
        with_auth = requests.get(redirect.headers["Location"], headers=headers)
        assert with_auth.status_code == 400 and b"Only one auth mechanism allowed" in with_auth.content
        assert requests.get(redirect.headers["Location"]).status_code == 200
        forged = redirect.headers["Location"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
        assert requests.get(forged).status_code == 403


def test_an_expired_stored_login_falls_back_to_anonymous_with_a_note(registry, pushed, capsys):
    repository, _, images = pushed
    with PublicEcrStandIn(registry.url, rate=0, credentials=("AWS", "old"), refused=True) as standin:
        client = RegistryClient(standin.url, credentials=("AWS", "old"), credentials_source="~/.docker/config.json")
        assert _config_of(client, repository) == images["x86_64"].config_bytes
    said = capsys.readouterr().out
    assert "refused the credentials from ~/.docker/config.json (403: DENIED Your authorization token" in said
    assert "pulling anonymously" in said
    assert "old" not in said


def test_accepted_credentials_pace_at_the_authenticated_rate(registry, pushed):
    repository, _, _ = pushed
    with PublicEcrStandIn(registry.url, credentials=("AWS", "fresh")) as standin:
        client = RegistryClient(standin.url, credentials=("AWS", "fresh"))
        _config_of(client, repository)
        assert RegistryClient._paces[standin.url].rate == client_module.PUBLIC_ECR_RATES[1]
        anonymous = RegistryClient(standin.url.replace("127.0.0.1", "localhost"))
        _config_of(anonymous, repository)
        assert RegistryClient._paces[anonymous.base_url].rate == client_module.PUBLIC_ECR_RATES[0]


def test_a_data_limit_is_one_line_at_once_not_a_retry_storm(registry, pushed):
    repository, _, _ = pushed
    with PublicEcrStandIn(registry.url, rate=0, data_limit=0) as standin:
        client = RegistryClient(standin.url, retries=4)
        with pytest.raises(RegistryError) as failed:
            _config_of(client, repository)
        blob_answers = [e.status for e in standin.requests() if "/blobs/" in e.path]
    message = str(failed.value)
    assert "\n" not in message
    assert "429: TOOMANYREQUESTS Data limit exceeded" in message and "a quota, not a burst" in message
    assert blob_answers == [429]


def test_unpaced_429s_are_waited_out_and_slow_the_pace(registry, pushed):
    repository, _, images = pushed
    # A stand-in whose token service is not public.ecr.aws's name would not be paced up front; here the
    # client is told an explicit rate of 0 (unpaced) first, so the 429s come and are waited out.
    with PublicEcrStandIn(registry.url, rate=2.0, burst=1) as standin:
        client = RegistryClient(standin.url, rate=0, backoff=0.2, patience=60)
        for _ in range(3):
            assert _config_of(client, repository) == images["x86_64"].config_bytes
        statuses = [e.status for e in standin.requests() if e.host == standin.host]
    assert 429 in statuses  # unpaced, it hit the limit; each 429 was retried until it passed
    assert statuses[-1] == 307


def test_patience_bounds_the_wait_on_429s(registry, pushed):
    repository, _, _ = pushed
    with PublicEcrStandIn(registry.url, rate=0.01, burst=1) as standin:
        client = RegistryClient(standin.url, rate=0, backoff=0.2, patience=1.0)
        with pytest.raises(
            RegistryError,
            match=r"kept answering 429: TOOMANYREQUESTS Rate exceeded for .* \(LAMBDAIMAGES_PATIENCE=1 s\)",
        ):
            _config_of(client, repository)


def test_the_proxy_from_the_environment_is_used_and_no_proxy_honoured(registry, pushed, monkeypatch):
    repository, _, images = pushed
    with PublicEcrStandIn(registry.url, rate=0) as standin, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert _config_of(RegistryClient(standin.url), repository) == images["x86_64"].config_bytes
        hosts = {entry.path.split("/")[2] for entry in proxy.log}
        assert hosts == {standin.host, standin.storage.host}  # the redirect to storage went through it too
        seen = len(proxy.log)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,127.0.0.2")
        assert _config_of(RegistryClient(standin.url), repository) == images["x86_64"].config_bytes
        assert len(proxy.log) == seen


def _make_ca(folder):
    """A CA and a certificate for 127.0.0.1 signed by it, made with openssl: (ca.pem, cert.pem, key.pem)."""
    ca_key, ca, key, csr, cert = (folder / n for n in ("ca.key", "ca.pem", "key.pem", "csr.pem", "cert.pem"))
    run = lambda *args: subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)  # noqa: E731
    new_key = ("-newkey", "rsa:2048", "-nodes")
    run("req", "-x509", *new_key, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=test CA")
    run("req", *new_key, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    ext = folder / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "2",
        "-extfile",
        ext,
    )
    return ca, cert, key


def test_a_company_ca_from_the_environment_is_trusted(registry, pushed, monkeypatch, tmp_path):
    repository, _, images = pushed
    ca, cert, key = _make_ca(tmp_path)
    with PublicEcrStandIn(registry.url, rate=0, tls=(str(cert), str(key))) as standin:
        host = standin.host
        for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
            monkeypatch.delenv(variable, raising=False)
        RegistryClient._unreachable.clear()
        with pytest.raises(RegistryError, match=r"certificate not trusted: set REQUESTS_CA_BUNDLE or SSL_CERT_FILE"):
            _config_of(RegistryClient(host, retries=0), repository)
        RegistryClient._unreachable.clear()  # the failed attempt marked it down for this process
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
        assert _config_of(RegistryClient(host), repository) == images["x86_64"].config_bytes
        monkeypatch.delenv("SSL_CERT_FILE")
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        assert _config_of(RegistryClient(host), repository) == images["x86_64"].config_bytes


def test_docker_hub_is_reached_at_its_api_host():
    assert registry_url("docker.io") == "https://registry-1.docker.io"
    assert registry_url("index.docker.io") == "https://registry-1.docker.io"
    assert display_name(registry_url("docker.io")) == "docker.io"
    assert registry_url("public.ecr.aws") == "https://public.ecr.aws"
    assert registry_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert str(Reference.parse("docker.io/python:3.12")) == "docker.io/library/python:3.12"
    hub = Reference.parse("docker.io/amazon/aws-lambda-python:3.12")
    assert (hub.repository, registry_url(hub.registry)) == ("amazon/aws-lambda-python", "https://registry-1.docker.io")


def test_rate_and_patience_come_from_the_environment():
    settings = client_module.client_settings({"LAMBDAIMAGES_RATE": "2.5", "LAMBDAIMAGES_PATIENCE": "600"})
    assert settings["rate"] == 2.5 and settings["patience"] == 600
    assert "rate" not in client_module.client_settings({})  # unset: chosen from the registry's answers
    with pytest.raises(RegistryError, match="LAMBDAIMAGES_RATE='fast'"):
        client_module.client_settings({"LAMBDAIMAGES_RATE": "fast"})


def test_index_through_the_standin_is_byte_for_byte_the_registrys(registry, pushed):
    repository, digest, _ = pushed
    with PublicEcrStandIn(registry.url, rate=0) as standin:
        manifest = RegistryClient(standin.url).get_manifest(repository, "1")
    assert manifest.digest == digest
    assert json.loads(manifest.body)["manifests"]


def test_a_poll_where_nothing_moved_costs_one_head_per_tag(registry, tmp_path):
    client = RegistryClient(registry.url)
    names = [f"h{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for name in names:
        images = {arch: samples.lambda_like_image(name, arch) for arch in ("x86_64", "arm64")}
        samples.push_image(client, f"lambda/{name}", "1", images)
    with PublicEcrStandIn(registry.url, rate=0) as standin:
        catalog = tmp_path / "runtimes.yaml"
        catalog.write_text(
            f"defaults:\n  registry: {standin.url}\n  architectures: [x86_64, arm64]\nruntimes:\n"
            + "".join(f"  {name}:\n    image: lambda/{name}:1\n" for name in names)
        )
        run_doit(catalog, tmp_path / "out", "snapshot")
        first = len(standin.log)
        run_doit(catalog, tmp_path / "out", "snapshot")
        again = [(e.method, e.path.split("?")[0], e.status) for e in standin.log[first:]]
    asked = [entry for entry in again if entry[1] != "/token/"]
    heads = sorted(entry for entry in asked if entry[2] == 200)
    assert heads == sorted(("HEAD", f"/v2/lambda/{name}/manifests/1", 200) for name in names), again
    # Besides: only challenges (the two runtimes poll in parallel, so each may meet one before a token is there).
    assert {entry[2] for entry in asked if entry not in heads} <= {401}
    assert all(method == "HEAD" for method, _, _ in asked), again
    assert len(asked) <= 2 * len(names)
