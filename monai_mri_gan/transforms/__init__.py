"""Intensity and slice transforms, MONAI style: array form ``X`` and dictionary form ``Xd``."""

from .intensity import (
    NORM_META_KEYS,
    HeadForegroundMask,
    RobustNormalise,
    RobustNormalised,
    head_foreground,
    invert_normalisation,
    normalisation_stats,
    otsu_threshold,
)
from .slices import (
    ExtractSlices,
    ExtractSlicesd,
    FitSlice,
    FitSliced,
    cut_slice,
    cut_slices,
    slice_to_volume_transform,
)

__all__ = [
    "NORM_META_KEYS",
    "ExtractSlices",
    "ExtractSlicesd",
    "FitSlice",
    "FitSliced",
    "HeadForegroundMask",
    "RobustNormalise",
    "RobustNormalised",
    "cut_slice",
    "cut_slices",
    "head_foreground",
    "invert_normalisation",
    "normalisation_stats",
    "otsu_threshold",
    "slice_to_volume_transform",
]
