"""Lesion transforms: a bank of real tumour lesions, their random placement into healthy slices, and compositing.

The lesion painter (and the copy-paste comparator it has to beat, TumorCP-style) works on a healthy base slice at its
native resolution. :class:`LesionBank` cuts every connected tumour component out of training slices, with its
in-plane spacing; :class:`PlaceLesion` (and :class:`PlaceLesiond`) draws one, resamples it to the base slice's
spacing so it keeps its size in millimetres, rotates, flips, scales and deforms it (labels by nearest neighbour, the
image bilinearly, one sampling grid for both), and puts it where it and its blend band lie inside the head, at least
``skull_margin_mm`` from its edge. :func:`blend_weights` is the region a painter may change around a placed lesion,
and :func:`composite` / :func:`paste_lesion` put painted (or copied) intensities there and nowhere else.

Distances are computed with torch (a separable, window-limited Euclidean distance transform), erosions with numpy
along row and column runs, hole filling and connected components with :func:`~monai_mri_gan.transforms.fill_holes`
and :func:`~monai_mri_gan.transforms.component_ids`, so nothing here needs scipy, and :func:`blend_weights` runs batched
on any device without a host synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection, NdarrayOrTensor
from monai.data import MetaTensor
from monai.networks.layers import gaussian_1d
from monai.transforms import MapTransform, Randomizable, Transform
from monai.transforms.utils import create_grid
from monai.utils import TransformBackends, convert_to_dst_type

from ..errors import DataError
from .intensity import head_foreground
from .morphology import component_ids, fill_holes

__all__ = [
    "BRAIN_MARGIN_MM",
    "HEAD_MARGIN_MM",
    "LESION_JOIN_MM",
    "Lesion",
    "LesionBank",
    "PlaceLesion",
    "PlaceLesiond",
    "PlacedLesion",
    "blend_weights",
    "composite",
    "crop_plane",
    "head_box",
    "lesion_components",
    "lesion_window",
    "paste_lesion",
    "slice_spacing",
]

#: Default least distance (mm) between a lesion's blend band and the edge of a brain mask.
BRAIN_MARGIN_MM = 8.0
#: Default least distance (mm) from the edge of a head mask: scalp, skull and muscle of a T1 that keeps its skull.
HEAD_MARGIN_MM = 12.0
#: Default distance (mm) within which the components of a label map are one lesion (the bank's and the crops'
#: unit): the oedema islands of one tumour lie a few millimetres apart, distinct tumours farther.
LESION_JOIN_MM = 8.0


def _distance_sq(mask: torch.Tensor, spacing: Sequence[float], reach: float, outside: bool) -> torch.Tensor:
    """Squared Euclidean distance from every pixel of ``(N, 1, H, W)`` ``mask`` to its nearest True pixel.

    A separable distance transform limited to a window: exact wherever the distance is at most ``reach`` (the
    nearest True pixel then lies within ``reach`` along each axis), and larger than ``reach ** 2`` (or inf) elsewhere.
    ``outside`` says whether the pixels beyond the slice's edge count as True.
    """
    cost = torch.where(mask, 0.0, math.inf).to(torch.float32)
    for dim, step in ((3, float(spacing[1])), (2, float(spacing[0]))):
        radius = int(reach // step)
        if radius == 0:
            continue
        pad = (radius, radius, 0, 0) if dim == 3 else (0, 0, radius, radius)
        padded = F.pad(cost, pad, value=0.0 if outside else math.inf)
        offsets = (torch.arange(-radius, radius + 1, device=mask.device, dtype=torch.float32) * step) ** 2
        cost = (padded.unfold(dim, 2 * radius + 1, 1) + offsets).amin(dim=-1)
    return cost


def _offsets_sq(spacing: Sequence[float], reach: float) -> torch.Tensor:
    """Squared lengths of the pixel offsets within ``reach`` along each axis, in float32 as :func:`_distance_sq` adds
    them: ``(2 R + 1, 2 C + 1)``, centred on the zero offset."""
    axes = []
    for step in (float(s) for s in spacing):
        radius = int(reach // step)
        axes.append((torch.arange(-radius, radius + 1, dtype=torch.float32) * step) ** 2)
    return axes[0][:, None] + axes[1][None, :]


def _erode(mask: np.ndarray, neighbourhood: np.ndarray) -> np.ndarray:
    """The pixels of ``(H, W)`` ``mask`` whose whole ``neighbourhood`` lies in it; beyond the edge is outside ``mask``.

    ``neighbourhood`` is an odd-sided bool table centred on the pixel whose rows are runs centred on their middle (a
    disc or an ellipse). Whether a run of a mask's row holds an outside pixel is a difference of cumulative counts,
    so a row of the neighbourhood costs one pass over the mask, however long its run.
    """
    height, width = mask.shape
    rows, cols = neighbourhood.shape[0] // 2, neighbourhood.shape[1] // 2
    counts = np.cumsum(np.pad(~mask, ((rows, rows), (cols + 1, cols)), constant_values=True), axis=1, dtype=np.int32)
    out = mask.copy()
    outside: dict[int, np.ndarray] = {}
    for row, half in enumerate((neighbourhood.sum(1) - 1) // 2):
        if half < 0:
            continue
        if half not in outside:
            # outside pixels of columns c - half .. c + half: the count up to the last less the count before the first
            outside[half] = counts[:, cols + 1 + half :][:, :width] > counts[:, cols - half :][:, :width]
        out &= ~outside[half][row : row + height]
    return out


def _plane(x: Any) -> np.ndarray:
    """The 2D in-plane array of a ``(H, W)``, ``(1, H, W)`` or ``(1, H, W, 1)`` slice, as numpy."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 4:
        arr = arr[0, :, :, 0]
    elif arr.ndim == 3:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected a (H, W), (1, H, W) or (1, H, W, 1) slice, got shape {tuple(np.shape(x))}.")
    return arr


def slice_spacing(img: Any) -> tuple[float, float]:
    """In-plane pixel spacing (mm) of a slice: the norms of the first two columns of its affine's 3x3 part."""
    affine = getattr(img, "affine", None)
    if affine is None:
        raise ValueError("a slice needs its affine (a MetaTensor) to know its pixel spacing.")
    columns = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)[:3, :2]
    row_mm, col_mm = (float(v) for v in np.linalg.norm(columns, axis=0))
    return row_mm, col_mm


def _left_right_axis(affine: Any) -> int | None:
    """The in-plane axis (0 rows, 1 columns) of a slice whose direction is within 45 degrees of left-right (RAS x),
    or None."""
    columns = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)[:3, :2]
    alignment = np.abs(columns[0]) / np.linalg.norm(columns, axis=0)
    axis = int(np.argmax(alignment))
    return axis if alignment[axis] > math.sqrt(0.5) else None


def _source_path(img: Any) -> str:
    """The ``filename_or_obj`` of ``img``'s meta, or ``"<unknown>"``."""
    meta = getattr(img, "meta", None) or {}
    return str(meta.get("filename_or_obj") or "<unknown>")


def _components(labels: np.ndarray, min_voxels: int, spacing: Sequence[float] = (1.0, 1.0),
                join_mm: float = 0.0) -> tuple[np.ndarray, list[tuple[float, tuple[slice, slice]]]]:
    """Lesion ids of ``labels != 0`` and, for each lesion of at least ``min_voxels`` pixels, its id and box.

    A lesion is a connected component (8-connectivity), or with ``join_mm`` > 0 the components that come within
    ``join_mm`` of one another: each component is grown by a disc of half that radius (in mm, at ``spacing``) and the
    grown components that touch are one lesion. Only lesion pixels carry its id.
    """
    mask = np.asarray(labels) != 0
    ids = np.zeros(mask.shape)
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    if rows.size:
        disc = (_offsets_sq(spacing, join_mm / 2) <= (join_mm / 2) ** 2).numpy() if join_mm > 0 else np.ones((1, 1))
        pad = (disc.shape[0] // 2, disc.shape[1] // 2)
        # labelling costs a pass per pixel of a component's extent: label the lesions' bounding box (grown) only
        box = (slice(max(rows[0] - pad[0], 0), rows[-1] + 1 + pad[0]),
               slice(max(cols[0] - pad[1], 0), cols[-1] + 1 + pad[1]))
        own = mask[box]
        grown = own
        if join_mm > 0:
            # dilation is the erosion of the complement; padding keeps the slice's edge from counting as lesion
            padded = np.pad(~own, ((pad[0], pad[0]), (pad[1], pad[1])), constant_values=True)
            grown = ~_erode(padded, disc)[pad[0] : pad[0] + own.shape[0], pad[1] : pad[1] + own.shape[1]]
        ids[box] = np.where(own, component_ids(torch.as_tensor(grown)).numpy(), 0.0)
    values, counts = np.unique(ids[ids > 0], return_counts=True)
    found = []
    for value in values[counts >= min_voxels]:
        rows, cols = np.nonzero(ids == value)
        found.append((float(value), (slice(int(rows.min()), int(rows.max()) + 1),
                                     slice(int(cols.min()), int(cols.max()) + 1))))
    found.sort(key=lambda item: (item[1][0].start, item[1][1].start))
    return ids, found


def lesion_components(labels: NdarrayOrTensor, min_voxels: int = 20, spacing: Sequence[float] = (1.0, 1.0),
                      join_mm: float = 0.0) -> list[tuple[slice, slice]]:
    """Bounding boxes of the lesions of a label map: connected components (8-connectivity) of ``labels != 0``, with
    those nearer than ``join_mm`` to one another taken as one lesion, each of at least ``min_voxels`` px.

    Joining matters for real tumours: oedema that follows white matter breaks, on many slices, into islands a few
    millimetres from the tumour's main body. Counted apart, each island would be a lesion of its own: a crop centred
    on it, or an island pasted alone into a healthy slice, with no tumour beside it (see :data:`LESION_JOIN_MM`).

    Args:
        labels: ``(H, W)`` label map (0 = no lesion), numpy or torch.
        min_voxels: smaller lesions (all their components together) are left out.
        spacing: the pixel spacing in mm, (rows, columns), that ``join_mm`` is measured at.
        join_mm: components whose pixels come within this distance of each other are one lesion; 0: every
            component is a lesion.

    Returns:
        one ``(rows, cols)`` pair of slices per lesion, tight around it, ordered by their top-left corner.
    """
    labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a (H, W) label map, got shape {labels.shape}.")
    if join_mm < 0 or min(spacing) <= 0:
        raise ValueError(f"join_mm must be non-negative and spacing positive, got {join_mm} and {tuple(spacing)}.")
    return [box for _, box in _components(labels, int(min_voxels), spacing, float(join_mm))[1]]


@dataclass(frozen=True, eq=False)
class Lesion:
    """One tumour instance cut from a training slice, at that slice's native resolution.

    Attributes:
        labels: ``(h, w)`` int16 label map on the component's tight bounding box plus a margin; 0 outside this
            component (other lesions of the slice are zeroed).
        image: ``(h, w)`` float32 training-space intensities of the slice on the same box, for copy-paste.
        spacing: the source slice's in-plane pixel spacing in mm, (rows, columns).
        source: a caller-given id of the source slice (never a path), e.g. ``"<subject>:<slice_index>"``.
        position: where the centre of the box sat in its source slice's head, ``(row, column)`` in head-box units:
            -1 and 1 are the edges of the head's bounding box, 0 its centre (see :func:`head_box`); None: unknown,
            and :class:`PlaceLesion`'s location prior does not apply to it.
        head_mm: the size of the head's section in the source slice: the geometric mean (mm) of its bounding box's
            sides (see :func:`head_box`); None: unknown.
    """

    labels: np.ndarray
    image: np.ndarray
    spacing: tuple[float, float]
    source: str
    position: tuple[float, float] | None = None
    head_mm: float | None = None


@dataclass(frozen=True, eq=False)
class PlacedLesion:
    """A bank lesion placed into a base slice (the output of :class:`PlaceLesion`).

    Attributes:
        labels: ``(H, W)`` int16 label map on the base slice's grid, 0 away from the placed lesion.
        image: ``(H, W)`` float32 transformed lesion intensities on the base grid, for copy-paste; meaningful only
            where :func:`blend_weights` of ``labels`` is above 0 (where that reaches past the transformed source box,
            the box's edge values are extended), and 0 beyond.
        params: everything drawn, JSON-ready: ``lesion_index``, ``lesion_source``, ``angle_deg``, ``flip``,
            ``scale``, ``elastic`` (``{"sigma_mm", "magnitude_mm", "seed"}`` or None), ``centre_px`` (where the
            centre of the lesion's source box landed), ``bbox_px`` (``[r0, r1, c0, c1]``, half-open, of the placed
            labels), ``source_spacing_mm``, ``base_spacing_mm``, ``location`` (the location prior's draw:
            ``target`` in head-box units, ``mirrored``, ``sigma`` and the frame's ``frame_centre_px`` and
            ``frame_half_px``; None without one) and ``tries`` (transforms drawn until one fitted).
    """

    labels: np.ndarray
    image: np.ndarray
    params: dict


class LesionBank:
    """The lesions that :class:`PlaceLesion` draws from: real tumour components, each at its native resolution.

    Args:
        lesions: the lesions.

    Raises:
        ValueError: when ``lesions`` is empty.
    """

    def __init__(self, lesions: Sequence[Lesion]) -> None:
        self.lesions = tuple(lesions)
        if not self.lesions:
            raise ValueError("the lesion bank is empty: placement needs at least one lesion (a training slice with a "
                             "tumour mask).")
        values = set()
        for lesion in self.lesions:
            values.update(int(v) for v in np.unique(lesion.labels) if v != 0)
        self._label_values = tuple(sorted(values))

    @classmethod
    def from_slices(cls, items: Iterable[Mapping], min_voxels: int = 20, margin: int = 8, image_key: str = "image",
                    label_key: str = "label", source_key: str | None = None,
                    core_labels: Sequence[int] | None = None, join_mm: float = LESION_JOIN_MM) -> LesionBank:
        """Cut every lesion out of slice items as :class:`SliceCohort` serves them (see :func:`lesion_components`).

        Args:
            items: slice items whose ``image_key`` and ``label_key`` are ``(1, H, W, 1)`` slices with a 4x4 affine
                (``MetaTensor``); items without a label are skipped.
            min_voxels: components with fewer pixels are left out; with ``core_labels``, components with fewer
                pixels of those labels.
            margin: pixels kept around each component's box (clipped at the slice's edge). The default covers the
                default blend band (2 + 4 px) of :func:`paste_lesion` even when a lesion is shrunk to 0.8 of its size.
            image_key: key of the normalised image slice.
            label_key: key of the label slice (integer values; 0 = no lesion).
            source_key: key of a caller-given id of the slice; None: ``"<subject>:<slice_index>"``.
            core_labels: the labels that make a tumour slice (the slicing's ``tumour_labels``): a lesion is kept only
                if it holds ``min_voxels`` pixels of them, so that every lesion placed makes its base a tumour slice
                by the rule real slices are classed by. Without it, a component of oedema alone (BraTS label 2)
                would be pasted and labelled tumour while holding no tumour core. None: any label counts.
            join_mm: components of a slice's label nearer than this to one another are one lesion (a tumour and its
                oedema islands are cut, placed and pasted together); 0: each component is a lesion.

        Returns:
            the bank, lesions in the order of the items and, within a slice, of their top-left corners.

        Raises:
            ValueError: when a label is not integer-valued, a slice has no affine, or no lesion is found.
        """
        lesions, labelled = [], 0
        for item in items:
            if item.get(label_key) is None:
                continue
            labelled += 1
            source = str(item[source_key]) if source_key is not None else \
                f"{item.get('subject', '?')}:{item.get('slice_index', '?')}"
            labels = _plane(item[label_key])
            if not np.array_equal(labels, np.rint(labels)):
                raise ValueError(f"{source}: the label holds non-integer values; was it interpolated other than by "
                                 "nearest neighbour?")
            spacing = slice_spacing(item[image_key])
            ids, found = _components(labels, int(min_voxels), spacing, float(join_mm))
            if not found:
                continue
            image = _plane(item[image_key]).astype(np.float32)
            frame = head_box(fill_holes(head_foreground(image)))
            for value, (rows, cols) in found:
                box = (slice(max(rows.start - margin, 0), min(rows.stop + margin, labels.shape[0])),
                       slice(max(cols.start - margin, 0), min(cols.stop + margin, labels.shape[1])))
                own = np.where(ids[box] == value, labels[box], 0).astype(np.int16)
                if core_labels is not None and np.isin(own, list(core_labels)).sum() < int(min_voxels):
                    continue
                centre = np.array([(box[0].start + box[0].stop - 1) / 2, (box[1].start + box[1].stop - 1) / 2])
                position = None if frame is None else tuple(float(v) for v in (centre - frame[0]) / frame[1])
                lesions.append(Lesion(own, image[box].copy(), spacing, source, position, _head_mm(frame, spacing)))
        if not lesions:
            of = "" if core_labels is None else f" of labels {sorted(int(v) for v in core_labels)}"
            raise ValueError(f"no lesion of at least {min_voxels} pixels{of} in the {labelled} labelled slice(s): the "
                             "lesion bank needs slices with tumour masks.")
        return cls(lesions)

    def __len__(self) -> int:
        return len(self.lesions)

    def __getitem__(self, index: int) -> Lesion:
        return self.lesions[index]

    @property
    def label_values(self) -> tuple[int, ...]:
        """The sorted non-zero label values found in the bank, e.g. ``(1, 2, 4)`` for BraTS."""
        return self._label_values


def head_box(head: NdarrayOrTensor) -> tuple[np.ndarray, np.ndarray] | None:
    """The centre and half-size, in pixels ``(row, column)``, of the bounding box of a ``(H, W)`` head mask.

    The frame of :class:`Lesion` positions: a pixel ``p`` is at ``(p - centre) / half`` in head-box units, -1 and 1
    at the box's edges, whatever the head's size, the slice's level in the head and the pixel spacing. Pixel centres
    count, so a box of ``n`` pixels spans ``n - 1`` between its outer pixels' centres (at least 1). None for an empty
    mask.
    """
    head = _plane(head).astype(bool)
    rows, cols = np.nonzero(head.any(1))[0], np.nonzero(head.any(0))[0]
    if not rows.size:
        return None
    low, high = np.array([rows[0], cols[0]], np.float64), np.array([rows[-1], cols[-1]], np.float64)
    return (low + high) / 2, np.maximum((high - low) / 2, 0.5)


def _head_mm(frame: tuple[np.ndarray, np.ndarray] | None, spacing: Sequence[float]) -> float | None:
    """The geometric mean (mm) of the sides of a :func:`head_box`, or None without one."""
    if frame is None:
        return None
    return float(np.sqrt(np.prod(2 * frame[1] * np.asarray(spacing, np.float64))))


def _range(value: float | Sequence[float]) -> tuple[float, float]:
    """A ``(low, high)`` range from a symmetric half-width or a pair."""
    if isinstance(value, (int, float)):
        return -abs(float(value)), abs(float(value))
    low, high = (float(v) for v in value)
    if low > high:
        raise ValueError(f"a range must be (low, high) with low <= high, got {tuple(value)}.")
    return low, high


class _Room:
    """Where a lesion may go: every corner that puts the lesion and its blend band on allowed pixels only.

    The blend band of a lesion pixel (positive :func:`blend_weights`) is the disc of the pixels nearer than
    ``reach + 1``; the band lies on allowed pixels exactly where the lesion lies on the allowed pixels eroded by that
    disc (the pixels beyond the slice's edge count as not allowed), so the erosion is done once per slice and each
    lesion is tested by its own pixels.

    Args:
        allowed: ``(H, W)`` bool mask of the pixels a lesion and its blend band may cover.
        reach: ``dilate_px + band_px`` of the blend weights.
    """

    def __init__(self, allowed: np.ndarray, reach: int) -> None:
        self.shape = tuple(allowed.shape)
        self.reach = int(reach)
        self.centres = _erode(allowed, (_offsets_sq((1.0, 1.0), self.reach) < (self.reach + 1) ** 2).numpy())
        rows, cols = np.nonzero(self.centres.any(1))[0], np.nonzero(self.centres.any(0))[0]
        self.extent = (int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1) if rows.size else (0, 0)
        # correlating the forbidden pixels with the lesion counts, for every corner at once, what it would cover
        self.forbidden = torch.fft.rfft2(torch.as_tensor(~self.centres, dtype=torch.float64))

    def corners(self, labels: np.ndarray) -> torch.Tensor:
        """``(K, 2)`` top-left corners of ``labels`` (a lesion's box widened by ``reach``) where it and its band fit."""
        h, w = labels.shape
        if h - 2 * self.reach > self.extent[0] or w - 2 * self.reach > self.extent[1]:
            return torch.zeros((0, 2), dtype=torch.long)
        height, width = self.shape
        kernel = torch.fft.rfft2(torch.as_tensor(labels != 0, dtype=torch.float64), s=self.shape)
        hits = torch.fft.irfft2(self.forbidden * kernel.conj(), s=self.shape)[: height - h + 1, : width - w + 1]
        return torch.nonzero(hits < 0.5)


def _smooth(noise: torch.Tensor, sigma: Sequence[float]) -> torch.Tensor:
    """MONAI's ``GaussianSmooth`` of ``(C, H, W)`` float32 values (erf kernels, zero padding) as two matrix products.

    A depthwise convolution with a kernel of some 40 taps is several times slower on a CPU than multiplying by the
    banded (Toeplitz) matrix of the same kernel, and the matrices smooth every channel at once.
    """
    matrices = []
    for s, n in zip(sigma, noise.shape[1:], strict=True):
        kernel = gaussian_1d(torch.tensor(float(s), dtype=torch.float32), truncated=4.0, approx="erf")
        tail = (len(kernel) - 1) // 2
        offsets = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        matrices.append(torch.where(offsets.abs() <= tail, kernel[(offsets + tail).clamp(0, 2 * tail)], 0.0))
    return matrices[0] @ noise @ matrices[1].T


def _resample(source: torch.Tensor, points: torch.Tensor, mode: str, padding_mode: str) -> np.ndarray:
    """``(C, H, W)`` float64 ``source`` sampled at ``(2, h, w)`` pixel offsets from its centre, as float32 numpy.

    The computation of MONAI's ``Resample`` (``norm_coords``, ``align_corners=False``, float64) without its per-call
    conversions: ``grid_sample`` of the offsets scaled to [-1, 1], columns first.
    """
    height, width = source.shape[1:]
    grid = torch.stack((points[1] * (2.0 / max(2, width)), points[0] * (2.0 / max(2, height))), dim=-1)
    out = F.grid_sample(source[None], grid[None], mode=mode, padding_mode=padding_mode, align_corners=False)
    return out[0].float().numpy()


class PlaceLesion(Randomizable, Transform):
    """Place a random bank lesion into a base slice, rotated, flipped, scaled and deformed, well inside the head.

    The lesion is resampled from its own spacing to the base slice's (it keeps its size in mm), flipped (columns
    mirrored), rotated about its box centre, scaled, and optionally deformed by a smooth random displacement field:
    one sampling grid, nearest neighbour for the labels (no interpolated label values) and bilinear for the image.
    It is then put at a position drawn among those where every pixel of positive :func:`blend_weights` (the lesion
    dilated by ``dilate_px`` plus its ``band_px`` band) lies inside ``foreground`` eroded by ``skull_margin_mm``:
    uniformly, or with ``location_sigma`` near where the lesion sat in its own head (its :attr:`Lesion.position`, put
    into the base slice's head box, mirrored left-right with ``mirror_prob``): each position weighs
    ``exp(-d^2 / (2 location_sigma^2))``, ``d`` its distance from that target in head-box units. When no position
    fits, another transform of the *same* lesion is drawn, up to ``max_tries`` times: drawing another lesion instead
    would favour the small lesions that fit anywhere, and the placed lesions would be smaller than the bank's (on
    the demo cohort a median of 162 px against 284). When no pixel of that region is a blend band's width
    (``dilate_px + band_px + 1``) away from its edge, no lesion can fit and it fails at once, drawing nothing.

    An angle ``a`` moves a point at offset ``(r, c)`` from the centre to ``(r cos a - c sin a, r sin a + c cos a)``: 90
    degrees is ``numpy.rot90`` with ``k=1`` (at equal spacing). The elastic field is uniform noise in [-1, 1] smoothed
    by a Gaussian (as MONAI's ``Rand3DElastic`` draws it, in 2D), rescaled so that its largest displacement is the
    drawn magnitude: magnitudes are millimetres, not multipliers.

    Args:
        bank: the lesions to draw from.
        rotate_range: angles (radians) are drawn uniformly from ``[-rotate_range, rotate_range]``, or from
            ``(low, high)`` when a pair is given.
        flip_prob: probability of mirroring the lesion.
        scale_range: ``(low, high)``; the scale factor (per side) is drawn log-uniformly from it.
        elastic_prob: probability of an elastic deformation.
        elastic_sigma_range: ``(low, high)`` smoothness (Gaussian sigma, mm) of the displacement field.
        elastic_magnitude_range: ``(low, high)`` largest displacement (mm) of the field.
        skull_margin_mm: least distance (mm) between the lesion's blend band and the foreground's edge.
        band_px: width of the blend band (see :func:`blend_weights`).
        max_tries: transforms of the drawn lesion tried before giving up.
        dilate_px: dilation of the lesion before the band (see :func:`blend_weights`).
        location_sigma: spread (head-box units: 1 is half the head's extent) of the positions around the lesion's
            own; None: uniform over the positions that fit. Lesions without a position are placed uniformly.
        mirror_prob: probability of mirroring the target across the head's midline, along ``mirror_axis`` of
            :meth:`__call__` (tumours occur in either hemisphere).
        section_tolerance: a lesion goes only into a slice whose head section (:attr:`Lesion.head_mm`, measured
            alike) is within this of its own on a log scale, ``|log(base / source)|``: 0.1 is about 10 %, so that a
            lesion cut from a slice through the middle of a head is not put into one that grazes its top (where
            the skull is cut tangentially and the brain is small); other slices raise ``ValueError``. None: any.

    The defaults (``location_sigma`` 0.1, ``section_tolerance`` 0.1) were chosen on the demo cohort with the
    copy-paste comparator, whose pixels are real tumour: its lesion crops' KID against held-out real crops fell from
    31.6 (uniform placement, any level) to 0.88; see ``docs/painting.md``.

    Raises:
        ValueError: on an empty range, a probability outside [0, 1], a non-positive scale, ``location_sigma`` or
            ``section_tolerance``, or ``max_tries`` < 1.
    """

    backend = [TransformBackends.NUMPY, TransformBackends.TORCH]

    def __init__(self, bank: LesionBank, rotate_range: float | Sequence[float] = math.pi, flip_prob: float = 0.5,
                 scale_range: tuple[float, float] = (0.8, 1.25), elastic_prob: float = 0.5,
                 elastic_sigma_range: tuple[float, float] = (5.0, 7.0),
                 elastic_magnitude_range: tuple[float, float] = (1.0, 3.0), skull_margin_mm: float = BRAIN_MARGIN_MM,
                 band_px: int = 4, max_tries: int = 100, dilate_px: int = 2, location_sigma: float | None = 0.1,
                 mirror_prob: float = 0.5, section_tolerance: float | None = 0.1) -> None:
        self.bank = bank
        self.rotate_range = _range(rotate_range)
        self.scale_range = _range(scale_range)
        self.elastic_sigma_range = _range(elastic_sigma_range)
        self.elastic_magnitude_range = _range(elastic_magnitude_range)
        if not all(0.0 <= p <= 1.0 for p in (flip_prob, elastic_prob, mirror_prob)):
            raise ValueError(f"flip_prob, elastic_prob and mirror_prob must be in [0, 1], got {flip_prob}, "
                             f"{elastic_prob} and {mirror_prob}.")
        if section_tolerance is not None and not section_tolerance > 0:
            raise ValueError(f"section_tolerance must be positive (or None), got {section_tolerance}.")
        if location_sigma is not None and not location_sigma > 0:
            raise ValueError(f"location_sigma must be positive (or None for uniform placement), got {location_sigma}.")
        if self.scale_range[0] <= 0 or self.elastic_sigma_range[0] <= 0 or self.elastic_magnitude_range[0] < 0:
            raise ValueError("scales and elastic sigmas must be positive and elastic magnitudes non-negative.")
        if max_tries < 1 or band_px < 0 or dilate_px < 0 or skull_margin_mm < 0:
            raise ValueError("max_tries must be at least 1, and band_px, dilate_px and skull_margin_mm non-negative.")
        self.flip_prob = float(flip_prob)
        self.elastic_prob = float(elastic_prob)
        self.skull_margin_mm = float(skull_margin_mm)
        self.band_px = int(band_px)
        self.dilate_px = int(dilate_px)
        self.max_tries = int(max_tries)
        self.location_sigma = None if location_sigma is None else float(location_sigma)
        self.mirror_prob = float(mirror_prob)
        self.section_tolerance = None if section_tolerance is None else float(section_tolerance)
        self._draw: dict[str, Any] | None = None
        self._corner: tuple[int, int] | None = None
        self._location: dict[str, Any] | None = None
        self._sources: dict[int, torch.Tensor] = {}

    def randomize(self, data: Any = None) -> None:
        """Draw a lesion and its transform (not its position, which depends on the base slice)."""
        self._randomize_transform(int(self.R.randint(len(self.bank))))

    def _randomize_transform(self, index: int) -> None:
        """Draw a transform of bank lesion ``index``."""
        angle = float(self.R.uniform(*self.rotate_range))
        flip = bool(self.R.rand() < self.flip_prob)
        scale = float(np.exp(self.R.uniform(*np.log(self.scale_range))))
        elastic = None
        if self.R.rand() < self.elastic_prob:
            elastic = {"sigma_mm": float(self.R.uniform(*self.elastic_sigma_range)),
                       "magnitude_mm": float(self.R.uniform(*self.elastic_magnitude_range)),
                       "seed": int(self.R.randint(2**31 - 1))}
        self._draw = {"lesion_index": index, "angle_deg": math.degrees(angle), "flip": flip, "scale": scale,
                      "elastic": elastic}

    def _allowed(self, foreground: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
        """Pixels of ``foreground`` farther than ``skull_margin_mm`` from its edge (the slice's edge included)."""
        reach = self.skull_margin_mm
        return _erode(foreground, (_offsets_sq(spacing, reach) <= reach**2).numpy())

    def _transform(self, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """The drawn lesion on a canvas of the base grid: labels, image, and the canvas pixel of its box centre.

        The canvas is cropped to the labels' box widened by ``dilate_px + band_px`` (the reach of the blend weights).
        """
        draw = self._draw
        lesion = self.bank[draw["lesion_index"]]
        source = self._source(draw["lesion_index"])
        height, width = source.shape[1:]
        angle = math.radians(draw["angle_deg"])
        forward = draw["scale"] * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        if draw["flip"]:
            forward = forward @ np.diag([1.0, -1.0])
        src_mm, base_mm = np.asarray(lesion.spacing), np.asarray(spacing)
        # output pixel offset q (base grid) -> source pixel offset: undo the base spacing, the transform, the source's
        to_source = np.diag(1 / src_mm) @ np.linalg.inv(forward) @ np.diag(base_mm)
        magnitude = draw["elastic"]["magnitude_mm"] if draw["elastic"] else 0.0
        radius_mm = draw["scale"] * math.hypot(height * src_mm[0], width * src_mm[1]) / 2 + magnitude
        reach = self.dilate_px + self.band_px
        half = [int(math.ceil(radius_mm / s)) + reach + 1 for s in base_mm]
        shape = (2 * half[0] + 1, 2 * half[1] + 1)
        points = create_grid(shape, backend=TransformBackends.TORCH, dtype=torch.float64)[:2]
        if draw["elastic"]:
            points = points + self._displacement(shape, base_mm, draw["elastic"])
        points = torch.einsum("ij,jhw->ihw", torch.as_tensor(to_source), points)
        labels = _resample(source[:1], points, "nearest", "zeros")[0]
        # border padding: where the source box ends inside the band, its edge tissue is a better guess than 0
        image = _resample(source[1:], points, "bilinear", "border")[0]
        labels = np.rint(labels).astype(np.int16)
        rows, cols = np.nonzero(labels)
        if not rows.size:
            return labels[:0, :0], image[:0, :0], (0, 0)
        r0, c0 = rows.min() - reach, cols.min() - reach
        box = (slice(r0, rows.max() + reach + 1), slice(c0, cols.max() + reach + 1))
        return labels[box], image[box], (half[0] - int(r0), half[1] - int(c0))

    def _source(self, index: int) -> torch.Tensor:
        """Bank lesion ``index`` as ``(2, h, w)`` float64 labels and image, kept for the next draws of that lesion.

        The sides are padded to odd lengths: that puts the box centre on a pixel centre, so that quarter turns map
        pixels onto pixels exactly.
        """
        if index not in self._sources:
            lesion = self.bank[index]
            height, width = (n + 1 - n % 2 for n in lesion.labels.shape)
            source = np.zeros((2, height, width), np.float32)
            source[0, : lesion.labels.shape[0], : lesion.labels.shape[1]] = lesion.labels
            source[1, : lesion.labels.shape[0], : lesion.labels.shape[1]] = lesion.image
            self._sources[index] = torch.as_tensor(source, dtype=torch.float64)
        return self._sources[index]

    @staticmethod
    def _displacement(shape: tuple[int, int], spacing: np.ndarray, elastic: Mapping[str, Any]) -> torch.Tensor:
        """The elastic displacement field ``(2, *shape)`` in base pixels; its largest length is the magnitude in mm."""
        noise = np.random.RandomState(elastic["seed"]).uniform(-1.0, 1.0, (2, *shape)).astype(np.float32)
        field = _smooth(torch.as_tensor(noise), elastic["sigma_mm"] / spacing).double()
        longest = torch.sqrt((field**2).sum(0)).max().clamp_min(1e-12)
        field = field * (elastic["magnitude_mm"] / longest)
        return field / torch.as_tensor(spacing, dtype=torch.float64).view(2, 1, 1)

    def __call__(self, foreground: NdarrayOrTensor, spacing: Sequence[float], randomize: bool = True, *,
                 lesion_index: int | None = None, head: NdarrayOrTensor | None = None,
                 mirror_axis: int | None = None) -> PlacedLesion:
        """Place a lesion into a base slice.

        Args:
            foreground: ``(H, W)`` bool mask of the head (or brain) of the base slice.
            spacing: the base slice's in-plane pixel spacing in mm, (rows, columns).
            randomize: draw a new lesion, transform and position; False places the last drawn one again, at the
                same position.
            lesion_index: the bank lesion to place (its transform and position are drawn); None: drawn.
            head: ``(H, W)`` head mask whose bounding box is the frame of the location prior (:func:`head_box`), as
                the bank's positions were measured; None: ``foreground``'s box.
            mirror_axis: the in-plane axis (0 rows, 1 columns) that runs left-right, across which the location
                prior's target is mirrored with ``mirror_prob``; None: never mirrored.

        Returns:
            the placed lesion on the base grid, with everything drawn in its ``params``.

        Raises:
            ValueError: when no lesion can fit, or the drawn lesion fits under none of ``max_tries`` transforms (or
                the last placement does not fit this foreground, with ``randomize=False``), naming the sizes involved.
        """
        foreground = _plane(foreground).astype(bool)
        spacing = (float(spacing[0]), float(spacing[1]))
        if min(spacing) <= 0:
            raise ValueError(f"spacing must be positive, got {spacing}.")
        if lesion_index is not None and not 0 <= int(lesion_index) < len(self.bank):
            raise ValueError(f"lesion_index {lesion_index} is not in the bank of {len(self.bank)} lesions.")
        if mirror_axis not in (None, 0, 1):
            raise ValueError(f"mirror_axis must be 0, 1 or None, got {mirror_axis}.")
        threads = torch.get_num_threads()
        # placement is many small torch ops (FFTs, a smoothing product, grid sampling): spreading each over the
        # intra-op threads costs more than it saves, and on a busy machine every op then waits for a descheduled one
        torch.set_num_threads(1)
        try:
            return self._place(foreground, spacing, randomize, lesion_index, foreground if head is None else
                               _plane(head).astype(bool), mirror_axis)
        finally:
            torch.set_num_threads(threads)

    def _target(self, index: int, frame: tuple[np.ndarray, np.ndarray] | None,
                mirror_axis: int | None) -> dict[str, Any] | None:
        """The location prior's draw for bank lesion ``index``: its target in head-box units, mirrored or not."""
        position = self.bank[index].position
        if self.location_sigma is None or position is None or frame is None:
            return None
        mirrored = mirror_axis is not None and bool(self.R.rand() < self.mirror_prob)
        target = [float(v) for v in position]
        if mirrored:
            target[mirror_axis] = -target[mirror_axis]
        return {"target": target, "mirrored": mirrored, "sigma": self.location_sigma,
                "frame_centre_px": [float(v) for v in frame[0]], "frame_half_px": [float(v) for v in frame[1]]}

    def _check_section(self, index: int, frame: tuple[np.ndarray, np.ndarray] | None,
                       spacing: tuple[float, float]) -> None:
        """Refuse a base slice whose head section is not within ``section_tolerance`` of the lesion's source's."""
        source, base = self.bank[index].head_mm, _head_mm(frame, spacing)
        if self.section_tolerance is None or source is None or base is None:
            return
        if abs(math.log(base / source)) > self.section_tolerance:
            raise ValueError(f"lesion {index} ({self.bank[index].source}) comes from a head section of {source:.0f} mm "
                             f"and this slice's is {base:.0f} mm, beyond the section tolerance "
                             f"({self.section_tolerance:g}): another level of the head than the lesion's.")

    def _choose(self, corners: torch.Tensor, centre: tuple[int, int], location: dict[str, Any] | None) -> int:
        """Draw one of the fitting ``corners``: uniformly, or weighted by the location prior around its target."""
        if location is None:
            return int(self.R.randint(len(corners)))
        centres = corners.numpy().astype(np.float64) + np.asarray(centre, np.float64)
        units = (centres - np.asarray(location["frame_centre_px"])) / np.asarray(location["frame_half_px"])
        d2 = ((units - np.asarray(location["target"])) ** 2).sum(1)
        # relative to the nearest fitting position, so that a target outside the room still gives finite weights
        weights = np.exp(-(d2 - d2.min()) / (2 * self.location_sigma**2))
        return int(self.R.choice(len(corners), p=weights / weights.sum()))

    def _place(self, foreground: np.ndarray, spacing: tuple[float, float], randomize: bool, lesion_index: int | None,
               head: np.ndarray, mirror_axis: int | None) -> PlacedLesion:
        """:meth:`__call__` for a bool ``foreground`` and ``head`` and a positive ``spacing``."""
        shape = f"{foreground.shape[0]}x{foreground.shape[1]}"
        frame = head_box(head)
        if randomize and lesion_index is not None:
            # a given lesion and a slice at another level: refused before the room is worked out
            self._check_section(int(lesion_index), frame, spacing)
        allowed = self._allowed(foreground, spacing)
        where = f"inside the foreground of this {shape} slice eroded by {self.skull_margin_mm:g} mm"
        if not bool(allowed.any()):
            raise ValueError(f"no room for a lesion: no pixel is left {where} ({int(foreground.sum())} foreground px).")
        room = _Room(allowed, self.dilate_px + self.band_px)
        if not randomize:
            if self._draw is None or self._corner is None:
                raise ValueError("randomize=False repeats the last placement, but nothing has been placed yet.")
            labels, image, centre = self._transform(spacing)
            corners = room.corners(labels)
            if not bool((corners == torch.as_tensor(self._corner)).all(dim=1).any()):
                raise ValueError(f"the last placement does not fit {where}.")
            return self._placed(labels, image, centre, foreground.shape, spacing, tries=1)
        if not bool(room.centres.any()):
            # no lesion pixel can go anywhere: drawing max_tries transforms would only confirm it
            raise ValueError(f"no room for a lesion and its blend band ({self.dilate_px + self.band_px + 1} px): "
                             f"{int(allowed.sum())} px are left {where}, none as far from its edge.")
        if lesion_index is None:
            index = int(self.R.randint(len(self.bank)))
            self._check_section(index, frame, spacing)
        else:
            index = int(lesion_index)
        self._location = self._target(index, frame, mirror_axis)
        smallest = None
        for tries in range(1, self.max_tries + 1):
            self._randomize_transform(index)
            labels, image, centre = self._transform(spacing)
            if not labels.size:
                continue
            corners = room.corners(labels)
            if len(corners):
                self._corner = tuple(int(v) for v in corners[self._choose(corners, centre, self._location)])
                return self._placed(labels, image, centre, foreground.shape, spacing, tries)
            if smallest is None or labels.size < smallest[0] * smallest[1]:
                smallest = labels.shape
        size = "" if smallest is None else f" (the smallest, with its blend band, {smallest[0]}x{smallest[1]} px)"
        raise ValueError(f"no room for lesion {index} ({self.bank[index].source}) under any of {self.max_tries} "
                         f"transforms tried{size} {where}; {int(allowed.sum())} px are left there.")

    def _placed(self, labels: np.ndarray, image: np.ndarray, centre: tuple[int, int], shape: tuple[int, int],
                spacing: tuple[float, float], tries: int) -> PlacedLesion:
        """Put the cropped canvas at the chosen corner of a base-sized grid and record the parameters."""
        r0, c0 = self._corner
        h, w = labels.shape
        placed_labels = np.zeros(shape, np.int16)
        placed_image = np.zeros(shape, np.float32)
        placed_labels[r0 : r0 + h, c0 : c0 + w] = labels
        placed_image[r0 : r0 + h, c0 : c0 + w] = image
        rows, cols = np.nonzero(placed_labels)
        lesion = self.bank[self._draw["lesion_index"]]
        params = {
            **self._draw,
            "lesion_source": lesion.source,
            "centre_px": [r0 + centre[0], c0 + centre[1]],
            "bbox_px": [int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1],
            "source_spacing_mm": [float(s) for s in lesion.spacing],
            "base_spacing_mm": list(spacing),
            "location": self._location,
            "tries": tries,
        }
        return PlacedLesion(placed_labels, placed_image, deepcopy(params))


class PlaceLesiond(Randomizable, MapTransform):
    """Dictionary-based :py:class:`PlaceLesion`: place a bank lesion into a slice item and write its label map.

    The first present key of ``keys`` is the base slice, ``(1, H, W, 1)`` with its 4x4 affine; its spacing comes from
    the affine. The placement region is ``foreground_key``'s mask when given (a brain mask), else the base slice's
    head: its Otsu :func:`~monai_mri_gan.transforms.head_foreground` with the holes filled. Lesions the item already
    carries in ``label_key`` are kept, and new ones placed away from them (they are taken out of the region). The
    location prior's frame is always the head's box (as the bank measured positions), and its mirror axis the
    in-plane axis of the slice that runs nearest to left-right (from the affine; none when neither is within 45
    degrees of it, as in a sagittal slice). An item that holds ``lesion_index_key`` gets that bank lesion (e.g. to
    try one lesion in several base slices); otherwise the lesion is drawn.

    The default margin depends on the region. From a brain mask, 8 mm keeps a lesion's band off the skull. From the
    head mask of a T1 that still has its skull, scalp, skull and temporal muscle lie between the head's edge and the
    brain: 15-24 mm in-plane in the demo phantom. Real tumours reach nearly as far out (on the demo cohort the
    lesions' least distance from the head's edge is 15 mm, the median 23 mm), so a band margin of 24 mm kept lesions
    from where they occur. The default is 12 mm: with the location prior and the section tolerance, which keep a
    lesion near its own place and level, 2 of 200 placements into held-out demo slices put any lesion pixel on bone
    (the phantom's tissue map; 0.004 % of the lesion pixels), as many as with 24 mm and uniform placement; 8 mm gave
    6 of 200. Pass a brain mask where one exists.

    Writes ``label_key`` (the placed label map over any existing one, int16) and ``lesion_image_key`` (the transformed
    lesion intensities, float32), both ``(1, H, W, 1)`` ``MetaTensor`` with a copy of the base slice's affine and meta,
    and ``placement_key``: the drawn parameters (see :py:class:`PlacedLesion`).

    Args:
        bank: the lesions to draw from.
        keys: key(s) of the base slice; the first present one is used.
            See also: :py:class:`monai.transforms.compose.MapTransform`
        label_key: where the label map goes.
        lesion_image_key: where the transformed lesion intensities go (for copy-paste).
        foreground_key: key of a ``(1, H, W, 1)`` (or ``(H, W)``) mask of where lesions may go, e.g. a brain mask;
            None: the base slice's filled head mask.
        placement_key: where the drawn parameters go.
        rotate_range: see :py:class:`PlaceLesion`.
        flip_prob: see :py:class:`PlaceLesion`.
        scale_range: see :py:class:`PlaceLesion`.
        elastic_prob: see :py:class:`PlaceLesion`.
        elastic_sigma_range: see :py:class:`PlaceLesion`.
        elastic_magnitude_range: see :py:class:`PlaceLesion`.
        skull_margin_mm: see :py:class:`PlaceLesion`; None: 8 mm with ``foreground_key``, 24 mm from the head mask.
        band_px: see :py:class:`PlaceLesion`.
        max_tries: see :py:class:`PlaceLesion`.
        dilate_px: see :py:class:`PlaceLesion`.
        location_sigma: see :py:class:`PlaceLesion`.
        mirror_prob: see :py:class:`PlaceLesion`.
        section_tolerance: see :py:class:`PlaceLesion`.
        lesion_index_key: key of an optional bank index of the lesion to place.
        allow_missing_keys: don't raise exception if key is missing.

    Raises:
        DataError: naming the base slice's file, when no lesion fits into it.
    """

    backend = PlaceLesion.backend

    def __init__(self, bank: LesionBank, keys: KeysCollection = "image", label_key: str = "label",
                 lesion_image_key: str = "lesion_image", foreground_key: str | None = None,
                 placement_key: str = "placement", rotate_range: float | Sequence[float] = math.pi,
                 flip_prob: float = 0.5, scale_range: tuple[float, float] = (0.8, 1.25), elastic_prob: float = 0.5,
                 elastic_sigma_range: tuple[float, float] = (5.0, 7.0),
                 elastic_magnitude_range: tuple[float, float] = (1.0, 3.0), skull_margin_mm: float | None = None,
                 band_px: int = 4, max_tries: int = 100, dilate_px: int = 2, location_sigma: float | None = 0.1,
                 mirror_prob: float = 0.5, section_tolerance: float | None = 0.1,
                 lesion_index_key: str = "lesion_index",
                 allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.label_key = label_key
        self.lesion_image_key = lesion_image_key
        self.foreground_key = foreground_key
        self.placement_key = placement_key
        if skull_margin_mm is None:
            skull_margin_mm = BRAIN_MARGIN_MM if foreground_key is not None else HEAD_MARGIN_MM
        self.lesion_index_key = lesion_index_key
        self.placer = PlaceLesion(bank, rotate_range, flip_prob, scale_range, elastic_prob, elastic_sigma_range,
                                  elastic_magnitude_range, skull_margin_mm, band_px, max_tries, dilate_px,
                                  location_sigma, mirror_prob, section_tolerance)
        self.placer.set_random_state(state=self.R)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> PlaceLesiond:
        """Seed this transform; the wrapped :py:class:`PlaceLesion` draws from the same random state."""
        super().set_random_state(seed, state)
        self.placer.set_random_state(state=self.R)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw a lesion and its transform (see :py:meth:`PlaceLesion.randomize`)."""
        self.placer.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Place one lesion into the item's base slice; the item is returned unchanged when no key is present."""
        d = dict(data)
        key = next(iter(self.key_iterator(d)), None)
        if key is None:
            return d
        base = d[key]
        if not isinstance(base, MetaTensor):
            raise ValueError(f"{key!r} must be a (1, H, W, 1) MetaTensor slice with its affine.")
        head = fill_holes(head_foreground(_plane(base)))
        foreground = head if self.foreground_key is None else _plane(d[self.foreground_key]) != 0
        existing = _plane(d[self.label_key]) if d.get(self.label_key) is not None else None
        if existing is not None:
            foreground = foreground & (existing == 0)
        index = d.get(self.lesion_index_key)
        try:
            placed = self.placer(foreground, slice_spacing(base), lesion_index=None if index is None else int(index),
                                 head=head, mirror_axis=_left_right_axis(base.affine))
        except ValueError as err:
            raise DataError(_source_path(base), f"slice {base.meta.get('slice_index', '?')}: {err}") from err
        labels = placed.labels if existing is None else np.where(placed.labels != 0, placed.labels, existing)
        meta = {k: v for k, v in base.meta.items() if k != "affine"}
        for out_key, values in ((self.label_key, labels.astype(np.int16)), (self.lesion_image_key, placed.image)):
            d[out_key] = MetaTensor(torch.as_tensor(values)[None, :, :, None].clone(), affine=base.affine.clone(),
                                    meta=deepcopy(meta))
        d[self.placement_key] = placed.params
        return d


def blend_weights(labels: NdarrayOrTensor, dilate_px: int = 2, band_px: int = 4) -> NdarrayOrTensor:
    """The region a painter may change around lesions: 1 near them, falling linearly to exactly 0 across a band.

    With ``d`` the Euclidean distance (px) from a pixel to the nearest lesion pixel (``labels != 0``), the weight is 1
    for ``d <= dilate_px`` (the lesion dilated by a disc), ``(dilate_px + band_px + 1 - d) / (band_px + 1)`` beyond it
    (``band_px`` pixels of partial weight along an axis), and exactly 0 from ``d >= dilate_px + band_px + 1`` on.

    numpy and torch inputs go through one torch implementation (numpy on the CPU), so they agree exactly. It is an
    exact Euclidean distance transform limited to a window of ``dilate_px + band_px`` pixels (two separable passes of
    a minimum), batched, on the input's device, with no host synchronisation.

    Args:
        labels: ``(..., H, W)`` label maps (0 = no lesion), e.g. ``(H, W)`` or ``(B, 1, H, W)``; numpy or torch.
        dilate_px: the lesion dilated by this many pixels has weight 1.
        band_px: width in pixels of the band over which the weights fall to 0.

    Returns:
        float32 weights in [0, 1] of ``labels``' shape and array type (and device).

    Raises:
        ValueError: when ``labels`` has fewer than two dimensions or a width is negative.
    """
    if dilate_px < 0 or band_px < 0:
        raise ValueError(f"dilate_px and band_px must be non-negative, got {dilate_px} and {band_px}.")
    tensor = torch.as_tensor(labels if isinstance(labels, torch.Tensor) else np.ascontiguousarray(labels))
    if tensor.ndim < 2:
        raise ValueError(f"expected (..., H, W) label maps, got shape {tuple(tensor.shape)}.")
    if isinstance(tensor, MetaTensor):
        tensor = tensor.as_tensor()
    mask = (tensor != 0).reshape(-1, 1, *tensor.shape[-2:])
    reach = dilate_px + band_px
    distance = torch.sqrt(_distance_sq(mask, (1.0, 1.0), reach, outside=False))
    weights = ((reach + 1 - distance) / (band_px + 1)).clamp(0.0, 1.0).reshape(tensor.shape)
    out, *_ = convert_to_dst_type(weights, labels, dtype=torch.float32 if isinstance(labels, torch.Tensor)
                                  else np.float32)
    return out


def composite(base: NdarrayOrTensor, painted: NdarrayOrTensor, weights: NdarrayOrTensor) -> NdarrayOrTensor:
    """``base * (1 - weights) + painted * weights``, and exactly ``base`` wherever the weight is 0.

    Args:
        base: the base image(s), numpy or torch, any shape and dtype (an integer base is rounded back to its dtype).
        painted: the painted (or copied) intensities, broadcastable to ``base``.
        weights: blend weights in [0, 1] (see :func:`blend_weights`), broadcastable to ``base``.

    Returns:
        the composite, of ``base``'s array type, dtype and device.
    """
    if isinstance(base, torch.Tensor):
        painted = torch.as_tensor(painted, device=base.device)
        weights = torch.as_tensor(weights, device=base.device)
        if base.is_floating_point():
            blended = (base * (1 - weights) + painted * weights).to(base.dtype)
        else:
            info = torch.iinfo(base.dtype)
            blended = (base.double() * (1 - weights.double()) + painted.double() * weights.double())
            blended = blended.round().clamp(info.min, info.max).to(base.dtype)
        return torch.where(weights > 0, blended, base)
    base = np.asarray(base)
    painted = np.asarray(painted.detach().cpu() if isinstance(painted, torch.Tensor) else painted)
    weights = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights)
    if np.issubdtype(base.dtype, np.floating):
        blended = (base * (1 - weights) + painted * weights).astype(base.dtype)
    else:
        info = np.iinfo(base.dtype)
        blended = base.astype(np.float64) * (1 - weights.astype(np.float64)) + painted * weights.astype(np.float64)
        blended = np.clip(np.rint(blended), info.min, info.max).astype(base.dtype)
    return np.where(weights > 0, blended, base)


def paste_lesion(base: NdarrayOrTensor, placed: PlacedLesion, dilate_px: int = 2, band_px: int = 4) -> NdarrayOrTensor:
    """Copy-paste a placed lesion into a base slice (the TumorCP-style comparator of the lesion painter).

    Args:
        base: ``(H, W)`` base slice in training space.
        placed: a lesion placed on the base slice's grid by :py:class:`PlaceLesion`.
        dilate_px: see :func:`blend_weights`.
        band_px: see :func:`blend_weights`.

    Returns:
        :func:`composite` of ``base`` and the lesion's intensities under its blend weights; pixels outside the band
        are exactly ``base``.

    Raises:
        ValueError: when ``base`` and the placed lesion are not on grids of the same shape.
    """
    if tuple(base.shape) != tuple(placed.labels.shape):
        raise ValueError(f"base shape {tuple(base.shape)} differs from the placed lesion's {placed.labels.shape}.")
    return composite(base, placed.image, blend_weights(placed.labels, dilate_px, band_px))


def lesion_window(bbox: Sequence[int], size: int | Sequence[int], shape: Sequence[int]) -> tuple[int, int]:
    """Top-left corner of a ``size`` window centred on a lesion's bounding box and moved inside the slice.

    Along each axis the window is centred on the box (rounding towards the top-left), then shifted so that it lies
    inside ``[0, extent)``; where the slice is smaller than the window, the window is centred on the slice instead,
    and its corner is negative (:func:`crop_plane` pads what lies outside). A box larger than the window is cut.

    Args:
        bbox: ``[r0, r1, c0, c1]``, the half-open bounding box of the lesion (e.g. a placement's ``bbox_px``).
        size: the window's side, or its ``(rows, columns)``.
        shape: the slice's ``(H, W)``.

    Returns:
        the window's ``(row, column)`` corner on the slice.
    """
    sizes = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
    corner = []
    for (low, high), extent, length in zip(((bbox[0], bbox[1]), (bbox[2], bbox[3])), shape, sizes, strict=True):
        if extent < length:
            corner.append(-((length - int(extent)) // 2))
        else:
            corner.append(min(max((int(low) + int(high)) // 2 - length // 2, 0), int(extent) - length))
    return corner[0], corner[1]


def crop_plane(plane: NdarrayOrTensor, start: Sequence[int], size: Sequence[int], fill: float) -> NdarrayOrTensor:
    """The ``size`` window of a ``(H, W)`` plane at corner ``start``, padded with ``fill`` where it leaves the plane.

    Args:
        plane: ``(H, W)`` image or label map, numpy or torch.
        start: the window's ``(row, column)`` corner; it may be negative or reach past the plane.
        size: the window's ``(rows, columns)``.
        fill: value of the window's pixels outside the plane.

    Returns:
        the ``size`` window, of ``plane``'s array type, dtype (and device).
    """
    size = tuple(int(n) for n in size)
    if isinstance(plane, torch.Tensor):
        out = torch.full(size, fill, dtype=plane.dtype, device=plane.device)
    else:
        out = np.full(size, fill, dtype=np.asarray(plane).dtype)
    src, dst = [], []
    for s, n, e in zip((int(v) for v in start), size, plane.shape, strict=True):
        low, high = max(s, 0), min(s + n, int(e))
        if high <= low:
            return out
        src.append(slice(low, high))
        dst.append(slice(low - s, high - s))
    out[tuple(dst)] = plane[tuple(src)]
    return out
