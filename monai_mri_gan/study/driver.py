"""The study's driver: repeated subject splits, scarcity in tumour patients, every regime, paired test metrics."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from ..data import LesionCrops, SliceCohort
from ..metrics.classifier import train_slice_classifier
from ..synthesis import build_balanced_set, build_painted_set
from ..utils import resolve_amp
from .cohort import slice_subjects
from .data import StudySlices, cohort_slices, datalist_slices
from .gan import train_bundle, write_training_datalist
from .regimes import DEFAULT_REGIMES, ClassicAugmentation, Regime, regimes_named
from .scoring import CLASSIFICATION_METRICS, auroc, classification_metrics, no_lesion_floor, tumour_probabilities
from .segmenter import segment, segmentation_metrics, train_segmenter
from .splits import SubjectSplit, check_no_leakage, scarce_training_subjects, split_subjects, subject_classes

__all__ = ["NO_LESION_FLOOR", "SEGMENTATION_METRICS", "STUDY_SLICING", "StudySettings", "run_study"]

logger = logging.getLogger(__name__)

NO_LESION_FLOOR = "no_lesion_floor"
"""The reference row of a classifier that sees slice position and head area only, never a lesion."""

SEGMENTATION_METRICS = ("dice", "false_positive_rate")
"""The segmentation metrics the study reports."""

STUDY_SLICING = {"axis": 2, "spacing": None, "norm_mode": "percentile", "min_foreground": 0.05,
                 "tumour_min_voxels": 20, "tumour_labels": [1, 3, 4], "drop_ambiguous": True}
"""The study's slices and classes, as the whole-slice bundle cuts them: a tumour slice shows at least 20 voxels of
tumour core (BraTS labels 1, 3, 4: what a T1 shows), and a slice with some mask but less core (oedema only, a
lesion's edge) is left out rather than called healthy. With every mask label counting instead, slices of oedema
alone, hardly visible on T1, are called tumour and no classifier reaches the sanity row."""


@dataclass(frozen=True)
class StudySettings:
    """The study's budgets and model settings; one set for every regime (the equal budget).

    Args:
        image_size: side of the square slices the downstream models see (native slices padded and resized).
        classifier_steps: most optimiser steps of a classifier run.
        classifier_batch_size: slices per classifier step.
        classifier_widths: stage widths of the MONAI ResNet (one basic block per stage).
        learning_rate: Adam learning rate of both models.
        eval_every: steps between validation scorings (AUROC for the classifier, Dice for the segmenter).
        patience: scorings without improvement that stop a run early (the best weights are kept).
        segmenter_steps: most optimiser steps of a segmenter run.
        segmenter_min_steps: steps before which the segmenter's validations do not count towards ``patience``.
        segmenter_batch_size: slices per segmenter step.
        segmenter_channels: channels of the MONAI UNet.
        painter_iterations: generator steps of each condition's lesion painter.
        whole_slice_iterations: generator steps of each condition's whole-slice GAN (full grid only).
        amp: bfloat16 autocast in the downstream models' forward passes: true, false, or ``"auto"`` (on where the
            CPU has bf16 instructions; see :func:`~monai_mri_gan.utils.resolve_amp`), held resolved to a bool.
        seeds: model seeds, nested in every split.
        fractions: shares of training, validation and test subjects.
    """

    image_size: int = 96
    classifier_steps: int = 400
    classifier_batch_size: int = 32
    classifier_widths: tuple[int, ...] = (16, 32, 64, 128)
    learning_rate: float = 1e-3
    eval_every: int = 50
    patience: int = 3
    segmenter_steps: int = 600
    segmenter_min_steps: int = 300
    segmenter_batch_size: int = 16
    segmenter_channels: tuple[int, ...] = (16, 32, 64, 128)
    painter_iterations: int = 400
    whole_slice_iterations: int = 600
    amp: bool | str = "auto"
    seeds: tuple[int, ...] = (0,)
    fractions: tuple[float, float, float] = (0.5, 0.2, 0.3)

    def __post_init__(self) -> None:
        # the record and the journal's fingerprint say what ran, not "auto"
        object.__setattr__(self, "amp", resolve_amp(self.amp, "cpu"))


def _level(k: int | None) -> int | str:
    return "all" if k is None else int(k)


def _floor_features(cohort: SliceCohort, subjects: Sequence[str]) -> torch.Tensor:
    """Per slice: relative position among its volume's slices, its square, and the head's share of the slice."""
    index = torch.tensor([float(s["slice_index"]) for s in cohort])
    by_volume: dict[str, list[int]] = {}
    for p, s in enumerate(cohort):
        by_volume.setdefault(f"{subjects[p]}|{s['image'].meta.get('filename_or_obj')}", []).append(p)
    relative = torch.zeros(len(cohort))
    for members in by_volume.values():
        low, high = index[members].min(), index[members].max()
        relative[members] = (index[members] - low) / max(float(high - low), 1.0)
    area = torch.tensor([float((torch.as_tensor(s["image"]) > -0.9).float().mean()) for s in cohort])
    return torch.stack([relative, relative**2, area], dim=1)


class _Condition:
    """One split at one scarcity level: its training subjects, real slices and synthetic sets."""

    def __init__(self, study: _Study, split_seed: int, split: SubjectSplit, k: int | None) -> None:
        self.study, self.split_seed, self.split, self.k = study, split_seed, split, k
        self.subjects = scarce_training_subjects(split, study.subject_class, k, seed=split_seed)
        check_no_leakage(self.subjects, split)
        chosen = set(self.subjects)
        self.index = [i for i, s in enumerate(study.subjects) if s in chosen]
        self.real = study.slices.subset(self.index)
        self.folder = study.work / f"split{split_seed}" / f"k{_level(k)}"
        self.datalist = write_training_datalist([i for i in study.items if str(i["subject"]) in chosen], split,
                                                self.folder / "train_datalist.json")
        self.synthetic: dict[str, StudySlices] = {}
        self.timings: dict[str, float] = {}

    def painter(self) -> Path:
        """Train this condition's lesion painter (once) on its training subjects' lesions only."""
        path = self.folder / "painter"
        if "painter" not in self.timings:
            start = time.perf_counter()
            study = self.study
            slices = [study.cohort[i] for i in self.index]
            crops = len(LesionCrops(slices, crop_size=study.crop_size,
                                    min_voxels=int(study.slicing.get("tumour_min_voxels", 20))))
            epochs = max(1, math.ceil(study.settings.painter_iterations / max(1, math.ceil(crops / 16))))
            self.checkpoint = train_bundle(study.painter_config, self.datalist, path, epochs, seed=self.split_seed,
                                           slicing=dict(study.slicing), batch_size=16)
            self.timings["painter"] = time.perf_counter() - start
        return self.checkpoint

    def synthetic_set(self, source: str) -> StudySlices:
        """The synthetic tumour slices of ``source``, read from the augmented datalist as a user would (written as
        ``.nii``: the same values as ``.nii.gz``, without the cost of compressing thousands of slices)."""
        if source not in self.synthetic:
            start = time.perf_counter()
            study = self.study
            if source == "whole_slice":
                if study.whole_slice_config is None:
                    raise ValueError("the whole_slice_gan regime needs whole_slice_config (the brain_mri_gan bundle's "
                                     "configs/train.json).")
                per_epoch = max(1, math.ceil(len(self.real) / 32))
                epochs = max(1, math.ceil(study.settings.whole_slice_iterations / per_epoch))
                checkpoint = train_bundle(study.whole_slice_config, self.datalist, self.folder / "whole_slice", epochs,
                                          seed=self.split_seed, evaluate_every=0, image_size=64,
                                          slicing=dict(study.slicing))
                path = build_balanced_set(checkpoint, self.folder / "whole_slice_set", datalist=self.datalist,
                                          seed=self.split_seed, overwrite=True, compress=False)
            else:
                path = build_painted_set(self.painter(), self.folder / f"{source}_set", datalist=self.datalist,
                                         seed=self.split_seed, method="gan" if source == "painted" else "copy_paste",
                                         overwrite=True, compress=False)
            self.synthetic[source] = datalist_slices(path, study.settings.image_size, study.tumour_labels,
                                                     synthetic_only=True)
            self.timings[source] = time.perf_counter() - start
        return self.synthetic[source]

    def training_set(self, regime: Regime) -> StudySlices:
        if regime.synthetic == "none":
            return self.real
        return StudySlices.concat([self.real, self.synthetic_set(regime.synthetic)])


class _Study:
    """The cohort, its slices in the study's form, and the settings every condition shares."""

    def __init__(self, items: Sequence[Mapping[str, Any]], work: Path, painter_config: str | os.PathLike,
                 whole_slice_config: str | os.PathLike | None, settings: StudySettings,
                 slicing: Mapping[str, Any], crop_size: int) -> None:
        self.items = [dict(i) for i in items]
        missing = [i.get("image") for i in self.items if "subject" not in i]
        if missing:
            raise ValueError(f"{len(missing)} datalist item(s) without a subject, e.g. {missing[0]}: the study "
                             "splits by subject.")
        self.work, self.settings = work, settings
        self.painter_config, self.whole_slice_config = painter_config, whole_slice_config
        self.slicing, self.crop_size = dict(slicing), int(crop_size)
        start = time.perf_counter()
        self.cohort = SliceCohort(self.items, image_size=None, slicing=self.slicing)
        self.subjects = slice_subjects(self.cohort)
        self.classes = torch.tensor([int(s["class"]) for s in self.cohort])
        self.subject_class = subject_classes(self.subjects, self.classes)
        self.tumour_labels = self.slicing.get("tumour_labels")
        self.slices = cohort_slices(self.cohort, range(len(self.cohort)), self.subjects, settings.image_size,
                                    self.tumour_labels)
        self.floor_features = _floor_features(self.cohort, self.subjects)
        self.load_seconds = time.perf_counter() - start

    def part(self, names: Sequence[str]) -> list[int]:
        chosen = set(names)
        return [i for i, s in enumerate(self.subjects) if s in chosen]


def _classifier_run(study: _Study, condition: _Condition, regime: Regime, seed: int, val: StudySlices,
                    test: StudySlices) -> dict[str, Any]:
    settings = study.settings
    train = condition.training_set(regime)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    network = train_slice_classifier(
        train.images, train.classes, num_classes=2, widths=settings.classifier_widths, batch_size=
        settings.classifier_batch_size, learning_rate=settings.learning_rate, seed=seed,
        class_weighted=regime.class_weighted, balance=1.0 if regime.oversample else 0.0,
        augment=ClassicAugmentation(seed) if regime.classic_augmentation else None, steps=settings.classifier_steps,
        select=lambda net: auroc(val.classes, tumour_probabilities(net, val.images, amp=settings.amp)),
        select_every=settings.eval_every, patience=settings.patience, amp=settings.amp, history=history)
    scores = classification_metrics(val.classes, tumour_probabilities(network, val.images), test.classes,
                                     tumour_probabilities(network, test.images))
    return {"task": "classification", **_split_metrics(scores, CLASSIFICATION_METRICS), "curve": history,
            "seconds": time.perf_counter() - start,
            "training_slices": {"real": int((~train.synthetic).sum()), "synthetic": int(train.synthetic.sum()),
                                "tumour": int(train.classes.sum())}}


def _segmenter_run(study: _Study, condition: _Condition, regime: Regime, seed: int, val: StudySlices,
                   test: StudySlices) -> dict[str, Any]:
    settings = study.settings
    train = condition.training_set(regime)
    weights = None
    if regime.oversample:
        counts = torch.bincount(train.classes, minlength=2).double()
        weights = (1.0 / counts)[train.classes]
    augment: Callable | None = ClassicAugmentation(seed) if regime.classic_augmentation else None
    start = time.perf_counter()
    network, curve = train_segmenter(
        train.images, train.masks, val.images, val.masks, max_steps=settings.segmenter_steps,
        batch_size=settings.segmenter_batch_size, learning_rate=settings.learning_rate,
        eval_every=settings.eval_every, patience=settings.patience, min_steps=settings.segmenter_min_steps, seed=seed,
        channels=settings.segmenter_channels,
        augment=augment, sample_weights=weights, amp=settings.amp)
    scores = segmentation_metrics(segment(network, test.images), test.masks)
    return {"task": "segmentation", **_split_metrics(scores, SEGMENTATION_METRICS), "curve": curve,
            "seconds": time.perf_counter() - start}


def _split_metrics(scores: Mapping[str, float], reported: Sequence[str]) -> dict[str, dict[str, float]]:
    """The reported metrics apart from the run's other figures (threshold, slice counts)."""
    return {"metrics": {k: float(scores[k]) for k in reported},
            "details": {k: v for k, v in scores.items() if k not in reported}}


def _run_condition(study: _Study, split_seed: int, k: int | None, regimes: Sequence[Regime], tasks: Sequence[str],
                   segmenting: Sequence[str], on_run: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every regime's runs at one split and scarcity level (each passed to ``on_run`` as it is finished), and what
    the condition trained on."""
    start = time.perf_counter()
    settings = study.settings
    split = split_subjects(study.subject_class, settings.fractions, seed=int(split_seed))
    held_out = {"validation": study.part(split.validation), "test": study.part(split.test)}
    val, test = (study.slices.subset(index) for index in held_out.values())
    condition = _Condition(study, int(split_seed), split, k)
    runs: list[dict[str, Any]] = []

    def record(run: dict[str, Any], regime: str, seed: int) -> None:
        runs.append({**run, "split": int(split_seed), "tumour_subjects": _level(k), "regime": regime,
                     "seed": int(seed)})
        if on_run is not None:
            on_run(runs[-1])

    for seed in settings.seeds:
        model_seed = int(seed) + 1000 * int(split_seed)
        if "classification" in tasks:
            floor = no_lesion_floor(study.floor_features[condition.index], condition.real.classes,
                                    study.floor_features[held_out["validation"] + held_out["test"]])
            scores = classification_metrics(val.classes, floor[: len(val)], test.classes, floor[len(val):])
            record({"task": "classification", **_split_metrics(scores, CLASSIFICATION_METRICS), "seconds": 0.0},
                   NO_LESION_FLOOR, seed)
        for regime in regimes:
            if "classification" in tasks:
                record(_classifier_run(study, condition, regime, model_seed, val, test), regime.name, seed)
            if "segmentation" in tasks and regime.name in segmenting:
                record(_segmenter_run(study, condition, regime, model_seed, val, test), regime.name, seed)
    return {"runs": runs, "split": {"split": int(split_seed), **asdict(split)},
            "condition": {"split": int(split_seed), "tumour_subjects": _level(k),
                          "training_subjects": len(condition.subjects),
                          "tumour_training_subjects": sum(study.subject_class[s] for s in condition.subjects),
                          "real_training_slices": len(condition.real),
                          "real_tumour_slices": int(condition.real.classes.sum()),
                          "synthetic_slices": {s: len(v) for s, v in condition.synthetic.items()},
                          "timings": condition.timings, "seconds": time.perf_counter() - start},
            "cohort": {"subjects": len(study.subject_class), "tumour_subjects": sum(study.subject_class.values()),
                       "slices": len(study.cohort), "tumour_slices": int(study.classes.sum()),
                       "load_seconds": study.load_seconds}}


_WORKER_STUDY: _Study | None = None
"""A worker process's own copy of the study (each worker loads the cohort once)."""


def _start_worker(threads: int, *study_args: Any) -> None:
    global _WORKER_STUDY
    torch.set_num_threads(threads)
    _WORKER_STUDY = _Study(*study_args)


def _worker_condition(split_seed: int, k: int | None, regimes: Sequence[str], tasks: Sequence[str],
                      segmenting: Sequence[str]) -> dict[str, Any]:
    assert _WORKER_STUDY is not None, "the worker was started without its study"
    return _run_condition(_WORKER_STUDY, split_seed, k, regimes_named(regimes), tasks, segmenting)


def _in_workers(workers: int, threads: int, study_args: tuple, conditions: Sequence[tuple],
                on_run: Callable[[dict[str, Any]], None] | None,
                on_condition: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run ``conditions`` (the arguments of :func:`_worker_condition`) in spawned worker processes.

    Results come back in the order of ``conditions``; ``on_condition`` sees each condition's result as soon as it is
    finished, ``on_run`` its runs as soon as every earlier condition is done too. The first condition that fails
    stops the study at once: the conditions not started are cancelled and the workers stopped (a study of an hour
    must not run on for an hour to report an error its first minutes met), and its error is raised here.
    """
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_start_worker,
                               initargs=(threads, *study_args))
    results: dict[int, dict[str, Any]] = {}
    reported = 0  # conditions whose runs went to on_run: the finished prefix, in order
    try:
        futures = {pool.submit(_worker_condition, *arguments): i for i, arguments in enumerate(conditions)}
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            if on_condition is not None:
                on_condition(results[futures[future]])
            while reported in results:
                for run in results[reported]["runs"] if on_run is not None else ():
                    on_run(run)
                reported += 1
    except BaseException:
        processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor has no public handle
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.terminate()
        raise
    pool.shutdown()
    return [results[i] for i in range(len(conditions))]


def run_study(
    datalist: Sequence[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    painter_config: str | os.PathLike,
    split_seeds: Sequence[int] = (0, 1, 2, 3, 4),
    tumour_subjects: Sequence[int | None] = (2, None),
    regimes: Sequence[str] = DEFAULT_REGIMES,
    settings: StudySettings | None = None,
    tasks: Sequence[str] = ("classification", "segmentation"),
    whole_slice_config: str | os.PathLike | None = None,
    slicing: Mapping[str, Any] | None = None,
    crop_size: int = 80,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 1,
    segmentation_regimes: Sequence[str] | None = None,
    completed: Sequence[Mapping[str, Any]] = (),
    on_condition: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the study: for each subject split and scarcity level, train every regime's models and score them on test.

    For each split seed the subjects are split into training, validation and test subjects (stratified by whether a
    subject has a tumour; never by slice). For each ``k`` in ``tumour_subjects`` the training set keeps every
    healthy training subject and ``k`` tumour subjects (nested in ``k``). The lesion painter (and the whole-slice
    GAN, when asked) is trained on those subjects alone, through its bundle; its slices enter through the
    augmented datalist (:func:`~monai_mri_gan.synthesis.build_painted_set`), read as a user's pipeline reads it.
    Every regime then trains a classifier (and, where it applies, a segmenter) per model seed with validation-based
    early stopping, and is scored once on the test subjects. A classifier on slice position and head area alone
    (:func:`~monai_mri_gan.study.scoring.no_lesion_floor`) is scored beside them.

    Every run is seeded by its split and model seed alone, so ``workers`` changes the wall time, not the record
    (apart from timings): with ``workers > 1`` the conditions (split, level) are shared among that many spawned
    processes, each loading the cohort once and using ``torch.get_num_threads() // workers`` threads (at least
    one). Small models gain from it on a few cores: two one-thread processes did 1.2x (classifier) and 1.4x
    (segmenter) the steps of one two-thread process on this project's 2-core machine.

    Args:
        datalist: the cohort's items (``image``, ``label``, ``subject``; ``class`` optional).
        output_dir: working folder (training datalists, generator runs and augmented sets per condition).
        painter_config: the lesion painter bundle's ``configs/train.json``.
        split_seeds: one subject split per seed.
        tumour_subjects: the scarcity levels ``k``; None for every tumour training subject.
        regimes: names of :data:`~monai_mri_gan.study.regimes.STUDY_REGIMES` to run.
        settings: budgets and model settings (:class:`StudySettings`).
        tasks: "classification" and/or "segmentation".
        whole_slice_config: the whole-slice bundle's ``configs/train.json``; needed by ``whole_slice_gan`` only.
        slicing: :func:`~monai_mri_gan.data.slice_transforms` arguments (:data:`STUDY_SLICING` when None); the
            painter is trained with the same.
        crop_size: the painter's crop size (to size its training budget).
        on_run: called with each run record in the calling process (e.g. to log progress or save partial
            results): as it is finished, or with ``workers > 1`` as its condition is.
        workers: processes that run conditions side by side.
        segmentation_regimes: the regimes of ``regimes`` that also train a segmenter (None: every one that can;
            class weights and whole-slice GAN samples cannot).
        completed: results of conditions an earlier, interrupted run of the same study finished (as ``on_condition``
            received them): those conditions are not run again, and their results take their place in the record.
            The caller vouches that they come from the same data, settings and code
            (:class:`~monai_mri_gan.study.journal.StudyJournal` checks it).
        on_condition: called with each condition's result (its runs, split and condition record) as soon as it is
            finished, in any order: what a resumed study passes back as ``completed``.

    Returns:
        ``runs`` (one record per model run: task, split, tumour_subjects, regime, seed, metrics, curve, seconds),
        ``splits`` (the subject ids of each split), ``settings``, ``conditions`` (training subjects and timings),
        ``resumed`` (how many conditions came from ``completed``) and ``seconds`` (this call's wall time).

    Raises:
        ValueError: for an unknown regime or task, a segmentation regime that is not run or cannot segment, a
            scarcity level the splits cannot give, or ``workers < 1``.
        SubjectLeakageError: if a held-out subject reaches a training set (never, by construction).
    """
    start = time.perf_counter()
    settings = settings or StudySettings()
    unknown = sorted(set(tasks) - {"classification", "segmentation"})
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: classification, segmentation.")
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}.")
    chosen = regimes_named(regimes)
    segmenting = [r.name for r in chosen if r.segments and (segmentation_regimes is None
                                                             or r.name in segmentation_regimes)]
    refused = sorted(set(segmentation_regimes or ()) - set(segmenting))
    if refused:
        raise ValueError(f"segmentation regime(s) {refused} are not among the regimes run or train no segmenter "
                         f"(regimes: {[r.name for r in chosen]}; class weights and whole-slice GAN samples do not).")
    slicing = dict(slicing if slicing is not None else STUDY_SLICING)
    study_args = (datalist, Path(output_dir), painter_config, whole_slice_config, settings, slicing, crop_size)
    conditions = [(int(split_seed), k) for split_seed in split_seeds for k in tumour_subjects]
    earlier = {(int(r["condition"]["split"]), r["condition"]["tumour_subjects"]): r for r in completed}
    todo = [(seed, k) for seed, k in conditions if (seed, _level(k)) not in earlier]
    fresh: list[dict[str, Any]] = []
    if todo and int(workers) == 1:
        study = _Study(*study_args)
        for split_seed, k in todo:
            fresh.append(_run_condition(study, split_seed, k, chosen, tasks, segmenting, on_run))
            if on_condition is not None:
                on_condition(fresh[-1])
    elif todo:
        threads = max(1, torch.get_num_threads() // int(workers))
        names = [r.name for r in chosen]
        fresh = _in_workers(int(workers), threads, study_args, [(seed, k, names, list(tasks), segmenting)
                                                                for seed, k in todo], on_run, on_condition)
    finished = {**earlier, **{(seed, _level(k)): r for (seed, k), r in zip(todo, fresh, strict=True)}}
    done = [finished[(seed, _level(k))] for seed, k in conditions]
    splits = list({r["split"]["split"]: r["split"] for r in done}.values())
    return {"runs": [run for r in done for run in r["runs"]], "splits": splits, "settings": asdict(settings),
            "slicing": slicing, "regimes": [r.name for r in chosen], "segmentation_regimes": segmenting,
            "tasks": list(tasks),
            "conditions": [r["condition"] for r in done], "cohort": done[0]["cohort"] if done else {},
            "resumed": len(conditions) - len(todo), "seconds": time.perf_counter() - start}
