"""Time-to-target: run a tuner until its incumbent is within a fraction of the oracle gap.

The *oracle gap* of a task instance is ``F(init) - F*`` (:class:`hpo_bench.analysis.oracle.OracleResult`):
how much there is to gain from where gradient tuners start. A tuner reaches the target
``frac`` when its incumbent (lowest observed validation loss) has ``F - F* <= frac * gap``,
with ``F`` the incumbent's ``val_loss_ref`` (validation loss at the reference inner solve,
measured with the clock paused). Used by the benchmarks and by ``hpo-bench sweep``.
"""

from __future__ import annotations

import math
from typing import Any

from ..core.records import Budget, Recorder

__all__ = ["TargetRecorder", "time_to_target"]


class TargetRecorder(Recorder):
    """A :class:`Recorder` that stops the tuner once its incumbent is within ``threshold`` of ``f_star``.

    Attributes:
        reached_at: the first row that reached the target, or ``None``.
    """

    def __init__(self, *args: Any, f_star: float, threshold: float, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.f_star, self.threshold = f_star, threshold
        self.inc_val = math.inf
        self.reached_at: dict | None = None

    def record(self, **kw: Any) -> str:
        status = super().record(**kw)
        row = self.rows[-1]
        if math.isfinite(row["val_loss"]) and row["val_loss"] < self.inc_val:
            self.inc_val = row["val_loss"]
            if self.reached_at is None and row["val_loss_ref"] - self.f_star <= self.threshold:
                self.reached_at = row
                self.request_stop("target")
        return status


def time_to_target(task, oracle, tuner, budget: Budget, *, frac: float, seed: int = 0) -> TargetRecorder:
    """Run ``tuner`` (an instance) on ``task`` until ``frac`` of ``oracle``'s gap is left, or out of ``budget``."""
    rec = TargetRecorder(task, budget, meta={}, f_star=oracle.val_loss, threshold=frac * oracle.gap)
    rec.start()
    tuner.run(task, rec, seed=seed)
    return rec
