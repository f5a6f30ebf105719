"""Slice transforms: cut 2D slices from a volume with exact geometry, and fit them to a square training size.

A slice is a ``MetaTensor`` of shape ``(C, H, W, 1)``: the two in-plane axes of the volume in their
original order, then the through-plane axis (size 1). Its 4x4 affine is the volume's affine composed with
the permutation and translation that picks the slice, so pixel ``(i, j, 0)`` maps to the world point of the
source voxel and the through-plane column keeps the slice spacing. Nothing here squeezes the slice to 2D
(that would drop the affine to 3x3 and lose the slice position).
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from copy import deepcopy
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Resize, SpatialPad, Transform
from monai.utils import TransformBackends

from ..errors import DataError

__all__ = [
    "ExtractSlices",
    "ExtractSlicesd",
    "FitSlice",
    "FitSliced",
    "cut_slice",
    "cut_slices",
    "slice_to_volume_transform",
]

logger = logging.getLogger(__name__)

_FIT_MODES = ("area", "bilinear", "nearest", "nearest-exact")


def _source_path(img: Any) -> str:
    """The ``filename_or_obj`` of ``img``'s meta, or ``"<unknown>"``."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "<unknown>")


def _as_meta_tensor(img: Any) -> MetaTensor:
    """``img`` as a ``MetaTensor`` (a plain array gets MONAI's default identity affine)."""
    return img if isinstance(img, MetaTensor) else MetaTensor(torch.as_tensor(img))


def _check_axis(axis: int) -> int:
    """Validate a spatial axis of a 3D volume (0, 1 or 2)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis of the volume), got {axis!r}.")
    return axis


def _check_volume(img: MetaTensor) -> None:
    """Raise :class:`DataError` unless ``img`` is channel first with three spatial axes."""
    if img.ndim != 4:
        shape = tuple(img.shape)
        raise DataError(_source_path(img), f"expected a channel-first volume (C, X, Y, Z), got shape {shape}.")


def slice_to_volume_transform(axis: int, index: int) -> np.ndarray:
    """The 4x4 matrix taking slice coordinates ``(i, j, l)`` to voxel coordinates of the volume.

    Args:
        axis: the through-plane (slicing) axis of the volume, 0, 1 or 2.
        index: the slice's position along ``axis``.

    Returns:
        ``T`` such that ``volume_affine @ T`` is the slice affine: the in-plane axes of the volume in their
        original order become ``i`` and ``j``, and ``l`` (always 0 in a slice) runs along ``axis`` from ``index``.
    """
    _check_axis(axis)
    in_plane = [a for a in range(3) if a != axis]
    transform = np.zeros((4, 4))
    transform[in_plane[0], 0] = 1.0
    transform[in_plane[1], 1] = 1.0
    transform[axis, 2] = 1.0
    transform[axis, 3] = float(index)
    transform[3, 3] = 1.0
    return transform


def cut_slice(volume: Any, index: int, axis: int = 2) -> MetaTensor:
    """Cut slice ``index`` along ``axis`` from a channel-first volume, keeping its exact geometry.

    Args:
        volume: ``(C, X, Y, Z)`` volume, ideally a ``MetaTensor`` with the RAS affine of the volume.
        index: slice position along ``axis`` (negative counts from the end).
        axis: the through-plane axis, 0, 1 or 2.

    Returns:
        a ``MetaTensor`` of shape ``(C, H, W, 1)`` whose meta is a copy of the volume's with ``affine`` the
        slice's, ``spatial_shape`` ``(H, W, 1)``, ``slice_index`` and ``slice_axis`` set; ``original_affine``
        (the file's) is left as it was, and the transform trace starts afresh.

    Raises:
        DataError: when the volume is not ``(C, X, Y, Z)`` or ``index`` is out of range.
    """
    return cut_slices(volume, [index], axis)[0]


def cut_slices(volume: Any, indices: Sequence[int], axis: int = 2) -> list[MetaTensor]:
    """Cut several slices along ``axis``, as :func:`cut_slice` does one (faster than one at a time).

    Args:
        volume: ``(C, X, Y, Z)`` volume, ideally a ``MetaTensor`` with the RAS affine of the volume.
        indices: slice positions along ``axis`` (negative counts from the end).
        axis: the through-plane axis, 0, 1 or 2.

    Returns:
        one ``MetaTensor`` of shape ``(C, H, W, 1)`` per index, in the order given.

    Raises:
        DataError: when the volume is not ``(C, X, Y, Z)`` or an index is out of range.
    """
    _check_axis(axis)
    vol = _as_meta_tensor(volume)
    _check_volume(vol)
    size = vol.shape[axis + 1]
    bad = [int(i) for i in indices if not -size <= i < size]
    if bad:
        problem = f"slice indices {bad} are out of range for {size} slices along axis {axis}."
        raise DataError(_source_path(vol), problem)
    indices = [int(i) % size for i in indices]
    stack = vol.as_tensor().movedim(axis + 1, 0)
    if len(indices) > 1:
        # with the slice axis first each slice is one block: far cheaper than many strided single-slice copies
        stack = stack.contiguous()
    volume_affine = vol.affine.to(torch.float64)
    meta = {k: v for k, v in vol.meta.items() if k != "affine"}
    slices = []
    for index in indices:
        data = stack[index].unsqueeze(-1).clone(memory_format=torch.contiguous_format)
        slice_meta = deepcopy(meta)
        slice_meta["spatial_shape"] = np.asarray(data.shape[1:])
        slice_meta["slice_index"] = index
        slice_meta["slice_axis"] = axis
        affine = volume_affine @ torch.as_tensor(slice_to_volume_transform(axis, index))
        slices.append(MetaTensor(data, affine=affine, meta=slice_meta))
    return slices


class ExtractSlices(Transform):
    """Cut a channel-first volume into 2D slices of shape ``(C, H, W, 1)`` with exact affines, skipping background.

    The through-plane axis is always moved last (axis 0 gives ``(C, Y, Z, 1)``, axis 1 ``(C, X, Z, 1)``,
    axis 2 ``(C, X, Y, 1)``); see :func:`cut_slice` for the geometry and meta of each slice.

    Args:
        axis: the through-plane axis of the volume, 0, 1 or 2 (2 = axial for a RAS volume).
        min_foreground: keep a slice only when at least this fraction of its pixels is foreground
            (0 keeps every candidate).
        foreground_threshold: a pixel is foreground when any channel is above it. None: 5% of the
            intensity range above its minimum, the range being the recorded normalisation range
            (``norm_out_low``/``norm_out_high`` in the meta, i.e. -0.9 for ``[-1, 1]``) or else the volume's
            own minimum and maximum.
        slice_indices: only these slices are candidates (negative counts from the end); None: all. The
            foreground rule still applies to them.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        axis: int = 2,
        min_foreground: float = 0.05,
        foreground_threshold: float | None = None,
        slice_indices: Sequence[int] | None = None,
    ) -> None:
        self.axis = _check_axis(axis)
        if not 0.0 <= min_foreground <= 1.0:
            raise ValueError(f"min_foreground must be in [0, 1], got {min_foreground}.")
        self.min_foreground = min_foreground
        self.foreground_threshold = foreground_threshold
        self.slice_indices = None if slice_indices is None else [int(i) for i in slice_indices]

    def threshold(self, img: Any) -> float:
        """The foreground threshold used for ``img`` (see ``foreground_threshold``)."""
        if self.foreground_threshold is not None:
            return float(self.foreground_threshold)
        meta = getattr(img, "meta", {})
        if "norm_out_low" in meta and "norm_out_high" in meta:
            low, high = float(meta["norm_out_low"]), float(meta["norm_out_high"])
        else:
            values = torch.as_tensor(img)
            low, high = float(values.min()), float(values.max())
        return low + 0.05 * (high - low)

    def foreground_fractions(self, img: Any) -> torch.Tensor:
        """The fraction of foreground pixels of every slice along ``axis``, shape ``(n_slices,)``."""
        vol = _as_meta_tensor(img)
        _check_volume(vol)
        foreground = vol.as_tensor().amax(dim=0) > self.threshold(vol)
        in_plane = tuple(a for a in range(3) if a != self.axis)
        return foreground.to(torch.float64).mean(dim=in_plane)

    def kept_indices(self, img: Any) -> list[int]:
        """The indices of the slices of ``img`` that pass the candidate and foreground rules, ascending.

        Raises:
            DataError: when a requested slice index is out of range.
        """
        fractions = self.foreground_fractions(img)
        size = int(fractions.shape[0])
        candidates = range(size) if self.slice_indices is None else self.slice_indices
        bad = [i for i in candidates if not -size <= i < size]
        if bad:
            problem = f"slice indices {bad} are out of range for {size} slices along axis {self.axis}."
            raise DataError(_source_path(img), problem)
        kept = sorted({i % size for i in candidates if float(fractions[i]) >= self.min_foreground})
        if not kept:
            logger.warning("%s: no slice along axis %d has enough foreground.", _source_path(img), self.axis)
        return kept

    def __call__(self, img: Any) -> list[MetaTensor]:
        """Return the kept slices of the ``(C, X, Y, Z)`` volume ``img``, in ascending index order."""
        return cut_slices(img, self.kept_indices(img), self.axis)


class ExtractSlicesd(MapTransform):
    """Dictionary-based :py:class:`ExtractSlices`: one volume item in, a list of slice items out.

    Like MONAI's ``RandCropByPosNegLabeld``, it returns a list; each item holds, for one kept slice,
    the slice of every key in ``keys`` and of ``label_key`` (see :func:`cut_slice`), ``class`` (1 when the
    label slice has at least ``tumour_min_voxels`` tumour pixels, else 0; without a label the item's own
    ``class``, default 0), ``slice_index`` and ``slice_axis``, plus a copy of every other key of the input.
    The first present key of ``keys`` decides which slices have enough foreground.

    Args:
        keys: keys of the volumes to slice, all on the same grid.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        label_key: key of the tumour mask (any non-zero = tumour); sliced when present.
        axis: the through-plane axis, 0, 1 or 2.
        min_foreground: see :py:class:`ExtractSlices`.
        foreground_threshold: see :py:class:`ExtractSlices`.
        tumour_min_voxels: a slice is class 1 when its mask has at least this many tumour pixels.
        tumour_labels: mask values that count as tumour; None: every non-zero value. For example ``(1, 3, 4)``
            counts the BraTS tumour core (necrotic core and enhancing tumour) and not the oedema around it,
            which T1-weighted contrast barely shows.
        drop_ambiguous: leave out slices that are neither tumour nor clean: their mask is non-zero somewhere
            but they do not reach ``tumour_min_voxels`` tumour pixels (a tumour's edge, or oedema only when
            ``tumour_labels`` leaves it out). A generator or classifier then learns two classes that can be told
            apart on the image.
        slice_indices: see :py:class:`ExtractSlices`.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = ExtractSlices.backend

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        label_key: str | None = "label",
        axis: int = 2,
        min_foreground: float = 0.05,
        foreground_threshold: float | None = None,
        tumour_min_voxels: int = 1,
        tumour_labels: Sequence[int] | None = None,
        drop_ambiguous: bool = False,
        slice_indices: Sequence[int] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if tumour_min_voxels < 1:
            raise ValueError(f"tumour_min_voxels must be at least 1, got {tumour_min_voxels}.")
        if tumour_labels is not None and (not len(tumour_labels) or 0 in tumour_labels):
            raise ValueError(f"tumour_labels must be non-zero mask values (or None for all), got {tumour_labels}.")
        self.label_key = label_key
        self.tumour_min_voxels = int(tumour_min_voxels)
        self.tumour_labels = None if tumour_labels is None else torch.tensor([int(v) for v in tumour_labels])
        self.drop_ambiguous = bool(drop_ambiguous)
        self.extractor = ExtractSlices(axis, min_foreground, foreground_threshold, slice_indices)

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        """Slice ``data`` into a list of slice items.

        The list is empty when no slice has enough foreground, and holds ``data`` unchanged when none of
        ``keys`` is present (with ``allow_missing_keys``).

        Raises:
            DataError: when the keys and the label are not on grids of the same shape.
        """
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return [d]
        volumes = {key: _as_meta_tensor(d[key]) for key in keys}
        label = None
        if self.label_key is not None and d.get(self.label_key) is not None:
            label = _as_meta_tensor(d[self.label_key])
        reference = volumes[keys[0]]
        for name, vol in [*volumes.items(), (self.label_key, label)]:
            if vol is not None and tuple(vol.shape[1:]) != tuple(reference.shape[1:]):
                raise DataError(
                    _source_path(vol),
                    f"{name!r} has spatial shape {tuple(vol.shape[1:])}, "
                    f"but {keys[0]!r} has {tuple(reference.shape[1:])}.",
                )
        axis = self.extractor.axis
        sliced = set(keys) | ({self.label_key} if label is not None else set())
        kept = self.extractor.kept_indices(reference)
        slices = {key: cut_slices(vol, kept, axis) for key, vol in volumes.items()}
        label_slices = cut_slices(label, kept, axis) if label is not None else []
        items = []
        for n, index in enumerate(kept):
            if label is not None:
                mask = label_slices[n].as_tensor()
                found = mask.ne(0) if self.tumour_labels is None else torch.isin(mask, self.tumour_labels)
                slice_class = int(int(torch.count_nonzero(found.any(dim=0))) >= self.tumour_min_voxels)
                if self.drop_ambiguous and slice_class == 0 and bool(mask.ne(0).any()):
                    continue
            else:
                slice_class = int(d.get("class", 0))
            item = {k: deepcopy(v) for k, v in d.items() if k not in sliced}
            for key in volumes:
                item[key] = slices[key][n]
            if label is not None:
                item[self.label_key] = label_slices[n]
            item["class"] = slice_class
            item["slice_index"] = index
            item["slice_axis"] = axis
            items.append(item)
        return items


class FitSlice(Transform):
    """Bring a ``(C, H, W, 1)`` slice to ``(C, S, S, 1)`` keeping its aspect ratio and exact geometry.

    The slice is resized with MONAI's ``Resize`` so that its longer in-plane side is ``S`` (the other side is
    rounded), then padded symmetrically to ``S x S`` with MONAI's ``SpatialPad``. Both update the
    ``MetaTensor`` affine: with ``align_corners=False`` output pixel ``i'`` samples input coordinate
    ``(i' + 0.5) * in / out - 0.5``, and padding shifts the origin by the pad before. ``spatial_shape`` is set
    to the final shape.

    Args:
        spatial_size: ``S``, the side of the square output (64, 128, 256, ...).
        mode: interpolation, "area" (default; good for shrinking), "bilinear" (better for enlarging),
            "nearest-exact" (labels; consistent with the pixel-centre affine) or "nearest".
        pad_value: value of the padding; None: the slice's background, ``meta["norm_out_low"]`` when recorded,
            else -1 (the low end of the training space).

    Raises:
        ValueError: for a non-positive size or an unknown mode.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, spatial_size: int = 128, mode: str = "area", pad_value: float | None = None) -> None:
        if int(spatial_size) < 1:
            raise ValueError(f"spatial_size must be a positive int, got {spatial_size}.")
        if mode not in _FIT_MODES:
            raise ValueError(f"mode must be one of {_FIT_MODES}, got {mode!r}.")
        self.spatial_size = int(spatial_size)
        self.mode = mode
        self.pad_value = pad_value

    def resized_shape(self, height: int, width: int) -> tuple[int, int]:
        """The in-plane shape before padding: the longer side becomes ``S``, the other keeps the ratio."""
        scale = self.spatial_size / max(height, width)
        return tuple(max(1, int(np.floor(side * scale + 0.5))) for side in (height, width))  # type: ignore[return-value]

    def __call__(self, img: Any) -> MetaTensor:
        """Return ``img`` fitted to ``(C, S, S, 1)``, float32 (labels: see :py:class:`FitSliced`).

        Raises:
            DataError: when ``img`` is not a ``(C, H, W, 1)`` slice.
        """
        slc = _as_meta_tensor(img)
        if slc.ndim != 4 or slc.shape[-1] != 1:
            raise DataError(_source_path(slc), f"expected a (C, H, W, 1) slice, got shape {tuple(slc.shape)}.")
        pad_value = self.pad_value
        if pad_value is None:
            pad_value = float(slc.meta.get("norm_out_low", -1.0))
        height, width = self.resized_shape(int(slc.shape[1]), int(slc.shape[2]))
        out = Resize((height, width, 1), mode=self.mode)(slc)
        size = self.spatial_size
        out = SpatialPad((size, size, 1), method="symmetric", mode="constant", value=pad_value)(out)
        out.meta["spatial_shape"] = np.asarray(out.shape[1:])
        return out


class FitSliced(MapTransform):
    """Dictionary-based :py:class:`FitSlice`; the label is resized by nearest neighbour and padded with 0.

    Args:
        keys: keys of the image slices to fit.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        label_key: key of the label slice, fitted with ``label_mode`` and pad 0 and kept in its dtype; skipped
            when absent.
        spatial_size: ``S``, the side of the square output.
        mode: interpolation for the images; see :py:class:`FitSlice`.
        label_mode: interpolation for the label: "nearest-exact" (default) picks the input pixel nearest to
            the sampling point that the affine records; torch's "nearest" is offset from it by up to a pixel.
        pad_value: padding of the images; see :py:class:`FitSlice`.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = FitSlice.backend

    def __init__(
        self,
        keys: KeysCollection = ("image",),
        label_key: str | None = "label",
        spatial_size: int = 128,
        mode: str = "area",
        label_mode: str = "nearest-exact",
        pad_value: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.fitter = FitSlice(spatial_size, mode, pad_value)
        self.label_fitter = FitSlice(spatial_size, label_mode, 0.0)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Fit every image key and the label (when present) of one slice item."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.fitter(d[key])
        if self.label_key is not None and d.get(self.label_key) is not None:
            label = _as_meta_tensor(d[self.label_key])
            d[self.label_key] = self.label_fitter(label).to(label.dtype)
        return d
