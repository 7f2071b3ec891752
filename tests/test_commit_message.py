"""The branch commit message: the exact bytes publish has always written (commit ids depend on them), read back."""

from states import make_state

from lambdaimages.commit_message import CommitMessage

INDEX = "sha256:" + "1" * 64
X86 = "sha256:" + "a" * 64
ARM = "sha256:" + "b" * 64

# The bytes of the message as publish wrote it before the type existed (branches.commit_message).
WRITTEN = (
    "Update source for python3.12 image\n"
    "\n"
    "Upstream: public.ecr.aws/lambda/python:3.12\n"
    f"Index: {INDEX}\n"
    f"x86_64: {X86}\n"
    f"arm64: {ARM}\n"
)


def _states(index: str | None = INDEX) -> dict:
    return {
        "x86_64": make_state(architecture="x86_64", index_digest=index, manifest_digest=X86),
        "arm64": make_state(architecture="arm64", index_digest=index, manifest_digest=ARM),
    }


def test_format_writes_the_published_bytes():
    assert CommitMessage.of("python3.12", _states()).format() == WRITTEN


def test_without_an_index_there_is_no_index_line():
    text = CommitMessage.of("python3.12", _states(index=None)).format()
    assert text == WRITTEN.replace(f"Index: {INDEX}\n", "")
    assert CommitMessage.parse(text).indexes == ()


def test_distinct_indexes_are_sorted_and_written_once():
    states = _states()
    states["arm64"] = make_state(architecture="arm64", index_digest="sha256:" + "0" * 64, manifest_digest=ARM)
    text = CommitMessage.of("python3.12", states).format()
    assert text.count("Index: ") == 2
    assert CommitMessage.parse(text).indexes == ("sha256:" + "0" * 64, INDEX)


def test_parse_reads_back_what_format_wrote():
    message = CommitMessage.parse(WRITTEN)
    manifests = {"x86_64": X86, "arm64": ARM}
    assert message == CommitMessage("python3.12", "public.ecr.aws/lambda/python:3.12", (INDEX,), manifests)
    assert list(message.manifests) == ["x86_64", "arm64"]
    assert message.format() == WRITTEN


def test_parse_of_another_commit_names_nothing():
    message = CommitMessage.parse("Initial commit\n\nsome text\n")
    assert (message.runtime, message.reference, message.indexes, message.manifests) == (None, None, (), {})
