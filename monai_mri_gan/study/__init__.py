"""A downstream study: does GAN augmentation help an imbalanced tumour / no-tumour slice classifier?

The experiment driver, on top of the library (nothing in the library imports it). The cohort is split **by
subject** into training, validation and test subjects (:mod:`~monai_mri_gan.study.splits`). For each condition (a
share of the training subjects and a tumour share of the training slices) a class-conditional GAN is trained by the
training bundle on that condition's real training slices only, refusing any validation or test subject
(:mod:`~monai_mri_gan.study.gan`), and a slice classifier is trained under each regime
(:mod:`~monai_mri_gan.study.regimes`) with the same budget of optimiser steps and several seeds. The classifier
keeps the weights that score best on the validation subjects and is scored once on the test subjects
(:mod:`~monai_mri_gan.study.scoring`). :func:`~monai_mri_gan.study.driver.run_study` does all of it, given the
training bundle's ``train.json``; :mod:`~monai_mri_gan.study.report` turns its result into a table and figures.
"""

from __future__ import annotations

from ..errors import SubjectLeakageError
from .cohort import slice_subjects, study_datalist
from .driver import run_study
from .gan import sample_synthetic, train_gan, training_config
from .regimes import STUDY_REGIMES, ClassicAugmentation, Regime, regime_training_set
from .report import gan_sample_figure, markdown_report, plot_study, summarise_runs, write_report
from .scoring import METRICS, binary_classification_metrics, tumour_probabilities
from .splits import SubjectSplit, check_no_leakage, split_subjects, subject_classes, training_subset

__all__ = [
    "METRICS",
    "STUDY_REGIMES",
    "ClassicAugmentation",
    "Regime",
    "SubjectLeakageError",
    "SubjectSplit",
    "binary_classification_metrics",
    "check_no_leakage",
    "gan_sample_figure",
    "markdown_report",
    "plot_study",
    "regime_training_set",
    "run_study",
    "sample_synthetic",
    "slice_subjects",
    "split_subjects",
    "study_datalist",
    "subject_classes",
    "summarise_runs",
    "train_gan",
    "training_config",
    "training_subset",
    "tumour_probabilities",
    "write_report",
]
