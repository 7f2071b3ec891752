"""The failures a user can act on, one type each; every message names what it is about."""


class ProjectError(Exception):
    """Base of every foreseeable failure: printed as one line, never as a traceback.

    `cause` is the part of the message shared by every task the same fault stops (a registry that
    is down), so that a run reports it once, not once per runtime.
    """

    def __init__(self, message: str, cause: str | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class CatalogError(ProjectError):
    """The catalog file is malformed: the message names file, line and runtime."""


class RegistryError(ProjectError):
    """A registry answered with an error, or not in a usable way."""


class RegistryUnreachable(RegistryError):
    """No connection to the registry could be made (refused, DNS, timeouts)."""


class DigestMismatch(RegistryError):
    """Bytes from the registry do not hash to the digest they were asked for."""


class CredentialsError(RegistryError):
    """Credentials for a registry are misconfigured (environment, Docker config.json, credential helper)."""


class RenderError(ProjectError):
    """An upstream config value that no Dockerfile can express."""


class EngineError(ProjectError):
    """The Docker engine is unreachable or a build or run failed."""


class OutputError(ProjectError):
    """The output folder cannot be written, or another run holds it."""


class PublishError(ProjectError):
    """A branch cannot be committed or pushed: no repository set, or git / git-lfs failed."""
