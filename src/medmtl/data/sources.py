"""The registry of data sources: every kind of data set medmtl reads (``data.source``).

Each :class:`Source` says what its data config must name (a data folder, a manifest CSV, or
nothing: the phantom is generated), where its images are, and how its cases are indexed.
:class:`~medmtl.data.datamodule.MedDataModule` reads one data set through it, without
branching on the source's name; a new kind of data set is one entry here. ``multi`` (several
data sets as one) is not a source but a data module that holds data modules
(:class:`~medmtl.data.multi.MultiDataModule`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from medmtl.data.busbra import BusbraSplit, busbra_not_found, index_busbra
from medmtl.data.image_list import restrict
from medmtl.data.index import DatasetIndex, folders_not_found, index_class_folders
from medmtl.data.manifest import Columns, index_manifest
from medmtl.data.phantom import PHANTOM_CLASSES, ensure_phantom
from medmtl.errors import ConfigError
from medmtl.settings.data import DATA, Phantom

COMBINED = "multi"  # data=multi: several data sets, built by medmtl.data.build


@dataclass(frozen=True)
class DataSource:
    """Which data set: its name, where it is and its classes."""

    name: str = DATA.name
    source: str = DATA.source  # a key of SOURCES
    root: str | None = None  # the data folder (folder, busbra); the manifest's is its CSV's
    classes: tuple[str, ...] = tuple(DATA.classes)
    mask_optional_classes: tuple[str, ...] = ()  # their images may have no mask (empty mask)
    drop_empty_classes: bool = DATA.drop_empty_classes  # train without an empty class folder
    phantom: dict | None = None  # seed, size, counts of the generated phantom
    manifest: str | None = None  # data=manifest: the CSV that lists the data set
    columns: dict | None = None  # data=manifest: which column holds what (manifest.Columns)
    class_map: dict | None = None  # the data set's labels -> classes (None: the same names)
    busbra: dict | None = None  # data=busbra: which published folds (busbra.BusbraSplit)
    image_list: str | None = None  # class folders: only the images of this list (image_list.py)


@dataclass(frozen=True)
class Source:
    """A kind of data set: what its config names and how its images are found."""

    name: str
    # where the images are: the data folder (data.root), or not a folder the user gives
    # (generated, listed in a CSV): then data.root would be ignored and is refused
    reads_root: bool
    images: str  # how the images are found, for the messages
    find_root: Callable[[DataSource, Path], Path]  # (source, cache folder) -> the data folder
    index: Callable[[DataSource, Path, bool], DatasetIndex]  # (source, folder, strict)
    needs: tuple[str, ...] = ()  # further settings it cannot do without (data.<key>)
    # the error for a data folder that is not there (reads_root sources), checked up front
    not_found: Callable[[DataSource, Path], Exception] | None = None
    classes: tuple[str, ...] | None = None  # fixed classes (None: data.classes)
    generated: bool = False  # made on first use (prepare_data, on one process)

    def check(self, source: DataSource) -> None:
        """Refuse a data config this source cannot read, in one line, before any file is read."""
        if self.reads_root and not source.root:
            raise ConfigError(
                f"data.root is not set for data={source.name}; point it at the data folder."
            )
        if self.reads_root and Path(str(source.root)).expanduser().is_file():
            raise ConfigError(
                f"data.root={source.root} is a file; point it at the data folder (for "
                f"data={source.name}: the folder that holds the class folders or the data set)."
            )
        if self.reads_root and self.not_found is not None:
            root = Path(str(source.root)).expanduser()
            if not root.is_dir():
                raise self.not_found(source, root)
        if not self.reads_root and source.root:
            raise ConfigError(
                f"data.root={source.root}: data={source.name} does not read a data folder (its "
                f"images are {self.images}), so the setting would be ignored. To evaluate on "
                "another data set give it by name: medmtl-eval ckpt_path=<model> data=<busi|"
                "busbra|folder|manifest> data.root=<folder>."
            )
        if source.image_list and self.index is not _folders:
            raise ConfigError(
                f"data.image_list={source.image_list}: data={source.name}'s images are "
                f"{self.images}, not in class folders; an image list restricts class folders "
                "(data=busi, data=folder): drop it or list the images in a manifest."
            )
        if source.image_list and not Path(str(source.image_list)).expanduser().is_file():
            raise ConfigError(
                f"data.image_list={source.image_list}: no such file; point it at a class;id "
                "CSV (e.g. lists/curated_busi.csv) or set it to null."
            )
        for key in self.needs:
            if not getattr(source, key):
                raise ConfigError(
                    f"data.{key} is not set for data={source.name}; point it at the CSV file "
                    "that lists the images (docs/data.md)."
                )
            if Path(str(getattr(source, key))).expanduser().is_dir():
                raise ConfigError(
                    f"data.{key}={getattr(source, key)} is a folder; point it at the CSV file "
                    "that lists the images (docs/data.md)."
                )


def _root(source: DataSource, cache: Path) -> Path:
    return Path(str(source.root)).expanduser()


def _hint(source: DataSource) -> str:
    # BUSI's folder may also come from the environment
    if source.name == "busi":
        return "data.root (or the BUSI_ROOT environment variable)"
    return "data.root"


def _folders_not_found(source: DataSource, root: Path) -> Exception:
    return folders_not_found(root, _hint(source), source.classes)


def _folders(source: DataSource, root: Path, strict: bool) -> DatasetIndex:
    classes = PHANTOM_CLASSES if source.source == "phantom" else source.classes
    index = index_class_folders(
        root, classes, source.mask_optional_classes, _hint(source), strict,
        source.drop_empty_classes,
    )  # fmt: skip
    if source.image_list:
        index = restrict(index, source.image_list)
    index.cases = [replace(c, dataset=source.name) for c in index.cases]
    return index


def _phantom_root(source: DataSource, cache: Path) -> Path:
    settings = Phantom.from_dict(source.phantom)
    return ensure_phantom(cache, settings.seed, settings.counts, settings.size)


def _manifest(source: DataSource, root: Path, strict: bool) -> DatasetIndex:
    return index_manifest(
        source.manifest,
        source.classes,
        Columns.from_dict(source.columns),
        source.class_map,
        source.mask_optional_classes,
        strict,
        dataset=source.name,
    )


def _busbra(source: DataSource, root: Path, strict: bool) -> DatasetIndex:
    return index_busbra(
        root,
        source.classes,
        BusbraSplit.from_dict(source.busbra),
        source.class_map,
        strict,
        dataset=source.name,
    )


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "folder", True, "in class folders", _root, _folders, not_found=_folders_not_found
        ),  # fmt: skip
        Source(
            "phantom",
            False,
            "generated",
            _phantom_root,
            _folders,
            classes=PHANTOM_CLASSES,
            generated=True,
        ),
        Source(
            "manifest",
            False,
            "listed in data.manifest",
            lambda s, cache: Path(str(s.manifest)).expanduser().resolve().parent,
            _manifest,
            needs=("manifest",),
        ),
        Source(
            "busbra",
            True,
            "in BUS-BRA's layout",
            _root,
            _busbra,
            not_found=lambda source, root: busbra_not_found(root),
        ),  # fmt: skip
    )
}


def source_of(source: DataSource) -> Source:
    """The registry's entry for ``source`` (checked), or one line naming the valid ones."""
    spec = SOURCES.get(source.source)
    if spec is None:
        names = ", ".join([*SOURCES, COMBINED])
        raise ConfigError(f"data.source={source.source!r} is unknown; choose one of {names}.")
    spec.check(source)
    return spec
