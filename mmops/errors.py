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


def one_line(exc: Exception) -> str:
    """An exception as one line: pydantic's ValidationError as `field.path: message (got value)` for each
    error, `; `-joined (its own text spans lines and links its docs), anything else as its text."""
    errors = getattr(exc, "errors", None)
    if callable(errors) and type(exc).__name__ == "ValidationError":
        parts = []
        for e in errors(include_url=False):
            where = ".".join(str(x) for x in e.get("loc", ())) or "value"
            got = e.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            parts.append(f"{where}: {e.get('msg', '')}{shown}")
        return "; ".join(parts)
    return " ".join(str(exc).split())
