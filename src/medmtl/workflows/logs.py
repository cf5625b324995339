"""Log lines that are not the user's concern, silenced where they arise.

Only messages nobody can act on go: a library's advertisement, a deprecation inside a library,
the same line printed twice, and warnings about a folder that medmtl itself reuses on purpose
when it resumes a run. Everything that says something about the run stays. A step whose
result may still be undone holds its lines back until it succeeds (:func:`logs_on_success`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# Lightning prints every message twice under Hydra: once through the console handler the
# `lightning` package adds on import, once through the root logger Hydra configured
_LIGHTNING = "lightning"
# the loggers Lightning gives a console handler of its own on import
_LIGHTNING_LOGGERS = (_LIGHTNING, "lightning.pytorch", "lightning.fabric")
# Lightning's rank-zero info channel, which also carries "💡 Tip: ... litlogger"
_RANK_ZERO = "lightning.pytorch.utilities.rank_zero"


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_third_party(resuming: bool = False) -> None:
    """Silence what is not actionable (idempotent; call before a Trainer is built).

    ``resuming``: a resumed run continues in its own folder, so Lightning's warnings that the
    log and checkpoint folders are not empty describe what medmtl intends (the earlier CSV log
    has been set aside and is merged back).
    """
    # a deprecation inside Lightning's use of torch.utils._pytree, on every run
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # Lightning's hint, twice a run wherever SLURM is installed, to prefix the command with
    # srun: medmtl's SLURM launcher does that when the user asks for the cluster
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")
    # torchmetrics on a split without normal images (an external data set of lesions only):
    # the AUROC of that class is undefined and medmtl reports it as such (null)
    warnings.filterwarnings("ignore", message=r".*No positive samples in targets")
    warnings.filterwarnings("ignore", message=r".*No negative samples in targets")
    rank_zero = logging.getLogger(_RANK_ZERO)
    if not any(isinstance(f, _DropTips) for f in rank_zero.filters):
        rank_zero.addFilter(_DropTips())
    if logging.getLogger().handlers:  # Hydra (or the user) set up logging: let it print once
        for name in _LIGHTNING_LOGGERS:
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            # imported before logging was set up (medmtl checks the settings before Hydra
            # runs), lightning.pytorch and lightning.fabric stop at their own handler: let their
            # lines reach Hydra's console and run log instead
            logger.propagate = True
    if resuming:
        warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists")
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not")


@contextmanager
def logs_on_success(name: str) -> Iterator[None]:
    """Hold back logger ``name``'s records while the body runs; emit them only if it ends
    without an exception (advice about a result the caller may still undo)."""
    logger = logging.getLogger(name)
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)
    for record in held:
        logger.handle(record)
