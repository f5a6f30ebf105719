"""Data: discovery of DICOM series and volumes, datalists, readers, slice datasets and the demo cohort."""

from __future__ import annotations

from .datasets import (
    CheckSameGridd,
    SliceCohort,
    SliceTensorDataset,
    class_balanced_sampler,
    find_data_error,
    slice_transforms,
    volume_transforms,
)
from .demo import DEMO_CLASSES, demo_cohort, make_demo_cohort, render_demo_figure
from .discovery import Datalist, build_datalist, discover_volumes, load_datalist, resolve_datalist, subject_id
from .lesion_crops import LesionCrops
from .placement import healthy_positions, place_in_bases
from .readers import SimpleITKReader

__all__ = [
    "DEMO_CLASSES",
    "CheckSameGridd",
    "Datalist",
    "LesionCrops",
    "SimpleITKReader",
    "SliceCohort",
    "SliceTensorDataset",
    "build_datalist",
    "class_balanced_sampler",
    "demo_cohort",
    "discover_volumes",
    "find_data_error",
    "healthy_positions",
    "load_datalist",
    "make_demo_cohort",
    "place_in_bases",
    "render_demo_figure",
    "resolve_datalist",
    "slice_transforms",
    "subject_id",
    "volume_transforms",
]
