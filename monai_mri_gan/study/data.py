"""The study's slices: real and synthetic items read the way a user's MONAI pipeline reads an augmented datalist.

Every slice the downstream models see, real or synthetic, training or test, goes through one chain of MONAI
transforms from source units: ``LoadImaged`` + ``EnsureChannelFirstd`` for datalist items (what
:func:`~monai_mri_gan.synthesis.build_painted_set` writes), then the same per-slice chain for all:
percentile scaling of the slice to [-1, 1], padding to a square and resizing to ``image_size`` (masks by nearest
neighbour). Real validation and test slices come from the cohort in source units
(:meth:`~monai_mri_gan.data.SliceCohort.source_slices`), so they are what the datalist's real copies hold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import load_decathlon_datalist
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    LoadImaged,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRangePercentilesd,
    SqueezeDimd,
)

from ..data import SliceCohort

__all__ = ["StudySlices", "cohort_slices", "datalist_slices", "slice_chain", "tumour_mask"]


@dataclass
class StudySlices:
    """Slices ready for a downstream model.

    Args:
        images: ``(N, 1, S, S)`` float slices in [-1, 1].
        masks: ``(N, 1, S, S)`` uint8 tumour masks (0 or 1: the tumour labels the study counts), or None when the
            items carry none.
        classes: ``(N,)`` long, 1 for a tumour slice.
        subjects: subject id of each slice (keyed ids for datalist items).
        synthetic: ``(N,)`` bool.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    classes: torch.Tensor
    subjects: list[str]
    synthetic: torch.Tensor

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    def subset(self, index: torch.Tensor | Sequence[int]) -> StudySlices:
        """The slices at ``index``."""
        index = torch.as_tensor(index, dtype=torch.long)
        return StudySlices(self.images[index], None if self.masks is None else self.masks[index],
                           self.classes[index], [self.subjects[i] for i in index.tolist()], self.synthetic[index])

    @staticmethod
    def concat(parts: Sequence[StudySlices]) -> StudySlices:
        """The slices of ``parts``, in order; masks only when every part has them."""
        masks = [p.masks for p in parts]
        return StudySlices(torch.cat([p.images for p in parts]),
                           None if any(m is None for m in masks) else torch.cat(masks),  # type: ignore[misc]
                           torch.cat([p.classes for p in parts]), [s for p in parts for s in p.subjects],
                           torch.cat([p.synthetic for p in parts]))


def slice_chain(image_size: int, with_label: bool) -> Compose:
    """The per-slice chain from a ``(1, H, W)`` slice in source units to ``(1, S, S)`` in [-1, 1].

    Args:
        image_size: side ``S`` of the square the models see.
        with_label: also carry a ``label`` mask (padded with 0, resized by nearest neighbour).
    """
    keys = ["image", "label"] if with_label else ["image"]
    return Compose([
        ScaleIntensityRangePercentilesd("image", lower=0.5, upper=99.5, b_min=-1.0, b_max=1.0, clip=True),
        _SquarePadd(keys),
        Resized(keys, spatial_size=(image_size, image_size), mode=["area", "nearest"][: len(keys)]),
    ])


class _SquarePadd:
    """Pad a ``(C, H, W)`` slice (and its mask) to a square, centred: the image with -1, the mask with 0."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = list(keys)

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        d = dict(data)
        side = max(d["image"].shape[1:])
        for key, value in zip(self.keys, (-1.0, 0.0), strict=False):
            d[key] = ResizeWithPadOrCropd(key, (side, side), value=value)(d)[key]
        return d


def tumour_mask(label: torch.Tensor, labels: Sequence[int] | None) -> torch.Tensor:
    """The uint8 0/1 mask of the tumour ``labels`` in a label map (of any positive label when None)."""
    label = torch.as_tensor(label).as_subclass(torch.Tensor)
    inside = label > 0 if labels is None else torch.isin(label.round().long(), torch.as_tensor(list(labels)))
    return inside.to(torch.uint8)


def _stack(items: Sequence[Mapping[str, Any]], with_label: bool,
           labels: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    images = torch.stack([torch.as_tensor(i["image"]).as_subclass(torch.Tensor).float() for i in items])
    if not with_label:
        return images, None
    return images, torch.stack([tumour_mask(i["label"], labels) for i in items])


def datalist_slices(path: str | os.PathLike, image_size: int, labels: Sequence[int] | None = None,
                    key: str = "training", synthetic_only: bool = False) -> StudySlices:
    """The items of an augmented datalist, read as a user's pipeline reads them, then :func:`slice_chain`.

    Args:
        path: a datalist JSON (e.g. ``datalist_augmented.json``); relative paths are relative to its folder.
        image_size: side of the square slices.
        labels: the mask labels that are tumour (any positive label when None).
        key: the datalist section.
        synthetic_only: read only the items marked ``synthetic`` (the study has the real slices already).
    """
    path = Path(path)
    items = load_decathlon_datalist(str(path), data_list_key=key, base_dir=str(path.parent))
    if synthetic_only:
        items = [i for i in items if i.get("synthetic", False)]
    with_label = all("label" in i for i in items)
    keys = ["image", "label"] if with_label else ["image"]
    load = Compose([LoadImaged(keys), EnsureChannelFirstd(keys), SqueezeDimd(keys, dim=-1),
                    slice_chain(image_size, with_label)])
    loaded = [load(i) for i in items]
    images, masks = _stack(loaded, with_label, labels)
    return StudySlices(images, masks, torch.tensor([int(i["class"]) for i in items]),
                       [str(i.get("subject", "")) for i in items],
                       torch.tensor([bool(i.get("synthetic", False)) for i in items]))


def cohort_slices(cohort: SliceCohort, positions: Sequence[int], subjects: Sequence[str], image_size: int,
                  labels: Sequence[int] | None = None) -> StudySlices:
    """Real slices of a native-resolution cohort, from their sources, through :func:`slice_chain`.

    Args:
        cohort: a cohort cut at native resolution (``image_size=None``).
        positions: the slices to take.
        subjects: subject id of every slice of the cohort.
        image_size: side of the square slices.
        labels: the mask labels that are tumour (any positive label when None).

    Returns:
        the slices, in the order of ``positions`` (each volume is read once).
    """
    chain = slice_chain(image_size, with_label=True)
    positions = [int(p) for p in positions]
    by_volume: dict[str, list[int]] = {}
    for p in positions:
        by_volume.setdefault(str(cohort[p]["image"].meta.get("filename_or_obj")), []).append(p)
    loaded: dict[int, dict[str, Any]] = {}
    for members in by_volume.values():
        sources = cohort.source_slices(members)  # one volume read once
        for p in members:
            image = sources[p]["image"][..., 0]
            label = sources[p]["label"]
            label = torch.zeros_like(image) if label is None else label[..., 0]
            loaded[p] = chain({"image": image, "label": label})
    images, masks = _stack([loaded[p] for p in positions], True, labels)
    return StudySlices(images, masks, torch.tensor([int(cohort[p]["class"]) for p in positions]),
                       [subjects[p] for p in positions], torch.zeros(len(positions), dtype=torch.bool))
