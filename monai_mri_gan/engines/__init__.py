"""Ignite engines for GAN training and evaluation (built on ``monai.engines``)."""

from .evaluator import FEATURE_SPACES, GanEvaluator, class_allocation, disjoint_halves
from .trainer import GanOutput, SliceGanTrainer, prepare_slice_batch

__all__ = [
    "FEATURE_SPACES",
    "GanEvaluator",
    "GanOutput",
    "SliceGanTrainer",
    "class_allocation",
    "disjoint_halves",
    "prepare_slice_batch",
]
