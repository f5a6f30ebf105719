"""Slice datasets: a cohort is read, normalised and cut into 2D slices once, then served from memory."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import Dataset, PersistentDataset
from monai.transforms import Compose, LoadImaged, MapTransform, Orientationd, Spacingd
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import DataError, ErrorPolicy
from ..transforms import ExtractSlicesd, FitSliced, RobustNormalised, cut_slices
from ..version import __version__
from .readers import SimpleITKReader

__all__ = [
    "CheckSameGridd",
    "SliceCohort",
    "SliceTensorDataset",
    "class_balanced_sampler",
    "find_data_error",
    "slice_transforms",
    "volume_transforms",
]

logger = logging.getLogger(__name__)


class CheckSameGridd(MapTransform):
    """Check that every key's image lies on the reference key's voxel grid (shape and affine).

    Args:
        keys: keys to check (e.g. the mask).
        ref_key: the image that defines the grid.
        atol: tolerance on affine entries, in mm.
        allow_missing_keys: skip keys that are absent.

    Raises:
        DataError: naming the mismatching file, when a shape or affine differs.
    """

    def __init__(self, keys: Sequence[str] | str, ref_key: str = "image", atol: float = 1e-3,
                 allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key
        self.atol = atol

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        ref = d[self.ref_key]
        for key in self.key_iterator(d):
            img = d[key]
            name = img.meta.get("filename_or_obj", key)
            if tuple(img.shape[1:]) != tuple(ref.shape[1:]):
                raise DataError(name, f"shape {tuple(img.shape[1:])} does not match its image's "
                                      f"{tuple(ref.shape[1:])} ({ref.meta.get('filename_or_obj', self.ref_key)}).")
            if not torch.allclose(img.affine.double(), ref.affine.double(), atol=self.atol):
                raise DataError(name, "geometry (affine) does not match its image "
                                      f"{ref.meta.get('filename_or_obj', self.ref_key)}.")
        return d


def volume_transforms(spacing: Sequence[float] | None = None, volume_index: int | None = None) -> list[Callable]:
    """The chain from a datalist item to its volumes on the grid slices are cut from, before normalisation.

    Load ``image`` and, when present, ``label`` (any supported source, geometry in RAS) -> check the mask's grid
    -> orient to RAS -> optional resampling. :func:`slice_transforms` continues from here.

    Args:
        spacing: optional target spacing in mm.
        volume_index: the volume to take from 4D inputs.

    Returns:
        a list of MONAI dictionary transforms.
    """
    keys = ["image", "label"]
    chain: list[Callable] = [
        LoadImaged(keys, reader=SimpleITKReader(volume_index=volume_index), ensure_channel_first=True,
                   image_only=True, allow_missing_keys=True),
        CheckSameGridd("label", ref_key="image"),
        Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")), allow_missing_keys=True),
    ]
    if spacing is not None:
        chain.append(Spacingd(keys, pixdim=tuple(spacing), mode=("bilinear", "nearest"), allow_missing_keys=True))
    return chain


def slice_transforms(image_size: int | None = 128, axis: int = 2, spacing: Sequence[float] | None = None,
                     norm_mode: str = "percentile", lower: float = 0.5, upper: float = 99.5,
                     min_foreground: float = 0.05, tumour_min_voxels: int = 1,
                     tumour_labels: Sequence[int] | None = None, drop_ambiguous: bool = False,
                     volume_index: int | None = None) -> list[Callable]:
    """The deterministic chain from a datalist item to training-size 2D slices.

    :func:`volume_transforms` (load, check the mask's grid, orient to RAS, optional resampling)
    -> per-volume robust normalisation to [-1, 1] -> cut slices along ``axis`` (a list of slice items) -> fit each
    slice to ``image_size`` x ``image_size`` (or keep its native size). Each slice keeps a full 4x4 affine.

    Args:
        image_size: training size in pixels; None keeps every slice at its native resolution and size (the
            lesion painter works on native crops).
        axis: slicing axis in RAS voxel space (2 = axial).
        spacing: optional target spacing in mm before slicing.
        norm_mode: "percentile" or "zscore".
        lower: lower percentile for clipping.
        upper: upper percentile for clipping.
        min_foreground: minimum head fraction of a slice to keep it.
        tumour_min_voxels: mask voxels that make a slice a tumour slice.
        tumour_labels: mask values that count as tumour (None: any non-zero value); see :class:`ExtractSlicesd`.
        drop_ambiguous: leave out slices with some mask but too little tumour; see :class:`ExtractSlicesd`.
        volume_index: the volume to take from 4D inputs.

    Returns:
        a list of MONAI transforms, flat, so that caching datasets cache all of it.
    """
    chain = [
        *volume_transforms(spacing=spacing, volume_index=volume_index),
        RobustNormalised("image", mode=norm_mode, lower=lower, upper=upper),
        ExtractSlicesd(keys=("image",), label_key="label", axis=axis, min_foreground=min_foreground,
                       tumour_min_voxels=tumour_min_voxels, tumour_labels=tumour_labels,
                       drop_ambiguous=drop_ambiguous),
    ]
    if image_size is not None:
        chain.append(FitSliced(keys=("image",), label_key="label", spatial_size=image_size))
    return chain


def _source_format(path: str) -> str:
    """The format of a volume's source, from its path: a DICOM series folder, or the file's extension."""
    name = Path(path).name.lower()
    for suffix, fmt in ((".nii.gz", "nifti"), (".nii", "nifti"), (".nrrd", "nrrd"), (".nhdr", "nrrd"),
                        (".mha", "metaimage"), (".mhd", "metaimage")):
        if name.endswith(suffix):
            return fmt
    return "dicom"


def find_data_error(exc: BaseException) -> DataError | None:
    """The :class:`DataError` behind an exception, looking through MONAI's transform wrappers."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


class _VolumeSlices(torch.utils.data.Dataset):
    """Items of a MONAI dataset, with a :class:`DataError` returned (not raised) so workers can report it."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> list[dict] | DataError:
        try:
            return self.dataset[index]
        except Exception as exc:
            err = find_data_error(exc)
            if err is None:
                raise
            return err


def _unpack(batch: list) -> Any:
    return batch[0]


class SliceCohort(torch.utils.data.Dataset):
    """All 2D slices of a cohort, cut once by :func:`slice_transforms` and kept in memory.

    With ``cache_dir`` the per-volume results also go to a MONAI ``PersistentDataset`` on disk, keyed by the
    slicing parameters, so a second run (or a second process) skips reading and normalising. Cached slices carry
    their metadata (``MetaTensor``), which ``weights_only`` loading refuses, so the cache is read with full
    unpickling: point ``cache_dir`` only at a folder that this user's runs write.

    Args:
        datalist: MONAI datalist items (``image``, optional ``label``, ``class``, ``subject``).
        cache_dir: optional folder for the on-disk cache.
        num_workers: worker processes for the first (cold) pass.
        on_error: "raise" stops at the first bad volume; "skip" logs it, leaves it out and summarises at the end.
        slicing: the slicing settings, one mapping of :func:`slice_transforms` arguments (a bundle's ``slicing``
            entry, or a run record's), so training, evaluation and synthesis cut slices from one source.
        progress: show a progress bar while the volumes are read and sliced (on a terminal only).
        slice_kwargs: further :func:`slice_transforms` arguments (``image_size``, ...), which override ``slicing``.

    Raises:
        DataError: on a bad volume with ``on_error="raise"``, or when no slice is left.
        ValueError: when a slicing setting is not a :func:`slice_transforms` argument.
    """

    def __init__(self, datalist: Sequence[dict], cache_dir: str | os.PathLike | None = None, num_workers: int = 0,
                 on_error: str = "raise", slicing: Mapping[str, Any] | None = None, progress: bool = True,
                 **slice_kwargs: Any) -> None:
        self.policy = ErrorPolicy(on_error)
        slice_kwargs = {**dict(slicing or {}), **slice_kwargs}
        unknown = sorted(set(slice_kwargs) - set(inspect.signature(slice_transforms).parameters))
        if unknown:
            raise ValueError(f"unknown slicing setting(s) {unknown}; known: "
                             f"{sorted(inspect.signature(slice_transforms).parameters)}.")
        self.slice_kwargs = slice_kwargs
        transform = Compose(slice_transforms(**slice_kwargs))
        # inputs that discovery already left out (a Datalist remembers them) belong in this run's summary too
        self.policy.errors.extend(getattr(datalist, "skipped", []))
        datalist = [dict(item) for item in datalist]
        if not datalist:
            raise DataError("<datalist>", "no volumes to read.")
        self.num_volumes = len(datalist) + len(self.policy.errors)
        if cache_dir is not None:
            key = hashlib.sha256(json.dumps([__version__, slice_kwargs], sort_keys=True, default=str).encode())
            dataset = PersistentDataset(datalist, transform, cache_dir=Path(cache_dir) / key.hexdigest()[:16],
                                        track_meta=True, weights_only=False)
        else:
            dataset = Dataset(datalist, transform)
        loader = DataLoader(_VolumeSlices(dataset), batch_size=1, num_workers=num_workers, collate_fn=_unpack)
        self.slices: list[dict] = []
        # on a terminal only (tqdm turns itself off elsewhere): a large cohort takes minutes to read and slice
        for result in tqdm(loader, total=len(datalist), desc="reading and slicing volumes", unit="volume",
                           disable=None if progress else True, leave=False):
            if isinstance(result, DataError):
                self.policy.handle(result)
                continue
            self.slices.extend(result if isinstance(result, list) else [result])
        if self.policy.errors:
            logger.warning(self.policy.summary())
        if not self.slices:
            raise DataError("<datalist>", f"no slices with enough foreground in {len(datalist)} volume(s).")

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> dict:
        return self.slices[index]

    def summary(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """What the cohort holds and what it left out, for the start of a run (and ``cohort.json``).

        Args:
            class_names: names of the class indices, for the slice counts.

        Returns:
            ``volumes`` (read, used, skipped), ``formats`` (volumes used per source format), ``subjects``,
            ``slices`` (per class), ``single_slice_volumes`` (volumes that gave one slice: a 2D input is a one-slice
            cohort, which is rarely meant) and ``skipped`` (each skipped input with its reason).
        """
        per_volume = Counter(str(s["image"].meta.get("filename_or_obj", "")) for s in self.slices
                             if hasattr(s["image"], "meta"))
        formats = Counter(_source_format(path) for path in per_volume)
        names = list(class_names or [])
        slices = {names[c] if c < len(names) else str(c): n for c, n in self.class_counts().items()}
        return {
            "volumes": {"read": self.num_volumes, "used": len(per_volume), "skipped": len(self.policy.errors)},
            "formats": dict(sorted(formats.items())),
            "subjects": len({str(s.get("subject", "")) for s in self.slices}),
            "slices": {"total": len(self.slices), **slices},
            "single_slice_volumes": sum(1 for n in per_volume.values() if n == 1),
            "skipped": [{"input": err.path, "reason": err.problem} for err in self.policy.errors],
        }

    def source_slices(self, positions: Sequence[int]) -> dict[int, dict[str, Any]]:
        """The slices at ``positions`` as loaded from their sources: in source units and dtype, not normalised.

        Each volume is read once (:func:`volume_transforms` with the cohort's spacing and volume index), however
        many of the positions it holds. Only a cohort kept at native resolution (``image_size=None``) has its slices
        on their sources' grids; a resized one has no source slice to give.

        Args:
            positions: positions in the cohort.

        Returns:
            position -> ``{"image": (C, H, W, 1) MetaTensor, "label": the mask's slice or None}``, each with the
            affine of the cohort's slice.

        Raises:
            ValueError: when the cohort resizes its slices, or a slice cut from the source does not lie on the
                cohort slice's grid.
        """
        if self.slice_kwargs.get("image_size", 128) is not None:
            raise ValueError("source slices exist only for a cohort cut at native resolution (image_size=None).")
        groups: dict[tuple[str, int], list[int]] = {}
        for position in positions:
            image = self.slices[position]["image"]
            key = (str(image.meta.get("filename_or_obj")), int(self.slices[position]["slice_axis"]))
            groups.setdefault(key, []).append(int(position))
        load = Compose(volume_transforms(spacing=self.slice_kwargs.get("spacing"),
                                         volume_index=self.slice_kwargs.get("volume_index")))
        out: dict[int, dict[str, Any]] = {}
        for (path, axis), members in groups.items():
            first = self.slices[members[0]]
            item = {"image": path}
            label = first.get("label")
            if label is not None and hasattr(label, "meta"):
                item["label"] = str(label.meta.get("filename_or_obj"))
            volume = load(item)
            indices = [int(self.slices[p]["slice_index"]) for p in members]
            images = cut_slices(volume["image"], indices, axis)
            labels = cut_slices(volume["label"], indices, axis) if "label" in volume else [None] * len(members)
            for position, image, mask in zip(members, images, labels, strict=True):
                reference = self.slices[position]["image"]
                if image.shape[1:] != reference.shape[1:] or not torch.allclose(
                        image.affine.double(), reference.affine.double(), atol=1e-4):
                    raise ValueError(f"{path}: slice {int(self.slices[position]['slice_index'])} loaded from the "
                                     "source does not lie on the cohort slice's grid.")
                out[position] = {"image": image, "label": mask}
        return out

    def class_counts(self) -> dict[int, int]:
        """Number of slices per class."""
        return dict(sorted(Counter(int(s.get("class", 0)) for s in self.slices).items()))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All slices as ``(N, C, H, W)`` float images and ``(N,)`` long classes (plain tensors, no metadata)."""
        images = torch.stack([torch.as_tensor(s["image"]).as_subclass(torch.Tensor)[..., 0] for s in self.slices])
        classes = torch.tensor([int(s.get("class", 0)) for s in self.slices], dtype=torch.long)
        return images.float().contiguous(), classes

    def training_dataset(self) -> SliceTensorDataset:
        """A fast dataset of plain image tensors and classes for training."""
        return SliceTensorDataset(*self.tensors())


class SliceTensorDataset(torch.utils.data.Dataset):
    """Slices held as one tensor: items ``{"image": (C, H, W), "class": int}``; thousands of slices per second.

    Args:
        images: ``(N, C, H, W)`` tensor.
        classes: ``(N,)`` tensor of class indices.

    Raises:
        ValueError: when the lengths differ.
    """

    def __init__(self, images: torch.Tensor, classes: torch.Tensor) -> None:
        if len(images) != len(classes):
            raise ValueError(f"{len(images)} images but {len(classes)} classes.")
        self.images = images
        self.classes = classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "class": self.classes[index]}


def class_balanced_sampler(dataset: SliceTensorDataset, balance: float = 0.5,
                           num_samples: int | None = None) -> torch.utils.data.WeightedRandomSampler:
    """A sampler that shows the rare class more often: class ``c`` is drawn with weight ``n_c ** -balance``.

    The share of class ``c`` in the drawn slices is ``n_c ** (1 - balance) / sum_k n_k ** (1 - balance)``:
    ``balance=0`` keeps the data's class mix, ``1`` draws every class equally often, ``0.5`` (square-root
    balancing) lifts a 1-in-9 tumour share to about 1 in 4 without repeating the few tumour slices too often.

    Args:
        dataset: slices with a ``classes`` tensor.
        balance: in [0, 1].
        num_samples: draws per epoch (with replacement); default the number of slices.

    Raises:
        ValueError: when ``balance`` is outside [0, 1].
    """
    if not 0.0 <= float(balance) <= 1.0:
        raise ValueError(f"balance must be in [0, 1], got {balance}.")
    counts = torch.bincount(dataset.classes).double()
    weights = counts.clamp_min(1).pow(-float(balance))[dataset.classes]
    return torch.utils.data.WeightedRandomSampler(weights, int(num_samples or len(dataset)), replacement=True)
