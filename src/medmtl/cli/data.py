"""medmtl-data: inspect a data set and manage its split file.

medmtl-data audit data=busi      counts, masks, bad files, near-duplicate groups (exit 1 if untrainable)
medmtl-data split data=busi      write the split file if missing (force=true to rewrite)
"""

import sys

import hydra
from omegaconf import DictConfig

from medmtl.cli import run_or_exit
from medmtl.config import CONFIG_DIR

COMMANDS = ("audit", "split")


def _run(cfg: DictConfig) -> int:
    from medmtl.data.audit import audit, format_report
    from medmtl.data.datamodule import MedDataModule

    dm: MedDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    if cfg.command == "audit":
        index = dm.build_index(strict=False)
        report = audit(index, dm.split_path(index.root), dm.dedup_threshold)
        print(format_report(report))
        return 1 if report.fatal else 0
    path = dm.split_path(dm.resolve_root())
    if path.exists() and cfg.force:
        path.unlink()
    dm.setup()
    print(f"split file: {path}")
    for s in ("train", "val", "test"):
        print(f"  {s}: {dm.split.count(s)} images")
    return 0


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data_tool")
def _main(cfg: DictConfig) -> None:
    sys.exit(run_or_exit(_run, cfg))


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        print(
            f"medmtl: error: first argument must be one of {', '.join(COMMANDS)}.", file=sys.stderr
        )
        sys.exit(2)
    sys.argv = [sys.argv[0], *args[1:], f"+command={args[0]}"]
    _main()


if __name__ == "__main__":
    main()
