"""Ignite engines for GAN training (built on ``monai.engines``)."""

from .trainer import GanOutput, SliceGanTrainer, loss_items, prepare_slice_batch

__all__ = ["GanOutput", "SliceGanTrainer", "loss_items", "prepare_slice_batch"]

from .evaluator import (
    FEATURE_SPACES,
    LOWER_IS_BETTER,
    BestCheckpointSaver,
    EvaluationReportWriter,
    GanEvaluator,
    class_allocation,
    disjoint_halves,
    lower_is_better,
    metric_cmp_fn_for,
)

__all__ += [
    "FEATURE_SPACES",
    "LOWER_IS_BETTER",
    "BestCheckpointSaver",
    "EvaluationReportWriter",
    "GanEvaluator",
    "class_allocation",
    "disjoint_halves",
    "lower_is_better",
    "metric_cmp_fn_for",
]
