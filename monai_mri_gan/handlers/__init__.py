"""Ignite handlers for GAN training: EMA, sample grids, checkpoints, resume, a divergence guard and tracking."""

from .checkpoint import GanCheckpointSaver, ResumeFromCheckpoint
from .divergence import DivergenceGuard
from .ema import GeneratorEMA, ema_copy
from .evaluation import BestCheckpointSaver, EvaluationReportWriter
from .samples import PaintedGridSaver, SampleGridSaver, sample_grid, save_grid_png, tile_rows
from .tracking import describe_tracked_run, every_n

__all__ = [
    "BestCheckpointSaver",
    "DivergenceGuard",
    "EvaluationReportWriter",
    "GanCheckpointSaver",
    "GeneratorEMA",
    "ResumeFromCheckpoint",
    "PaintedGridSaver",
    "SampleGridSaver",
    "describe_tracked_run",
    "ema_copy",
    "every_n",
    "sample_grid",
    "save_grid_png",
    "tile_rows",
]
