"""Ignite engines for GAN training and evaluation (built on ``monai.engines``)."""

from .evaluator import FEATURE_SPACES, GanEvaluator, class_allocation
from .painter_evaluator import HELDOUT_DEMO_SEED, LesionPainterEvaluator
from .trainer import GanOutput, SliceGanTrainer, StepLosses, prepare_lesion_batch, prepare_slice_batch

__all__ = [
    "FEATURE_SPACES",
    "GanEvaluator",
    "GanOutput",
    "HELDOUT_DEMO_SEED",
    "LesionPainterEvaluator",
    "SliceGanTrainer",
    "StepLosses",
    "class_allocation",
    "prepare_lesion_batch",
    "prepare_slice_batch",
]
