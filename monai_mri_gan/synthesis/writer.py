"""Write slices to NIfTI with exact geometry; synthetic ones with a synthetic label and a provenance sidecar.

A synthetic slice ``(1, H, W, 1)`` is written as a 3D ``(H, W, 1)`` NIfTI (the singleton through-plane axis keeps
the slice's position and spacing), with qform and sform both set to its RAS affine, pixdim from the affine's
column norms, ``xyzt_units`` mm and ``descrip`` starting with ``SYNTHETIC``. Files are staged under a hidden
temporary name in the target folder and renamed into place; existing files are never replaced unless asked.
"""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.config import DtypeLike, NdarrayOrTensor
from monai.data import MetaTensor, NibabelWriter
from monai.utils import convert_to_numpy

from ..transforms.slices import slice_to_volume_transform
from ..utils import commit_file, replace_atomically, stage_file
from ..version import __version__
from .provenance import NIFTI_SUFFIXES, find_forbidden, sidecar_bytes, sidecar_path, synthetic_descrip

__all__ = ["SliceWriter", "SyntheticSliceWriter", "cast_to_dtype", "write_synthetic_slice"]

DEFAULT_DESCRIP = f"SYNTHETIC monai-mri-gan {__version__}"
_GEOMETRY_TOL = 1e-4


def cast_to_dtype(data: np.ndarray, dtype: DtypeLike) -> np.ndarray:
    """Cast values to ``dtype``: integer types are rounded to nearest and clipped to the type's range.

    Args:
        data: values in the target's intensity units.
        dtype: a numpy integer or floating point type.

    Returns:
        the cast array (float types are clipped to their finite range, so nothing overflows to infinity).

    Raises:
        ValueError: when ``data`` holds NaN or infinite values, or ``dtype`` is neither integer nor float.
    """
    dtype = np.dtype(dtype)
    if not np.isfinite(data).all():
        raise ValueError("synthetic data holds NaN or infinite values; refusing to write them.")
    if dtype.kind in "iu":
        info: Any = np.iinfo(dtype)
        return np.clip(np.rint(data), info.min, info.max).astype(dtype)
    if dtype.kind == "f":
        info = np.finfo(dtype)
        return np.clip(data, info.min, info.max).astype(dtype)
    raise ValueError(f"output dtype must be an integer or floating point type, got {dtype}.")


def _as_affine(affine: Any) -> np.ndarray:
    """A finite 4x4 float64 affine from numpy or torch; raises ValueError otherwise."""
    array = np.asarray(convert_to_numpy(affine), dtype=np.float64)
    if array.shape != (4, 4) or not np.isfinite(array).all():
        raise ValueError(f"the affine must be a finite 4x4 matrix, got shape {array.shape}.")
    return array


def _nifti_suffix(filename: str | os.PathLike) -> str:
    """``.nii.gz`` or ``.nii``; raises ValueError for any other file name."""
    name = Path(filename).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return suffix
    raise ValueError(f"{filename}: the file name must end in .nii or .nii.gz.")


def _ascii(text: str, size: int) -> bytes:
    """``text`` as at most ``size`` ASCII bytes (other characters become ``?``)."""
    return text.encode("ascii", errors="replace")[:size]


class SliceWriter(NibabelWriter):
    """Write a 2D slice, or a volume, to NIfTI with exact geometry, atomically, never resampling.

    A slice ``(C, H, W, 1)`` becomes a 3D ``(H, W, 1)`` NIfTI whose qform and sform both hold its RAS affine, with
    pixdim from the affine's column norms and ``xyzt_units`` mm. It follows MONAI's writer protocol
    (``set_data_array``, ``set_metadata``, ``write``), so it also works as ``SaveImage(writer=SliceWriter,
    resample=False)``. Real slices written beside synthetic ones (augmented datalists) go through it, so that both
    have the same header layout; :class:`SyntheticSliceWriter` adds the synthetic label and the sidecar.

    Args:
        output_dtype: numpy dtype of the written values; None uses the input's ``meta["source_dtype"]`` when
            present, else the data's own dtype. Integer types are rounded and clipped (see :func:`cast_to_dtype`).
        xform_code: NIfTI qform and sform code: 1 scanner (default), 2 aligned, 3 Talairach, 4 MNI, 5 template.
        descrip: default header ``descrip`` (cut to 80 ASCII bytes).
        intent_name: header ``intent_name`` (at most 16 bytes).
        compresslevel: gzip level for ``.nii.gz`` files (1 is fast and close to the best size for MRI).
        overwrite: default for replacing existing files.
        fsync: flush each file to disk before renaming it into place (slower; survives power loss).
        allow_shear: accept an affine with shear. A qform can only hold rotation, zooms and offset, so the
            qform then stores the nearest rotation while the sform keeps the exact affine; readers that use the
            qform place the slice differently from those that use the sform.
        kwargs: further members, as ``ImageWriter`` accepts (e.g. ``scale`` passed by ``SaveImage``; unused).
    """

    def __init__(
        self,
        output_dtype: DtypeLike | None = None,
        xform_code: int = 1,
        descrip: str = "",
        intent_name: str = "",
        compresslevel: int = 1,
        overwrite: bool = False,
        fsync: bool = False,
        allow_shear: bool = False,
        **kwargs: Any,
    ) -> None:
        if xform_code not in (1, 2, 3, 4, 5):
            raise ValueError(f"xform_code must be 1 (scanner), 2, 3, 4 or 5, got {xform_code!r}.")
        super().__init__(output_dtype=output_dtype, **kwargs)
        self.xform_code = int(xform_code)
        self.descrip = descrip
        self.compresslevel = int(compresslevel)
        self.overwrite = overwrite
        self.fsync = fsync
        self.allow_shear = allow_shear
        self.source_dtype: str | None = None
        # One header template, copied per file: building a header from scratch costs more than the copy.
        self._header = nib.Nifti1Header()
        self._header.set_xyzt_units("mm")
        self._header["intent_name"] = _ascii(intent_name, 16)

    def set_data_array(
        self, data_array: NdarrayOrTensor, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs: Any
    ) -> None:
        """Take a slice ``(C, H, W, 1)`` (or ``(C, H, W)``), keeping three spatial axes: ``(H, W, 1)`` for one channel.

        A ``MetaTensor`` also provides its affine and ``meta["source_dtype"]``; :meth:`set_metadata` may override
        the affine.

        Args:
            data_array: the slice, channel first unless ``channel_dim`` says otherwise.
            channel_dim: the channel axis, or None when there is none.
            squeeze_end_dims: drop a singleton channel (trailing spatial singletons are always kept).
            kwargs: ``spatial_ndim`` (default 3), as ``NibabelWriter`` accepts.
        """
        meta = getattr(data_array, "meta", None) or {}
        self.affine = _as_affine(meta["affine"]) if "affine" in meta else None
        self.source_dtype = meta.get("source_dtype")
        if isinstance(data_array, MetaTensor):
            data_array = data_array.as_tensor()
        data = self.convert_to_channel_last(
            convert_to_numpy(data_array),
            channel_dim=channel_dim,
            squeeze_end_dims=False,
            spatial_ndim=kwargs.pop("spatial_ndim", 3),
        )
        self.data_obj = data[..., 0] if squeeze_end_dims and data.shape[-1] == 1 else data

    def set_metadata(self, meta_dict: Mapping | None, resample: bool = False, **options: Any) -> None:
        """Take the slice's affine (``meta_dict["affine"]``) and ``source_dtype``; never resamples.

        Args:
            meta_dict: metadata with an ``"affine"`` (the reference slice's RAS affine) and optionally
                ``"source_dtype"``; other keys (``spatial_shape``, ``original_affine``, ...) are ignored.
            resample: must be False: resampling a slice to its volume's geometry would misplace it.
            options: resampling options passed by ``SaveImage``; ignored.

        Raises:
            ValueError: when ``resample`` is True.
        """
        if resample:
            raise ValueError(f"{type(self).__name__} writes on the slice's own grid and never resamples.")
        meta_dict = meta_dict or {}
        if meta_dict.get("affine") is not None:
            self.affine = _as_affine(meta_dict["affine"])
        if meta_dict.get("source_dtype"):
            self.source_dtype = str(meta_dict["source_dtype"])

    def _resolved_dtype(self) -> np.dtype:
        """The dtype to write: ``output_dtype``, else the source's, else the data's."""
        if self.output_dtype is not None:
            return np.dtype(self.output_dtype)
        if self.source_dtype:
            return np.dtype(self.source_dtype)
        return np.dtype(self.data_obj.dtype)

    def create_header(self, descrip: str | None = None) -> nib.Nifti1Header:
        """The NIfTI header for the current data and affine: geometry, dtype, units and ``descrip``.

        Args:
            descrip: header ``descrip``; defaults to the writer's.

        Raises:
            ValueError: when no data or affine is set, or the affine has shear and ``allow_shear`` is False.
        """
        if self.data_obj is None:
            raise ValueError("no data: call set_data_array first.")
        if self.affine is None:
            raise ValueError("no affine: a slice is written with its geometry, and none was given.")
        affine = _as_affine(self.affine)
        header = self._header.copy()
        header.set_data_shape(np.shape(self.data_obj))
        header.set_data_dtype(self._resolved_dtype())
        header.set_qform(affine, code=self.xform_code)
        header.set_sform(affine, code=self.xform_code)
        if not self.allow_shear and np.abs(header.get_qform() - affine).max() > _GEOMETRY_TOL:
            raise ValueError(
                "the affine has shear, which a NIfTI qform cannot hold; qform and sform would disagree "
                "(pass allow_shear=True to write the exact sform and the nearest rotation as qform)."
            )
        header["descrip"] = _ascii(self._label(descrip if descrip is not None else self.descrip), 80)
        return header

    def _label(self, descrip: str) -> str:
        """The header ``descrip`` written for ``descrip``."""
        return descrip

    def create_nifti(self, descrip: str | None = None) -> nib.Nifti1Image:
        """The ``Nifti1Image`` for the current data and affine, with the header of :meth:`create_header`.

        Raises:
            ValueError: see :meth:`create_header` and :func:`cast_to_dtype`.
        """
        header = self.create_header(descrip)
        data = cast_to_dtype(np.asarray(self.data_obj), header.get_data_dtype())
        img = nib.Nifti1Image(data, header.get_sform(), header=header)
        img.set_qform(header.get_qform(), code=self.xform_code)
        img.set_sform(header.get_sform(), code=self.xform_code)
        return img

    def _file_bytes(self, header: nib.Nifti1Header, compress: bool) -> bytes:
        """The complete single-file NIfTI content for the current data under ``header``.

        This is what ``Nifti1Image.to_bytes`` writes for unscaled data (header, empty extension flag, voxels in
        Fortran order), without its per-image bookkeeping, which costs more than the write itself for small
        slices. The gzip header has no time stamp, so equal inputs give equal bytes.
        """
        data = cast_to_dtype(np.asarray(self.data_obj), header.get_data_dtype())
        stream = io.BytesIO()
        header.write_to(stream)
        stream.write(data.tobytes(order="F"))
        raw = stream.getvalue()
        return gzip.compress(raw, compresslevel=self.compresslevel, mtime=0) if compress else raw

    def write(  # type: ignore[override]
        self,
        filename: str | os.PathLike,
        verbose: bool = False,
        overwrite: bool | None = None,
        descrip: str | None = None,
    ) -> Path:
        """Write the current data to ``filename`` (``.nii`` or ``.nii.gz``) atomically, without a sidecar.

        Args:
            filename: destination; ``.nii.gz`` is gzipped.
            verbose: log the file name.
            overwrite: replace an existing file; defaults to the writer's ``overwrite``.
            descrip: header ``descrip``; defaults to the writer's.

        Returns:
            the written path.

        Raises:
            FileExistsError: when the file exists and overwriting is off.
            ValueError: see :meth:`create_nifti`; also for a file name not ending in ``.nii`` or ``.nii.gz``.
        """
        super(NibabelWriter, self).write(filename, verbose=verbose)
        overwrite = self.overwrite if overwrite is None else overwrite
        compress = _nifti_suffix(filename) == ".nii.gz"
        return replace_atomically(
            filename, lambda handle: handle.write(self._file_bytes(self.create_header(descrip), compress)),
            overwrite=overwrite, fsync=self.fsync,
        )

class SyntheticSliceWriter(SliceWriter):
    """Write synthetic slices, and volumes of them, to NIfTI with exact geometry and a JSON provenance sidecar.

    A :class:`SliceWriter` whose header ``descrip`` always starts with ``SYNTHETIC`` and whose ``intent_name`` is
    ``synthetic``: a synthetic slice is written on its reference's grid. :meth:`write_slice` and
    :meth:`write_volume` write the NIfTI and its sidecar as a pair.

    .. code-block:: python

        writer = SyntheticSliceWriter(output_dtype="int16")
        record = provenance_record(...)  # see monai_mri_gan.synthesis.provenance
        writer.write_slice(fake, "out/fake_0003.nii.gz", record, affine=reference_slice.affine)

    Args:
        descrip: default header ``descrip``; prefixed with ``SYNTHETIC`` if it does not start with it.
        intent_name: header ``intent_name`` (at most 16 bytes).
        kwargs: the other arguments of :class:`SliceWriter`.
    """

    def __init__(self, descrip: str = DEFAULT_DESCRIP, intent_name: str = "synthetic", **kwargs: Any) -> None:
        super().__init__(descrip=descrip, intent_name=intent_name, **kwargs)

    def _label(self, descrip: str) -> str:
        return descrip if descrip.startswith("SYNTHETIC") else f"SYNTHETIC {descrip}"

    def _write_pair(
        self,
        filename: str | os.PathLike,
        record: Mapping[str, Any],
        overwrite: bool | None,
        forbidden_values: Iterable[str | bytes],
    ) -> tuple[Path, Path]:
        """Write the current data and its sidecar as a pair: both or (as far as the file system allows) neither."""
        overwrite = self.overwrite if overwrite is None else overwrite
        nifti_path = Path(filename)
        json_path = sidecar_path(nifti_path)
        compress = _nifti_suffix(nifti_path) == ".nii.gz"
        if not overwrite:
            for path in (nifti_path, json_path):
                if path.exists():
                    raise FileExistsError(f"{path}: exists; pass overwrite=True to replace it.")
        sidecar = sidecar_bytes(record)
        header = self.create_header(synthetic_descrip(record))
        forbidden = list(forbidden_values)
        if forbidden:
            if find_forbidden(header.binaryblock, forbidden) or find_forbidden(sidecar, forbidden):
                # The values themselves are not repeated here: this message may end up in a log.
                raise ValueError(f"{nifti_path}: a forbidden identifier value would be written; nothing written.")
        nifti = self._file_bytes(header, compress)
        nifti_tmp = stage_file(nifti_path, lambda handle: handle.write(nifti), self.fsync)
        try:
            json_tmp = stage_file(json_path, lambda handle: handle.write(sidecar), self.fsync)
        except BaseException:
            nifti_tmp.unlink(missing_ok=True)
            raise
        try:
            commit_file(nifti_tmp, nifti_path, overwrite)
        except BaseException:
            json_tmp.unlink(missing_ok=True)
            raise
        try:
            commit_file(json_tmp, json_path, overwrite)
        except BaseException:
            nifti_path.unlink(missing_ok=True)
            raise
        return nifti_path, json_path

    def write_slice(
        self,
        image: NdarrayOrTensor,
        filename: str | os.PathLike,
        record: Mapping[str, Any],
        affine: NdarrayOrTensor | None = None,
        overwrite: bool | None = None,
        forbidden_values: Iterable[str | bytes] = (),
    ) -> tuple[Path, Path]:
        """Write one synthetic slice and its JSON sidecar (``<stem>.json``) as a pair.

        Both files are staged first; the NIfTI is renamed into place, then the sidecar. If the sidecar cannot be
        placed, the NIfTI just written is removed again, so no file is left without its provenance (when
        overwriting, the old sidecar is then left without its NIfTI, and the call raises).

        Args:
            image: the slice ``(1, H, W, 1)`` in source intensity units (a ``MetaTensor`` also gives its affine
                and ``source_dtype``).
            filename: the NIfTI destination (``.nii`` or ``.nii.gz``).
            record: its provenance (see :func:`~monai_mri_gan.synthesis.provenance.provenance_record`); the
                header ``descrip`` is built from it.
            affine: the reference slice's 4x4 RAS affine; defaults to ``image.affine``.
            overwrite: replace existing files; defaults to the writer's ``overwrite``.
            forbidden_values: identifier values (e.g. the source's patient name and ID) to look for in the
                header and sidecar before anything is written; pixel data is not searched.

        Returns:
            the NIfTI and sidecar paths.

        Raises:
            FileExistsError: when either file exists and overwriting is off (nothing is written).
            ValueError: when the record's reference affine differs from ``affine``, the record fails the
                sidecar checks (:func:`~monai_mri_gan.synthesis.provenance.sidecar_bytes`), a forbidden value
                would be written, or for the reasons of :meth:`create_nifti`.
        """
        self.set_data_array(image)
        if affine is not None:
            self.affine = _as_affine(affine)
        recorded = (record.get("reference_geometry") or {}).get("affine")
        if recorded is not None and self.affine is not None:
            if np.abs(np.asarray(recorded, dtype=np.float64) - self.affine).max() > _GEOMETRY_TOL:
                raise ValueError(f"{filename}: the record's reference affine differs from the affine to write.")
        return self._write_pair(filename, record, overwrite, forbidden_values)

    def write_volume(
        self,
        slices: Sequence[NdarrayOrTensor],
        slice_indices: Sequence[int],
        reference_affine: NdarrayOrTensor,
        reference_shape: Sequence[int],
        filename: str | os.PathLike,
        record: Mapping[str, Any],
        axis: int = 2,
        background: float = 0.0,
        overwrite: bool | None = None,
        forbidden_values: Iterable[str | bytes] = (),
    ) -> tuple[Path, Path]:
        """Write synthetic slices into one volume on a reference volume's grid, with its sidecar.

        The volume has the reference's shape and affine and holds ``background`` except at the given slices.
        Slices that carry an affine (``MetaTensor``) must sit where their index puts them.

        Args:
            slices: slices ``(1, H, W, 1)`` whose in-plane axes are the reference's axes other than ``axis``, in
                order (as :func:`~monai_mri_gan.transforms.cut_slice` makes them).
            slice_indices: the position of each slice along ``axis``.
            reference_affine: the reference volume's 4x4 RAS affine.
            reference_shape: the reference volume's spatial shape ``(X, Y, Z)``.
            filename: the NIfTI destination (``.nii`` or ``.nii.gz``).
            record: provenance of the volume; the sidecar gets an extra ``"volume"`` entry with ``axis``,
                ``slice_indices``, ``shape`` and ``background``.
            axis: the slicing axis of the reference volume.
            background: value of voxels that are not in a given slice.
            overwrite: replace existing files; defaults to the writer's ``overwrite``.
            forbidden_values: see :meth:`write_slice`.

        Returns:
            the NIfTI and sidecar paths.

        Raises:
            ValueError: when slices and indices differ in number, an index is out of range or repeated, a
                slice's shape does not fit the grid, or its affine is not the one its index implies.
            FileExistsError: when either file exists and overwriting is off.
        """
        affine = _as_affine(reference_affine)
        shape = tuple(int(s) for s in reference_shape)
        if len(shape) != 3 or axis not in (0, 1, 2):
            raise ValueError(f"need a 3D reference shape and axis 0, 1 or 2, got {shape} and {axis!r}.")
        indices = [int(k) for k in slice_indices]
        if len(indices) != len(slices) or len(set(indices)) != len(indices):
            raise ValueError(f"need one distinct index per slice, got {len(slices)} slices and indices {indices}.")
        in_plane = tuple(s for a, s in enumerate(shape) if a != axis)
        planes = []
        source_dtype = None
        for k, image in zip(indices, slices, strict=True):
            if not 0 <= k < shape[axis]:
                raise ValueError(f"slice index {k} is outside 0..{shape[axis] - 1} along axis {axis}.")
            self.set_data_array(image)
            source_dtype = source_dtype or self.source_dtype
            if self.affine is not None:
                expected = affine @ slice_to_volume_transform(axis, k)
                if np.abs(self.affine - expected).max() > _GEOMETRY_TOL:
                    raise ValueError(f"the slice given for index {k} has an affine that places it elsewhere.")
            plane = np.asarray(self.data_obj)
            if plane.ndim != 3 or plane.shape != (*in_plane, 1):
                raise ValueError(f"slice {k} has shape {plane.shape}, the grid needs {(*in_plane, 1)}.")
            planes.append(plane[..., 0])
        source_dtype = source_dtype or (np.result_type(*planes).name if planes else "float32")
        volume = np.full(shape, background, dtype=np.float64)
        for k, plane in zip(indices, planes, strict=True):
            np.moveaxis(volume, axis, -1)[..., k] = plane
        self.data_obj = volume
        self.affine = affine
        self.source_dtype = source_dtype
        volume_record = {
            **record,
            "volume": {"axis": axis, "slice_indices": indices, "shape": list(shape), "background": background},
        }
        return self._write_pair(filename, volume_record, overwrite, forbidden_values)


def write_synthetic_slice(
    image: NdarrayOrTensor,
    affine: NdarrayOrTensor | None,
    filename: str | os.PathLike,
    record: Mapping[str, Any],
    dtype: DtypeLike | None = None,
    overwrite: bool = False,
    xform_code: int = 1,
    forbidden_values: Iterable[str | bytes] = (),
) -> tuple[Path, Path]:
    """Write one synthetic slice and its provenance sidecar; see :meth:`SyntheticSliceWriter.write_slice`.

    Args:
        image: the slice ``(1, H, W, 1)`` in source intensity units.
        affine: the reference slice's 4x4 RAS affine; None uses ``image.affine``.
        filename: the NIfTI destination (``.nii`` or ``.nii.gz``).
        record: its provenance record.
        dtype: output dtype; None uses ``image.meta["source_dtype"]`` when present, else the data's dtype.
        overwrite: replace existing files.
        xform_code: qform and sform code (1 = scanner).
        forbidden_values: identifier values that must not appear in the header or sidecar.

    Returns:
        the NIfTI and sidecar paths.
    """
    writer = SyntheticSliceWriter(output_dtype=dtype, xform_code=xform_code, overwrite=overwrite)
    return writer.write_slice(image, filename, record, affine=affine, forbidden_values=forbidden_values)
