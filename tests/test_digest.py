"""The digest value type and the one verifying reader: formats, and a wrong size or digest found at end of stream."""

import hashlib
import io

import pytest

from lambdaimages.digest import Digest, Reader, Verifier, is_sha256, verify
from lambdaimages.errors import DigestMismatch

DATA = b"layer bytes\n" * 1000
HEX = hashlib.sha256(DATA).hexdigest()


def test_of_from_hex_and_hex_round_trip():
    digest = Digest.of(DATA)
    assert digest == f"sha256:{HEX}"
    assert isinstance(digest, str)
    assert digest.hex == HEX
    assert Digest.from_hex(digest.hex) == digest
    assert Digest.parse(str(digest)) == digest
    assert str(digest) == f"sha256:{HEX}"


def test_parse_refuses_what_is_not_a_sha256_digest():
    for text in ("", HEX, f"sha256:{HEX[:-1]}", f"sha256:{HEX.upper()}", f"sha512:{HEX}", f"sha256:{HEX}x"):
        with pytest.raises(ValueError, match="not a sha256 digest"):
            Digest.parse(text)


def test_is_sha256():
    assert is_sha256(f"sha256:{HEX}")
    assert not is_sha256("3.12")
    assert not is_sha256("latest")


def test_verifier_passes_the_right_bytes_and_counts_them():
    verifier = Verifier(f"sha256:{HEX}", len(DATA), what="blob")
    assert b"".join(verifier.chunks([DATA[:100], DATA[100:]])) == DATA
    assert verifier.received == len(DATA)
    assert verifier.finish() == f"sha256:{HEX}"


def test_verifier_finds_a_wrong_digest_at_the_end():
    other = Digest.of(b"something else")
    verifier = Verifier(other, len(DATA), what="blob X")
    verifier.update(DATA)  # the size is right: nothing is said before the end
    with pytest.raises(DigestMismatch) as caught:
        verifier.finish()
    assert str(caught.value) == f"blob X hashes to sha256:{HEX}"
    assert (caught.value.expected, caught.value.actual, caught.value.received) == (other, f"sha256:{HEX}", len(DATA))


def test_verifier_finds_a_stream_cut_short():
    verifier = Verifier(f"sha256:{HEX}", len(DATA), what="blob X")
    with pytest.raises(DigestMismatch, match=rf"^blob X: expected {len(DATA)} bytes, received 100$") as caught:
        list(verifier.chunks([DATA[:100]]))
    assert caught.value.actual is None
    assert caught.value.received == 100


def test_verifier_finds_a_stream_that_runs_over_at_the_chunk_that_does():
    verifier = Verifier(f"sha256:{HEX}", 10, what="blob X")
    verifier.update(DATA[:10])
    with pytest.raises(DigestMismatch, match=r"^blob X: expected 10 bytes, received more$"):
        verifier.update(b"!")


def test_verifier_names_who_claimed_the_digest_and_carries_the_context():
    expected = Digest.of(b"other")
    verifier = Verifier(expected, what="uncompressed layer", claimed_by="the config", context={"runtime": "python"})
    verifier.update(DATA)
    with pytest.raises(DigestMismatch) as caught:
        verifier.finish()
    assert caught.value.detail == f"uncompressed layer hashes to sha256:{HEX}, the config says {expected}"
    assert caught.value.runtime == "python"
    assert str(caught.value).startswith("python: ")


def test_verifier_without_expected_only_computes():
    verifier = Verifier()
    verifier.update(DATA)
    assert verifier.finish() == Digest.of(DATA)


def test_verify_of_bytes():
    assert verify(DATA, f"sha256:{HEX}", "document") == f"sha256:{HEX}"
    with pytest.raises(DigestMismatch, match=rf"^document hashes to sha256:{HEX}$"):
        verify(DATA, Digest.of(b""), "document")


def test_reader_checks_at_the_end_of_the_stream():
    reader = Reader(io.BytesIO(DATA), Verifier(f"sha256:{HEX}", len(DATA)))
    assert reader.read(100) == DATA[:100]
    assert reader.digest is None  # not at the end yet
    assert reader.read() == DATA[100:]
    assert reader.read(10) == b""
    assert reader.digest == f"sha256:{HEX}"
    assert reader.read(10) == b""


def test_reader_raises_at_the_end_for_a_wrong_digest_or_size():
    wrong = Reader(io.BytesIO(DATA), Verifier(Digest.of(b"x"), what="f"))
    wrong.read()
    with pytest.raises(DigestMismatch, match=r"^f hashes to"):
        wrong.read(1)
    short = Reader(io.BytesIO(DATA), Verifier(f"sha256:{HEX}", len(DATA) + 1, what="f"))
    short.read()
    with pytest.raises(DigestMismatch, match=rf"^f: expected {len(DATA) + 1} bytes, received {len(DATA)}$"):
        short.read(1)
