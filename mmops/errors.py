"""One exception hierarchy. Every face translates these: the CLI prints one line and exits non-zero,
Airflow fails data errors without retry, the service answers 4xx."""


class MmopsError(Exception):
    """Base class for errors a user can act on."""


class ConfigError(MmopsError):
    """params.yaml, a domain pack or an environment setting is wrong."""


class NotFoundError(MmopsError):
    """A named thing (pack, domain, dataset version, model) does not exist."""


class BadInputError(MmopsError):
    """A file or a request is corrupt, truncated, of the wrong shape or encoding, or hostile."""


class ValidationFailedError(MmopsError):
    """A data-validation gate failed: retrying will not help until the data changes."""

    def __init__(self, message: str, failed: list[str] | None = None) -> None:
        super().__init__(message)
        self.failed = failed or []
