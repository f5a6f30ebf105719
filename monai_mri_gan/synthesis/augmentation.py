"""Class-balanced augmentation sets: real slices plus enough synthetic minority-class slices to reach a class ratio.

:func:`build_balanced_set` counts the real slices per class (cut with the checkpoint's slicing configuration, so a
slice counts as tumour exactly as it did in training), asks :class:`~monai_mri_gan.synthesis.SliceSynthesiser`
for the missing minority-class slices, and writes a MONAI/Decathlon datalist that mixes both: real items point
at a volume and a slice index, synthetic items at a synthetic NIfTI slice and its provenance sidecar.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..utils import replace_atomically
from .sampler import SliceSynthesiser, as_flag

__all__ = ["AUGMENTED_DATALIST", "build_balanced_set", "synthetic_quota"]

logger = logging.getLogger(__name__)

AUGMENTED_DATALIST = "datalist_augmented.json"
"""File name of the mixed datalist in the output folder."""


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
    """Write synthetic minority-class slices and a datalist that mixes them with the real slices.

    The datalist ``<output_dir>/datalist_augmented.json`` holds a ``training`` list with, first, one item per real
    slice, ``{"image": <volume>, "label": <mask>, "slice_index": k, "slice_axis": a, "class": c,
    "subject": ..., "synthetic": false}`` (``label`` only when the volume has one), then one item per synthetic
    slice, ``{"image": <synthetic NIfTI>, "class": c, "synthetic": true, "provenance": <sidecar>}``; paths are
    relative to the JSON's folder. Synthetic slices go to ``<output_dir>/synthetic``. Its other keys record the
    counts, the ratio and the checkpoint's SHA-256.

    Args:
        ckpt_path: a checkpoint file, or a training output folder (its latest checkpoint).
        output_dir: folder of the datalist and the synthetic slices.
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
        FileExistsError: when the datalist or a synthetic file exists and ``overwrite`` is False (nothing written).
        ValueError: see :func:`synthetic_quota`.
    """
    output_dir = Path(output_dir)
    overwrite = as_flag(overwrite, "overwrite")
    datalist_path = output_dir / AUGMENTED_DATALIST
    if not overwrite and datalist_path.exists():
        raise FileExistsError(f"{datalist_path}: exists; pass overwrite=True to replace it (nothing written).")
    synthesiser = SliceSynthesiser(
        ckpt_path, output_dir / "synthetic", samples_per_class=0, seed=seed, dataset_dir=dataset_dir, datalist=datalist,
        overwrite=overwrite, compress=compress, use_ema=use_ema, device=device, cache_dir=cache_dir,
        on_error=on_error,
    )
    cohort = synthesiser.reference_cohort
    real_counts = cohort.class_counts()
    quota = synthetic_quota(real_counts, synthesiser.num_classes, target_ratio)
    written = synthesiser.run(samples_per_class=quota)

    real_items: list[dict[str, Any]] = []
    for s in cohort:
        item: dict[str, Any] = {"image": _relative(s["image"].meta["filename_or_obj"], output_dir)}
        if s.get("label") is not None:
            item["label"] = _relative(s["label"].meta["filename_or_obj"], output_dir)
        item.update({"slice_index": int(s["slice_index"]), "slice_axis": int(s["slice_axis"]),
                     "class": int(s["class"])})
        if "subject" in s:
            item["subject"] = s["subject"]
        item["synthetic"] = False
        real_items.append(item)
    synthetic_items = [
        {"image": _relative(w["image"], output_dir), "class": int(w["class"]), "synthetic": True,
         "provenance": _relative(w["provenance"], output_dir)}
        for w in written if w["kind"] == "slice"
    ]
    total = {c: real_counts.get(c, 0) + quota[c] for c in range(synthesiser.num_classes)}
    document = {
        "description": "real slices and synthetic (generated) slices, balanced to a minority/majority class ratio",
        "class_names": [synthesiser.class_name(c) for c in range(synthesiser.num_classes)],
        "target_ratio": float(target_ratio),
        "real_counts": {str(c): int(real_counts.get(c, 0)) for c in range(synthesiser.num_classes)},
        "synthetic_counts": {str(c): int(n) for c, n in quota.items()},
        "total_counts": {str(c): int(n) for c, n in total.items()},
        "checkpoint_sha256": synthesiser.checkpoint_sha256,
        "seed": int(seed),
        "training": real_items + synthetic_items,
    }
    data = (json.dumps(document, indent=1) + "\n").encode("utf-8")
    replace_atomically(datalist_path, lambda handle: handle.write(data), overwrite=overwrite)
    logger.info("balanced set: real %s + synthetic %s slices per class -> %s",
                document["real_counts"], document["synthetic_counts"], datalist_path)
    return datalist_path
