"""Sample synthetic slices from a trained generator and write them with a real reference slice's geometry.

:class:`SliceSynthesiser` rebuilds the generator from a checkpoint's own run record (never from a bundle's
current hyperparameters, see :mod:`monai_mri_gan.runs`), draws latent vectors from a seeded ``torch.Generator``,
and writes each sample as a NIfTI slice that borrows the full 4x4 affine, intensity units and dtype of a real
reference slice of the requested class, with a provenance sidecar (see :mod:`monai_mri_gan.synthesis.provenance`).
Reference slices come from a :class:`~monai_mri_gan.data.SliceCohort` cut with the run's slicing settings and
image size, so a reference slice lies on exactly the grid the generator draws on.

Sampling is reproducible: the latent vectors of the ``samples_per_class`` samples of one class are
:func:`~monai_mri_gan.networks.seeded_latents` ``(samples_per_class, latent_dim, seed)``, i.e.
``torch.randn(samples_per_class, latent_dim, generator=torch.Generator().manual_seed(seed))`` (row ``i`` for
sample ``i``; every class uses the same rows), and reference slices are a seeded permutation of the class's slices. Two
runs with the same checkpoint, references and seed write identical files except the ``created`` time of the
sidecars.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from monai.utils import convert_to_numpy

from ..data import SliceCohort, resolve_datalist, volume_transforms
from ..networks import seeded_latents
from ..runs import (
    cohort_from_record,
    generator_from_checkpoint,
    load_checkpoint,
    resolve_checkpoint,
    run_folder,
    run_record,
)
from ..transforms.intensity import invert_slice_normalisation
from ..utils import as_flag, remove_staged
from .provenance import PROVENANCE_KEY, keyed_id, provenance_record, run_provenance_key, sha256_file, sidecar_path
from .writer import SyntheticSliceWriter

__all__ = ["SliceSynthesiser", "check_destinations", "intensity_record"]

logger = logging.getLogger(__name__)

_UNCONDITIONAL = "unconditional"


def check_destinations(paths: Iterable[str | os.PathLike], overwrite: bool) -> None:
    """Refuse to start writing when an output already exists (unless ``overwrite``), so that nothing is replaced.

    Args:
        paths: every file a run will write (NIfTI files, their sidecars, masks).
        overwrite: existing files may be replaced.

    Raises:
        FileExistsError: naming the first file that exists, when ``overwrite`` is False.
    """
    if overwrite:
        return
    for path in map(Path, paths):
        if path.exists():
            raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it (nothing written).")


def intensity_record(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The sidecar entry saying how a synthetic slice was mapped to its reference's intensity units and dtype.

    Args:
        meta: the normalised reference slice's meta (its ``norm_*`` keys and ``source_dtype``).

    Returns:
        ``dtype``, ``norm_mode``, ``source_low`` and ``source_high`` (the source values that ``norm_out_low`` and
        ``norm_out_high`` map back to).
    """
    return {
        "dtype": str(meta.get("source_dtype") or "float32"),
        "norm_mode": str(meta.get("norm_mode")),
        "source_low": float(meta["norm_in_low"]),
        "source_high": float(meta["norm_in_high"]),
    }


def _file_token(name: str) -> str:
    """``name`` reduced to characters that are safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "class"


def _volume_affine(slice_affine: np.ndarray, index: int) -> np.ndarray:
    """The affine of slice 0 of a stack whose slice ``index`` has ``slice_affine`` (through-plane axis last)."""
    affine = np.array(slice_affine, dtype=np.float64)
    affine[:3, 3] -= affine[:3, 2] * index
    return affine


class SliceSynthesiser:
    """Sample a trained slice generator and write each sample with a real reference slice's geometry and units.

    For each requested class, ``samples_per_class`` latent vectors are drawn (see the module docstring), passed
    through the generator (rebuilt from the checkpoint's run record; EMA weights by default), and each output slice
    is:

    - given a reference slice of the same class, picked from the reference cohort by a seeded permutation
      (an unconditional generator takes any slice), or the one slice the user names with ``reference_image`` and
      ``reference_slice``;
    - mapped back to the reference volume's intensity units and dtype with
      :func:`~monai_mri_gan.transforms.invert_slice_normalisation` (the air around the head at the reference's
      own background level, as in the real slices);
    - written with the reference slice's 4x4 affine as ``synthetic_<class>_<seed>_<index:05d>.nii.gz`` plus its
      provenance sidecar (``.json``) by :class:`~monai_mri_gan.synthesis.SyntheticSliceWriter`.

    With ``stack_volume`` the slices that borrow one reference volume's geometry are also written into one 3D
    volume per class on that volume's fitted grid (``image_size`` x ``image_size`` x the volume's slices, affine of
    slice 0), ``synthetic_<class>_<seed>_volume-<hash>.nii.gz``, where ``<hash>`` is a one-way hash of the
    reference. Samples that share a slice index go into further volumes (``...-<hash>-1``, ...).

    Every destination is checked before anything is generated, and every file is written to a temporary name and
    renamed into place, so an existing output is never replaced unless ``overwrite`` is set and an interrupted
    run leaves only complete NIfTI + sidecar pairs. Reference paths appear in outputs and log lines only as hashes.

    .. code-block:: python

        synthesiser = SliceSynthesiser("runs/brain_mri_gan", "runs/synthetic", samples_per_class=16,
                                       classes=["tumour"])
        written = synthesiser.run()  # [{"image": Path, "provenance": Path, "class": 1, ...}, ...]

    Args:
        ckpt_path: a checkpoint file, a training output folder (its latest checkpoint is used), or a model file
            with its run record beside it (a bundle's ``models/model.pt``, see
            :func:`~monai_mri_gan.runs.export_model`).
        output_dir: folder of the synthetic files (created when missing).
        samples_per_class: samples of each class, or a mapping class (name or index) -> samples (its keys are then
            the classes and ``classes`` must be None).
        classes: class names or indices to sample; None for every class of the checkpoint. Must be None for an
            unconditional generator.
        seed: seed of the latent vectors and of the choice of reference slices.
        dataset_dir: folder of reference volumes (see :func:`~monai_mri_gan.data.resolve_datalist`).
        datalist: datalist JSON of reference volumes; with ``dataset_dir`` also None, the embedded demo cohort.
        cohort: an already built reference cohort (it must be cut with the run's slicing settings and image size,
            see :func:`~monai_mri_gan.runs.cohort_from_record`); replaces ``dataset_dir`` and ``datalist``.
        reference_image: a volume (file or DICOM series folder) whose slice ``reference_slice`` every sample
            borrows, instead of reference slices from a cohort.
        reference_slice: index of that slice along the slicing axis of the volume oriented to RAS (as
            :class:`~monai_mri_gan.data.SliceCohort` counts slices and records ``slice_index``).
        overwrite: replace existing outputs.
        compress: write ``.nii.gz`` (else ``.nii``).
        use_ema: sample the EMA generator (else the raw generator).
        stack_volume: also write the slices stacked into volumes on their reference volumes' grids.
        write_slices: write the single slices (set False with ``stack_volume`` to write volumes only).
        device: device of the generator; None for CPU.
        batch_size: samples per generator forward pass.
        cache_dir: optional on-disk cache of the reference cohort.
        on_error: "raise" or "skip" bad reference volumes.
        generator: the generator to load the checkpoint's weights into (e.g. a bundle's ``network_def``, built from
            its config's arguments); None builds it from the run record.

    Raises:
        FileNotFoundError: when there is no checkpoint at ``ckpt_path``.
        KeyError: when the checkpoint has no run record or no weights of the chosen generator.
        ValueError: for an unknown class, classes with an unconditional generator, a negative number of samples,
            ``reference_image`` without ``reference_slice``, nothing to write, or a ``generator`` other than the run
            record's (each differing argument named with both values, see :func:`~monai_mri_gan.runs.check_network`).
    """

    def __init__(
        self,
        ckpt_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        samples_per_class: int | Mapping[Any, int] = 8,
        classes: Sequence[str | int] | str | int | None = None,
        seed: int = 0,
        dataset_dir: str | os.PathLike | None = None,
        datalist: str | os.PathLike | None = None,
        cohort: SliceCohort | None = None,
        reference_image: str | os.PathLike | None = None,
        reference_slice: int | None = None,
        overwrite: bool = False,
        compress: bool = True,
        use_ema: bool = True,
        stack_volume: bool = False,
        write_slices: bool = True,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        cache_dir: str | os.PathLike | None = None,
        on_error: str = "raise",
        generator: torch.nn.Module | None = None,
    ) -> None:
        if (reference_image is None) != (reference_slice is None):
            raise ValueError("reference_image and reference_slice go together: give both or neither.")
        if not (as_flag(write_slices, "write_slices") or as_flag(stack_volume, "stack_volume")):
            raise ValueError("nothing to write: write_slices and stack_volume are both False.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.ckpt_path = resolve_checkpoint(ckpt_path)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        checkpoint = load_checkpoint(self.ckpt_path)
        self.record = run_record(checkpoint)
        self.use_ema = as_flag(use_ema, "use_ema")
        weights_key = "ema_generator" if self.use_ema else "generator"
        self.generator = generator_from_checkpoint(checkpoint, weights_key, device=self.device, network=generator)
        del checkpoint
        self.checkpoint_sha256 = sha256_file(self.ckpt_path)
        self.num_classes = int(self.record.get("num_classes") or 0)
        self.class_names = [str(c) for c in (self.record.get("class_names") or [])]
        self.output_dir = Path(output_dir)
        self.key_path = run_folder(self.ckpt_path) / PROVENANCE_KEY
        self.seed = int(seed)
        self.samples_per_class = self._resolve_samples_per_class(samples_per_class, classes)
        self.dataset_dir = dataset_dir
        self.datalist = datalist
        self.reference_image = reference_image
        self.reference_slice = None if reference_slice is None else int(reference_slice)
        self.overwrite = as_flag(overwrite, "overwrite")
        self.compress = as_flag(compress, "compress")
        self.stack_volume = as_flag(stack_volume, "stack_volume")
        self.write_slices = as_flag(write_slices, "write_slices")
        self.batch_size = int(batch_size)
        self.cache_dir = cache_dir
        self.on_error = on_error
        self._cohort = cohort
        # a reference sheared by registration is legal data: its slices keep the exact affine in the sform
        self.writer = SyntheticSliceWriter(overwrite=self.overwrite, allow_shear=True)
        self.timings: dict[str, float] = {}

    def class_index(self, value: str | int) -> int:
        """The index of a class given by name or index.

        Raises:
            ValueError: for an unknown class, or any class with an unconditional generator.
        """
        if self.num_classes == 0:
            raise ValueError("this generator is unconditional: it takes no class.")
        if isinstance(value, str) and not value.lstrip("-").isdigit():
            if value not in self.class_names:
                raise ValueError(f"unknown class {value!r}; the checkpoint's classes are {self.class_names}.")
            return self.class_names.index(value)
        index = int(value)
        if not 0 <= index < self.num_classes:
            raise ValueError(f"class index {index} is outside 0..{self.num_classes - 1}.")
        return index

    def class_name(self, index: int | None) -> str:
        """The name of class ``index`` (``"unconditional"`` for None)."""
        if index is None:
            return _UNCONDITIONAL
        return self.class_names[index] if index < len(self.class_names) else f"class{index}"

    def _resolve_samples_per_class(
        self, samples_per_class: int | Mapping[Any, int], classes: Sequence[str | int] | str | int | None
    ) -> dict[int | None, int]:
        """Samples per class index (None: unconditional), in the order requested."""
        if isinstance(samples_per_class, Mapping):
            if classes is not None:
                raise ValueError("give classes either as the keys of samples_per_class or as classes, not both.")
            counts = {self.class_index(c): int(n) for c, n in samples_per_class.items()}
        elif self.num_classes == 0:
            if classes not in (None, [], ()):
                raise ValueError("this generator is unconditional: classes must be None.")
            counts = {None: int(samples_per_class)}
        else:
            wanted = range(self.num_classes) if classes is None else classes
            if isinstance(wanted, str | int):
                wanted = [wanted]
            counts = {self.class_index(c): int(samples_per_class) for c in wanted}
        bad = {self.class_name(c): n for c, n in counts.items() if n < 0}
        if bad:
            raise ValueError(f"the number of samples must not be negative, got {bad}.")
        return counts

    @property
    def reference_cohort(self) -> SliceCohort:
        """The reference slices, cut with the run's slicing settings (built on first use)."""
        if self._cohort is None:
            if self.reference_image is not None:
                items = [{"image": str(self.reference_image)}]
                # every slice is a candidate: the user named the one to use
                self._cohort = cohort_from_record(self.record, items, on_error="raise", min_foreground=0.0)
            else:
                items = resolve_datalist(self.dataset_dir, self.datalist)
                self._cohort = cohort_from_record(self.record, items, self.cache_dir, self.on_error)
        return self._cohort

    def reference_positions(self, class_index: int | None, count: int) -> list[int]:
        """Positions in :attr:`reference_cohort` of the reference slices of ``count`` samples of a class.

        The class's slices are taken in a permutation seeded by ``seed`` and the class, repeated as often as
        needed, so references repeat only when there are more samples than slices.

        Raises:
            ValueError: when the cohort has no slice of the class, or the named reference slice does not exist.
        """
        cohort = self.reference_cohort
        if self.reference_image is not None:
            found = [i for i, s in enumerate(cohort) if int(s["slice_index"]) == self.reference_slice]
            if not found:
                raise ValueError(f"reference_slice {self.reference_slice} is not a slice of the reference volume.")
            return found[:1] * count
        candidates = [i for i, s in enumerate(cohort) if class_index is None or int(s["class"]) == class_index]
        if not candidates:
            raise ValueError(f"the reference cohort has no slice of class {self.class_name(class_index)!r}.")
        rng = np.random.default_rng([self.seed, 0 if class_index is None else class_index + 1])
        positions: list[int] = []
        while len(positions) < count:
            positions.extend(int(p) for p in rng.permutation(candidates))
        return positions[:count]

    def latents(self, count: int) -> torch.Tensor:
        """Latent vectors of samples ``0..count-1``, ``(count, latent_dim)``, drawn on CPU with seed ``seed``."""
        return seeded_latents(count, int(self.record["latent_dim"]), self.seed)

    @torch.no_grad()
    def generate(self, class_index: int | None, count: int) -> torch.Tensor:
        """Generator outputs of samples ``0..count-1`` of a class, in training space: ``(count, C, S, S)`` on CPU."""
        z = self.latents(count)
        labels = None if class_index is None else torch.full((count,), int(class_index), dtype=torch.long)
        out = []
        for start in range(0, count, self.batch_size):
            batch_labels = None if labels is None else labels[start : start + self.batch_size].to(self.device)
            out.append(self.generator(z[start : start + self.batch_size].to(self.device), batch_labels).float().cpu())
        size = int(self.record["image_size"])
        return torch.cat(out) if out else torch.zeros(0, int(self.generator.channels), size, size)

    def _suffix(self) -> str:
        return ".nii.gz" if self.compress else ".nii"

    def slice_path(self, class_index: int | None, sample_index: int) -> Path:
        """The file of one synthetic slice: ``synthetic_<class>_<seed>_<index:05d>.nii.gz``."""
        name = f"synthetic_{_file_token(self.class_name(class_index))}_{self.seed}_{sample_index:05d}{self._suffix()}"
        return self.output_dir / name

    @functools.cached_property
    def key(self) -> bytes:
        """The run folder's provenance key (see :func:`~monai_mri_gan.runs.run_folder`), for keyed ids of real data."""
        return run_provenance_key(self.key_path, self.output_dir)

    def volume_path(self, class_index: int | None, source: str, layer: int) -> Path:
        """The file of a stacked volume: ``synthetic_<class>_<seed>_volume-<keyed id>[-<layer>].nii.gz``."""
        tag = f"volume-{keyed_id(self.key, 'reference_volume', source)[:12]}" + (f"-{layer}" if layer else "")
        name = f"synthetic_{_file_token(self.class_name(class_index))}_{self.seed}_{tag}{self._suffix()}"
        return self.output_dir / name

    def plan(self) -> list[dict[str, Any]]:
        """What :meth:`run` will write: one entry per class with its reference positions and stacked volumes."""
        cohort = self.reference_cohort
        plans = []
        for class_index, count in self.samples_per_class.items():
            positions = self.reference_positions(class_index, count) if count else []
            volumes: dict[str, list[list[int]]] = {}
            for sample_index, position in enumerate(positions):
                source = str(cohort[position]["image"].meta.get("filename_or_obj"))
                layers = volumes.setdefault(source, [])
                k = int(cohort[position]["slice_index"])
                for layer in layers:
                    if all(int(cohort[positions[s]]["slice_index"]) != k for s in layer):
                        layer.append(sample_index)
                        break
                else:
                    layers.append([sample_index])
            plans.append({"class_index": class_index, "count": count, "positions": positions, "volumes": volumes})
        return plans

    def _destinations(self, plans: list[dict[str, Any]]) -> list[Path]:
        paths: list[Path] = []
        for p in plans:
            if self.write_slices:
                paths.extend(self.slice_path(p["class_index"], i) for i in range(p["count"]))
            if self.stack_volume:
                for source, layers in p["volumes"].items():
                    paths.extend(self.volume_path(p["class_index"], source, n) for n in range(len(layers)))
        return paths

    def _record(
        self, class_index: int | None, sample_index: int, count: int, reference: MetaTensor, affine: np.ndarray,
        slice_index: int, extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        meta = reference.meta
        return provenance_record(
            generator_name=str(self.record["networks"]["generator"]["_target_"]),
            generator_version=str(self.record.get("versions", {}).get("monai_mri_gan", "unknown")),
            checkpoint_sha256=self.checkpoint_sha256,
            seed=self.seed,
            sample_index=sample_index,
            class_name=None if class_index is None else self.class_name(class_index),
            class_index=class_index,
            reference_id=keyed_id(self.key, "reference_slice", str(meta.get("filename_or_obj")),
                                  str(meta.get("slice_axis", self._slicing().get("axis", 2))), str(slice_index)),
            reference_slice_index=slice_index,
            reference_affine=affine,
            reference_axis=int(meta.get("slice_axis", self._slicing().get("axis", 2))),
            reference_acquisition=meta.get("acquisition", "{}"),
            extra={
                "weights": "ema_generator" if self.use_ema else "generator",
                "latent": {
                    "distribution": "standard normal",
                    "draw": "torch.randn(samples_per_class, latent_dim, "
                            "generator=torch.Generator().manual_seed(seed))",
                    "samples_per_class": int(count),
                    "row": int(sample_index),
                },
                "reference_choice": "named" if self.reference_image is not None else "cohort",
                "intensity": intensity_record(meta),
                "image_size": int(self.record["image_size"]),
                **(extra or {}),
            },
        )

    @staticmethod
    def _background(reference: MetaTensor) -> float:
        """The reference volume's own background level in source units (see ``norm_background``)."""
        return float(reference.meta["norm_background"])

    def _slicing(self) -> dict[str, Any]:
        """The run's slicing settings."""
        return dict(self.record.get("slicing") or {})

    def _volume_depth(self, source: str) -> int:
        """The number of slices of a reference volume along the slicing axis, as the cohort cut it."""
        slicing = self._slicing()
        load = Compose(volume_transforms(spacing=slicing.get("spacing"), volume_index=slicing.get("volume_index")))
        return int(load({"image": source})["image"].shape[1 + int(slicing.get("axis", 2))])

    def run(self, samples_per_class: int | Mapping[Any, int] | None = None) -> list[dict[str, Any]]:
        """Generate and write every requested sample (and stacked volume).

        Args:
            samples_per_class: replaces the constructor's ``samples_per_class`` (and ``classes``) for this run.

        The time spent generating and writing (inverse normalisation, NIfTI and sidecar) is kept in
        :attr:`timings` (``generate_s``, ``write_s``).

        Returns:
            one entry per written file pair: ``image`` and ``provenance`` paths, ``kind`` ("slice" or
            "volume"), ``class`` (index or None), ``class_name``, ``sample_index`` (slices) or ``sample_indices``
            (volumes).

        Raises:
            FileExistsError: when a destination exists and ``overwrite`` is False (checked before writing).
            BaseException: whatever interrupts the run; files written so far stay (each a complete NIfTI and
                sidecar pair) and temporary files staged for the rest are removed.
            ValueError: see :meth:`reference_positions`.
        """
        if samples_per_class is not None:
            self.samples_per_class = self._resolve_samples_per_class(samples_per_class, None)
        plans = self.plan()
        destinations = self._destinations(plans)
        check_destinations([f for p in destinations for f in (p, sidecar_path(p))], self.overwrite)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            return self._run(plans)
        except BaseException:
            self._remove_staged(destinations)
            raise

    @staticmethod
    def _remove_staged(destinations: list[Path]) -> None:
        """Remove temporary files staged for ``destinations`` that an interruption left before their rename."""
        for path in destinations:
            remove_staged(path)
            remove_staged(sidecar_path(path))

    def _run(self, plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Generate and write the planned samples; see :meth:`run`."""
        cohort = self.reference_cohort
        written: list[dict[str, Any]] = []
        self.timings = {"generate_s": 0.0, "write_s": 0.0}
        for p in plans:
            class_index, count, positions = p["class_index"], p["count"], p["positions"]
            if not count:
                continue
            start = time.perf_counter()
            images = self.generate(class_index, count)
            self.timings["generate_s"] += time.perf_counter() - start
            start = time.perf_counter()
            name = self.class_name(class_index)
            slices: list[np.ndarray] = []
            for sample_index, position in enumerate(positions):
                reference = cohort[position]["image"]
                values = invert_slice_normalisation(images[sample_index].unsqueeze(-1), reference.meta)
                slices.append(values)
                if not self.write_slices:
                    continue
                affine = np.asarray(convert_to_numpy(reference.affine), dtype=np.float64)
                slice_index = int(cohort[position]["slice_index"])
                record = self._record(class_index, sample_index, count, reference, affine, slice_index)
                source = str(reference.meta.get("filename_or_obj"))
                path = self.slice_path(class_index, sample_index)
                nifti, sidecar = self.writer.write_slice(
                    values, path, record, affine=affine, overwrite=self.overwrite, forbidden_values=[source]
                )
                written.append({"image": nifti, "provenance": sidecar, "kind": "slice", "class": class_index,
                                "class_name": name, "sample_index": sample_index})
            if self.write_slices:
                logger.info("wrote %d synthetic %s slice(s) from %d reference volume(s) to %s",
                            count, name, len(p["volumes"]), self.output_dir)
            if self.stack_volume:
                written.extend(self._write_volumes(p, slices))
            self.timings["write_s"] += time.perf_counter() - start
        return written

    def _write_volumes(self, p: dict[str, Any], slices: list[np.ndarray]) -> list[dict[str, Any]]:
        """Write the stacked volumes of one class's plan."""
        cohort = self.reference_cohort
        class_index, count, positions = p["class_index"], p["count"], p["positions"]
        written = []
        for source, layers in p["volumes"].items():
            depth = self._volume_depth(source)
            for layer, members in enumerate(layers):
                first = cohort[positions[members[0]]]
                k0 = int(first["slice_index"])
                volume_affine = _volume_affine(convert_to_numpy(first["image"].affine), k0)
                indices = [int(cohort[positions[s]]["slice_index"]) for s in members]
                planes = [
                    MetaTensor(torch.as_tensor(slices[s]), affine=torch.as_tensor(cohort[positions[s]]["image"].affine))
                    for s in members
                ]
                size = int(self.record["image_size"])
                record = self._record(class_index, members[0], count, first["image"], volume_affine, 0,
                                      extra={"sample_indices": members})
                path = self.volume_path(class_index, source, layer)
                nifti, sidecar = self.writer.write_volume(
                    planes, indices, volume_affine, (size, size, depth), path, record, axis=2,
                    background=self._background(first["image"]), overwrite=self.overwrite,
                    forbidden_values=[source],
                )
                written.append({"image": nifti, "provenance": sidecar, "kind": "volume", "class": class_index,
                                "class_name": self.class_name(class_index), "sample_indices": members})
                logger.info("wrote a synthetic %s volume of %d slice(s) on reference volume %s",
                            self.class_name(class_index), len(members), path.name)
        return written

