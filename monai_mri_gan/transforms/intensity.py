"""Intensity transforms: head foreground by Otsu, robust per-volume normalisation and its inverse.

Training space is ``[-1, 1]``: a normalised volume maps its background (and anything below the lower clip
point) to ``-1`` and the upper clip point to ``+1``. The normalisation records what it did as flat scalar
keys in the ``MetaTensor`` meta (so MONAI's ``list_data_collate`` batches them), and
:func:`invert_normalisation` uses those keys to map generated values back to source units and dtype.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_numpy

from ..errors import DataError
from .morphology import head_region

__all__ = [
    "NORM_META_KEYS",
    "HeadForegroundMask",
    "RobustNormalise",
    "RobustNormalised",
    "head_foreground",
    "invert_normalisation",
    "invert_slice_normalisation",
    "normalisation_stats",
    "otsu_threshold",
]

NORM_META_KEYS = (
    "norm_mode",
    "norm_mask",
    "norm_in_low",
    "norm_in_high",
    "norm_out_low",
    "norm_out_high",
    "norm_mean",
    "norm_std",
    "norm_lower_pct",
    "norm_upper_pct",
    "norm_otsu_threshold",
    "norm_foreground_voxels",
    "norm_background",
)
"""The meta keys written by :class:`RobustNormalise`, all flat scalars (str, float or int)."""

_MODES = ("percentile", "zscore")


def _source_path(img: Any) -> str:
    """The ``filename_or_obj`` of ``img``'s meta, or ``"<unknown>"``."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "<unknown>")


def otsu_threshold(values: NdarrayOrTensor, bins: int = 256, upper_pct: float = 99.9) -> float:
    """Otsu's threshold of ``values``: the histogram split that maximises the between-class variance.

    The histogram spans the minimum to the ``upper_pct`` percentile, so that a few very bright voxels
    (vessels, fat, artefacts) do not squeeze head and background into the same bins.

    Args:
        values: intensities of any shape; they must be finite.
        bins: number of histogram bins.
        upper_pct: percentile that ends the histogram range; brighter values fall in the last bin.

    Returns:
        the threshold; voxels strictly above it are foreground. For constant input it is that constant.
    """
    v = convert_to_numpy(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(np.percentile(v, upper_pct))
    if hi <= lo:
        hi = float(v.max())
    if hi <= lo:
        return lo
    counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    counts = counts.astype(np.float64)
    w0 = np.cumsum(counts)[:-1]
    w1 = counts.sum() - w0
    s0 = np.cumsum(counts * centres)[:-1]
    mu0 = s0 / np.maximum(w0, 1)
    mu1 = ((counts * centres).sum() - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def head_foreground(volume: NdarrayOrTensor, bins: int = 256) -> NdarrayOrTensor:
    """Boolean head-foreground mask of ``volume``: voxels above its Otsu threshold (see :func:`otsu_threshold`).

    Args:
        volume: intensities of any shape (channels included); they must be finite.
        bins: number of histogram bins for the threshold.

    Returns:
        a bool mask of ``volume``'s shape and array type (numpy or torch; a ``MetaTensor`` keeps its meta).
    """
    mask = convert_to_numpy(volume) > otsu_threshold(volume, bins=bins)
    out, *_ = convert_to_dst_type(mask, volume, dtype=bool)
    return out


class HeadForegroundMask(Transform):
    """Boolean head-foreground mask by Otsu's threshold on the intensity histogram (no scikit-image needed).

    Args:
        bins: number of histogram bins for the threshold.

    Raises:
        DataError: when the image holds NaN or infinite voxels.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, bins: int = 256) -> None:
        self.bins = bins

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return the bool mask of ``img``'s shape and array type."""
        _check_finite(img)
        return head_foreground(img, bins=self.bins)


def _check_finite(img: NdarrayOrTensor) -> None:
    """Raise :class:`DataError` naming the file when ``img`` holds NaN or infinite voxels."""
    finite = np.isfinite(convert_to_numpy(img))
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise DataError(_source_path(img), f"{bad} NaN or infinite voxel(s); the volume cannot be normalised.")


def normalisation_stats(
    img: NdarrayOrTensor,
    mask: NdarrayOrTensor | None = None,
    mode: str = "percentile",
    lower: float = 0.5,
    upper: float = 99.5,
    zscore_clip: float = 3.0,
    out_range: Sequence[float] = (-1.0, 1.0),
    mask_name: str = "given",
) -> dict[str, Any]:
    """Compute the linear map that :class:`RobustNormalise` applies, as the flat meta record it writes.

    Args:
        img: the volume, channel first; its ``meta["filename_or_obj"]`` names it in errors.
        mask: foreground for the statistics (non-zero voxels, broadcastable to ``img``); None: Otsu head mask.
        mode: "percentile" or "zscore"; see :class:`RobustNormalise`.
        lower: lower percentile of the foreground (percentile mode).
        upper: upper percentile of the foreground (percentile mode).
        zscore_clip: clip at mean +/- this many standard deviations (zscore mode).
        out_range: the training-space values that the clip points map to.
        mask_name: what to record under ``norm_mask`` when ``mask`` is given.

    Returns:
        a dict with the keys of :data:`NORM_META_KEYS`; unused statistics are nan. ``norm_background`` is the
        source's own background level: the median of the voxels outside the foreground that lie at or below the
        lower clip point (``norm_in_low`` when there are none).

    Raises:
        ValueError: for an unknown ``mode`` or inconsistent percentiles / ranges.
        DataError: for NaN or infinite voxels, a constant volume or foreground, an empty mask, or a mask
            whose shape does not match the image.
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}.")
    out_low, out_high = (float(v) for v in out_range)
    if not out_low < out_high:
        raise ValueError(f"out_range must be increasing, got {tuple(out_range)}.")
    if mode == "zscore" and zscore_clip <= 0:
        raise ValueError(f"zscore_clip must be positive, got {zscore_clip}.")
    path = _source_path(img)
    _check_finite(img)
    arr = convert_to_numpy(img, dtype=np.float64)
    if arr.size == 0 or arr.min() == arr.max():
        raise DataError(path, "constant volume (every voxel has the same value); it cannot be normalised.")
    otsu = float("nan")
    if mask is None:
        otsu = otsu_threshold(arr)
        fg = arr > otsu
        mask_name = "otsu"
    else:
        m = convert_to_numpy(mask) != 0
        try:
            fg = np.broadcast_to(m, arr.shape)
        except ValueError:
            raise DataError(path, f"mask shape {m.shape} does not match image shape {arr.shape}.") from None
    values = arr[fg]
    if values.size == 0:
        raise DataError(path, f"the foreground ({mask_name}) is empty; no statistics to normalise with.")
    mean = std = float("nan")
    if mode == "percentile":
        in_low, in_high = (float(v) for v in np.percentile(values, [lower, upper]))
        problem = f"the {lower}th and {upper}th foreground percentiles are equal ({in_low})"
    else:
        mean, std = float(values.mean()), float(values.std())
        in_low, in_high = mean - zscore_clip * std, mean + zscore_clip * std
        problem = f"the foreground is constant (mean {mean}, standard deviation 0)"
    if not in_high > in_low:
        raise DataError(path, f"{problem}; the volume cannot be normalised.")
    outside = arr[~fg]
    outside = outside[outside <= in_low]
    background = float(np.median(outside)) if outside.size else in_low
    return {
        "norm_mode": mode,
        "norm_mask": mask_name,
        "norm_in_low": in_low,
        "norm_in_high": in_high,
        "norm_out_low": out_low,
        "norm_out_high": out_high,
        "norm_mean": mean,
        "norm_std": std,
        "norm_lower_pct": float(lower) if mode == "percentile" else float("nan"),
        "norm_upper_pct": float(upper) if mode == "percentile" else float("nan"),
        "norm_otsu_threshold": otsu,
        "norm_foreground_voxels": int(values.size),
        "norm_background": background,
    }


class RobustNormalise(Transform):
    """Normalise a volume to the training space (``out_range``, default ``[-1, 1]``), robust to outliers.

    Statistics come from the foreground only: the Otsu head mask by default, or a brain mask passed to
    ``__call__``. In "percentile" mode the ``lower`` and ``upper`` foreground percentiles are the clip
    points; in "zscore" mode they are mean -/+ ``zscore_clip`` standard deviations. The whole volume is
    clipped to them and mapped linearly onto ``out_range``, so the clip points land on its ends.

    Percentile mode maps the background to ``out_range[0]``. Z-score mode does not in general (mean - 3 std
    of a head is often below the background level), so prefer percentile mode when slices are later
    filtered or padded by background value.

    The meta of a ``MetaTensor`` gains the keys of :data:`NORM_META_KEYS`: ``norm_mode``, ``norm_mask``
    ("otsu", or the mask's name), ``norm_in_low`` / ``norm_in_high`` (source units mapped to the ends of
    the range), ``norm_out_low`` / ``norm_out_high``, ``norm_mean`` / ``norm_std`` (nan in percentile mode),
    ``norm_lower_pct`` / ``norm_upper_pct`` (nan in zscore mode), ``norm_otsu_threshold`` (nan with a
    given mask), ``norm_foreground_voxels`` and ``norm_background`` (the source's background level, see
    :func:`normalisation_stats`). :func:`invert_normalisation` undoes the map; :func:`invert_slice_normalisation`
    also gives the air around the head its source level back.

    Args:
        mode: "percentile" or "zscore".
        lower: lower foreground percentile, in [0, 100) (percentile mode).
        upper: upper foreground percentile, in (lower, 100] (percentile mode).
        zscore_clip: clip at this many standard deviations either side of the mean (zscore mode).
        out_range: the training-space interval; ``(-1.0, 1.0)`` throughout this project.

    Raises:
        ValueError: for an unknown mode or inconsistent percentiles / range.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        mode: str = "percentile",
        lower: float = 0.5,
        upper: float = 99.5,
        zscore_clip: float = 3.0,
        out_range: Sequence[float] = (-1.0, 1.0),
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
        self.mode = mode
        self.lower = lower
        self.upper = upper
        self.zscore_clip = zscore_clip
        self.out_range = (float(out_range[0]), float(out_range[1]))

    def __call__(
        self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None, mask_name: str = "given"
    ) -> NdarrayOrTensor:
        """Normalise ``img``; float32 out, same array type, meta (if any) updated.

        Args:
            img: channel-first volume, ideally a ``MetaTensor`` whose meta names the source file.
            mask: brain or head mask (non-zero = foreground) for the statistics; None: Otsu head mask.
            mask_name: recorded under ``norm_mask`` when ``mask`` is given.

        Raises:
            DataError: for NaN or infinite voxels, a constant volume, or an empty or mis-shaped mask.
        """
        stats = normalisation_stats(
            img, mask, self.mode, self.lower, self.upper, self.zscore_clip, self.out_range, mask_name
        )
        arr = convert_to_numpy(img, dtype=np.float64)
        scaled = _linear_map(arr, stats["norm_in_low"], stats["norm_in_high"], *self.out_range)
        out, *_ = convert_to_dst_type(scaled, img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)
        if isinstance(out, MetaTensor):
            out.meta.update(stats)
        return out


def _linear_map(x: np.ndarray, a_low: float, a_high: float, b_low: float, b_high: float) -> np.ndarray:
    """Clip ``x`` to ``[a_low, a_high]`` and map that interval linearly onto ``[b_low, b_high]``."""
    return b_low + (np.clip(x, a_low, a_high) - a_low) * ((b_high - b_low) / (a_high - a_low))


def invert_normalisation(
    array: NdarrayOrTensor, meta: Mapping[str, Any], dtype: np.dtype | str | type | torch.dtype | None = None
) -> np.ndarray:
    """Map training-space values back to source intensity units using the record of :class:`RobustNormalise`.

    Values are first clipped to ``[norm_out_low, norm_out_high]`` (a generator may overshoot), then mapped
    linearly onto ``[norm_in_low, norm_in_high]``. For an integer ``dtype`` the result is rounded to the
    nearest integer and clipped to the dtype's range before the cast.

    Args:
        array: values in training space, any shape.
        meta: the meta dict of the normalised item (``MetaTensor.meta``), holding the ``norm_*`` keys.
        dtype: output dtype; None uses ``meta["source_dtype"]`` when present, float32 otherwise.

    Returns:
        a numpy array of ``array``'s shape in source units and ``dtype``.

    Raises:
        DataError: when ``meta`` lacks the normalisation record (named by its ``filename_or_obj``).
    """
    missing = [k for k in ("norm_in_low", "norm_in_high", "norm_out_low", "norm_out_high") if k not in meta]
    if missing:
        raise DataError(
            meta.get("filename_or_obj") or "<unknown>",
            f"no normalisation record (missing {', '.join(missing)}); was RobustNormalise applied?",
        )
    in_low, in_high, out_low, out_high = (
        _scalar(meta, k) for k in ("norm_in_low", "norm_in_high", "norm_out_low", "norm_out_high")
    )
    values = _linear_map(convert_to_numpy(array, dtype=np.float64), out_low, out_high, in_low, in_high)
    return _cast(values, meta, dtype)


def _cast(values: np.ndarray, meta: Mapping[str, Any], dtype: np.dtype | str | type | torch.dtype | None) -> np.ndarray:
    """``values`` in ``dtype`` (None: ``meta["source_dtype"]`` or float32), rounded and clipped for integer types."""
    if dtype is None:
        dtype = meta.get("source_dtype") or np.float32
    target = np.dtype(str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype)
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        values = np.clip(np.rint(values), info.min, info.max)
    return values.astype(target)


def _scalar(meta: Mapping[str, Any], key: str) -> float:
    """A ``norm_*`` record value as a float (collated batches hold it as a one-element tensor or list)."""
    return float(np.asarray(convert_to_numpy(meta[key])).reshape(-1)[0])


#: Fraction of the training range above its low end that still counts as air in a generated slice.
BACKGROUND_MARGIN = 0.05


def invert_slice_normalisation(
    image: NdarrayOrTensor, meta: Mapping[str, Any], dtype: np.dtype | str | type | torch.dtype | None = None
) -> np.ndarray:
    """Map a whole slice back to source units like the real slices it stands beside, air included.

    :func:`invert_normalisation` maps the low end of the training range to the lower clip point, so a slice mapped
    back with it alone has air at that level (hundreds, for MRI), where the source has its own background level
    (often 0): a downstream model could tell synthetic slices from real ones by their background alone. Here the
    air around the head, found by :func:`~monai_mri_gan.transforms.morphology.head_region` on the channel mean in
    training space (pixels above ``BACKGROUND_MARGIN`` of the range over its low end, specks dropped, holes
    filled), takes the source's ``norm_background`` instead. A real slice normalised and mapped back this way
    keeps its source background exactly; everything inside the head is :func:`invert_normalisation`'s.

    Args:
        image: one slice in training space, ``(C, H, W)`` or ``(C, H, W, 1)``.
        meta: the normalised slice's meta, holding the ``norm_*`` keys (``norm_background`` included).
        dtype: output dtype; None uses ``meta["source_dtype"]`` when present, float32 otherwise.

    Returns:
        a numpy array of ``image``'s shape in source units and ``dtype``.

    Raises:
        DataError: when ``meta`` lacks the normalisation record or its ``norm_background``.
    """
    values = invert_normalisation(image, meta, dtype=np.float64)
    if "norm_background" not in meta:
        raise DataError(meta.get("filename_or_obj") or "<unknown>",
                        "no norm_background in the normalisation record; was it made by this version?")
    low, high = _scalar(meta, "norm_out_low"), _scalar(meta, "norm_out_high")
    array = convert_to_numpy(image, dtype=np.float64)
    plane = array.mean(axis=0).reshape(array.shape[1], array.shape[2])
    outside = ~head_region(plane, low + BACKGROUND_MARGIN * (high - low))
    values[:, outside.reshape(values.shape[1:])] = _scalar(meta, "norm_background")
    return _cast(values, meta, dtype)


class RobustNormalised(MapTransform):
    """Dictionary-based wrapper of :py:class:`RobustNormalise`.

    Args:
        keys: keys of the images to normalise, each with its own statistics.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        mode: "percentile" or "zscore".
        lower: lower foreground percentile (percentile mode).
        upper: upper foreground percentile (percentile mode).
        zscore_clip: clip at this many standard deviations either side of the mean (zscore mode).
        out_range: the training-space interval; ``(-1.0, 1.0)`` throughout this project.
        mask_key: key of a brain or head mask (non-zero = foreground) for the statistics; None: Otsu head
            mask. Not the tumour label: statistics on a tumour would be meaningless.
        allow_missing_keys: don't raise exception if key is missing.
    """

    backend = RobustNormalise.backend

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "percentile",
        lower: float = 0.5,
        upper: float = 99.5,
        zscore_clip: float = 3.0,
        out_range: Sequence[float] = (-1.0, 1.0),
        mask_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normaliser = RobustNormalise(mode, lower, upper, zscore_clip, out_range)
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Normalise each key; the mask (if any) is read from ``data[mask_key]``."""
        d = dict(data)
        mask = None
        if self.mask_key is not None:
            if self.mask_key not in d:
                first = next(iter(self.key_iterator(d)), None)
                raise DataError(_source_path(d.get(first)), f"mask key {self.mask_key!r} is missing.")
            mask = d[self.mask_key]
        for key in self.key_iterator(d):
            d[key] = self.normaliser(d[key], mask, mask_name=str(self.mask_key))
        return d
