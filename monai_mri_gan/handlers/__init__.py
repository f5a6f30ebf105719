"""Ignite handlers for GAN training: EMA, sample grids, checkpoints, resume and a divergence guard."""

from .checkpoint import (
    GanCheckpointSaver,
    RandomState,
    ResumeFromCheckpoint,
    RunConfig,
    latest_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    save_atomic,
)
from .divergence import DivergenceGuard, TrainingDiverged
from .ema import GeneratorEMA, ema_copy
from .evaluation import LOWER_IS_BETTER, BestCheckpointSaver, EvaluationReportWriter, lower_is_better, metric_cmp_fn_for
from .samples import SampleGridSaver, sample_grid, save_grid_png
from .tracking import describe_tracked_run

__all__ = [
    "LOWER_IS_BETTER",
    "BestCheckpointSaver",
    "EvaluationReportWriter",
    "lower_is_better",
    "metric_cmp_fn_for",
    "DivergenceGuard",
    "GanCheckpointSaver",
    "GeneratorEMA",
    "RandomState",
    "ResumeFromCheckpoint",
    "RunConfig",
    "SampleGridSaver",
    "TrainingDiverged",
    "describe_tracked_run",
    "ema_copy",
    "latest_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "sample_grid",
    "save_atomic",
    "save_grid_png",
]


def every_n(n: int):
    """An Ignite event filter ``(engine, event) -> bool`` that passes every ``n``-th event (e.g. for logging).

    Args:
        n: interval (>= 1).

    Raises:
        ValueError: when ``n < 1``.
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    return lambda engine, event: event % int(n) == 0


__all__.append("every_n")
