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


class WriteError(MedmtlError):
    """A result cannot be written (full disk, read-only, no permission...): it stops the run,
    since every following write would fail the same way."""


class Stopped(BaseException):
    """A signal stopped the command (a scheduler's SIGTERM, Ctrl+C...): not a mistake, and not
    an :class:`Exception`, so that no ``except Exception`` swallows it on its way out. Raised by
    the handler of :func:`medmtl.cli.stop_on_signals`; the code it passes through says what
    stays on disk (:meth:`keeping`)."""

    def __init__(self, signum: int, kept: str = "") -> None:
        self.signum = int(signum)
        self.kept = kept
        super().__init__(str(self))

    def __str__(self) -> str:
        import signal

        name = signal.Signals(self.signum).name
        return f"stopped by {name}" + (f"; {self.kept}" if self.kept else "")

    @property
    def status(self) -> int:
        """The exit status of a process a signal ended: 128 + the signal's number."""
        return 128 + self.signum

    def keeping(self, kept: str) -> Stopped:
        """The same stop, saying what finished before it and where it is."""
        return Stopped(self.signum, kept)


# errno -> what the user reads (the rest: the system's own words)
WRITE_CAUSES = {
    28: "no space left on the device; free some space or write elsewhere",  # ENOSPC
    122: "the disk quota is exceeded; free some space or write elsewhere",  # EDQUOT
    30: "the file system is read-only; write elsewhere",  # EROFS
    13: "permission denied; choose a folder you can write to",  # EACCES
    1: "permission denied; choose a folder you can write to",  # EPERM
    36: "the name is too long for the file system; use a shorter folder or file name",
    21: "a folder is in the way where the file should be; move it or write elsewhere",  # EISDIR
    20: "a file is in the way where a folder should be; move it or write elsewhere",  # ENOTDIR
    17: "a file is in the way where a folder should be; move it or write elsewhere",  # EEXIST
}


# errnos that only a write gives (a full or read-only disk): a library's own write (Lightning's
# checkpoints, W&B, matplotlib) that fails so is reported as medmtl's own are
DISK_ERRNOS = (28, 122, 30)  # ENOSPC, EDQUOT, EROFS


def disk_error(exc: BaseException, where: object = None) -> WriteError | None:
    """``exc`` as one :class:`WriteError` line when it is a write refused by the disk (full,
    over quota, read-only), whoever wrote; else None. ``where`` (the run's folder) is named
    instead of the file, which a library may have given a temporary name."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        return write_error(where or exc.filename or "a result", exc)
    return None


def write_error(path: object, exc: OSError) -> WriteError:
    """One line for a failed write: the path and the cause in words."""
    cause = WRITE_CAUSES.get(exc.errno or -1) or (exc.strerror or str(exc))
    return WriteError(f"{path}: cannot write it: {cause}.")


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
