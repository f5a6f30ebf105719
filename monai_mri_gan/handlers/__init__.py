"""Ignite handlers for GAN training: adaptive augmentation, EMA, sample grids, checkpoints, resume, a divergence
guard and tracking."""

from .augmentation import AdaptiveAugmentation
from .checkpoint import GanCheckpointSaver, ResumeFromCheckpoint
from .cohort import CohortSummaryWriter
from .divergence import DivergenceGuard
from .ema import GeneratorEMA, ema_copy
from .evaluation import BestCheckpointSaver, EvaluationReportWriter, PainterReportWriter
from .samples import PaintedGridSaver, SampleGridSaver, hole_picture, sample_grid, save_grid_png, tile_rows
from .tracking import describe_tracked_run, every_n

__all__ = [
    "AdaptiveAugmentation",
    "BestCheckpointSaver",
    "CohortSummaryWriter",
    "DivergenceGuard",
    "EvaluationReportWriter",
    "GanCheckpointSaver",
    "GeneratorEMA",
    "ResumeFromCheckpoint",
    "PaintedGridSaver",
    "PainterReportWriter",
    "SampleGridSaver",
    "describe_tracked_run",
    "ema_copy",
    "every_n",
    "hole_picture",
    "sample_grid",
    "save_grid_png",
    "tile_rows",
]
