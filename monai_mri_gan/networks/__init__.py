"""Generators and discriminators of 2D MRI slices, unconditional and class-conditional."""

from __future__ import annotations

from .discriminator import SliceDiscriminator, minibatch_stddev
from .generator import (
    ConditionalBatchNorm2d,
    SkipLayerExcitation,
    SliceGenerator,
    feature_channels,
    init_dcgan_weights,
    seeded_latents,
)
from .painter import LesionPainterDiscriminator, LesionPainterGenerator
from .recorded import RecordsArguments
from .whole_slice import build_networks

__all__ = [
    "ConditionalBatchNorm2d",
    "LesionPainterDiscriminator",
    "LesionPainterGenerator",
    "RecordsArguments",
    "SliceDiscriminator",
    "SkipLayerExcitation",
    "SliceGenerator",
    "build_networks",
    "feature_channels",
    "init_dcgan_weights",
    "minibatch_stddev",
    "seeded_latents",
]
