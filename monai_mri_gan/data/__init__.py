"""Data: discovery of DICOM series and volumes, datalists, readers, slice datasets and the demo cohort."""

from __future__ import annotations

import logging
import os

from .datasets import (
    CheckSameGridd,
    SliceCohort,
    SliceTensorDataset,
    class_balanced_sampler,
    find_data_error,
    slice_transforms,
)
from .demo import DEMO_CLASSES, demo_cohort, make_demo_cohort, render_demo_figure
from .discovery import build_datalist, discover_volumes, load_datalist, subject_id
from .readers import SimpleITKReader

__all__ = [
    "DEMO_CLASSES",
    "CheckSameGridd",
    "SimpleITKReader",
    "SliceCohort",
    "SliceTensorDataset",
    "build_datalist",
    "class_balanced_sampler",
    "demo_cohort",
    "discover_volumes",
    "find_data_error",
    "load_datalist",
    "make_demo_cohort",
    "render_demo_figure",
    "resolve_datalist",
    "slice_transforms",
    "subject_id",
]

logger = logging.getLogger(__name__)


def resolve_datalist(dataset_dir: str | os.PathLike | None = None, datalist: str | os.PathLike | None = None,
                     key: str = "training", on_error: str = "raise", demo_seed: int = 0) -> list[dict]:
    """The datalist a bundle runs on: the user's datalist or folder, or else the embedded demo cohort.

    Args:
        dataset_dir: folder of DICOM series and volumes (searched when ``datalist`` is None), or the base folder
            of a datalist's relative paths.
        datalist: a MONAI/Decathlon datalist JSON.
        key: the datalist section to read.
        on_error: "raise" or "skip" bad inputs found while searching a folder.
        demo_seed: seed of the demo cohort used when neither ``dataset_dir`` nor ``datalist`` is given.

    Returns:
        datalist items with ``image``, optional ``label`` and ``class``, and a pseudonymous ``subject``.
    """
    if dataset_dir is None and datalist is None:
        path = demo_cohort(seed=demo_seed)
        logger.info("no dataset_dir or datalist given: using the embedded demo cohort at %s", path.parent)
        return load_datalist(path)
    return build_datalist(dataset_dir=dataset_dir, datalist=datalist, key=key, on_error=on_error)
