"""Paint tumours into real healthy slices with a trained lesion painter, or copy real lesions there (TumorCP-style).

:class:`LesionPainterSynthesiser` is the lesion painter's synthesis: for each sample it takes a healthy base slice of
a real cohort at its native resolution, places a real lesion mask from a :class:`~monai_mri_gan.transforms.LesionBank`
into the base slice's head (:class:`~monai_mri_gan.transforms.PlaceLesiond`), paints the region around it with the
checkpoint's generator (or pastes the lesion's own pixels, the copy-paste comparator), and writes the painted slice
in the base slice's source units, dtype and exact geometry, its mask, and a provenance sidecar.

A painted slice holds real anatomy: every pixel outside the lesion's blend band is the base slice's own value, bit
for bit. Its sidecar therefore says ``contains_real_anatomy: true`` and names the base slice and the lesion's
source only by keyed ids (:func:`~monai_mri_gan.synthesis.provenance.keyed_id`) under the training run's
``provenance_key``, which stays in the run folder.

Sampling is reproducible per sample: sample ``i`` draws everything from ``numpy.random.default_rng([seed, i])``
(the seed of its latent vector, :func:`~monai_mri_gan.networks.seeded_latents` ``(1, latent_dim, latent_seed)``,
then its base slice among the healthy slices and the seed of its placement, again while no lesion fits into the
slice drawn), so it is the same whatever the number of samples. Two runs with the same checkpoint, data and seed
write identical files except the ``created`` time of the sidecars.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import threading
import time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose
from monai.utils import convert_to_numpy

from ..data import SliceCohort, healthy_positions, place_in_bases, resolve_datalist, volume_transforms
from ..errors import DataError
from ..networks import seeded_latents
from ..objectives import LesionPainterObjective, painter_condition
from ..runs import generator_from_checkpoint, load_checkpoint, resolve_checkpoint, run_folder, run_record
from ..transforms import (
    LesionBank,
    PlaceLesiond,
    blend_weights,
    composite,
    crop_plane,
    cut_slices,
    invert_normalisation,
    lesion_window,
)
from ..utils import as_flag, remove_staged
from .provenance import (
    PROVENANCE_KEY,
    keyed_id,
    provenance_record,
    run_provenance_key,
    sha256_file,
    sidecar_path,
    synthetic_descrip,
)
from .sampler import check_destinations, intensity_record
from .writer import SyntheticSliceWriter, cast_to_dtype

__all__ = ["PAINT_METHODS", "LesionPainterSynthesiser"]

logger = logging.getLogger(__name__)

PAINT_METHODS = ("gan", "copy_paste")
"""How a lesion is put into a base slice: painted by the generator, or its real pixels copied (the comparator)."""

_FILE_PREFIX = {"gan": "painted", "copy_paste": "copypaste"}
_SOURCE_KEY = "_lesion_source"
_SEP = "\x1f"
_UNET_STRIDE = 16
_SEED_RANGE = 2**31 - 1
_PLACEMENT_ARGS = ("rotate_range", "flip_prob", "scale_range", "elastic_prob", "elastic_sigma_range",
                   "elastic_magnitude_range", "skull_margin_mm", "max_tries", "location_sigma", "mirror_prob",
                   "section_tolerance")
_GEOMETRY_TOL = 1e-4


def _slice_source(item: Mapping[str, Any]) -> str:
    """The local identifier of a cohort slice: subject, volume path, axis and index (only ever written keyed)."""
    return _SEP.join([str(item.get("subject", "")), _volume_path(item), str(int(item["slice_axis"])),
                      str(int(item["slice_index"]))])


def _volume_path(item: Mapping[str, Any]) -> str:
    """The path of the volume a cohort slice was cut from."""
    return str(item["image"].meta.get("filename_or_obj"))


def _plane(image: Any) -> np.ndarray:
    """The ``(H, W)`` plane of a ``(1, H, W, 1)`` slice, as numpy."""
    return np.asarray(convert_to_numpy(image))[0, :, :, 0]


class LesionPainterSynthesiser:
    """Paint lesions into real healthy slices and write them with the base slice's geometry, units and a mask.

    For each of ``num_samples`` samples (see the module docstring for the seeded draws):

    1. a healthy base slice: a slice of class 0 with no mask at all (subjects without a tumour included) of the base
       cohort, cut at native resolution with the run's slicing settings;
    2. a lesion from a :class:`~monai_mri_gan.transforms.LesionBank` of the lesion cohort's tumour slices (by
       default the base cohort's; it should hold the painter's training subjects), placed by
       :class:`~monai_mri_gan.transforms.PlaceLesiond` inside the base slice's head, with the run's ``dilate_px``
       and ``band_px`` (when no lesion fits, another base slice is drawn, up to ``base_tries`` times);
    3. ``method="gan"``: a window of the run's ``crop_size`` (larger, in steps of 16, when the lesion and its blend
       band need more) around the placed lesion, moved inside the slice (padded when the slice is smaller), is
       painted by the generator (EMA weights by default) given
       :func:`~monai_mri_gan.objectives.painter_condition` of the placed labels and the sample's latent vector,
       through :meth:`~monai_mri_gan.objectives.LesionPainterObjective.paint` as in training.
       ``method="copy_paste"``: the lesion's own transformed pixels are used instead;
    4. the painting is mapped to the base volume's source units with the base slice's recorded normalisation
       (:func:`~monai_mri_gan.transforms.invert_normalisation`) and composited into the base slice as loaded from
       its source without normalisation (:func:`~monai_mri_gan.transforms.composite` under
       :func:`~monai_mri_gan.transforms.blend_weights`), in the source's dtype (integers rounded and clipped):
       pixels of blend weight 0 are exactly the base slice's;
    5. written by :class:`~monai_mri_gan.synthesis.SyntheticSliceWriter` with the base slice's 4x4 affine as
       ``<prefix>_<index:04d>.nii.gz`` (prefix ``painted``, or ``copypaste`` for the comparator), the placed labels as
       ``<prefix>_<index:04d>_mask.nii.gz`` (int16, same geometry), and a sidecar ``<prefix>_<index:04d>.json``.

    The sidecar is a :func:`~monai_mri_gan.synthesis.provenance_record` with, besides its standard fields:
    ``family`` (``"lesion_painter"``), ``method``, ``weights``, ``contains_real_anatomy`` (true), ``base_slice`` and
    ``lesion_source`` (keyed ids, see :func:`~monai_mri_gan.synthesis.keyed_id`: HMAC-SHA256 under the key file
    ``provenance_key`` of the checkpoint's folder, created on first use; the record's
    ``reference_geometry.reference_id`` is the ``base_slice`` id), ``placement``
    (what :class:`~monai_mri_gan.transforms.PlaceLesion` drew), ``painting`` (the run's conditioning, and the
    painted window for the generator), ``latent`` (generator only), ``mask`` and ``intensity``.

    Every destination is checked before anything is loaded or painted; files are written to temporary names and
    renamed into place, the mask first, then the slice and its sidecar (if those fail, the mask is removed again).

    .. code-block:: python

        synthesiser = LesionPainterSynthesiser("runs/brain_tumour_painter", "runs/painted", num_samples=100)
        written = synthesiser.run()  # [{"image": Path, "mask": Path, "provenance": Path, "sample_index": 0, ...}]

    Args:
        ckpt_path: a lesion painter checkpoint file, its training output folder (its latest checkpoint), or a model
            file with its run record beside it (a bundle's ``models/model.pt``, see
            :func:`~monai_mri_gan.runs.export_model`).
        output_dir: folder of the outputs (created when missing); it must not hold the provenance key.
        num_samples: number of painted slices.
        seed: seed of every draw (see the module docstring).
        dataset_dir: folder of the base volumes (see :func:`~monai_mri_gan.data.resolve_datalist`).
        datalist: datalist JSON of the base volumes; with ``dataset_dir`` also None, the embedded demo cohort.
        lesion_dataset_dir: folder of the volumes whose tumour masks fill the lesion bank.
        lesion_datalist: datalist JSON of those volumes; with ``lesion_dataset_dir`` also None, the base cohort.
        method: one of :data:`PAINT_METHODS`.
        overwrite: replace existing outputs.
        compress: write ``.nii.gz`` (else ``.nii``).
        use_ema: paint with the EMA generator (else the raw generator).
        device: device of the generator; None for CPU.
        batch_size: windows per generator forward pass.
        cache_dir: optional on-disk cache of the cohorts.
        on_error: "raise" or "skip" bad volumes.
        key_path: the provenance key file; None: ``provenance_key`` in the run's folder
            (:func:`~monai_mri_gan.runs.run_folder`: beside the checkpoint, or above a model file's ``models``).
        min_lesion_voxels: lesions with fewer pixels stay out of the bank; None: the run's
            ``slicing["tumour_min_voxels"]`` (what its training crops used), else 20.
        placement: further :class:`~monai_mri_gan.transforms.PlaceLesiond` arguments (``rotate_range``,
            ``scale_range``, ``elastic_prob``, ``skull_margin_mm``, ``max_tries``, ...).
        base_tries: base slices drawn for a sample before giving up when no lesion fits into them.
        generator: the painter to load the checkpoint's weights into (e.g. a bundle's ``network_def``, built from
            its config's arguments); None builds it from the run record.

    Raises:
        FileNotFoundError: when there is no checkpoint at ``ckpt_path``.
        KeyError: when the checkpoint has no run record or no weights of the chosen generator.
        ValueError: for a checkpoint of another family or without painting settings, an unknown method, a negative
            number of samples, a non-positive batch size or ``base_tries``, other ``placement`` arguments than
            those listed, or a ``generator`` other than the run record's (each differing argument named with both
            values, see :func:`~monai_mri_gan.runs.check_network`).
    """

    def __init__(
        self,
        ckpt_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        num_samples: int = 8,
        seed: int = 0,
        dataset_dir: str | os.PathLike | None = None,
        datalist: str | os.PathLike | None = None,
        lesion_dataset_dir: str | os.PathLike | None = None,
        lesion_datalist: str | os.PathLike | None = None,
        method: str = "gan",
        overwrite: bool = False,
        compress: bool = True,
        use_ema: bool = True,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        key_path: str | os.PathLike | None = None,
        min_lesion_voxels: int | None = None,
        placement: Mapping[str, Any] | None = None,
        base_tries: int = 100,
        generator: torch.nn.Module | None = None,
    ) -> None:
        if method not in PAINT_METHODS:
            raise ValueError(f"method must be one of {PAINT_METHODS}, got {method!r}.")
        if int(num_samples) < 0 or int(batch_size) < 1 or int(base_tries) < 1:
            raise ValueError(f"need num_samples >= 0, batch_size >= 1 and base_tries >= 1, got {num_samples}, "
                             f"{batch_size} and {base_tries}.")
        unknown = sorted(set(placement or {}) - set(_PLACEMENT_ARGS))
        if unknown:
            raise ValueError(f"placement may set {_PLACEMENT_ARGS}, not {unknown} (the bank and keys are the "
                             "synthesiser's, the blend widths the run's).")
        self.ckpt_path = resolve_checkpoint(ckpt_path)
        checkpoint = load_checkpoint(self.ckpt_path)
        self.record = run_record(checkpoint)
        if self.record.get("family") != "lesion_painter" or not self.record.get("painting"):
            raise ValueError(f"{self.ckpt_path}: not a lesion painter checkpoint (family "
                             f"{self.record.get('family')!r}, painting {self.record.get('painting')!r}).")
        self.painting = dict(self.record["painting"])
        self.label_values = tuple(int(v) for v in self.painting["label_values"])
        # blend weights are 0 from this many pixels away from a lesion on
        self.reach = int(self.painting["dilate_px"]) + int(self.painting["band_px"]) + 1
        self.method = method
        self.use_ema = as_flag(use_ema, "use_ema")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.generator = None
        if method == "gan":
            weights_key = "ema_generator" if self.use_ema else "generator"
            self.generator = generator_from_checkpoint(checkpoint, weights_key, device=self.device, network=generator)
        del checkpoint
        self.checkpoint_sha256 = sha256_file(self.ckpt_path)
        self.output_dir = Path(output_dir)
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.dataset_dir = dataset_dir
        self.datalist = datalist
        self.lesion_dataset_dir = lesion_dataset_dir
        self.lesion_datalist = lesion_datalist
        self.overwrite = as_flag(overwrite, "overwrite")
        self.compress = as_flag(compress, "compress")
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        self.on_error = on_error
        self.key_path = Path(key_path) if key_path is not None else run_folder(self.ckpt_path) / PROVENANCE_KEY
        slicing = dict(self.record.get("slicing") or {})
        self.min_lesion_voxels = int(min_lesion_voxels or slicing.get("tumour_min_voxels") or 20)
        self.tumour_labels = slicing.get("tumour_labels")
        self.placement = dict(placement or {})
        self.base_tries = int(base_tries)
        self.writer = SyntheticSliceWriter(overwrite=self.overwrite)
        self.mask_writer = SyntheticSliceWriter(output_dtype="int16", intent_name="synthetic_mask",
                                                overwrite=self.overwrite)
        self.timings: dict[str, float] = {}
        self._cohort: SliceCohort | None = None
        self._lesion_cohort: SliceCohort | None = None
        self._bank: LesionBank | None = None
        self._raw: dict[int, np.ndarray] = {}

    def _load_cohort(self, dataset_dir: str | os.PathLike | None, datalist: str | os.PathLike | None) -> SliceCohort:
        items = resolve_datalist(dataset_dir, datalist)
        return SliceCohort(items, image_size=None, slicing=self.record.get("slicing"), cache_dir=self.cache_dir,
                           on_error=self.on_error)

    @property
    def base_cohort(self) -> SliceCohort:
        """The base cohort's slices, at native resolution, cut with the run's slicing settings (built on first use)."""
        if self._cohort is None:
            self._cohort = self._load_cohort(self.dataset_dir, self.datalist)
        return self._cohort

    @property
    def lesion_cohort(self) -> SliceCohort:
        """The lesion cohort's slices: the base cohort unless a lesion datalist or folder is given."""
        if self._lesion_cohort is None:
            if self.lesion_dataset_dir is None and self.lesion_datalist is None:
                self._lesion_cohort = self.base_cohort
            else:
                self._lesion_cohort = self._load_cohort(self.lesion_dataset_dir, self.lesion_datalist)
        return self._lesion_cohort

    @property
    def bank(self) -> LesionBank:
        """The lesion bank: the lesions in the lesion cohort's tumour slices that hold ``min_lesion_voxels`` pixels or
        more of the run's tumour labels (``slicing["tumour_labels"]``), so every painted slice is a tumour slice by
        the rule the real ones are classed by."""
        if self._bank is None:
            items = ({**s, _SOURCE_KEY: _slice_source(s)} for s in self.lesion_cohort
                     if int(s["class"]) == 1 and s.get("label") is not None)
            self._bank = LesionBank.from_slices(items, min_voxels=self.min_lesion_voxels, source_key=_SOURCE_KEY,
                                                core_labels=self.tumour_labels)
        return self._bank

    @functools.cached_property
    def healthy_positions(self) -> list[int]:
        """Positions of the candidate base slices in :attr:`base_cohort`: :func:`~monai_mri_gan.data.healthy_positions`.

        Raises:
            ValueError: when the cohort has none.
        """
        return healthy_positions(self.base_cohort)

    def paths(self, sample_index: int) -> dict[str, Path]:
        """The files of one sample: ``image``, ``mask`` and ``provenance`` (the sidecar)."""
        stem = f"{_FILE_PREFIX[self.method]}_{sample_index:04d}"
        suffix = ".nii.gz" if self.compress else ".nii"
        image = self.output_dir / f"{stem}{suffix}"
        return {"image": image, "mask": self.output_dir / f"{stem}_mask{suffix}", "provenance": sidecar_path(image)}

    def place(self, sample_index: int) -> dict[str, Any]:
        """Draw one sample's base slice and place its lesion there.

        The sample's ``numpy.random.default_rng([seed, sample_index])`` draws the seed of its latent vector, then
        (:func:`~monai_mri_gan.data.place_in_bases`) a bank lesion, a base slice among :attr:`healthy_positions`
        and the seed of its :class:`~monai_mri_gan.transforms.PlaceLesiond`. When the lesion fits nowhere in that
        slice (one near the top of the head has little room), another base slice and placement seed are drawn for
        the same lesion, up to ``base_tries`` times.

        Args:
            sample_index: the sample.

        Returns:
            the base slice item with ``label`` (the placed labels, ``(1, H, W, 1)`` int16), ``lesion_image`` and
            ``placement`` (the drawn parameters, and ``base_tries``) added, and the sample's draws:
            ``sample_index``, ``position`` (of its base slice in :attr:`base_cohort`), ``placement_seed`` and
            ``latent_seed``.

        Raises:
            DataError: when the lesion fits into none of the base slices drawn.
        """
        rng = np.random.default_rng([self.seed, int(sample_index)])
        latent_seed = int(rng.integers(_SEED_RANGE))
        try:
            placed, position, placement_seed = place_in_bases(self._placer, self.base_cohort, self.healthy_positions,
                                                              rng, self.base_tries)
        except DataError as err:
            raise DataError(err.path, f"sample {sample_index}: {err.problem}") from err
        return {**placed, "sample_index": int(sample_index), "position": position,
                "placement_seed": placement_seed, "latent_seed": latent_seed}

    @functools.cached_property
    def _placer(self) -> PlaceLesiond:
        """The placement transform, reseeded for each base slice drawn (it keeps what it computed per lesion)."""
        return PlaceLesiond(self.bank, keys="image", label_key="label", dilate_px=int(self.painting["dilate_px"]),
                            band_px=int(self.painting["band_px"]), **self.placement)

    @torch.no_grad()
    def paint(self, placed: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The generator's painting of each placed lesion's window, on the full slice grid, in training space.

        Windows of one size are painted in batches of ``batch_size``. Outside its window a painting is the base
        slice (those pixels have blend weight 0 and are never used).

        Args:
            placed: outputs of :meth:`place` (with the seed of each sample's latent vector).

        Returns:
            per sample: ``painting`` (``(H, W)`` float32) and ``window`` (``[row, column, height, width]``, the
            window's top-left corner on the slice, which may be negative when the slice is padded, and its size).
        """
        crop, reach = int(self.painting["crop_size"]), self.reach
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        windows = []
        for n, item in enumerate(placed):
            r0, r1, c0, c1 = item["placement"]["bbox_px"]
            bounds = ((r0 - reach, r1 + reach), (c0 - reach, c1 + reach))
            size = tuple(max(crop, _UNET_STRIDE * math.ceil((hi - lo) / _UNET_STRIDE)) for lo, hi in bounds)
            extent = item["image"].shape[1:3]
            start = lesion_window([*bounds[0], *bounds[1]], size, extent)
            windows.append((start, size))
            groups[size].append(n)
        paintings = [_plane(item["image"]).copy() for item in placed]
        latent_dim = int(self.generator.latent_dim)
        for members in groups.values():
            for at in range(0, len(members), self.batch_size):
                batch = members[at: at + self.batch_size]
                images, labels = [], []
                for n in batch:
                    start, size = windows[n]
                    background = float(placed[n]["image"].meta.get("norm_out_low", -1.0))
                    images.append(crop_plane(_plane(placed[n]["image"]), start, size, background))
                    labels.append(crop_plane(_plane(placed[n]["label"]), start, size, 0))
                base = torch.as_tensor(np.stack(images))[:, None].to(self.device)
                condition = painter_condition(torch.as_tensor(np.stack(labels))[:, None].to(self.device),
                                              self.label_values, int(self.painting["dilate_px"]),
                                              int(self.painting["band_px"]))
                z = None
                if latent_dim:
                    z = torch.cat([seeded_latents(1, latent_dim, placed[n]["latent_seed"]) for n in batch])
                    z = z.to(self.device)
                out = self._generate(base, condition, z).float().cpu().numpy()[:, 0]
                for n, window in zip(batch, out, strict=True):
                    (r, c), (h, w) = windows[n]
                    inside = crop_plane(window, (-r, -c), paintings[n].shape, 0.0)
                    covered = crop_plane(np.ones((h, w), bool), (-r, -c), paintings[n].shape, False)
                    paintings[n] = np.where(covered, inside, paintings[n]).astype(np.float32)
        return [{"painting": p, "window": [*w[0], *w[1]]} for p, w in zip(paintings, windows, strict=True)]

    def _generate(self, base: torch.Tensor, condition: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """The generator's raw output for crops, given exactly the input training gave it (its hole blanked)."""
        outputs = []

        def generate(blanked: torch.Tensor, cond: torch.Tensor, latents: torch.Tensor | None) -> torch.Tensor:
            outputs.append(self.generator(blanked, cond, latents))
            return outputs[-1]

        # paint() blanks the hole as training did; its composite is in training space, the one that counts is made
        # in source units (see _composite), so the raw output is what is kept
        LesionPainterObjective.paint(generate, base, condition, z)
        return outputs[0]

    def raw_slice(self, position: int) -> np.ndarray:
        """The base slice at ``position`` of :attr:`base_cohort` as loaded from its source, not normalised.

        A volume is read once (:func:`~monai_mri_gan.data.volume_transforms` with the run's slicing settings), and
        all its healthy slices are cut from it and kept, so that no volume is read twice.

        Args:
            position: a position in :attr:`healthy_positions`.

        Returns:
            ``(H, W)`` values in the source's units, as loaded (float32).

        Raises:
            ValueError: when a slice cut from the source does not lie on its normalised slice's grid.
        """
        if position not in self._raw:
            start = time.perf_counter()
            volume_of = self._volume_key(self.base_cohort[position])
            members = self._healthy_by_volume[volume_of]
            slicing = dict(self.record.get("slicing") or {})
            load = Compose(volume_transforms(spacing=slicing.get("spacing"), volume_index=slicing.get("volume_index")))
            volume = load({"image": volume_of[0]})["image"]
            indices = [int(self.base_cohort[p]["slice_index"]) for p in members]
            for member, cut in zip(members, cut_slices(volume, indices, volume_of[1]), strict=True):
                reference = self.base_cohort[member]["image"]
                if cut.shape != reference.shape or not torch.allclose(
                        cut.affine.double(), reference.affine.double(), atol=_GEOMETRY_TOL):
                    raise ValueError(f"base slice at cohort position {member}: the slice loaded from its source "
                                     "does not lie on its normalised slice's grid.")
                self._raw[member] = _plane(cut)
            self.timings["load_s"] = self.timings.get("load_s", 0.0) + time.perf_counter() - start
        return self._raw[position]

    @staticmethod
    def _volume_key(item: Mapping[str, Any]) -> tuple[str, int]:
        return _volume_path(item), int(item["slice_axis"])

    @functools.cached_property
    def _healthy_by_volume(self) -> dict[tuple[str, int], list[int]]:
        """:attr:`healthy_positions` grouped by the volume (and slicing axis) they were cut from."""
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)
        for position in self.healthy_positions:
            groups[self._volume_key(self.base_cohort[position])].append(position)
        return groups

    def _composite(self, raw: np.ndarray, painting: np.ndarray, item: Mapping[str, Any]) -> np.ndarray:
        """The painted slice in source units and dtype: ``raw`` wherever the blend weight is 0."""
        meta = item["image"].meta
        dtype = np.dtype(str(meta.get("source_dtype") or "float32"))
        labels = _plane(item["label"])
        r0, r1, c0, c1 = item["placement"]["bbox_px"]
        # the weights are 0 farther than `reach` from the lesion: on its widened box they are exact, and far cheaper
        box = (slice(max(r0 - self.reach, 0), r1 + self.reach), slice(max(c0 - self.reach, 0), c1 + self.reach))
        weights = np.zeros(labels.shape, np.float32)
        weights[box] = blend_weights(labels[box], int(self.painting["dilate_px"]), int(self.painting["band_px"]))
        painted = invert_normalisation(painting, meta, dtype=np.float64)
        # raw is the source as loaded: the cast keeps its values (for an integer type it rounds resampled ones)
        return composite(cast_to_dtype(raw, dtype), painted, weights)

    def _record(self, item: Mapping[str, Any], window: list[int] | None, key: bytes,
                paths: Mapping[str, Path]) -> dict[str, Any]:
        image = item["image"]
        placement = dict(item["placement"])
        lesion_source = keyed_id(key, "lesion", placement.pop("lesion_source"))
        base_slice = keyed_id(key, "base_slice", _slice_source(item))
        class_names = [str(c) for c in (self.record.get("class_names") or [])]
        painting = {k: self.painting[k] for k in ("label_values", "crop_size", "dilate_px", "band_px")}
        extra: dict[str, Any] = {
            "family": "lesion_painter",
            "method": self.method,
            "weights": None if self.generator is None else ("ema_generator" if self.use_ema else "generator"),
            "contains_real_anatomy": True,
            "base_slice": base_slice,
            "lesion_source": lesion_source,
            "keyed_ids": "HMAC-SHA256 under the provenance_key of the training run folder",
            "draws": {"rng": "numpy.random.default_rng([seed, sample_index])",
                      "placement_seed": int(item["placement_seed"]), "placement_args": self.placement},
            "placement": placement,
            "painting": painting if window is None else {**painting, "window_px": window},
            "mask": {"file": paths["mask"].name, "dtype": "int16", "label_values": list(self.label_values)},
            "intensity": intensity_record(image.meta),
        }
        if self.generator is not None and int(self.generator.latent_dim):
            extra["latent"] = {"distribution": "standard normal", "seed": int(item["latent_seed"]),
                               "draw": "torch.randn(1, latent_dim, generator=torch.Generator().manual_seed(seed))"}
        return provenance_record(
            generator_name=("copy_paste" if self.generator is None
                            else str(self.record["networks"]["generator"]["_target_"])),
            generator_version=str(self.record.get("versions", {}).get("monai_mri_gan", "unknown")),
            checkpoint_sha256=self.checkpoint_sha256,
            seed=self.seed,
            sample_index=int(item["sample_index"]),
            class_name=class_names[1] if len(class_names) > 1 else "tumour",
            class_index=1,
            reference_id=base_slice,
            reference_slice_index=int(item["slice_index"]),
            reference_affine=np.asarray(convert_to_numpy(image.affine), dtype=np.float64),
            reference_axis=int(item["slice_axis"]),
            reference_acquisition=image.meta.get("acquisition", "{}"),
            extra=extra,
        )

    def run(self) -> list[dict[str, Any]]:
        """Place, paint and write every sample.

        Each batch of ``batch_size`` samples is placed (and painted) while a thread reads the previous ones' base
        slices from source, composites and writes them; it pauses while a generator on the CPU paints, which takes
        every core. The time spent is kept in :attr:`timings` (``load_s``: reading the base slices from source,
        ``place_s``, ``paint_s``, ``write_s``: compositing and writing); reading and writing overlap placement.

        Returns:
            one entry per sample: ``image``, ``mask`` and ``provenance`` paths, ``sample_index``, ``position`` (of
            the base slice in :attr:`base_cohort`) and ``method``.

        Raises:
            FileExistsError: when an output exists and ``overwrite`` is False (checked before anything is read).
            ValueError: when the provenance key would lie inside ``output_dir``, or see :meth:`healthy_positions`,
                :meth:`raw_slices` and :class:`~monai_mri_gan.transforms.PlaceLesiond`.
            BaseException: whatever interrupts the run; samples written so far stay complete and temporary files
                staged for the rest are removed.
        """
        destinations = [path for i in range(self.num_samples) for path in self.paths(i).values()]
        check_destinations(destinations, self.overwrite)
        key = run_provenance_key(self.key_path, self.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._run(key)
        except BaseException:
            for path in destinations:
                remove_staged(path)
            raise

    def _run(self, key: bytes) -> list[dict[str, Any]]:
        """Place, paint and write the samples; see :meth:`run`."""
        self.timings = {"load_s": 0.0, "place_s": 0.0, "paint_s": 0.0, "write_s": 0.0}
        threads = torch.get_num_threads()
        # reading the bases and writing (much of it file I/O, SimpleITK and zlib, which release the GIL) go to one
        # thread, which alone touches the raw slices and the writers, while this one places and paints the next
        # batch. Its torch ops are small: one intra-op thread (a per-thread setting) keeps them from stalling on busy
        # cores, and leaves the generator the caller's threads
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="painter-write", initializer=torch.set_num_threads,
                                  initargs=(1,))
        try:
            written = self._pipeline(pool, key)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            # the worker's setting is also the default of threads started later: the caller's is given back
            torch.set_num_threads(threads)
        logger.info("painted %d slice(s) (%s) into %s", len(written), self.method, self.output_dir)
        return written

    def _pipeline(self, pool: ThreadPoolExecutor, key: bytes) -> list[dict[str, Any]]:
        """Place and paint batch after batch, and hand each sample to ``pool`` to write; the written samples in
        order."""
        written: list[dict[str, Any]] = []
        queue: deque[Future] = deque()
        failed = threading.Event()
        # a generator on the CPU takes the cores with its intra-op threads, and a thread beside them stalls every one
        # of its ops: writing waits while a batch is painted there (it runs beside placement, which keeps to one)
        painting = threading.Lock() if self.device.type == "cpu" else contextlib.nullcontext()

        def write(item: Mapping[str, Any], painted: Mapping[str, Any]) -> dict[str, Any]:
            # the samples queued behind a failed write are not written: the run stops there, as it would in order
            if failed.is_set():
                raise CancelledError
            with painting:
                pass
            try:
                return self._write(item, painted, key)
            except BaseException:
                failed.set()
                raise

        for at in range(0, self.num_samples, self.batch_size):
            start = time.perf_counter()
            placed = [self.place(i) for i in range(at, min(at + self.batch_size, self.num_samples))]
            self.timings["place_s"] += time.perf_counter() - start
            start = time.perf_counter()
            if self.generator is None:
                paintings = [{"painting": _plane(item["lesion_image"]), "window": None} for item in placed]
            else:
                with painting:
                    paintings = self.paint(placed)
            self.timings["paint_s"] += time.perf_counter() - start
            queue.extend(pool.submit(write, item, painted) for item, painted in zip(placed, paintings, strict=True))
            # at most two batches wait (memory stays bounded when writing is the slower side); a failed write stops
            # the run after the batch in hand
            while queue and (len(queue) > 2 * self.batch_size or queue[0].done()):
                written.append(queue.popleft().result())
        while queue:
            written.append(queue.popleft().result())
        return written

    def _write(self, item: Mapping[str, Any], painted: Mapping[str, Any], key: bytes) -> dict[str, Any]:
        """Read one sample's base slice from source, composite it in source units and write its mask, slice and
        sidecar."""
        raw = self.raw_slice(item["position"])
        start = time.perf_counter()
        paths = self.paths(int(item["sample_index"]))
        labels = _plane(item["label"])
        values = self._composite(raw, painted["painting"], item)
        affine = np.asarray(convert_to_numpy(item["image"].affine), dtype=np.float64)
        record = self._record(item, painted["window"], key, paths)
        # the volumes' paths: the record and header are built from keyed ids only, and this checks it
        forbidden = [_volume_path(item), self.bank[int(item["placement"]["lesion_index"])].source.split(_SEP)[1]]
        self.mask_writer.set_data_array(labels[None, :, :, None])
        self.mask_writer.set_metadata({"affine": affine})
        self.mask_writer.write(paths["mask"], overwrite=self.overwrite, descrip=f"{synthetic_descrip(record)} mask")
        try:
            self.writer.write_slice(values[None, :, :, None], paths["image"], record, affine=affine,
                                    overwrite=self.overwrite, forbidden_values=forbidden)
        except BaseException:
            paths["mask"].unlink(missing_ok=True)
            raise
        self.timings["write_s"] += time.perf_counter() - start
        return {**paths, "sample_index": int(item["sample_index"]), "position": int(item["position"]),
                "method": self.method}
