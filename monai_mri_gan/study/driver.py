"""The study's driver: split, conditions, one GAN per condition, every regime and seed, test metrics."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import SliceCohort
from ..metrics.classifier import train_slice_classifier
from ..runs import generator_from_checkpoint
from .cohort import slice_subjects
from .gan import sample_synthetic, train_gan, training_config
from .regimes import STUDY_REGIMES, ClassicAugmentation, Regime, regime_training_set
from .report import summarise_runs
from .scoring import binary_classification_metrics, tumour_probabilities
from .splits import check_no_leakage, split_subjects, subject_classes, training_subset

__all__ = ["run_study"]

logger = logging.getLogger(__name__)


def run_study(
    datalist: Sequence[dict],
    output_dir: str | os.PathLike,
    train_config: str | os.PathLike,
    seeds: Sequence[int] = (0, 1, 2),
    subject_fractions: Sequence[float] = (1.0, 0.5),
    tumour_shares: Sequence[float] = (0.1, 0.05, 0.02),
    regimes: Sequence[Regime] = STUDY_REGIMES,
    split_fractions: Sequence[float] = (0.5, 0.2, 0.3),
    split_seed: int = 0,
    image_size: int = 64,
    slicing: Mapping[str, Any] | None = None,
    classifier_steps: int = 120,
    classifier_batch_size: int = 32,
    classifier_widths: Sequence[int] = (8, 16, 32, 64),
    learning_rate: float = 2e-3,
    select_every: int = 40,
    gan_iterations: int = 400,
    gan_channels: int | None = 16,
    gan_overrides: Mapping[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run the whole study: split, conditions, one GAN per condition, every regime and seed, test metrics.

    Args:
        datalist: the cohort's datalist items (``image``, ``label``, ``subject``).
        output_dir: working folder (GAN runs go to ``gan/<condition>``).
        train_config: the training bundle's ``configs/train.json``, which trains every condition's GAN
            (:func:`~monai_mri_gan.study.gan.train_gan`); checked before anything else is done.
        seeds: classifier seeds; seed ``s`` also draws the synthetic slices of its runs.
        subject_fractions: shares of the training subjects (the amount of real data).
        tumour_shares: tumour shares of the training slices (the imbalance).
        regimes: the regimes to compare.
        split_fractions: shares of training, validation and test subjects.
        split_seed: seed of the split and of the condition subsets.
        image_size: slice size in pixels (GAN and classifier).
        slicing: :func:`~monai_mri_gan.data.slice_transforms` arguments; default axial slices, percentile
            normalisation, at least 5 % head and 20 tumour voxels (any mask label) for a tumour slice. It is also
            recorded as the GANs' slicing configuration.
        classifier_steps: optimiser steps of every classifier run (the equal budget).
        classifier_batch_size: slices per classifier step.
        classifier_widths: stage widths of :func:`~monai_mri_gan.metrics.build_slice_classifier`.
        learning_rate: classifier learning rate.
        select_every: steps between two validation scorings (balanced accuracy) for weight selection.
        gan_iterations: generator steps of each GAN.
        gan_channels: base channels of the GAN's generator and discriminator; None for the networks' defaults
            (at 64 px: 16 for the generator, 32 for the discriminator).
        gan_overrides: further bundle overrides for :func:`~monai_mri_gan.study.gan.train_gan`. The study sets
            ``amp`` off (fp32, as in its measured run) unless this says otherwise.
        cache_dir: optional cache of the sliced cohort.

    Returns:
        a JSON-ready record: ``config``, ``split`` (slice and subject counts, and the subject ids),
        ``conditions`` (each with its training counts, GAN record and runs: regime, seed, test and validation
        metrics), ``summary`` (:func:`~monai_mri_gan.study.report.summarise_runs`) and ``timings``.

    Raises:
        FileNotFoundError: when there is no file at ``train_config``.
    """
    started = time.perf_counter()
    config_file = training_config(train_config)
    output_dir = Path(output_dir)
    slicing = dict(slicing if slicing is not None else
                   {"axis": 2, "norm_mode": "percentile", "min_foreground": 0.05, "tumour_min_voxels": 20})
    cohort = SliceCohort(datalist, cache_dir=cache_dir, image_size=image_size, **slicing)
    images, classes = cohort.tensors()
    subjects = slice_subjects(cohort)
    split = split_subjects(subject_classes(subjects, classes), split_fractions, seed=split_seed)
    logger.info("split: %d training, %d validation, %d test subjects", len(split.train), len(split.validation),
                len(split.test))

    def part(names: Sequence[str]) -> torch.Tensor:
        wanted = set(names)
        return torch.tensor([i for i, s in enumerate(subjects) if s in wanted], dtype=torch.long)

    val_idx, test_idx = part(split.validation), part(split.test)
    val_images, val_classes = images[val_idx], classes[val_idx]
    test_images, test_classes = images[test_idx], classes[test_idx]

    def validation_score(network: nn.Module) -> float:
        return binary_classification_metrics(val_classes, tumour_probabilities(network, val_images))[
            "balanced_accuracy"]

    def counts_of(index: torch.Tensor) -> dict[str, int]:
        return {"no_tumour": int((classes[index] == 0).sum()), "tumour": int((classes[index] == 1).sum()),
                "subjects": len({subjects[i] for i in index.tolist()})}

    record: dict[str, Any] = {
        "config": {
            "seeds": [int(s) for s in seeds], "subject_fractions": [float(f) for f in subject_fractions],
            "tumour_shares": [float(s) for s in tumour_shares], "regimes": [asdict(r) for r in regimes],
            "split_fractions": [float(f) for f in split_fractions], "split_seed": int(split_seed),
            "image_size": int(image_size), "slicing": slicing, "classifier_steps": int(classifier_steps),
            "classifier_batch_size": int(classifier_batch_size),
            "classifier_widths": [int(w) for w in classifier_widths], "learning_rate": float(learning_rate),
            "select_every": int(select_every), "gan_iterations": int(gan_iterations),
            "gan_channels": gan_channels, "gan_overrides": dict(gan_overrides or {}),
            "torch_threads": torch.get_num_threads(),
        },
        "split": {"train": counts_of(part(split.train)), "validation": counts_of(val_idx),
                  "test": counts_of(test_idx), "subjects": asdict(split)},
        "conditions": [],
    }
    gan_seconds = classifier_seconds = 0.0
    for fraction in subject_fractions:
        for share in tumour_shares:
            name = f"subjects{round(100 * fraction)}_tumour{round(100 * share, 1):g}"
            index = training_subset(subjects, classes, split.train, fraction, share, seed=split_seed)
            train_images, train_classes = images[index], classes[index]
            train_subjects = [subjects[i] for i in index.tolist()]
            check_no_leakage(train_subjects, split)
            condition: dict[str, Any] = {"name": name, "subject_fraction": float(fraction),
                                         "tumour_share": float(share), "train": counts_of(index), "runs": []}
            generator = None
            if any(r.synthetic != "none" for r in regimes):
                t0 = time.perf_counter()
                overrides = {"g_channels": gan_channels, "d_channels": gan_channels, "amp": False, "slicing": slicing,
                             **dict(gan_overrides or {})}
                checkpoint = train_gan(train_images, train_classes, train_subjects, split, output_dir / "gan" / name,
                                       config_file, iterations=gan_iterations, seed=split_seed, **overrides)
                generator = generator_from_checkpoint(checkpoint, weights_key="ema_generator")
                condition["gan"] = {"seconds": round(time.perf_counter() - t0, 1),
                                    "subjects": len(set(train_subjects)), "checkpoint": checkpoint.name}
                gan_seconds += time.perf_counter() - t0
            recognised = []
            for regime in regimes:
                for seed in seeds:
                    t0 = time.perf_counter()
                    run_images, run_classes = regime_training_set(regime, train_images, train_classes, generator, seed)
                    network = train_slice_classifier(
                        run_images, run_classes, num_classes=2, widths=classifier_widths,
                        batch_size=classifier_batch_size, learning_rate=learning_rate, seed=seed,
                        class_weighted=regime.class_weighted, balance=regime.balance,
                        augment=ClassicAugmentation(seed) if regime.classic_augmentation else None,
                        steps=classifier_steps, select=validation_score, select_every=select_every,
                    )
                    test = binary_classification_metrics(test_classes, tumour_probabilities(network, test_images))
                    condition["runs"].append({
                        "regime": regime.name, "seed": int(seed), "test": test,
                        "validation_balanced_accuracy": validation_score(network),
                        "train_counts": {"no_tumour": int((run_classes == 0).sum()),
                                         "tumour": int((run_classes == 1).sum())},
                        "seconds": round(time.perf_counter() - t0, 2),
                    })
                    classifier_seconds += time.perf_counter() - t0
                    if regime.name == "real_weighted" and generator is not None:
                        # how many GAN tumour slices a classifier trained on real slices calls tumour
                        fake = sample_synthetic(generator, 1, 256, seed=seed)
                        recognised.append(float((tumour_probabilities(network, fake) >= 0.5).double().mean()))
                    logger.info("%s %s seed %d: %s", name, regime.name, seed,
                                ", ".join(f"{k} {v:.3f}" for k, v in test.items()))
            if recognised:
                condition["synthetic_tumour_recognised"] = float(np.mean(recognised))
            record["conditions"].append(condition)
    record["summary"] = summarise_runs(record)
    record["timings"] = {"total_seconds": round(time.perf_counter() - started, 1),
                         "gan_seconds": round(gan_seconds, 1), "classifier_seconds": round(classifier_seconds, 1)}
    return record


