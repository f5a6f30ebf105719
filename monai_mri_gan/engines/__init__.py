"""Ignite engines for GAN training (built on ``monai.engines``)."""

from .trainer import GanOutput, SliceGanTrainer, loss_items, prepare_slice_batch

__all__ = ["GanOutput", "SliceGanTrainer", "loss_items", "prepare_slice_batch"]
