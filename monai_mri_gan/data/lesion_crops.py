"""Native-resolution crops centred on every tumour lesion of a cohort: what the lesion painter trains on."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..transforms import LESION_JOIN_MM, crop_plane, lesion_components, lesion_window, slice_spacing

__all__ = ["LesionCrops"]

logger = logging.getLogger(__name__)


class LesionCrops(torch.utils.data.Dataset):
    """One ``crop_size`` x ``crop_size`` crop per tumour lesion of a cohort's slices.

    Each crop is centred on its lesion's bounding box and moved inside the slice (:func:`~monai_mri_gan.transforms.
    lesion_window`, as synthesis and evaluation place their windows), at the slice's native resolution, and holds
    the normalised image and the whole label map of the crop (other lesions that fall inside it included, so that
    the painter's hole covers every lesion it shows). A slice smaller than the crop is padded with its background
    (``norm_out_low``, the low end of the training space) and label 0. A lesion larger than the crop is kept, cut by
    the crop's edge, and counted in :attr:`oversized` (a warning names the largest, to size ``crop_size``).

    Items: ``{"image": (1, S, S) float32, "label": (1, S, S) int64, "subject": str}``.

    Args:
        slices: slice items as :class:`~monai_mri_gan.data.SliceCohort` serves them, cut at native resolution
            (``image_size=None``), with their ``label`` masks; items without one are skipped.
        crop_size: ``S``, a multiple of 16 (the painter's U-Net halves it four times).
        min_voxels: lesions with fewer pixels are ignored.
        join_mm: components nearer than this to one another are one lesion, with one crop
            (:func:`~monai_mri_gan.transforms.lesion_components`, at the slice's spacing); 0: a crop per component.

    Raises:
        ValueError: when ``crop_size`` is not a positive multiple of 16, or no slice holds a lesion.
    """

    def __init__(self, slices: Sequence[Mapping[str, Any]], crop_size: int = 80, min_voxels: int = 20,
                 join_mm: float = LESION_JOIN_MM) -> None:
        if crop_size < 16 or crop_size % 16:
            raise ValueError(f"crop_size must be a positive multiple of 16, got {crop_size}.")
        images, labels, self.subjects = [], [], []
        self.oversized, largest = 0, (0, 0)
        for index in range(len(slices)):
            item = slices[index]
            if item.get("label") is None:
                continue
            image = torch.as_tensor(item["image"]).as_subclass(torch.Tensor)[0, ..., 0].float()
            label = torch.as_tensor(item["label"]).as_subclass(torch.Tensor)[0, ..., 0].long()
            background = float(getattr(item["image"], "meta", {}).get("norm_out_low", -1.0))
            spacing = slice_spacing(item["image"])
            for rows, cols in lesion_components(label.numpy(), min_voxels, spacing, join_mm):
                size = (rows.stop - rows.start, cols.stop - cols.start)
                if max(size) > crop_size:
                    self.oversized += 1
                    largest = max(largest, size)
                start = lesion_window([rows.start, rows.stop, cols.start, cols.stop], crop_size, image.shape)
                images.append(crop_plane(image, start, (crop_size, crop_size), background))
                labels.append(crop_plane(label, start, (crop_size, crop_size), 0))
                self.subjects.append(str(item.get("subject", "")))
        if not images:
            raise ValueError(f"no lesion of at least {min_voxels} pixels in {len(slices)} slices: the lesion painter "
                             "needs training slices with tumour masks.")
        if self.oversized:
            logger.warning("%d lesion(s) are larger than the %d px crops (largest %dx%d px): raise crop_size to show "
                           "them whole.", self.oversized, crop_size, *largest)
        self.images = torch.stack(images)[:, None].contiguous()
        self.labels = torch.stack(labels)[:, None].contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.images[index], "label": self.labels[index], "subject": self.subjects[index]}
