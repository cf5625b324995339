"""medmtl-data: inspect a data set and manage its split file.

medmtl-data audit data=busi      counts, masks, bad files, near-duplicate groups (exit 1 if untrainable)
medmtl-data split data=busi      write the split file if missing (force=true to rewrite)
"""

import sys

import hydra
from omegaconf import DictConfig

from medmtl.cli import fail, run_or_exit
from medmtl.cli.options import hydra_main, hydra_usage
from medmtl.config import CONFIG_DIR

COMMANDS = ("audit", "split")


def _run(cfg: DictConfig) -> int:
    from medmtl.workflows.data import audit_data, write_split

    if cfg.command == "audit":
        return 1 if audit_data(cfg.data).fatal else 0
    write_split(cfg.data, force=bool(cfg.force))
    return 0


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="data_tool")
def _main(cfg: DictConfig) -> None:
    sys.exit(run_or_exit(_run, cfg))


def _check(cfg: DictConfig) -> None:
    """Every data setting and the data set's source, before Hydra makes the run's folder (no
    file is read)."""
    from medmtl.workflows.data import one_data_set

    one_data_set(cfg.data)


def main() -> None:
    args = sys.argv[1:]
    if any(a in ("-h", "--help") for a in args):
        print(hydra_usage("medmtl-data", __doc__, "data_tool"))
        sys.exit(0)
    if not args or args[0] not in COMMANDS:
        print(__doc__.strip(), file=sys.stderr)
        fail(f"medmtl-data: the first argument must be one of {', '.join(COMMANDS)}.")
    sys.argv = [sys.argv[0], *args[1:], f"+command={args[0]}"]
    hydra_main("medmtl-data", __doc__, "data_tool", _main, check=_check)


if __name__ == "__main__":
    main()
