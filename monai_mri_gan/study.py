"""A downstream study: does GAN augmentation help an imbalanced tumour / no-tumour slice classifier?

The cohort is split **by subject** into training, validation and test subjects (:func:`split_subjects`). For each
condition (a share of the training subjects and a tumour share of the training slices, :func:`training_subset`) a
class-conditional GAN is trained on that condition's real training slices only (:func:`train_gan`, which refuses
any validation or test subject: :func:`check_no_leakage`), and a slice classifier is trained under each regime of
:data:`STUDY_REGIMES` with the same budget of optimiser steps and several seeds. The classifier keeps the weights
that score best on the validation subjects and is scored once on the test subjects
(:func:`binary_classification_metrics`). :func:`run_study` does all of it; :func:`summarise_runs`,
:func:`markdown_report` and :func:`plot_study` turn its result into a table and a figure.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from monai.transforms import Compose, RandAdjustContrast, RandFlip, RandRotate, RandScaleIntensity
from torch import nn

from .atomic import replace_atomically
from .data import SliceCohort, SliceTensorDataset, demo_cohort, load_datalist, resolve_datalist
from .metrics.classifier import train_slice_classifier
from .restore import generator_from_checkpoint
from .synthesis.augmentation import synthetic_quota

__all__ = [
    "METRICS",
    "STUDY_REGIMES",
    "TRAIN_CONFIG",
    "ClassicAugmentation",
    "Regime",
    "SubjectLeakageError",
    "SubjectSplit",
    "binary_classification_metrics",
    "check_no_leakage",
    "gan_sample_figure",
    "markdown_report",
    "plot_study",
    "run_study",
    "sample_synthetic",
    "slice_subjects",
    "split_subjects",
    "study_datalist",
    "subject_classes",
    "summarise_runs",
    "train_gan",
    "training_subset",
    "tumour_probabilities",
    "write_report",
]

logger = logging.getLogger(__name__)

#: The training bundle's configuration, used by :func:`train_gan`.
TRAIN_CONFIG = Path(__file__).resolve().parents[1] / "bundles" / "brain_mri_gan" / "configs" / "train.json"

METRICS = ("balanced_accuracy", "sensitivity", "specificity", "auroc")
"""Metrics of the tumour class that the study reports, in this order."""


class SubjectLeakageError(ValueError):
    """A model that must see training subjects only was given a validation or test subject."""


@dataclass(frozen=True)
class SubjectSplit:
    """Disjoint training, validation and test subject ids.

    Args:
        train: training subjects (the only ones a GAN or a classifier is trained on).
        validation: subjects that select a classifier's weights.
        test: subjects that score the classifiers, once.

    Raises:
        ValueError: when a subject is in two of the sets.
    """

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]

    def __post_init__(self) -> None:
        sets = {"train": set(self.train), "validation": set(self.validation), "test": set(self.test)}
        names = list(sets)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = sorted(sets[a] & sets[b])
                if shared:
                    raise ValueError(f"subjects {shared} are in both the {a} and the {b} split.")

    @property
    def held_out(self) -> frozenset[str]:
        """Validation and test subjects: what no model may be trained on."""
        return frozenset(self.validation) | frozenset(self.test)


@dataclass(frozen=True)
class Regime:
    """One way of training the downstream classifier.

    Args:
        name: short name used in tables.
        description: one line for reports.
        class_weighted: inverse-frequency class weights in the cross-entropy.
        balance: oversampling of the rare class (see :func:`~monai_mri_gan.metrics.train_slice_classifier`).
        classic_augmentation: MONAI random flips, rotations and intensity changes (:class:`ClassicAugmentation`).
        synthetic: ``"none"``; ``"balance"`` adds GAN tumour slices until the classes are equal; ``"only"`` trains
            on GAN slices of both classes alone (as many per class as the real majority class).
    """

    name: str
    description: str
    class_weighted: bool = False
    balance: float = 0.0
    classic_augmentation: bool = False
    synthetic: str = "none"

    def __post_init__(self) -> None:
        if self.synthetic not in ("none", "balance", "only"):
            raise ValueError(f"synthetic must be 'none', 'balance' or 'only', got {self.synthetic!r}.")


STUDY_REGIMES: tuple[Regime, ...] = (
    Regime("real", "real slices, imbalanced, plain cross-entropy"),
    Regime("real_weighted", "real slices, inverse-frequency class-weighted cross-entropy", class_weighted=True),
    Regime("real_oversampled", "real slices, tumour slices oversampled to equal draws", balance=1.0),
    Regime("real_classic_aug", "real slices, class-weighted loss + MONAI random flips, rotations, intensity",
           class_weighted=True, classic_augmentation=True),
    Regime("real_gan", "real slices + GAN tumour slices up to balance, plain cross-entropy", synthetic="balance"),
    Regime("synthetic_only", "GAN slices only (both classes, balanced), tested on real", synthetic="only"),
)
"""The regimes of the study, from the baseline through the standard fixes to GAN augmentation."""


def study_datalist(dataset_dir: str | os.PathLike | None = None, datalist: str | os.PathLike | None = None,
                   demo_subjects: int = 96, on_error: str = "raise") -> list[dict]:
    """The study's cohort: the user's datalist or folder, or else a demo cohort of ``demo_subjects`` subjects.

    The study's default demo cohort is larger than the training bundle's (32 subjects, 8 with a tumour): with only
    4 tumour subjects to train on, a classifier learns the subjects, not the tumours, and every regime stays at
    chance on unseen subjects.

    Args:
        dataset_dir: folder of volumes and masks, or the base folder of a datalist's relative paths.
        datalist: a MONAI/Decathlon datalist JSON.
        demo_subjects: size of the demo cohort used when neither is given.
        on_error: "raise" or "skip" bad inputs found while searching a folder.
    """
    if dataset_dir is None and datalist is None:
        return load_datalist(demo_cohort(num_subjects=int(demo_subjects)))
    return resolve_datalist(dataset_dir=dataset_dir, datalist=datalist, on_error=on_error)


def slice_subjects(cohort: SliceCohort) -> list[str]:
    """The subject id of every slice of a cohort (its ``subject``, else its source image path).

    Args:
        cohort: the sliced cohort.
    """
    subjects = []
    for item in cohort.slices:
        subject = item.get("subject")
        if subject is None:
            subject = str(getattr(item["image"], "meta", {}).get("filename_or_obj", ""))
        if not subject:
            raise ValueError("a slice has neither a subject id nor a source file name to group it by.")
        subjects.append(str(subject))
    return subjects


def subject_classes(subjects: Sequence[str], classes: torch.Tensor) -> dict[str, int]:
    """The class of each subject: the largest class of its slices (1 for a subject with any tumour slice).

    Args:
        subjects: subject id of each slice.
        classes: ``(N,)`` class of each slice.
    """
    result: dict[str, int] = {}
    for subject, c in zip(subjects, torch.as_tensor(classes).tolist(), strict=True):
        result[subject] = max(result.get(subject, 0), int(c))
    return dict(sorted(result.items()))


def split_subjects(classes: Mapping[str, int], fractions: Sequence[float] = (0.5, 0.2, 0.3),
                   seed: int = 0) -> SubjectSplit:
    """Split subjects into training, validation and test sets, stratified by subject class, never by slice.

    Within each class the subjects are shuffled with ``seed``; validation and test each get
    ``max(1, round(fraction * n))`` of them and training the rest, so every split holds every class.

    Args:
        classes: subject id -> subject class (see :func:`subject_classes`).
        fractions: shares of training, validation and test subjects (normalised to sum 1).
        seed: seed of the shuffle.

    Returns:
        the split, each part sorted.

    Raises:
        ValueError: when ``fractions`` is not three positive numbers, or a class has too few subjects to give
            each split one.
    """
    if len(fractions) != 3 or min(fractions) <= 0:
        raise ValueError(f"fractions must be three positive shares (train, validation, test), got {fractions}.")
    total = float(sum(fractions))
    f_val, f_test = fractions[1] / total, fractions[2] / total
    rng = np.random.default_rng(seed)
    train: list[str] = []
    validation: list[str] = []
    test: list[str] = []
    for c in sorted(set(classes.values())):
        members = sorted(s for s, k in classes.items() if k == c)
        order = [members[i] for i in rng.permutation(len(members))]
        n_val, n_test = max(1, round(f_val * len(order))), max(1, round(f_test * len(order)))
        if len(order) - n_val - n_test < 1:
            raise ValueError(f"class {c} has {len(order)} subject(s): too few for a training, a validation and a "
                             "test subject.")
        validation += order[:n_val]
        test += order[n_val : n_val + n_test]
        train += order[n_val + n_test :]
    return SubjectSplit(tuple(sorted(train)), tuple(sorted(validation)), tuple(sorted(test)))


def check_no_leakage(training_subjects: Iterable[str], split: SubjectSplit) -> None:
    """Refuse a training set that holds a validation or test subject.

    Args:
        training_subjects: subject ids a model is about to be trained on.
        split: the study's subject split.

    Raises:
        SubjectLeakageError: naming the held-out subjects found among ``training_subjects``.
    """
    leaked = sorted(set(training_subjects) & split.held_out)
    if leaked:
        raise SubjectLeakageError(f"{len(leaked)} validation/test subject(s) in a training set: {leaked}.")


def training_subset(subjects: Sequence[str], classes: torch.Tensor, train_subjects: Sequence[str],
                    subject_fraction: float = 1.0, tumour_share: float | None = None, seed: int = 0) -> torch.Tensor:
    """Indices of the training slices of one condition: a share of the training subjects and a tumour share.

    Subjects are kept per subject class (``max(1, round(subject_fraction * n))`` of each, from a seeded shuffle).
    Tumour slices are then dropped to reach ``tumour_share`` of the kept slices, whole subjects first (in a seeded
    order) and the last subject's slices at random; when the share asked for is above the data's, no-tumour slices
    are dropped at random instead. The same seed gives nested subsets: a smaller fraction or share keeps a subset
    of what a larger one keeps.

    Args:
        subjects: subject id of each slice of the cohort.
        classes: ``(N,)`` class of each slice (1 = tumour).
        train_subjects: the training subjects; no other subject's slice is ever returned.
        subject_fraction: share of training subjects to keep, in (0, 1].
        tumour_share: tumour share of the returned slices, in (0, 1); None keeps the data's own.
        seed: seed of the choices.

    Returns:
        sorted ``(M,)`` slice indices.

    Raises:
        ValueError: on a fraction or share out of range, or when no tumour slice is left to keep.
    """
    if not 0.0 < float(subject_fraction) <= 1.0:
        raise ValueError(f"subject_fraction must be in (0, 1], got {subject_fraction}.")
    if tumour_share is not None and not 0.0 < float(tumour_share) < 1.0:
        raise ValueError(f"tumour_share must be in (0, 1), got {tumour_share}.")
    classes = torch.as_tensor(classes).reshape(-1)
    rng = np.random.default_rng([seed, 1])
    allowed = set(train_subjects)
    per_subject = subject_classes([s for s in subjects if s in allowed],
                                  classes[[i for i, s in enumerate(subjects) if s in allowed]])
    kept_subjects: list[str] = []
    for c in sorted(set(per_subject.values())):
        members = sorted(s for s, k in per_subject.items() if k == c)
        order = [members[i] for i in rng.permutation(len(members))]
        kept_subjects += order[: max(1, round(float(subject_fraction) * len(order)))]
    kept = set(kept_subjects)
    tumour = [i for i, s in enumerate(subjects) if s in kept and int(classes[i]) == 1]
    normal = [i for i, s in enumerate(subjects) if s in kept and int(classes[i]) != 1]
    if not tumour:
        raise ValueError("the kept training subjects have no tumour slice.")
    if tumour_share is None:
        return torch.tensor(sorted(tumour + normal), dtype=torch.long)
    share = float(tumour_share)
    wanted = max(1, round(share * len(normal) / (1.0 - share)))
    if wanted <= len(tumour):
        by_subject: dict[str, list[int]] = {}
        for i in tumour:
            by_subject.setdefault(subjects[i], []).append(i)
        names = sorted(by_subject)
        chosen: list[int] = []
        for name in (names[i] for i in rng.permutation(len(names))):
            slices = by_subject[name]
            room = wanted - len(chosen)
            if len(slices) > room:
                slices = [slices[i] for i in sorted(rng.permutation(len(slices))[:room])]
            chosen += slices
            if len(chosen) == wanted:
                break
        tumour = chosen
    else:
        keep_normal = max(1, round(len(tumour) * (1.0 - share) / share))
        normal = [normal[i] for i in rng.permutation(len(normal))[:keep_normal]]
    return torch.tensor(sorted(tumour + normal), dtype=torch.long)


def binary_classification_metrics(labels: torch.Tensor, scores: torch.Tensor,
                                  threshold: float = 0.5) -> dict[str, float]:
    """Balanced accuracy, sensitivity and specificity of the positive (tumour) class, and AUROC.

    A slice is predicted positive when its score is at least ``threshold``. Sensitivity is the share of positive
    slices predicted positive, specificity the share of negative slices predicted negative, balanced accuracy their
    mean; AUROC is ``monai.metrics.compute_roc_auc`` of the scores. A metric that needs a class the labels lack is
    NaN.

    Args:
        labels: ``(N,)`` true classes, 1 positive and 0 negative.
        scores: ``(N,)`` positive-class probabilities (or any score that grows with it).
        threshold: decision threshold on the scores.

    Returns:
        ``{"balanced_accuracy", "sensitivity", "specificity", "auroc"}`` as floats.

    Raises:
        ValueError: when the lengths differ or there is no slice.
    """
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    scores = torch.as_tensor(scores).reshape(-1).double().cpu()
    if labels.numel() == 0 or labels.shape != scores.shape:
        raise ValueError(f"need one score per label and at least one label; got {labels.numel()} and "
                         f"{scores.numel()}.")
    positive = labels == 1
    predicted = scores >= threshold
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    sensitivity = float((predicted & positive).sum()) / n_pos if n_pos else math.nan
    specificity = float((~predicted & ~positive).sum()) / n_neg if n_neg else math.nan
    auroc = float(compute_roc_auc(scores, positive.long())) if n_pos and n_neg else math.nan
    return {"balanced_accuracy": (sensitivity + specificity) / 2, "sensitivity": sensitivity,
            "specificity": specificity, "auroc": auroc}


@torch.no_grad()
def tumour_probabilities(network: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probability of class 1 (tumour) for every slice, in eval mode, on the CPU.

    Args:
        network: a classifier returning ``(B, K)`` logits.
        images: ``(N, 1, H, W)`` slices.
        batch_size: slices per forward pass.
    """
    was_training = network.training
    network.eval()
    device = next(network.parameters()).device
    try:
        out = [torch.softmax(network(images[i : i + batch_size].to(device)).float(), dim=1)[:, 1].cpu()
               for i in range(0, images.shape[0], batch_size)]
    finally:
        network.train(was_training)
    return torch.cat(out)


class ClassicAugmentation:
    """The classic augmentation users try first: MONAI random flips, rotations and intensity changes per slice.

    Each slice of a batch draws its own left-right flip (p 0.5), in-plane rotation (up to ``max_rotation``
    radians, p 0.5, border padding so the background stays background), contrast gamma in [0.8, 1.25] (p 0.5) and
    intensity scaling by up to 10 % (p 0.5), from a random state seeded with ``seed``.

    Args:
        seed: seed of the transforms' random state.
        max_rotation: largest rotation in radians.
    """

    def __init__(self, seed: int = 0, max_rotation: float = 0.26) -> None:
        self.transform = Compose([
            RandFlip(prob=0.5, spatial_axis=0),
            RandRotate(range_x=max_rotation, prob=0.5, padding_mode="border"),
            RandAdjustContrast(prob=0.5, gamma=(0.8, 1.25)),
            RandScaleIntensity(factors=0.1, prob=0.5),
        ]).set_random_state(seed=seed)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Augment a ``(B, C, H, W)`` batch, each slice independently; values stay in [-1, 1]."""
        out = [torch.as_tensor(self.transform(x)).as_subclass(torch.Tensor) for x in images]
        return torch.stack(out).float().clamp(-1.0, 1.0)


def train_gan(images: torch.Tensor, classes: torch.Tensor, subjects: Sequence[str], split: SubjectSplit,
              output_dir: str | os.PathLike, iterations: int = 400, seed: int = 0, batch_size: int = 32,
              config_file: str | os.PathLike = TRAIN_CONFIG, **overrides: Any) -> Path:
    """Train the bundle's class-conditional GAN on given training slices, refusing any held-out subject.

    The training bundle (``configs/train.json``) runs through ``monai.bundle.ConfigWorkflow`` with its dataset
    replaced by the given slices, evaluation off, and one checkpoint and sample grid at the end. The subject ids
    and class counts the GAN saw are written to ``gan_training_subjects.json`` beside the checkpoint. Like any run
    of the bundle, it seeds the global random state (``monai.utils.set_determinism(seed)``).

    Args:
        images: ``(N, 1, S, S)`` training slices in [-1, 1]; ``S`` becomes the bundle's ``image_size``.
        classes: ``(N,)`` class of each slice.
        subjects: subject id of each slice.
        split: the study's split; a slice of a validation or test subject is refused.
        output_dir: the run's folder (a previous run's checkpoints there are not resumed).
        iterations: generator steps, rounded up to whole epochs.
        seed: the bundle's seed.
        batch_size: slices per step.
        config_file: the training bundle configuration.
        overrides: further top-level bundle overrides (e.g. ``{"learning_rate": 1e-4}``).

    Returns:
        the path of the final checkpoint.

    Raises:
        SubjectLeakageError: when a slice belongs to a validation or test subject.
        ValueError: when the lengths of ``images``, ``classes`` and ``subjects`` differ.
    """
    from monai.bundle import ConfigWorkflow

    if not len(images) == len(classes) == len(subjects):
        raise ValueError(f"{len(images)} images, {len(classes)} classes and {len(subjects)} subject ids.")
    check_no_leakage(subjects, split)
    output_dir = Path(output_dir)
    epoch_length = math.ceil(len(images) / batch_size)
    max_epochs = max(1, math.ceil(int(iterations) / epoch_length))
    settings = {
        "train#dataset": SliceTensorDataset(torch.as_tensor(images).float(), torch.as_tensor(classes).long()),
        "output_dir": str(output_dir), "image_size": int(images.shape[-1]), "max_epochs": max_epochs,
        "batch_size": int(batch_size), "seed": int(seed), "evaluate_every": 0, "resume": False,
        "checkpoint_every": max_epochs, "sample_every": max_epochs, "log_every": 10**9,
    }
    workflow = ConfigWorkflow(config_file=str(config_file), workflow_type="train", **{**settings, **overrides})
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    counts = torch.bincount(torch.as_tensor(classes).long(), minlength=2).tolist()
    record = {"subjects": sorted(set(subjects)), "class_counts": counts, "iterations": max_epochs * epoch_length}
    replace_atomically(output_dir / "gan_training_subjects.json",
                       lambda f: f.write(json.dumps(record, indent=2).encode()))
    return output_dir / f"checkpoint_epoch{max_epochs:04d}.pt"


@torch.no_grad()
def sample_synthetic(generator: nn.Module, class_index: int, count: int, seed: int = 0,
                     batch_size: int = 128) -> torch.Tensor:
    """Slices of one class from a conditional generator, in training space, reproducibly.

    Latents are drawn as :class:`~monai_mri_gan.synthesis.SliceSynthesiser` draws them (row ``i`` of a CPU
    ``torch.Generator`` seeded with ``seed`` is sample ``i``).

    Args:
        generator: a conditional :class:`~monai_mri_gan.networks.SliceGenerator` (eval mode).
        class_index: the class to generate.
        count: number of slices.
        seed: seed of the latents.
        batch_size: slices per forward pass.

    Returns:
        ``(count, C, S, S)`` slices on the CPU.
    """
    generator.eval()
    device = next(generator.parameters()).device
    z = torch.randn(int(count), int(generator.latent_dim), generator=torch.Generator().manual_seed(int(seed)))
    labels = torch.full((int(count),), int(class_index), dtype=torch.long)
    out = [generator(z[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)).float().cpu()
           for i in range(0, int(count), batch_size)]
    return torch.cat(out)


def _regime_training_set(regime: Regime, images: torch.Tensor, classes: torch.Tensor,
                         generator: nn.Module | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The slices and classes a regime trains on, with its synthetic slices drawn with ``seed``."""
    if regime.synthetic == "none":
        return images, classes
    if generator is None:
        raise ValueError(f"regime {regime.name!r} needs a generator.")
    counts = {c: int((classes == c).sum()) for c in (0, 1)}
    if regime.synthetic == "balance":
        extra = synthetic_quota(counts, 2, 1.0)[1]
        fake = sample_synthetic(generator, 1, extra, seed=seed)
        return torch.cat([images, fake]), torch.cat([classes, torch.ones(extra, dtype=torch.long)])
    n = max(counts.values())
    fake = torch.cat([sample_synthetic(generator, 0, n, seed=seed), sample_synthetic(generator, 1, n, seed=seed)])
    return fake, torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])


def run_study(
    datalist: Sequence[dict],
    output_dir: str | os.PathLike,
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
        gan_overrides: further bundle overrides for :func:`train_gan`. The study sets ``amp`` off (fp32, as in its
            measured run) unless this says otherwise.
        cache_dir: optional cache of the sliced cohort.

    Returns:
        a JSON-ready record: ``config``, ``split`` (slice and subject counts, and the subject ids),
        ``conditions`` (each with its training counts, GAN record and runs: regime, seed, test and validation
        metrics), ``summary`` (:func:`summarise_runs`) and ``timings``.
    """
    started = time.perf_counter()
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
                                       iterations=gan_iterations, seed=split_seed, **overrides)
                generator = generator_from_checkpoint(checkpoint, weights_key="ema_generator")
                condition["gan"] = {"seconds": round(time.perf_counter() - t0, 1),
                                    "subjects": len(set(train_subjects)), "checkpoint": checkpoint.name}
                gan_seconds += time.perf_counter() - t0
            recognised = []
            for regime in regimes:
                for seed in seeds:
                    t0 = time.perf_counter()
                    run_images, run_classes = _regime_training_set(regime, train_images, train_classes, generator, seed)
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


def summarise_runs(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Mean and spread over seeds of every test metric, per condition and regime.

    The spread is the sample standard deviation over seeds (0 for a single seed); NaN values (a metric undefined
    for a run) are left out of both.

    Args:
        record: the result of :func:`run_study` (its ``conditions``).

    Returns:
        one entry per condition and regime, in run order: ``condition``, ``subject_fraction``, ``tumour_share``,
        ``regime``, ``seeds`` and per metric ``{"mean", "std"}``.
    """
    rows = []
    for condition in record["conditions"]:
        regimes = list(dict.fromkeys(run["regime"] for run in condition["runs"]))
        for regime in regimes:
            runs = [run for run in condition["runs"] if run["regime"] == regime]
            row: dict[str, Any] = {"condition": condition["name"], "subject_fraction": condition["subject_fraction"],
                                   "tumour_share": condition["tumour_share"], "regime": regime, "seeds": len(runs)}
            for metric in METRICS:
                values = np.array([run["test"][metric] for run in runs], dtype=float)
                values = values[np.isfinite(values)]
                row[metric] = {
                    "mean": float(values.mean()) if values.size else math.nan,
                    "std": float(values.std(ddof=1)) if values.size > 1 else 0.0 if values.size else math.nan,
                }
            rows.append(row)
    return rows


def markdown_report(record: Mapping[str, Any]) -> str:
    """A Markdown table of :func:`summarise_runs`: one row per condition and regime, ``mean ± std`` over seeds.

    Args:
        record: the result of :func:`run_study`.
    """
    header = ("| training subjects | tumour share | real slices (tumour) | regime | balanced accuracy | sensitivity "
              "| specificity | AUROC |")
    lines = [header, "| " + " | ".join(["---"] * 8) + " |"]
    counts = {c["name"]: c["train"] for c in record["conditions"]}
    for row in record.get("summary") or summarise_runs(record):
        train = counts[row["condition"]]
        cells = [f"{round(100 * row['subject_fraction'])} % ({train['subjects']})",
                 f"{100 * row['tumour_share']:g} %", f"{train['no_tumour'] + train['tumour']} ({train['tumour']})",
                 f"`{row['regime']}`"]
        cells += [f"{row[m]['mean']:.3f} ± {row[m]['std']:.3f}" for m in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_study(record: Mapping[str, Any], path: str | os.PathLike,
               metrics: Sequence[str] = ("balanced_accuracy", "sensitivity", "auroc")) -> Path:
    """A figure of the study: one row per amount of real data, one column per metric, one line per regime.

    Points are means over seeds against the training tumour share, bars one standard deviation.

    Args:
        record: the result of :func:`run_study`.
        path: the PNG to write (atomically).
        metrics: the metrics to show, one column each.

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = record.get("summary") or summarise_runs(record)
    fractions = list(dict.fromkeys(row["subject_fraction"] for row in summary))
    shares = sorted({row["tumour_share"] for row in summary}, reverse=True)
    regimes = list(dict.fromkeys(row["regime"] for row in summary))
    fig, axes = plt.subplots(len(fractions), len(metrics), figsize=(4.2 * len(metrics), 3.4 * len(fractions)),
                             squeeze=False)
    positions = np.arange(len(shares))
    for r, fraction in enumerate(fractions):
        for c, metric in enumerate(metrics):
            ax = axes[r][c]
            for k, regime in enumerate(regimes):
                rows = {row["tumour_share"]: row for row in summary
                        if row["subject_fraction"] == fraction and row["regime"] == regime}
                mean = [rows[s][metric]["mean"] if s in rows else math.nan for s in shares]
                std = [rows[s][metric]["std"] if s in rows else math.nan for s in shares]
                offset = (k - (len(regimes) - 1) / 2) * 0.06
                ax.errorbar(positions + offset, mean, yerr=std, marker="o", capsize=3, label=regime)
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xticks(positions, [f"{100 * s:g} %" for s in shares])
            ax.set_ylim(0.0, 1.02)
            ax.set_xlabel("tumour share of training slices")
            label = {"auroc": "AUROC"}.get(metric, metric.replace("_", " "))
            ax.set_title(f"{label}, {round(100 * fraction)} % of training subjects", fontsize=10)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _write_png(fig, path, dpi=110)


def _write_png(figure: Any, path: str | os.PathLike, dpi: int) -> Path:
    """Save a matplotlib figure as PNG, atomically, and close it."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return replace_atomically(path, lambda f: f.write(buffer.getvalue()))


def gan_sample_figure(grids: Mapping[str, str | os.PathLike], path: str | os.PathLike) -> Path:
    """Stack sample grids of several GAN runs (top row no tumour, bottom row tumour) into one PNG, one per row.

    Args:
        grids: a title (the condition) -> the run's sample grid PNG.
        path: the PNG to write (atomically).

    Returns:
        the path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(len(grids), 1, figsize=(8, 2.3 * len(grids)), squeeze=False)
    for ax, (name, grid) in zip(axes[:, 0], grids.items(), strict=True):
        ax.imshow(Image.open(grid), cmap="gray")
        ax.set_title(f"{name}: top row no tumour, bottom row tumour", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return _write_png(fig, path, dpi=100)


def write_report(record: Mapping[str, Any], output: str | os.PathLike, figure: str | os.PathLike,
                 samples_figure: str | os.PathLike | None = None, work_dir: str | os.PathLike | None = None) -> str:
    """Write a study's record as JSON, its table as Markdown beside it, its figure, and optionally the GAN samples.

    Args:
        record: the result of :func:`run_study`.
        output: the JSON file; the Markdown table goes to the same name with ``.md``.
        figure: the PNG of :func:`plot_study`.
        samples_figure: the PNG of :func:`gan_sample_figure`, from the last sample grid of every condition's GAN
            run under ``work_dir``; None writes none.
        work_dir: the ``output_dir`` that :func:`run_study` was given.

    Returns:
        the Markdown table.
    """
    table = markdown_report(record)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    replace_atomically(output, lambda f: f.write(json.dumps(record, indent=2).encode()))
    replace_atomically(output.with_suffix(".md"), lambda f: f.write(table.encode()))
    plot_study(record, figure)
    if samples_figure is not None and work_dir is not None:
        grids = {c["name"]: sorted((Path(work_dir) / "gan" / c["name"] / "samples").glob("epoch_*.png"))
                 for c in record["conditions"] if "gan" in c}
        grids = {name: paths[-1] for name, paths in grids.items() if paths}
        if grids:
            gan_sample_figure(grids, samples_figure)
    return table
