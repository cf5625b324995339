"""User-facing errors: one clear line naming the file or key, what is wrong and what to do."""

from __future__ import annotations

from collections.abc import Sequence


class MedmtlError(Exception):
    """A problem the user can fix (bad path, bad file, bad config value).

    Entry points print ``str(error)`` on one line and exit with status 2 instead of a traceback.
    """


class DataError(MedmtlError):
    """A data set or file cannot be used as it is."""


class ConfigError(MedmtlError):
    """A configuration value is unknown or out of range."""


def summarize(items: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` items joined with "; ", then "(and N more)" for the rest.

    Messages that list problems use it, so a long list stays one readable line and says how
    much was left out (the full list is where the message points: the audit, a CSV, a log).
    """
    items = [str(i) for i in items]
    more = f" (and {len(items) - shown} more)" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def open_fraction(value: object, key: str, what: str, example: float) -> float:
    """``value`` as a float strictly between 0 and 1 (an error rate, a share), or a one-line
    ConfigError naming ``key``, saying ``what`` is expected and giving an ``example``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not 0 < number < 1:
        raise ConfigError(f"{key}={value}: expected {what} between 0 and 1, e.g. {example}.")
    return number
