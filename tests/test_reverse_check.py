"""The reverse check: medmtl run under generated bad inputs must never end in a traceback.

The DICOM attributes are not listed here by hand: the reader is traced on the real samples, and
every attribute it touches (a new one too) is then broken in each way a writer breaks it —
removed, empty, zero, negative, text, several values, absurdly large (one the file lacks is
added with the broken value). Each broken file must be
read, or refused in one line naming the file (a ``DataError``); an area is a measured positive
number or unknown, never 0. Then the broken files go through ``medmtl-predict`` as a user runs
it: no traceback, and every file is in ``predictions.csv`` or ``not_predicted.csv``.

The options are enumerated the same way from their settings (``tests/cli/test_every_option.py``
for the key=value commands, ``tests/cli/test_train_options.py`` for medmtl-train's and
medmtl-data's groups): a new option is tried without anyone listing it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from medmtl.errors import DataError
from medmtl.inference.core import load_for_model
from medmtl.preprocess.pipeline import PreprocessSettings
from tests.conftest import DICOM_DIR, run_cli

SAMPLES = ("US1_UNCR.dcm", "CT_small.dcm", "gdcm-US-ALOKA-16.dcm")
# the ways a writer breaks a value (None: the attribute removed)
BREAKS = {"removed": None, "empty": "", "zero": "0", "negative": "-3", "text": "abc",
          "several": "2\\3\\4", "huge": "99999999"}  # fmt: skip
# value representations of numbers: a broken value is written in their place as text
NUMBERS = {"US", "SS", "UL", "SL", "FL", "FD", "OB", "OW", "OB or OW", "US or SS", "DS", "IS",
           "AT"}  # fmt: skip
# what pixel data is made of: breaking these is tried too, but the file cannot stay an image
NOT_TRACED = {"PixelData"}


@contextmanager
def traced() -> Iterator[set[str]]:
    """The DICOM keywords read from any dataset inside the block."""
    seen: set[str] = set()
    get, getattr_, contains = Dataset.get, Dataset.__getattr__, Dataset.__contains__

    def _note(key: object) -> None:
        if isinstance(key, str) and tag_for_keyword(key) is not None:
            seen.add(key)

    def traced_get(self, key, default=None):
        _note(key)
        return get(self, key, default)

    def traced_getattr(self, name):
        _note(name)
        return getattr_(self, name)

    def traced_contains(self, name):
        _note(name)
        return contains(self, name)

    Dataset.get, Dataset.__getattr__, Dataset.__contains__ = (
        traced_get,
        traced_getattr,
        traced_contains,
    )
    try:
        yield seen
    finally:
        Dataset.get, Dataset.__getattr__, Dataset.__contains__ = get, getattr_, contains


def _read(path: Path):
    """What medmtl-predict does with an input before the model: read, convert, resize."""
    return load_for_model(path, PreprocessSettings(), frame=0).meta


@pytest.fixture(scope="module")
def read_keywords() -> dict[str, set[str]]:
    """Per sample, the attributes the reader uses (traced on the sample as it is)."""
    out = {}
    for name in SAMPLES:
        with traced() as seen:
            _read(DICOM_DIR / name)
        out[name] = seen - NOT_TRACED
    return out


def _broken(src: Path, keyword: str, value: str | None, out: Path) -> Path:
    """``src`` with every ``keyword`` (also inside sequences) broken to ``value``, written as
    given even where the value breaks its VR: a broken file is what the reader must handle."""
    from pydicom import config

    ds = pydicom.dcmread(src)
    kept = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        tag = tag_for_keyword(keyword)
        items = [ds, *(i for e in ds.iterall() if e.VR == "SQ" for i in e.value)]
        if value is not None and tag >> 16 != 2 and not any(tag in item for item in items):
            ds.add_new(tag, "LO", "")  # one the file lacks is added, broken
        for item in items:
            if tag not in item:
                continue
            if value is None:
                del item[tag]
            elif value == "" and dictionary_VR(tag) == "SQ":
                item[tag].value = []  # a sequence without items
            elif dictionary_VR(tag) in NUMBERS | {"SQ"}:  # text, as a broken writer stores it
                del item[tag]
                item.add_new(tag, "LO", value)
            else:
                item[tag].value = value
        ds.save_as(out)
    finally:
        config.settings.writing_validation_mode = kept
    return out


def test_the_trace_finds_what_the_reader_uses(read_keywords):
    us = read_keywords["US1_UNCR.dcm"]
    assert {"Rows", "Columns", "PhotometricInterpretation", "BitsAllocated"} <= us, us
    assert len(set().union(*read_keywords.values())) >= 12


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom's own notes on the broken values
def test_every_attribute_read_broken_every_way_is_read_or_one_line(read_keywords, tmp_path):
    """Each broken file: read (an area is unknown or a positive measure) or a DataError that
    names the file; any other exception is a guard missing."""
    unguarded, tried = [], 0
    for name, keywords in read_keywords.items():
        for keyword in sorted(keywords):
            for how, value in BREAKS.items():
                path = _broken(DICOM_DIR / name, keyword, value, tmp_path / f"{keyword}-{how}.dcm")
                tried += 1
                try:
                    meta = _read(path)
                    area = meta.area_mm2(100)
                    if area is not None and not area > 0:
                        unguarded.append(f"{name} {keyword} {how}: area {area}")
                except DataError as exc:
                    if str(path) not in str(exc) or "\n" in str(exc):
                        unguarded.append(f"{name} {keyword} {how}: {exc}")
                except Exception as exc:  # noqa: BLE001  (what the check is for)
                    unguarded.append(f"{name} {keyword} {how}: {type(exc).__name__}: {exc}")
                path.unlink()
    assert tried > 150, tried
    assert not unguarded, "\n".join(unguarded)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_predict_on_broken_files_has_no_traceback_and_loses_no_file(
    read_keywords, tiny_ckpt, tmp_path
):
    folder = tmp_path / "broken"
    folder.mkdir()
    inputs = []
    keywords = sorted(read_keywords["US1_UNCR.dcm"])
    for i, keyword in enumerate(keywords):  # one break per attribute, in turn
        how = list(BREAKS)[i % len(BREAKS)]
        inputs.append(_broken(DICOM_DIR / "US1_UNCR.dcm", keyword, BREAKS[how],
                              folder / f"{keyword}-{how}.dcm"))  # fmt: skip
    out = tmp_path / "out"
    res = run_cli("predict", f"ckpt_path={tiny_ckpt}", f"input={folder}", f"out={out}")
    assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr[-3000:]
    listed = []
    for name in ("predictions.csv", "not_predicted.csv"):
        if (out / name).exists():
            listed += [Path(r["file"]).name for r in csv.DictReader((out / name).open())]
    assert sorted(listed) == sorted(p.name for p in inputs)
