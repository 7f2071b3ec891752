"""The SBOM referrer: its manifest, the fallback tag's index, and how it is attached (a fake client, a fake
registry with the referrers API, and the real local registry, which has none)."""

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lambdaimages.digest import Digest
from lambdaimages.errors import RegistryError
from lambdaimages.image import referrers
from lambdaimages.mediatypes import DOCKER_LIST, OCI_INDEX, OCI_MANIFEST
from lambdaimages.registry.client import RegistryClient

SUBJECT = referrers.Descriptor(OCI_MANIFEST, "sha256:" + "ab" * 32, 1234)
SBOM = b'{"bomFormat": "CycloneDX", "specVersion": "1.6"}\n'


@pytest.fixture
def sbom(tmp_path):
    path = tmp_path / "sbom.cdx.json"
    path.write_bytes(SBOM)
    return path


# -- the referrer's manifest --------------------------------------------------------------------


def test_the_empty_descriptor_is_the_specs():
    empty = referrers.empty_descriptor()
    assert empty.json() == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }


def test_the_artifact_is_an_oci_manifest_of_the_sbom_with_the_image_manifest_as_subject(sbom):
    artifact = referrers.sbom_artifact(SUBJECT, sbom)
    body = json.loads(artifact.manifest)
    assert body == {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.cyclonedx+json",
        "config": referrers.empty_descriptor().json(),
        "layers": [
            {
                "mediaType": "application/vnd.cyclonedx+json",
                "digest": Digest.of(SBOM),
                "size": len(SBOM),
                "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"},
            }
        ],
        "subject": {"mediaType": OCI_MANIFEST, "digest": SUBJECT.digest, "size": 1234},
    }
    assert "annotations" not in body  # no date: pushing again gives the same digest
    assert artifact.digest == Digest.of(artifact.manifest)
    assert artifact.descriptor == referrers.Descriptor(OCI_MANIFEST, artifact.digest, len(artifact.manifest))
    assert artifact.blobs == ((referrers.empty_descriptor().digest, b"{}"), (Digest.of(SBOM), sbom))


def test_the_same_sbom_and_subject_give_the_same_bytes_and_another_sbom_another_digest(sbom, tmp_path):
    first = referrers.sbom_artifact(SUBJECT, sbom)
    assert referrers.sbom_artifact(SUBJECT, sbom).manifest == first.manifest
    other = tmp_path / "other" / "sbom.cdx.json"
    other.parent.mkdir()
    other.write_bytes(SBOM + b" ")
    assert referrers.sbom_artifact(SUBJECT, other).digest != first.digest
    another_subject = referrers.Descriptor(OCI_MANIFEST, "sha256:" + "cd" * 32, 1234)
    assert referrers.sbom_artifact(another_subject, sbom).digest != first.digest


def test_the_fallback_tag_is_the_digest_with_a_dash():
    assert referrers.fallback_tag("sha256:" + "ab" * 32) == "sha256-" + "ab" * 32
    assert referrers.fallback_tag("sha512:" + "f" * 128) == "sha512-" + "f" * 64  # cut to 64, as the spec says


# -- the fallback tag's index ---------------------------------------------------------------------


def _entry(sbom):
    return referrers.index_entry(referrers.sbom_artifact(SUBJECT, sbom))


def test_the_index_entry_is_the_descriptor_with_the_artifact_type(sbom):
    artifact = referrers.sbom_artifact(SUBJECT, sbom)
    assert referrers.index_entry(artifact) == {
        **artifact.descriptor.json(),
        "artifactType": "application/vnd.cyclonedx+json",
    }


def test_a_new_fallback_index_lists_only_the_referrer(sbom):
    index = json.loads(referrers.merged_index(None, _entry(sbom), "r/x:t"))
    assert index == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [_entry(sbom)]}


def test_merging_keeps_the_entries_there_and_adds_the_referrer_last(sbom):
    signature = {
        "mediaType": OCI_MANIFEST,
        "digest": "sha256:" + "11" * 32,
        "size": 500,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "annotations": {"dev.sigstore.bundle": "x"},
    }
    existing = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [signature], "annotations": {"a": "b"}}
    merged = json.loads(referrers.merged_index(json.dumps(existing).encode(), _entry(sbom), "r/x:t"))
    assert merged == {**existing, "manifests": [signature, _entry(sbom)]}


def test_merging_a_referrer_listed_already_changes_nothing(sbom):
    listed = referrers.merged_index(None, _entry(sbom), "r/x:t")
    assert referrers.merged_index(listed, _entry(sbom), "r/x:t") is None


@pytest.mark.parametrize(
    "existing",
    [
        b"not json",
        b"[]",
        json.dumps({"schemaVersion": 2, "mediaType": DOCKER_LIST, "manifests": []}).encode(),
        json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode(),
        json.dumps({"schemaVersion": 2, "manifests": {}}).encode(),
    ],
)
def test_a_fallback_tag_holding_something_else_is_not_replaced(sbom, existing):
    with pytest.raises(RegistryError, match="r/x:t holds something other than an OCI image index"):
        referrers.merged_index(existing, _entry(sbom), "r/x:t")


# -- attaching, with a fake client ---------------------------------------------------------------


class _FakeClient:
    """The registry calls `attach` makes, over a dict of manifests; `api` gives it the referrers API."""

    name = "fake"

    def __init__(self, *, api: bool = False, answers_subject: bool = False) -> None:
        self.api, self.answers_subject = api, answers_subject
        self.manifests: dict[str, bytes] = {}
        self.puts: list[str] = []

    def referrers(self, repository, digest):
        return object() if self.api else None

    def manifest_digest(self, repository, reference):
        body = self.manifests.get(reference)
        return Digest.of(body) if body is not None else None

    def push_artifact(self, repository, digest, media_type, body):
        self.manifests[digest] = body
        self.puts.append(digest)
        return json.loads(body)["subject"]["digest"] if self.api or self.answers_subject else None

    def find_manifest(self, repository, reference):
        body = self.manifests.get(reference)
        return None if body is None else type("M", (), {"body": body})()

    def push_manifest(self, repository, reference, media_type, body):
        self.manifests[reference] = body
        self.puts.append(reference)
        return Digest.of(body)


def test_attach_on_a_registry_without_the_api_keeps_the_fallback_tag_and_a_second_attach_writes_nothing(sbom):
    client = _FakeClient()
    artifact = referrers.sbom_artifact(SUBJECT, sbom)
    tag = referrers.fallback_tag(SUBJECT.digest)
    assert referrers.attach(client, "r", artifact) == referrers.Attached(artifact.digest, tag, True)
    assert client.puts == [artifact.digest, tag]
    assert json.loads(client.manifests[tag])["manifests"] == [referrers.index_entry(artifact)]
    before = dict(client.manifests)
    assert referrers.attach(client, "r", artifact) == referrers.Attached(artifact.digest, tag, False)
    assert client.puts == [artifact.digest, tag] and client.manifests == before


def test_attach_adds_the_referrer_to_a_fallback_index_that_lost_it(sbom):
    client = _FakeClient()
    artifact = referrers.sbom_artifact(SUBJECT, sbom)
    client.manifests[artifact.digest] = artifact.manifest  # pushed before, but its tag was not (an interrupted push)
    tag = referrers.fallback_tag(SUBJECT.digest)
    assert referrers.attach(client, "r", artifact) == referrers.Attached(artifact.digest, tag, True)
    assert client.puts == [tag]


@pytest.mark.parametrize("kind", [{"api": True}, {"answers_subject": True}])
def test_attach_on_a_registry_with_the_api_writes_no_fallback_tag(sbom, kind):
    client = _FakeClient(**kind)
    artifact = referrers.sbom_artifact(SUBJECT, sbom)
    assert referrers.attach(client, "r", artifact) == referrers.Attached(artifact.digest, referrers.VIA_API, True)
    assert client.puts == [artifact.digest]


# -- the client's referrers calls, against registries with and without the API ---------------------


class _ReferrersApi(BaseHTTPRequestHandler):
    """Answers the referrers API with a one-entry index and a manifest PUT with OCI-Subject."""

    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()

    def do_GET(self):
        if "/referrers/sha256:" not in self.path:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", OCI_INDEX)
        self.send_header("Content-Length", str(len(self.index)))
        self.end_headers()
        self.wfile.write(self.index)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(201)
        self.send_header("OCI-Subject", json.loads(body)["subject"]["digest"])
        self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_client_sees_the_referrers_api_and_the_oci_subject_header(sbom):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReferrersApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = RegistryClient(f"http://127.0.0.1:{server.server_address[1]}")
        found = client.referrers("r", SUBJECT.digest)
        assert found is not None and found.body == _ReferrersApi.index and found.media_type == OCI_INDEX
        artifact = referrers.sbom_artifact(SUBJECT, sbom)
        assert client.push_artifact("r", artifact.digest, OCI_MANIFEST, artifact.manifest) == SUBJECT.digest
    finally:
        server.shutdown()
        server.server_close()


def test_the_local_registry_has_no_referrers_api_and_a_missing_tag_is_none(registry):
    client = RegistryClient(registry.url)
    config = client.push_blob("ref/none", b"{}")
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [],
        }
    ).encode()
    digest = client.push_manifest("ref/none", Digest.of(manifest), OCI_MANIFEST, manifest)
    assert client.referrers("ref/none", digest) is None
    assert client.find_manifest("ref/none", referrers.fallback_tag(digest)) is None
    assert client.find_manifest("ref/none", digest).body == manifest
