"""Learning-rate schedules over a run's epochs (``conf/scheduler``), stepped once per epoch.

Each takes the optimizer and the run's ``max_epochs``, so a resumed run with a longer
``trainer.max_epochs`` gets the schedule of its new length.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR, StepLR


def _with_warmup(optimizer: Optimizer, main: LRScheduler, warmup: int) -> LRScheduler:
    """``warmup`` epochs rising linearly from a tenth of the learning rate, then ``main``."""
    if warmup <= 0:
        return main
    ramp = LinearLR(optimizer, start_factor=0.1, total_iters=warmup)
    return SequentialLR(optimizer, [ramp, main], [warmup])


def cosine(
    optimizer: Optimizer, max_epochs: int, warmup_epochs: int = 0, min_lr: float = 0.0
) -> LRScheduler:
    """Linear warm-up, then cosine decay to ``min_lr`` by the last epoch."""
    epochs = max(1, int(max_epochs))
    warmup = min(int(warmup_epochs), epochs - 1)
    main = CosineAnnealingLR(optimizer, T_max=max(1, epochs - warmup), eta_min=float(min_lr))
    return _with_warmup(optimizer, main, warmup)


def step(
    optimizer: Optimizer,
    max_epochs: int,
    step_size: int = 10,
    gamma: float = 0.1,
    warmup_epochs: int = 0,
) -> LRScheduler:
    """Linear warm-up, then the learning rate times ``gamma`` every ``step_size`` epochs."""
    warmup = min(int(warmup_epochs), max(0, int(max_epochs) - 1))
    main = StepLR(optimizer, step_size=int(step_size), gamma=float(gamma))
    return _with_warmup(optimizer, main, warmup)
