"""Writing results so that a crash never leaves a half-written file under the final name, and
a write that fails (full disk, read-only, no permission, name too long, something in the way)
is one line naming the path and the cause (:class:`medmtl.errors.WriteError`)."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medmtl.errors import write_error


def _temporary(path: Path) -> Path:
    """A hidden name beside ``path``, unique per call (two threads or processes writing the same
    file never share it), ending with ``path``'s suffix (numpy and matplotlib pick the format
    by it)."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` only when the block succeeds.

    Write a file (or build a folder) at the yielded path; it is renamed over ``path`` at the
    end, and removed if the block fails. The temporary name is unique per call (two threads or
    processes writing the same file never share it), hidden, and ends with ``path``'s suffix so
    that writers that pick the format by extension (numpy, matplotlib) keep working.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:  # every write of medmtl ends here: one line, nothing half-written
        raise write_error(path, exc) from exc
    finally:
        # a read-only file system or a name too long: there is nothing to remove
        with contextlib.suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding, newline="")
    return Path(path)


class CsvRows:
    """A CSV written row by row, so that the rows already written survive a later failure.

    The rows go to a hidden file beside ``path``, flushed one by one; :meth:`close` moves it
    over ``path`` (a rename needs no space, so it works on a full disk too). A row whose
    write fails is cut off again: the file never ends in half a row. With ``keep_empty=False``
    a CSV that got no row is not written, and an older one at ``path`` is removed, since a
    stale list from an earlier run would mislead.
    """

    def __init__(self, path: str | Path, fieldnames: list[str], keep_empty: bool = True) -> None:
        self.path = Path(path)
        self.fieldnames = list(fieldnames)
        self.keep_empty = keep_empty
        self._tmp = _temporary(self.path)
        self._file: io.FileIO | None = None

    def _open(self) -> io.FileIO:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # unbuffered: nothing waits in a buffer to be half-written later, at close
            self._file = io.FileIO(self._tmp, "w")
            self._write(self.fieldnames)
        return self._file

    def _write(self, values: list) -> None:
        """One line, flushed; cut off again if it does not fit."""
        buf = io.StringIO()
        csv.writer(buf).writerow(values)
        data = memoryview(buf.getvalue().encode("utf-8"))
        try:
            file = self._open()
            end = file.tell()
            try:
                while data:  # a raw write may take only part of it
                    data = data[file.write(data) or 0 :]
            except OSError:
                file.truncate(end)  # freeing space needs none: no half row is left
                raise
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def add(self, row: dict) -> None:
        """Write one row (missing keys are empty cells, extra keys are ignored)."""
        self._write([row.get(k, "") for k in self.fieldnames])

    def close(self) -> Path:
        """Put the rows written so far at ``path``."""
        try:
            if self.keep_empty:
                self._open()  # the header alone, if no row came
            if self._file is not None:
                self._file.close()
                self._file = None
                os.replace(self._tmp, self.path)
            else:
                self.path.unlink(missing_ok=True)
        except OSError as exc:
            raise write_error(self.path, exc) from exc
        finally:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
        return self.path


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex, read a MiB at a time (provenance and names)."""
    import hashlib

    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def replace_section(path: str | Path, name: str, body: str, title: str = "") -> Path:
    """Replace (or append) the block between ``<!-- name:start -->`` and ``<!-- name:end -->``
    of a Markdown file, atomically; the rest of the file is kept. ``title`` starts a new file.

    The benchmarks and ``medmtl-tables --into`` write docs/benchmarks.md and docs/results.md
    this way, so every number there comes from the command written beside it.
    """
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else (f"# {title}\n" if title else "")
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    return atomic_write_text(path, text)


def ensure_output_dir(path: str | Path, option: str = "out") -> Path:
    """Create the output folder ``path`` (the value of ``option``) or say why it cannot be used.

    Refuses an existing file, a folder that cannot be created and one that is not writable,
    before any slow work starts.
    """
    from medmtl.errors import ConfigError

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option}={path} is an existing file; give a folder for the results.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".medmtl-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"{option}={path}: cannot write there ({exc.strerror or exc}); choose a folder you "
            "can write to."
        ) from exc
    return path
