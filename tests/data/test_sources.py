"""The registry of data sources, and data=multi as a data module that holds data modules."""

from __future__ import annotations

import pytest

from medmtl.data.build import datamodule_from_config
from medmtl.data.datamodule import CasesDataModule, MedDataModule
from medmtl.data.multi import MultiDataModule
from medmtl.data.sources import SOURCES, DataSource, source_of
from medmtl.errors import ConfigError
from medmtl.settings.data import DataSettings


def test_every_source_a_data_config_may_name_is_registered():
    # the data schema's sources (conf/data/*.yaml) and the registry agree
    assert set(SOURCES) == {"folder", "phantom", "manifest", "busbra"}
    assert DataSettings().source in SOURCES
    assert SOURCES["phantom"].generated and SOURCES["phantom"].classes is not None
    assert SOURCES["manifest"].needs == ("manifest",)


@pytest.mark.parametrize(
    "source, message",
    [
        (DataSource(source="dicomweb"), "data.source='dicomweb' is unknown; choose one of folder"),
        (DataSource(source="folder"), "data.root is not set for data=busi"),
        (DataSource(source="busbra", name="busbra"), "data.root is not set for data=busbra"),
        (DataSource(source="phantom", root="/x"), "data.root=/x: data=busi does not read"),
        (DataSource(source="manifest", root="/x"), "its images are listed in data.manifest"),
        (DataSource(source="manifest"), "data.manifest is not set"),
    ],
)
def test_a_source_refuses_what_it_cannot_read_before_any_file(source, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        source_of(source)


def test_the_data_module_reads_through_the_registry(tmp_path):
    dm = MedDataModule.from_config({"source": "phantom", "name": "phantom",
                                    "phantom": {"counts": {"normal": 3, "benign": 3,
                                                           "malignant": 3}, "size": 64},
                                    "image_size": 64, "cache_dir": str(tmp_path)})  # fmt: skip
    assert dm.kind is SOURCES["phantom"] and dm.classes == SOURCES["phantom"].classes
    index = dm.build_index()
    assert len(index.cases) == 9 and {c.dataset for c in index.cases} == {"phantom"}


def test_multi_holds_data_modules_instead_of_being_one(tmp_path):
    phantom = {"source": "phantom", "phantom": {"size": 64}}
    dm = datamodule_from_config({
        "source": "multi", "name": "multi", "classes": ["normal", "benign", "malignant"],
        "sets": {"a": phantom, "b": {**phantom, "phantom": {"size": 64, "seed": 1}}},
        "image_size": 64, "cache_dir": str(tmp_path),
    })  # fmt: skip
    assert isinstance(dm, MultiDataModule) and isinstance(dm, CasesDataModule)
    assert not isinstance(dm, MedDataModule)  # no single source to index or audit
    assert all(isinstance(s, MedDataModule) for s in dm.sets.values()) and len(dm.sets) == 2
    assert not hasattr(dm, "build_index")
