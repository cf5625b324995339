"""User-facing errors: one clear line naming the file or key, what is wrong and what to do."""

from __future__ import annotations


class MedmtlError(Exception):
    """A problem the user can fix (bad path, bad file, bad config value).

    Entry points print ``str(error)`` on one line and exit with status 2 instead of a traceback.
    """


class DataError(MedmtlError):
    """A data set or file cannot be used as it is."""


class ConfigError(MedmtlError):
    """A configuration value is unknown or out of range."""
