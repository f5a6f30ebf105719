"""A downstream study: does synthetic data help a tumour detector (and segmenter) when tumour patients are scarce?

The experiment driver, on top of the library (nothing in the library imports it). The cohort is split **by
subject**, several times, into training, validation and test subjects (:mod:`~monai_mri_gan.study.splits`). At each
scarcity level ``k`` the training set keeps every healthy training subject and ``k`` tumour subjects; the lesion
painter (:mod:`~monai_mri_gan.study.gan`) sees only those, and its slices enter through the augmented datalist, read
as a user's MONAI pipeline reads it (:mod:`~monai_mri_gan.study.data`). Every regime
(:mod:`~monai_mri_gan.study.regimes`) trains a classifier and a segmenter (:mod:`~monai_mri_gan.study.segmenter`) at
the same budget, with validation-based early stopping, and is scored once on the test subjects
(:mod:`~monai_mri_gan.study.scoring`). :func:`~monai_mri_gan.study.driver.run_study` does all of it;
:mod:`~monai_mri_gan.study.statistics` turns its runs into intervals, paired differences, tables and a figure.
"""

from __future__ import annotations

from ..errors import SubjectLeakageError
from .cohort import slice_subjects, study_datalist
from .data import StudySlices, cohort_slices, datalist_slices, slice_chain
from .driver import NO_LESION_FLOOR, STUDY_SLICING, StudySettings, run_study
from .gan import bundle_config, train_bundle, write_training_datalist
from .journal import StudyJournal
from .regimes import (
    DEFAULT_REGIMES,
    DEFAULT_SEGMENTATION_REGIMES,
    STUDY_REGIMES,
    ClassicAugmentation,
    Regime,
    regimes_named,
)
from .scoring import CLASSIFICATION_METRICS, auroc, classification_metrics, no_lesion_floor, tumour_probabilities
from .segmenter import segment, segmentation_metrics, train_segmenter
from .splits import SubjectSplit, check_no_leakage, scarce_training_subjects, split_subjects, subject_classes
from .statistics import (
    budget_rows,
    markdown_tables,
    paired_differences,
    plot_study,
    summarise,
    t_interval,
    write_results,
)

__all__ = [
    "CLASSIFICATION_METRICS",
    "DEFAULT_REGIMES",
    "DEFAULT_SEGMENTATION_REGIMES",
    "NO_LESION_FLOOR",
    "STUDY_REGIMES",
    "STUDY_SLICING",
    "ClassicAugmentation",
    "Regime",
    "StudyJournal",
    "StudySettings",
    "StudySlices",
    "SubjectLeakageError",
    "SubjectSplit",
    "auroc",
    "bundle_config",
    "check_no_leakage",
    "classification_metrics",
    "cohort_slices",
    "datalist_slices",
    "budget_rows",
    "markdown_tables",
    "no_lesion_floor",
    "paired_differences",
    "plot_study",
    "regimes_named",
    "run_study",
    "scarce_training_subjects",
    "segment",
    "segmentation_metrics",
    "slice_chain",
    "slice_subjects",
    "split_subjects",
    "study_datalist",
    "subject_classes",
    "summarise",
    "t_interval",
    "train_bundle",
    "train_segmenter",
    "tumour_probabilities",
    "write_results",
    "write_training_datalist",
]
