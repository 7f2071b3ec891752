"""The failures a user can act on, one type each; every message names what it is about."""

from __future__ import annotations

import re
import traceback
from typing import Self


class ProjectError(Exception):
    """Base of every foreseeable failure: printed as one line, never as a traceback.

    The context is data, filled in as the error passes up the pipeline and formatted once by `str()`:
    `<runtime> <arch> (<reference>) <where>: <detail>`, each part only when known. `where` names the thing
    the detail is about inside the image (a layer, a file) or on disk (`runtimes.yaml:12`, a clone);
    `reference` is the upstream image. Raisers pass what they know as these fields and never spell it
    into `detail`. `cause` is the part shared by
    every task the same fault stops (a registry that is down), so that a run reports it once, not once per
    runtime.
    """

    def __init__(
        self,
        detail: str,
        *,
        runtime: str | None = None,
        arch: str | None = None,
        reference: str | None = None,
        where: str | None = None,
        cause: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.runtime, self.arch, self.reference, self.where = runtime, arch, reference, where
        self.cause = cause

    def within(
        self,
        *,
        runtime: str | None = None,
        arch: str | None = None,
        reference: str | None = None,
        where: str | None = None,
    ) -> Self:
        """The same error, with the context an outer caller knows; what the raiser already set is kept."""
        self.runtime = self.runtime or runtime
        self.arch = self.arch or arch
        self.reference = self.reference or reference
        self.where = self.where or where
        return self

    def __str__(self) -> str:
        head = label(runtime=self.runtime, arch=self.arch, reference=self.reference, where=self.where)
        return f"{head}: {self.detail}" if head else self.detail


def cause_chain(error: BaseException) -> str:
    """What led to `error`, for a log: the traceback of its cause chain (empty when it has no cause), with every
    URL's query cut off (a presigned blob URL carries a signature)."""
    if error.__cause__ is None:
        return ""
    return re.sub(r"\?[\w.~%-]+=[^\s'\")]*", "?...", "".join(traceback.format_exception(error)))


def label(
    *, runtime: str | None = None, arch: str | None = None, reference: str | None = None, where: str | None = None
) -> str:
    """How messages name what they are about: `<runtime> <arch> (<reference>) <where>`, the known parts."""
    parts = [runtime, arch, f"({reference})" if reference else None, where]
    return " ".join(part for part in parts if part)


class CatalogError(ProjectError):
    """The catalog file is malformed: the message names file, line and runtime."""


class RegistryError(ProjectError):
    """A registry answered with an error, or not in a usable way; `status` is the HTTP status of the answer that
    failed, when one did (None: no answer, or one that was not usable)."""

    status: int | None = None

    def answered(self, status: int) -> Self:
        """The same error, with the HTTP status of the registry's answer."""
        self.status = status
        return self


class RegistryUnreachable(RegistryError):
    """No connection to the registry could be made (refused, DNS, timeouts).

    A resolve that meets it goes on from the snapshot on disk when there is one; when it cannot (or must not:
    `strict=1`), `registry` names upstream and `snapshot` when the snapshot on disk was written (None: none),
    for the run's closing hint.
    """

    registry: str | None = None
    snapshot: str | None = None

    def offline(self, *, registry: str, snapshot: str | None) -> Self:
        """The same error, saying which upstream could not be polled and what snapshot the run had without it."""
        self.registry, self.snapshot = registry, snapshot
        return self


class DigestMismatch(RegistryError):
    """Bytes from the registry do not hash to the digest they were asked for.

    `expected` and `actual` are the digests (`actual` None when the size was wrong), `received` the bytes read.
    """

    def __init__(
        self,
        detail: str,
        *,
        expected: str | None = None,
        actual: str | None = None,
        received: int | None = None,
        **context: str | None,
    ) -> None:
        super().__init__(detail, **context)
        self.expected, self.actual, self.received = expected, actual, received


class CredentialsError(RegistryError):
    """Credentials for a registry are misconfigured (environment, Docker config.json, credential helper)."""


class RenderError(ProjectError):
    """An upstream config value that no Dockerfile can express."""


class EngineError(ProjectError):
    """The Docker engine is unreachable or a build or run failed."""


class OutputError(ProjectError):
    """The output folder cannot be written, or another run holds it."""


class SnapshotMissing(OutputError):
    """A task needs a runtime's snapshot (its states, tarballs) and it is not on disk: the message names the task
    that makes it."""


class PublishError(ProjectError):
    """A branch cannot be committed or pushed: no repository set, or git / git-lfs failed."""


class BranchError(ProjectError):
    """A clone is not a published branch: no snapshot commit, or its commit, README and the manifest asked for
    disagree."""


class UsageError(ProjectError):
    """A task was asked for something it cannot do as given: a missing or malformed command-line variable
    (`to=`, `clone=`) or push target."""


class ImageError(ProjectError):
    """An image to check cannot be read: the engine has no such image, or a file is not a docker-archive."""
