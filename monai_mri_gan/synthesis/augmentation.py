"""Augmented datalists: real and synthetic slices that a plain MONAI pipeline reads alike.

:func:`build_balanced_set` (whole-slice GAN) and :func:`build_painted_set` (lesion painter) count the real slices
per class (cut with the checkpoint's slicing settings, so a slice counts as tumour exactly as it did in training),
ask the family's synthesiser for the missing minority-class slices, and write a MONAI/Decathlon datalist that mixes
both.

Real and synthetic items are alike on purpose: a downstream model must not learn "synthetic" instead of "tumour".
Every item is a 2D NIfTI slice (``(H, W, 1)``, its 4x4 affine in the header) with the same keys, so
``LoadImaged(["image"])`` + ``EnsureChannelFirstd`` (+ ``SqueezeDimd(dim=-1)`` for a 2D network) read both into
tensors of the same shape, spacing, orientation and dtype:

- whole-slice sets: the real slices are written on the generator's grid (the run's ``image_size``), mapped back to
  source units by the same :func:`~monai_mri_gan.transforms.invert_slice_normalisation` as the synthetic ones, so
  the air around the head has the source's own background level in both;
- painted sets: the real slices are written as loaded from their sources, at native resolution, like the healthy
  base slices the painted ones keep outside their blend band; each item has a ``label`` mask (all zero for a
  healthy slice).

Real slices are copies of real anatomy: the datalist and its ``real`` folder are local outputs (see the privacy
section of the docs). Their file names and ``subject`` values are keyed ids (HMAC under the run folder's
``provenance_key``), never a path, a name or a datalist field of the source.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from ..transforms.intensity import invert_slice_normalisation
from ..utils import as_flag, replace_atomically
from .painter import LesionPainterSynthesiser
from .provenance import keyed_id, run_provenance_key
from .sampler import SliceSynthesiser, check_destinations
from .writer import SliceWriter

__all__ = ["AUGMENTED_DATALIST", "build_balanced_set", "build_painted_set", "synthetic_quota"]

logger = logging.getLogger(__name__)

AUGMENTED_DATALIST = "datalist_augmented.json"
"""File name of the mixed datalist in the output folder."""

SYNTHETIC_SUBJECT = "synthetic"
"""The ``subject`` of a whole-slice GAN sample, which shows no real subject's anatomy."""


def synthetic_quota(counts: Mapping[int, int], num_classes: int, target_ratio: float = 1.0) -> dict[int, int]:
    """How many synthetic slices each class needs so that every class has ``target_ratio`` x the majority's count.

    Args:
        counts: real slices per class index (missing classes count 0).
        num_classes: the classes to balance, ``0..num_classes-1``.
        target_ratio: the minority/majority ratio to reach, in (0, 1].

    Returns:
        class index -> number of synthetic slices (0 for the majority class), the least that reaches the ratio:
        ``ceil(target_ratio * majority) - count``.

    Raises:
        ValueError: when ``target_ratio`` is outside (0, 1], there are fewer than two classes, or no real slice.
    """
    ratio = float(target_ratio)
    if math.isnan(ratio) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"target_ratio must be in (0, 1], got {target_ratio}.")
    if num_classes < 2:
        raise ValueError(f"balancing needs a class-conditional generator with two or more classes, got {num_classes}.")
    majority = max((int(counts.get(c, 0)) for c in range(num_classes)), default=0)
    if majority == 0:
        raise ValueError("there are no real slices to balance.")
    # rounded first, so that a ratio like 0.3 x 10 = 3.0000000000000004 does not ask for a fourth slice
    target = math.ceil(round(ratio * majority, 9))
    return {c: max(0, target - int(counts.get(c, 0))) for c in range(num_classes)}


def _relative(path: str | os.PathLike, base: Path) -> str:
    """``path`` relative to ``base`` (POSIX separators), as datalists hold them."""
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


class _RealSlices:
    """Where and how the real slices of an augmented set are written: ``<output_dir>/real``, keyed file names."""

    def __init__(self, cohort: Sequence[Mapping[str, Any]], output_dir: Path, key: bytes, compress: bool,
                 overwrite: bool, with_label: bool) -> None:
        self.cohort = cohort
        self.output_dir = output_dir
        self.key = key
        self.overwrite = overwrite
        self.with_label = with_label
        self.suffix = ".nii.gz" if compress else ".nii"
        self.image_writer = SliceWriter(overwrite=overwrite, allow_shear=True)
        self.mask_writer = SliceWriter(output_dtype="int16", overwrite=overwrite, allow_shear=True)

    def slice_id(self, s: Mapping[str, Any]) -> str:
        image = s["image"]
        return keyed_id(self.key, "real_slice", str(image.meta.get("filename_or_obj")), str(int(s["slice_axis"])),
                        str(int(s["slice_index"])))[:20]

    def paths(self, s: Mapping[str, Any]) -> dict[str, Path]:
        stem = self.output_dir / "real" / f"real_{int(s['class'])}_{self.slice_id(s)}"
        paths = {"image": stem.with_name(stem.name + self.suffix)}
        if self.with_label:
            paths["label"] = stem.with_name(stem.name + "_mask" + self.suffix)
        return paths

    def subject(self, s: Mapping[str, Any]) -> str:
        subject = s.get("subject", s["image"].meta.get("filename_or_obj"))
        return "subject-" + keyed_id(self.key, "subject", str(subject))[:16]

    def destinations(self) -> list[Path]:
        return [p for s in self.cohort for p in self.paths(s).values()]

    def write(self, values: Callable[[int], tuple[np.ndarray, np.ndarray | None]], base: Path) -> list[dict[str, Any]]:
        """Write every real slice (``values(position)`` gives its image and mask in source units) and list them."""
        (self.output_dir / "real").mkdir(parents=True, exist_ok=True)
        items = []
        for position, s in enumerate(self.cohort):
            image, mask = values(position)
            affine = s["image"].affine
            paths = self.paths(s)
            self.image_writer.set_data_array(image)
            self.image_writer.set_metadata({"affine": affine, "source_dtype": s["image"].meta.get("source_dtype")})
            self.image_writer.write(paths["image"], overwrite=self.overwrite)
            item = {"image": _relative(paths["image"], base)}
            if self.with_label:
                plane = np.zeros((1, *image.shape[1:]), np.int16) if mask is None else np.asarray(mask)
                self.mask_writer.set_data_array(plane)
                self.mask_writer.set_metadata({"affine": affine})
                self.mask_writer.write(paths["label"], overwrite=self.overwrite)
                item["label"] = _relative(paths["label"], base)
            items.append({**item, "class": int(s["class"]), "synthetic": False, "subject": self.subject(s)})
        return items


def _write_document(path: Path, document: Mapping[str, Any], overwrite: bool) -> None:
    data = (json.dumps(document, indent=1) + "\n").encode("utf-8")
    replace_atomically(path, lambda handle: handle.write(data), overwrite=overwrite)
    logger.info("augmented set: real %s + synthetic %s slices per class -> %s",
                document["real_counts"], document["synthetic_counts"], path)


def _counts_document(description: str, class_names: Sequence[str], target_ratio: float,
                     real: Mapping[int, int], quota: Mapping[int, int]) -> dict[str, Any]:
    """The datalist's header: what it is, the classes and the counts."""
    classes = range(len(class_names))
    return {
        "description": description,
        "class_names": list(class_names),
        "target_ratio": float(target_ratio),
        "real_counts": {str(c): int(real.get(c, 0)) for c in classes},
        "synthetic_counts": {str(c): int(quota.get(c, 0)) for c in classes},
        "total_counts": {str(c): int(real.get(c, 0)) + int(quota.get(c, 0)) for c in classes},
    }


def build_balanced_set(
    ckpt_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    target_ratio: float = 1.0,
    seed: int = 0,
    overwrite: bool = False,
    compress: bool = True,
    use_ema: bool = True,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
) -> Path:
    """Write synthetic minority-class slices of a whole-slice GAN and a datalist that mixes them with the real ones.

    ``<output_dir>/datalist_augmented.json`` holds a ``training`` list of items ``{"image", "class", "synthetic",
    "subject"}``: first one per real slice of the cohort (written to ``<output_dir>/real`` on the generator's grid,
    see the module docstring), then one per synthetic slice (``<output_dir>/synthetic``, each with its provenance
    sidecar beside it, ``<stem>.json``). Paths are relative to the JSON's folder. Its other keys record the class
    names, counts, the ratio, the seed and the checkpoint's SHA-256. Synthetic items have the subject
    ``"synthetic"``; real ones a keyed id of their subject.

    Args:
        ckpt_path: a checkpoint file, or a training output folder (its latest checkpoint).
        output_dir: folder of the datalist, the real copies and the synthetic slices.
        dataset_dir: folder of real volumes (see :func:`~monai_mri_gan.data.resolve_datalist`).
        datalist: datalist JSON of real volumes; with ``dataset_dir`` also None, the embedded demo cohort.
        target_ratio: minority/majority slice ratio to reach, in (0, 1].
        seed: seed of the synthetic samples and of their reference slices.
        overwrite: replace existing outputs.
        compress: write ``.nii.gz`` (else ``.nii``).
        use_ema: sample the EMA generator.
        device: device of the generator; None for CPU.
        cache_dir: optional on-disk cache of the real slices.
        on_error: "raise" or "skip" bad real volumes.

    Returns:
        the path of the datalist JSON.

    Raises:
        FileExistsError: when the datalist or another output exists and ``overwrite`` is False (nothing written).
        ValueError: see :func:`synthetic_quota`.
    """
    output_dir = Path(output_dir)
    overwrite = as_flag(overwrite, "overwrite")
    datalist_path = output_dir / AUGMENTED_DATALIST
    synthesiser = SliceSynthesiser(
        ckpt_path, output_dir / "synthetic", samples_per_class=0, seed=seed, dataset_dir=dataset_dir, datalist=datalist,
        overwrite=overwrite, compress=compress, use_ema=use_ema, device=device, cache_dir=cache_dir,
        on_error=on_error,
    )
    cohort = synthesiser.reference_cohort
    real = _RealSlices(cohort, output_dir, synthesiser.key, as_flag(compress, "compress"), overwrite, with_label=False)
    check_destinations([datalist_path, *real.destinations()], overwrite)
    real_counts = cohort.class_counts()
    quota = synthetic_quota(real_counts, synthesiser.num_classes, target_ratio)
    written = synthesiser.run(samples_per_class=quota)

    def values(position: int) -> tuple[np.ndarray, None]:
        image = cohort[position]["image"]
        return invert_slice_normalisation(image, image.meta), None

    real_items = real.write(values, output_dir)
    synthetic_items = [
        {"image": _relative(w["image"], output_dir), "class": int(w["class"]), "synthetic": True,
         "subject": SYNTHETIC_SUBJECT}
        for w in written if w["kind"] == "slice"
    ]
    class_names = [synthesiser.class_name(c) for c in range(synthesiser.num_classes)]
    document = {
        **_counts_document("real slices and synthetic (generated) slices, balanced to a minority/majority class "
                           "ratio; every item a 2D NIfTI slice on the generator's grid", class_names, target_ratio,
                           real_counts, quota),
        "checkpoint_sha256": synthesiser.checkpoint_sha256,
        "seed": int(seed),
        "training": real_items + synthetic_items,
    }
    _write_document(datalist_path, document, overwrite)
    return datalist_path


def build_painted_set(
    ckpt_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike | None = None,
    datalist: str | os.PathLike | None = None,
    target_ratio: float = 1.0,
    seed: int = 0,
    method: str = "gan",
    overwrite: bool = False,
    compress: bool = True,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    on_error: str = "raise",
    placement: Mapping[str, Any] | None = None,
) -> Path:
    """Paint tumour slices with a lesion painter (or copy-paste) and write a segmentation datalist of real + painted.

    ``<output_dir>/datalist_augmented.json`` holds a ``training`` list of items ``{"image", "label", "class",
    "synthetic", "subject"}``: first one per real slice of the cohort at native resolution, as loaded from its
    source, with its mask (all zero for a slice without one) in ``<output_dir>/real``; then one per painted slice
    (``<output_dir>/synthetic``, with its mask and provenance sidecar), enough tumour slices to reach
    ``target_ratio`` tumour/healthy. A painted item's ``subject`` is its base slice's subject (keyed), whose anatomy
    it shows: keep it with that subject when splitting.

    Args:
        ckpt_path: a lesion painter checkpoint file, or its training output folder.
        output_dir: folder of the datalist, the real copies and the painted slices.
        dataset_dir: folder of real volumes, base slices and lesions alike (see
            :func:`~monai_mri_gan.data.resolve_datalist`).
        datalist: datalist JSON of real volumes; with ``dataset_dir`` also None, the embedded demo cohort.
        target_ratio: tumour/healthy slice ratio to reach, in (0, 1].
        seed: seed of the placements (and the painter's noise).
        method: "gan" (the painter) or "copy_paste" (the real lesion's pixels, the comparator).
        overwrite: replace existing outputs.
        compress: write ``.nii.gz`` (else ``.nii``).
        device: device of the generator; None for CPU.
        cache_dir: optional on-disk cache of the real slices.
        on_error: "raise" or "skip" bad real volumes.
        placement: placement settings (see :class:`~monai_mri_gan.synthesis.LesionPainterSynthesiser`).

    Returns:
        the path of the datalist JSON.

    Raises:
        FileExistsError: when the datalist or another output exists and ``overwrite`` is False (nothing written).
        ValueError: see :func:`synthetic_quota` and :class:`~monai_mri_gan.synthesis.LesionPainterSynthesiser`.
    """
    output_dir = Path(output_dir)
    overwrite = as_flag(overwrite, "overwrite")
    datalist_path = output_dir / AUGMENTED_DATALIST
    synthesiser = LesionPainterSynthesiser(
        ckpt_path, output_dir / "synthetic", num_samples=0, seed=seed, dataset_dir=dataset_dir, datalist=datalist,
        method=method, overwrite=overwrite, compress=compress, device=device, cache_dir=cache_dir, on_error=on_error,
        placement=placement,
    )
    cohort = synthesiser.base_cohort
    key = run_provenance_key(synthesiser.key_path, output_dir)
    real = _RealSlices(cohort, output_dir, key, as_flag(compress, "compress"), overwrite, with_label=True)
    real_counts = cohort.class_counts()
    quota = {0: 0, 1: synthetic_quota(real_counts, 2, target_ratio)[1]}
    synthesiser.num_samples = quota[1]
    check_destinations([datalist_path, *real.destinations()], overwrite)
    written = synthesiser.run()
    real_items = real.write(_source_values(cohort), output_dir)
    painted_items = [
        {"image": _relative(w["image"], output_dir), "label": _relative(w["mask"], output_dir), "class": 1,
         "synthetic": True, "subject": real.subject(cohort[int(w["position"])])}
        for w in written
    ]
    document = {
        **_counts_document(f"real slices and painted tumour slices ({method}) with their masks, balanced to a "
                           "tumour/healthy ratio; every item a 2D NIfTI slice at its source's resolution",
                           ["no_tumour", "tumour"], target_ratio, real_counts, quota),
        "method": method,
        "checkpoint_sha256": synthesiser.checkpoint_sha256,
        "seed": int(seed),
        "training": real_items + painted_items,
    }
    _write_document(datalist_path, document, overwrite)
    return datalist_path


def _source_values(cohort: Any) -> Callable[[int], tuple[MetaTensor, MetaTensor | None]]:
    """``position -> (image, mask)`` of a native-resolution cohort's source slices, one volume in memory at a time."""
    volumes: dict[tuple[str, int], list[int]] = {}
    for position, s in enumerate(cohort):
        volumes.setdefault((str(s["image"].meta.get("filename_or_obj")), int(s["slice_axis"])), []).append(position)
    volume_of = {p: members for members in volumes.values() for p in members}
    loaded: dict[int, dict[str, Any]] = {}

    def values(position: int) -> tuple[MetaTensor, MetaTensor | None]:
        if position not in loaded:
            loaded.clear()
            loaded.update(cohort.source_slices(volume_of[position]))
        found = loaded[position]
        return found["image"], found["label"]

    return values
