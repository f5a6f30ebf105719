"""An Ignite evaluator of a lesion painter, built on ``monai.engines.Evaluator``.

:class:`LesionPainterEvaluator` places real training lesions into held-out healthy slices at native resolution,
paints them with the painter and pastes them as the copy-paste comparator (TumorCP-style) under the same placements,
and judges both against real held-out lesions: realism of the lesion crops in a feature space (with real-vs-real
floors), the seam where the painting meets the base, whether a lesion segmenter trained on real lesions finds them,
and whether the painter reproduces the training lesion its mask came from.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.engines import Evaluator
from torch import nn

from ..data import LesionCrops, SliceCohort, healthy_positions, place_in_bases, resolve_datalist
from ..errors import DataError
from ..metrics import (
    build_feature_extractor,
    disjoint_halves,
    distribution_metrics,
    feature_standardisation,
    label_map_correlation,
    masked_correlation,
    seam_gradient,
    segmentation_dice,
    train_lesion_segmenter,
)
from ..networks import seeded_latents
from ..objectives import LesionPainterObjective, painter_condition
from ..transforms import LesionBank, PlacedLesion, PlaceLesiond, blend_weights, crop_plane, lesion_window, paste_lesion

__all__ = ["HELDOUT_DEMO_SEED", "LesionPainterEvaluator"]

#: Seed of the demo cohort that is the default held-out data (the default training data is the seed-0 cohort).
HELDOUT_DEMO_SEED = 1


def _plane(image: Any) -> np.ndarray:
    """The ``(H, W)`` plane of a ``(1, H, W, 1)`` slice, as numpy."""
    return torch.as_tensor(image).as_subclass(torch.Tensor)[0, :, :, 0].numpy()


def _mean(values: torch.Tensor) -> float:
    """Mean of the finite values (NaN marks a crop without a value)."""
    return float(values[torch.isfinite(values)].mean()) if bool(torch.isfinite(values).any()) else math.nan


class LesionPainterEvaluator(Evaluator):
    """Ignite evaluator of a lesion painter against real held-out lesions, on ``monai.engines.Evaluator``.

    What is compared, all drawn once from ``seed`` (the global random state is never consumed):

    1. both datalists are cut into slices at native resolution with the run's slicing settings; the *training*
       cohort (the painter's own training data) gives the :class:`~monai_mri_gan.transforms.LesionBank` and the
       lesion segmenter's crops, the *held-out* cohort the real lesions and the healthy base slices;
    2. real crops: :class:`~monai_mri_gan.data.LesionCrops` of the held-out cohort (``crop_size`` from the run);
    3. placements: sample ``i`` draws from ``numpy.random.default_rng([seed, i])`` a bank lesion, a healthy
       held-out slice (class 0, no mask pixel) and the seed of a :class:`~monai_mri_gan.transforms.PlaceLesiond`
       that puts the lesion into it with the run's ``dilate_px`` and ``band_px`` (another slice for the same lesion
       when it does not fit, up to ``base_tries``: :func:`~monai_mri_gan.data.place_in_bases`);
       the ``crop_size`` window around the placed lesion (:func:`~monai_mri_gan.transforms.lesion_window`, moved
       inside the slice) is cut from the base slice, the placed labels and the placed lesion's own intensities;
    4. painted crops: the painter (in eval mode) paints each window given
       :func:`~monai_mri_gan.objectives.painter_condition` of its labels and a fixed latent vector, composited as in
       training (:meth:`~monai_mri_gan.objectives.LesionPainterObjective.paint`); copy-paste crops:
       :func:`~monai_mri_gan.transforms.paste_lesion` of the same placements into the same windows.

    The iterations paint ``batch_size`` windows each; when the epoch completes these go to ``state.metrics`` (plain
    floats; ``*`` is ``painted`` and ``copy_paste``; the ``real_`` values are floors and references):

    - ``*_fid``, ``*_kid_mean``, ``*_kid_std``, ``*_precision``, ``*_recall``: realism of the lesion crops against
      the real held-out crops in the feature space (``feature_space``, features standardised with the real crops'
      statistics, :func:`~monai_mri_gan.metrics.feature_standardisation`). ``real_*``: the same between two
      disjoint random halves of the real crops (:func:`~monai_mri_gan.metrics.disjoint_halves`), the floor a
      perfect painter reaches. FID is biased by sample size: its floor is at ``N_real // 2`` per side, the others at
      ``num_samples`` vs ``N_real``; KID is unbiased and compares directly. The halves share subjects, so this
      floor is what lesions *of the same patients* reach. ``training_*``: the same for the real *training* crops
      against the held-out ones: real tumours of *other* patients, which is all a painter trained on them can be
      expected to reach (on the demo cohort its KID is about a hundred times the halves' floor);
    - ``*_seam_gradient``: mean Sobel gradient magnitude (intensity units per pixel) over the blend band and the
      ring just outside it (:func:`~monai_mri_gan.metrics.seam_gradient`), averaged over crops; ``real_`` over the
      same band around the real held-out lesions; ``*_seam_ratio``: the value over the real one (1 = as smooth as
      the surroundings of real lesions, above 1 = a visible seam);
    - ``*_dice``: Dice (any tumour label against background, MONAI's ``compute_dice``) of a MONAI ``UNet`` trained
      for ``segmenter_steps`` steps on the real *training* crops (:func:`~monai_mri_gan.metrics.train_lesion_segmenter`)
      against the placed masks; ``real_dice``: against the real held-out crops' own masks;
    - ``painted_source_correlation``: mean normalised correlation, inside the hole (blend weight 1), of each painted
      crop with the training lesion its mask came from, under the same placement (the copy-paste pixels);
      ``painted_memorisation_fraction`` the share of crops at or above ``memorisation_threshold`` and
      ``painted_memorisation_max`` the largest; ``label_map_correlation`` the mean of what the mask alone explains
      of those lesions (:func:`~monai_mri_gan.metrics.label_map_correlation`): a painter that knows only the mask
      reaches it at best, so correlations well above it mean the painter reproduces its training lesions.

    ``state.report`` holds what a report needs besides: ``settings`` (JSON-ready: feature space, sample sizes, seed,
    crop size, segmenter, and ``cut_lesions``, the placements whose blend band the window cuts), ``label_values``,
    and ``crops``: ``(num_samples, 1, S, S)`` tensors ``base`` (the healthy window before painting), ``labels``
    (placed), ``weights`` (blend weights), ``painted`` and ``copy_paste``. Everything but the painting is computed
    once, at the first run, and reused.

    Args:
        device: device of the painter's forward passes and of the segmenter's training.
        generator: the painter, ``generator(blanked, condition, z)`` (usually the EMA generator).
        record: the run record of the painter (:func:`~monai_mri_gan.runs.run_record`): family ``lesion_painter``,
            its ``painting`` (``label_values``, ``crop_size``, ``dilate_px``, ``band_px``) and ``slicing``.
        training_datalist: datalist items of the painter's training data; None: the embedded demo cohort.
        heldout_datalist: datalist items of held-out subjects; None: the demo cohort of seed
            :data:`HELDOUT_DEMO_SEED` (other phantoms).
        num_samples: painted (and pasted) lesions.
        seed: seed of placements, latents, feature halves, KID subsets and the segmenter.
        feature_space: feature extractor name (:func:`~monai_mri_gan.metrics.build_feature_extractor`), e.g.
            ``"radiomics"`` (no weights) or ``"local_weights"`` (with ``feature_kwargs={"weights_path": ...}``).
        feature_kwargs: its arguments.
        segmenter_steps: optimiser steps of the lesion segmenter.
        batch_size: windows painted per iteration.
        kid_subsets: KID subsets.
        kid_subset_size: KID subset size (clipped to the set sizes). Lesion sets are small (a cohort has a few
            hundred lesions): subsets well below the floor's half-sets keep the painted, copy-paste and floor values
            on subsets of one size and give ``kid_std`` a meaning (subsets as large as a set are all that set).
        pr_k: neighbour of the precision/recall radii.
        memorisation_threshold: correlation from which a painted lesion counts as a copy of its source.
        min_lesion_voxels: lesions with fewer pixels are left out of the bank and the crops; None: the run's
            ``slicing["tumour_min_voxels"]``, else 20.
        placement: further :class:`~monai_mri_gan.transforms.PlaceLesiond` arguments (``skull_margin_mm``, ...).
        base_tries: base slices drawn for a sample before giving up when no lesion fits.
        cache_dir: optional on-disk cache of the cohorts.
        on_error: "raise" or "skip" bad volumes.
        val_handlers: handlers to attach (after the metric computation, so they see this run's metrics).

    Raises:
        ValueError: for a record of another family or without painting settings, fewer than 8 samples, no
            ``base_tries``, or ``placement`` arguments the run fixes.
    """

    def __init__(
        self,
        device: str | torch.device,
        generator: nn.Module,
        record: Mapping[str, Any],
        training_datalist: Sequence[dict] | None = None,
        heldout_datalist: Sequence[dict] | None = None,
        num_samples: int = 200,
        seed: int = 0,
        feature_space: str = "radiomics",
        feature_kwargs: Mapping[str, Any] | None = None,
        segmenter_steps: int = 600,
        batch_size: int = 32,
        kid_subsets: int = 100,
        kid_subset_size: int = 50,
        pr_k: int = 3,
        memorisation_threshold: float = 0.95,
        min_lesion_voxels: int | None = None,
        placement: Mapping[str, Any] | None = None,
        base_tries: int = 100,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        val_handlers: Sequence | None = None,
    ) -> None:
        if record.get("family") != "lesion_painter" or not record.get("painting"):
            raise ValueError(f"not a lesion painter's run record (family {record.get('family')!r}, painting "
                             f"{record.get('painting')!r}).")
        if int(num_samples) < 8 or int(base_tries) < 1:
            raise ValueError(f"need num_samples >= 8 and base_tries >= 1, got {num_samples} and {base_tries}.")
        fixed = sorted(set(placement or {}) & {"bank", "keys", "label_key", "dilate_px", "band_px"})
        if fixed:
            raise ValueError(f"placement may not set {fixed}: the bank and keys are the evaluator's, the blend "
                             "widths the run's.")
        self.num_samples, self.batch_size = int(num_samples), int(batch_size)
        chunks = [(s, min(s + self.batch_size, self.num_samples)) for s in range(0, self.num_samples, self.batch_size)]
        super().__init__(device=device, val_data_loader=chunks, epoch_length=len(chunks), decollate=False)
        self.generator = generator
        self.record = dict(record)
        painting = self.record["painting"]
        self.label_values = tuple(int(v) for v in painting["label_values"])
        self.crop_size = int(painting["crop_size"])
        self.dilate_px, self.band_px = int(painting["dilate_px"]), int(painting["band_px"])
        slicing = dict(self.record.get("slicing") or {})
        self.min_lesion_voxels = int(min_lesion_voxels or slicing.get("tumour_min_voxels") or 20)
        self.tumour_labels = slicing.get("tumour_labels")
        self.training_datalist = training_datalist
        self.heldout_datalist = heldout_datalist
        self.seed = int(seed)
        self.feature_space = feature_space
        self.feature_kwargs = dict(feature_kwargs or {})
        self.segmenter_steps = int(segmenter_steps)
        self.kid_subsets, self.kid_subset_size, self.pr_k = int(kid_subsets), int(kid_subset_size), int(pr_k)
        self.memorisation_threshold = float(memorisation_threshold)
        self.placement = dict(placement or {})
        self.base_tries = int(base_tries)
        self.cache_dir, self.on_error = cache_dir, on_error
        latent_dim = int(getattr(generator, "latent_dim", 0))
        self.latents = seeded_latents(self.num_samples, latent_dim, self.seed) if latent_dim else None
        self.cut_lesions = 0
        self._chunks: list[torch.Tensor] = []
        self.logger = logging.getLogger(__name__)
        self.add_event_handler(Events.EPOCH_STARTED, self._clear)
        self.add_event_handler(Events.EPOCH_COMPLETED, self._complete)
        if val_handlers:
            self._register_handlers(val_handlers)

    @cached_property
    def datalists(self) -> tuple[list[dict], list[dict]]:
        """The training and the held-out datalist items (the demo cohorts resolved on first use)."""
        training = list(resolve_datalist() if self.training_datalist is None else self.training_datalist)
        heldout = list(resolve_datalist(demo_seed=HELDOUT_DEMO_SEED) if self.heldout_datalist is None
                       else self.heldout_datalist)
        shared = {str(i["image"]) for i in training} & {str(i["image"]) for i in heldout}
        if shared:
            self.logger.warning("%d volume(s) are in both the training and the held-out datalist: the real crops "
                                "and floors are not held out.", len(shared))
        return training, heldout

    def _cohort(self, datalist: Sequence[dict]) -> SliceCohort:
        return SliceCohort(datalist, image_size=None, slicing=self.record.get("slicing"), cache_dir=self.cache_dir,
                           on_error=self.on_error)

    @cached_property
    def training_cohort(self) -> SliceCohort:
        """The training data's slices at native resolution (built on first use)."""
        return self._cohort(self.datalists[0])

    @cached_property
    def heldout_cohort(self) -> SliceCohort:
        """The held-out data's slices at native resolution (built on first use)."""
        return self._cohort(self.datalists[1])

    @cached_property
    def bank(self) -> LesionBank:
        """The lesions of the training cohort's tumour slices that hold tumour core (as the synthesiser's bank)."""
        return LesionBank.from_slices([s for s in self.training_cohort if int(s.get("class", 0)) == 1],
                                      min_voxels=self.min_lesion_voxels, core_labels=self.tumour_labels)

    @cached_property
    def training_crops(self) -> LesionCrops:
        """Real lesion crops of the training cohort: the lesion segmenter's training data."""
        return LesionCrops(self.training_cohort, self.crop_size, min_voxels=self.min_lesion_voxels)

    @cached_property
    def real_crops(self) -> LesionCrops:
        """Real lesion crops of the held-out cohort: what painted lesions are compared with.

        Raises:
            ValueError: when there are fewer than 8 (the floors need two halves of at least 4).
        """
        crops = LesionCrops(self.heldout_cohort, self.crop_size, min_voxels=self.min_lesion_voxels)
        if len(crops) < 8:
            raise ValueError(f"the held-out data has {len(crops)} lesion crops; the real-vs-real floors need at least "
                             "8 (more tumour subjects, or a lower tumour_min_voxels).")
        return crops

    @cached_property
    def crops(self) -> dict[str, torch.Tensor]:
        """The placed lesions' windows, each ``(num_samples, 1, S, S)``, in sample order.

        ``base`` (the healthy window before painting), ``labels`` (placed), ``lesion`` (the placed lesion's own
        intensities, meaningful where ``weights`` is positive), ``weights`` (blend weights) and ``copy_paste``.

        Raises:
            ValueError: when the held-out cohort has no healthy slice.
            DataError: when a sample's lesion fits into none of the base slices drawn for it.
        """
        healthy = healthy_positions(self.heldout_cohort)
        placer = PlaceLesiond(self.bank, keys="image", label_key="label", dilate_px=self.dilate_px,
                              band_px=self.band_px, **self.placement)
        size, reach = (self.crop_size, self.crop_size), self.dilate_px + self.band_px
        windows: dict[str, list[np.ndarray]] = {"base": [], "labels": [], "lesion": [], "copy_paste": []}
        self.cut_lesions = 0
        for i in range(self.num_samples):
            try:
                item, *_ = place_in_bases(placer, self.heldout_cohort, healthy, np.random.default_rng([self.seed, i]),
                                          self.base_tries)
            except DataError as err:
                raise DataError(err.path, f"sample {i}: {err.problem}") from err
            image, params = _plane(item["image"]), item["placement"]
            r0, r1, c0, c1 = params["bbox_px"]
            start = lesion_window(params["bbox_px"], self.crop_size, image.shape)
            if min(r0 - reach - start[0], c0 - reach - start[1]) < 0 or \
                    max(r1 + reach - start[0], c1 + reach - start[1]) > self.crop_size:
                self.cut_lesions += 1
            background = float(item["image"].meta.get("norm_out_low", -1.0))
            base = crop_plane(image, start, size, background)
            placed = PlacedLesion(crop_plane(_plane(item["label"]), start, size, 0),
                                  crop_plane(_plane(item["lesion_image"]), start, size, 0.0), params)
            windows["base"].append(base)
            windows["labels"].append(placed.labels)
            windows["lesion"].append(placed.image)
            windows["copy_paste"].append(paste_lesion(base, placed, self.dilate_px, self.band_px))
        if self.cut_lesions:
            self.logger.warning("%d placed lesion(s) with their blend band are larger than the %d px window and cut "
                                "by it.", self.cut_lesions, self.crop_size)
        crops = {k: torch.as_tensor(np.stack(v))[:, None].contiguous() for k, v in windows.items()}
        crops["labels"] = crops["labels"].long()
        crops["weights"] = blend_weights(crops["labels"], self.dilate_px, self.band_px)
        return crops

    @cached_property
    def feature_extractor(self) -> Any:
        """The feature extractor of ``feature_space``."""
        return build_feature_extractor(self.feature_space, **self.feature_kwargs)

    @cached_property
    def real_features(self) -> torch.Tensor:
        """Standardised features of the real held-out crops; see :meth:`features`."""
        raw = self.feature_extractor(self.real_crops.images)
        self._feature_mean, self._feature_scale = feature_standardisation(raw)
        return (raw - self._feature_mean) / self._feature_scale

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of crops, standardised with the real held-out crops' per-feature mean and scale."""
        real = self.real_features
        return ((self.feature_extractor(images) - self._feature_mean) / self._feature_scale).to(real.dtype)

    @cached_property
    def segmenter(self) -> nn.Module:
        """The lesion segmenter, trained on the real training crops (seeded)."""
        crops = self.training_crops
        self.logger.info("training a lesion segmenter on %d real training crops for %d steps", len(crops),
                         self.segmenter_steps)
        return train_lesion_segmenter(crops.images, crops.labels, steps=self.segmenter_steps, seed=self.seed,
                                      device=self.state.device)

    def _distribution(self, real: torch.Tensor, other: torch.Tensor) -> dict[str, float]:
        return distribution_metrics(real, other, self.kid_subsets, self.kid_subset_size, self.pr_k, self.seed)

    @cached_property
    def real_seam_gradient(self) -> float:
        """Mean :func:`~monai_mri_gan.metrics.seam_gradient` of the real held-out crops around their own lesions."""
        real = self.real_crops
        return _mean(seam_gradient(real.images, real.labels, self.dilate_px, self.band_px))

    def _lesion_metrics(self, name: str, images: torch.Tensor) -> dict[str, float]:
        """Realism, seam and Dice of painted or pasted crops (keys prefixed with ``name``)."""
        labels = self.crops["labels"]
        values = self._distribution(self.real_features, self.features(images))
        seam = _mean(seam_gradient(images, labels, self.dilate_px, self.band_px))
        values.update(seam_gradient=seam, seam_ratio=seam / self.real_seam_gradient,
                      dice=_mean(segmentation_dice(self.segmenter, images, labels)))
        return {f"{name}_{k}": v for k, v in values.items()}

    @cached_property
    def reference(self) -> dict[str, float]:
        """The metrics that do not depend on the painter: real floors, copy-paste, and what the masks explain."""
        real, crops = self.real_crops, self.crops
        first, second = disjoint_halves(len(real), self.seed)
        feats = self.real_features
        metrics = {f"real_{k}": v for k, v in self._distribution(feats[first], feats[second]).items()}
        training = self._distribution(feats, self.features(self.training_crops.images))
        metrics.update({f"training_{k}": v for k, v in training.items()})
        metrics["real_seam_gradient"] = self.real_seam_gradient
        metrics["real_dice"] = _mean(segmentation_dice(self.segmenter, real.images, real.labels))
        metrics.update(self._lesion_metrics("copy_paste", crops["copy_paste"]))
        metrics["label_map_correlation"] = float(label_map_correlation(crops["lesion"], crops["labels"],
                                                                       crops["weights"] >= 1).mean())
        return metrics

    def _iteration(self, engine: LesionPainterEvaluator, batchdata: tuple[int, int]) -> dict[str, int]:  # type: ignore[override]
        start, stop = batchdata
        crops = engine.crops
        parameter = next(iter(engine.generator.parameters()), None)
        device = engine.state.device if parameter is None else parameter.device
        base = crops["base"][start:stop].to(device)
        condition = painter_condition(crops["labels"][start:stop].to(device), engine.label_values, engine.dilate_px,
                                      engine.band_px)
        z = None if engine.latents is None else engine.latents[start:stop].to(device)
        with engine.mode(engine.generator):
            painted = LesionPainterObjective.paint(engine.generator, base, condition, z)
        engine._chunks.append(painted.float().cpu())
        return {"painted": stop - start}

    def _clear(self, engine: Engine) -> None:
        self._chunks = []

    def _complete(self, engine: Engine) -> None:
        painted = torch.cat(self._chunks)
        self._chunks = []
        metrics = dict(self.reference)
        metrics.update(self._lesion_metrics("painted", painted))
        correlation = masked_correlation(painted, self.crops["lesion"], self.crops["weights"] >= 1)
        copies = (correlation >= self.memorisation_threshold).double()
        metrics.update(painted_source_correlation=float(correlation.mean()),
                       painted_memorisation_fraction=float(copies.mean()),
                       painted_memorisation_max=float(correlation.max()))
        bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
        if bad:
            self.logger.warning("non-finite metrics: %s", bad)
        self.state.metrics.update(metrics)
        self.state.report = {
            "settings": {
                "feature_space": str(getattr(self.feature_extractor, "name", self.feature_space)),
                "num_painted": self.num_samples,
                "num_real": len(self.real_crops),
                "num_training_crops": len(self.training_crops),
                "num_bank_lesions": len(self.bank),
                "seed": self.seed,
                "crop_size": self.crop_size,
                "dilate_px": self.dilate_px,
                "band_px": self.band_px,
                "segmenter": {"classes": "lesion (any label) vs background", "steps": self.segmenter_steps},
                "memorisation_threshold": self.memorisation_threshold,
                "cut_lesions": self.cut_lesions,
            },
            "label_values": self.label_values,
            "crops": {**{k: self.crops[k] for k in ("base", "labels", "weights", "copy_paste")}, "painted": painted},
        }
