"""A MONAI image reader for DICOM series, NIfTI, NRRD and MetaImage, with strict geometry and size checks.

DICOM series are ordered by slice position along the slice normal (never by InstanceNumber), checked for
consistent geometry, and read with ``SimpleITK.ImageSeriesReader``; NRRD and MetaImage are read with SimpleITK,
NIfTI with nibabel (ITK refuses the sheared affines NIfTI allows). Every source becomes one numpy array and one
RAS affine, so everything after reading takes one path. A header's claim on the size of its voxel data is
checked against the file before any voxel is read. Only geometry reaches the metadata: no patient, study or
series identifier from a DICOM header is ever copied.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from numpy.lib.recfunctions import structured_to_unstructured
from pydicom.dataset import Dataset

from monai_mri_gan.errors import DataError

from .acquisition import acquisition_json, bids_acquisition, dicom_acquisition

__all__ = [
    "VOLUME_SUFFIXES",
    "DICOM_SUFFIXES",
    "SimpleITKReader",
    "LoadedVolume",
    "ReadFailure",
    "file_format",
    "is_dicom_file",
    "read_dicom_header",
    "read_dicom_series_geometry",
    "list_series_files",
]

#: file-name endings of single-file (or header + data) volumes, and the ``source_format`` they map to.
VOLUME_SUFFIXES = {
    ".nii.gz": "nifti",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".nhdr": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
#: file-name endings that announce DICOM; DICOM files without an extension are recognised by content.
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# positions and orientations are stored as decimal strings of at most 16 characters
_ORIENTATION_TOL = 1e-4
_POSITION_TOL_MM = 1e-3
_SPACING_REL_TOL = 0.01


def file_format(path: PathLike) -> str | None:
    """Name the format of a file or folder from its name, or its content for DICOM without an extension.

    Args:
        path: a file, or a folder (taken as a DICOM series).

    Returns:
        "dicom", "nifti", "nrrd" or "metaimage"; None when it is none of them.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    name = path.name.lower()
    for suffix, fmt in VOLUME_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return "dicom" if is_dicom_file(path) else None


def is_dicom_file(path: PathLike) -> bool:
    """Tell whether a file is DICOM: a DICM preamble, or (for files without one) a parsable image header.

    Args:
        path: file to test; only its header is read.

    Returns:
        True for a DICOM file, False otherwise (including folders and unreadable files).
    """
    path = Path(path)
    if not path.is_file():
        return False
    if pydicom.misc.is_dicom(path):
        return True
    suffix = path.suffix.lower()
    # files without the 128-byte preamble only deserve a forced parse when their name does not claim another format
    if suffix and suffix not in DICOM_SUFFIXES and not suffix[1:].isdigit():
        return False
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:
        return False
    return "SOPClassUID" in ds and "Rows" in ds


def read_dicom_header(path: PathLike) -> Dataset:
    """Read the header of one DICOM file, without its pixel data.

    Args:
        path: the DICOM file.

    Returns:
        the pydicom dataset (pixel data not loaded).

    Raises:
        DataError: when the file cannot be parsed as DICOM (missing, truncated, not DICOM).
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=not pydicom.misc.is_dicom(path))
    except FileNotFoundError as err:
        raise DataError(path, "file does not exist.") from err
    except Exception as err:
        # the parser's own message may quote header values, which can be identifiers: name the error type only
        problem = f"cannot be read as DICOM (truncated, corrupt or not DICOM; {type(err).__name__})."
        raise DataError(path, problem) from err


def _require_image_header(ds: Dataset, path: PathLike) -> None:
    """Check that a header holds one image frame with the geometry tags a volume needs."""
    if "SOPClassUID" not in ds or "Rows" not in ds:
        raise DataError(path, "is truncated or not a DICOM image: its header has no SOPClassUID or Rows.")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise DataError(path, "is a multi-frame (enhanced) DICOM object, not supported: export it as single slices.")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        if ds.get(tag) in (None, ""):
            raise DataError(path, f"DICOM header has no {tag} (truncated file?): the slice cannot be placed in space.")
    if len(ds.ImagePositionPatient) != 3 or len(ds.ImageOrientationPatient) != 6 or len(ds.PixelSpacing) != 2:
        raise DataError(path, "ImagePositionPatient, ImageOrientationPatient or PixelSpacing has the wrong length.")


def _slice_normal(iop: np.ndarray, path: PathLike) -> np.ndarray:
    """Unit normal of the slice plane from ImageOrientationPatient, after checking the cosines are orthonormal."""
    row, col = iop[:3], iop[3:]
    if (
        abs(np.linalg.norm(row) - 1) > _ORIENTATION_TOL
        or abs(np.linalg.norm(col) - 1) > _ORIENTATION_TOL
        or abs(row @ col) > _ORIENTATION_TOL
    ):
        raise DataError(path, f"ImageOrientationPatient {iop.tolist()} is not a pair of orthonormal direction cosines.")
    return np.cross(row, col)


def _series_step(positions: np.ndarray, normal: np.ndarray, files: Sequence[str], where: PathLike) -> float:
    """Slice spacing of positions already sorted along the normal, after checking it is uniform and gap free."""
    along = positions @ normal
    steps = np.diff(along)
    for k, step in enumerate(steps):
        if step < _POSITION_TOL_MM:
            position = positions[k].tolist()
            raise DataError(where, f"duplicated slice position {position} in {files[k]} and {files[k + 1]}.")
    step = float((along[-1] - along[0]) / (len(along) - 1))
    tol = max(_SPACING_REL_TOL * step, _POSITION_TOL_MM)
    for k, gap in enumerate(steps):
        if abs(gap - step) > tol:
            raise DataError(
                where,
                f"non-uniform slice spacing (missing slice or gap?): {gap:.4f} mm between {files[k]} and "
                f"{files[k + 1]}, while the series averages {step:.4f} mm.",
            )
    offsets = np.diff(positions, axis=0) - np.outer(steps, normal)
    worst = int(np.argmax(np.linalg.norm(offsets, axis=1)))
    if np.linalg.norm(offsets[worst]) > tol:
        raise DataError(
            where,
            f"slice positions are not along the slice normal (gantry tilt or mixed stacks) between {files[worst]} "
            f"and {files[worst + 1]}; resample the series before use.",
        )
    return step


def read_dicom_series_geometry(
    files: Sequence[PathLike], headers: Sequence[Dataset] | None = None, where: PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """Order the files of one DICOM series along the slice normal and build the series' RAS affine.

    Args:
        files: the files of one series, in any order.
        headers: their headers, if already read (same order as ``files``); read here otherwise.
        where: the series' name in error messages (default: the folder of the first file).

    Returns:
        the files sorted by position along the slice normal, and the 4x4 affine (RAS, mm) mapping
        voxel (i, j, k) = (column, row, slice) to world coordinates.

    Raises:
        DataError: on an unreadable file, missing geometry tags, inconsistent orientation, pixel spacing or
            matrix size, duplicated positions, or non-uniform slice spacing.
    """
    files = [str(f) for f in files]
    if not files:
        raise DataError(where or ".", "no DICOM files given for the series.")
    where = str(where) if where is not None else str(Path(files[0]).parent)
    headers = list(headers) if headers is not None else [read_dicom_header(f) for f in files]
    for ds, f in zip(headers, files, strict=True):
        _require_image_header(ds, f)
    ref, ref_file = headers[0], files[0]
    iop = np.asarray(ref.ImageOrientationPatient, dtype=float)
    pixel_spacing = np.asarray(ref.PixelSpacing, dtype=float)
    for ds, f in zip(headers[1:], files[1:], strict=True):
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, dtype=float), iop, atol=_ORIENTATION_TOL):
            raise DataError(f, f"ImageOrientationPatient differs from {ref_file} in the same series ({where}).")
        if (ds.Rows, ds.Columns) != (ref.Rows, ref.Columns):
            raise DataError(
                f, f"matrix {ds.Rows}x{ds.Columns} differs from {ref.Rows}x{ref.Columns} of {ref_file} ({where})."
            )
        if not np.allclose(np.asarray(ds.PixelSpacing, dtype=float), pixel_spacing, rtol=1e-4):
            raise DataError(f, f"PixelSpacing differs from {ref_file} in the same series ({where}).")
    normal = _slice_normal(iop, ref_file)
    positions = np.asarray([ds.ImagePositionPatient for ds in headers], dtype=float)
    order = np.argsort(positions @ normal, kind="stable")
    files, positions = [files[k] for k in order], positions[order]
    if len(files) > 1:
        step = _series_step(positions, normal, files, where)
    else:
        step = float(ref.get("SpacingBetweenSlices") or ref.get("SliceThickness") or 1.0)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = iop[:3] * pixel_spacing[1]  # PixelSpacing is (between rows, between columns)
    affine_lps[:3, 1] = iop[3:] * pixel_spacing[0]
    affine_lps[:3, 2] = normal * step
    affine_lps[:3, 3] = positions[0]
    return files, _LPS_TO_RAS @ affine_lps


def list_series_files(folder: PathLike) -> list[str]:
    """List the candidate files of a DICOM series folder (not recursive; hidden files and DICOMDIR left out).

    Args:
        folder: the series folder.

    Returns:
        sorted file paths.

    Raises:
        DataError: when the folder holds no files.
    """
    files = sorted(
        str(p) for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".") and p.name != "DICOMDIR"
    )
    if not files:
        raise DataError(folder, "is an empty folder: no DICOM series to read.")
    return files


@dataclass
class LoadedVolume:
    """A volume read by :class:`SimpleITKReader`: its voxels, its RAS geometry and where it came from.

    Args:
        array: the voxels, axes (x, y, z), or (x, y, z, c) for vector (e.g. RGB) voxels.
        affine: 4x4 affine (RAS, mm) mapping voxel (x, y, z) to world coordinates; it may hold shear (NIfTI).
        path: the file or folder it was read from, for error messages.
        source_format: "dicom", "nifti", "nrrd" or "metaimage".
        acquisition: the whitelisted acquisition attributes (see :mod:`monai_mri_gan.data.acquisition`).
    """

    array: np.ndarray
    affine: np.ndarray
    path: str
    source_format: str
    acquisition: dict = field(default_factory=dict)


@dataclass
class ReadFailure:
    """The error of a failed :meth:`SimpleITKReader.read`, raised by :meth:`SimpleITKReader.get_data`.

    Args:
        error: what went wrong, naming the file or folder.
    """

    error: DataError


class SimpleITKReader(ImageReader):
    """Load DICOM series, single DICOM files, NRRD and MetaImage with SimpleITK, and NIfTI with nibabel, in RAS.

    Use it with ``LoadImage(reader=SimpleITKReader())`` or ``LoadImaged(keys, reader=SimpleITKReader())``.
    A folder is one DICOM series; a list of DICOM files is also read as one series (discovery hands over
    such lists when a folder holds several series). A list of other volumes is stacked as channels, as
    MONAI readers do, and their geometry must agree.

    NIfTI is read with nibabel because ITK refuses affines with shear, which are legal in NIfTI (and common
    after affine registration): the affine is nibabel's ``img.affine`` (sform or qform, as nibabel chooses),
    shear included, and the voxels have ``scl_slope``/``scl_inter`` applied. Before any voxel data is read,
    the size that a NIfTI, NRRD or MetaImage header claims is checked against the bytes the file holds, so a
    header that lies is refused without allocating the volume it claims.

    The returned array has axes (x, y, z) (not reversed). Metadata: ``affine`` and ``original_affine``
    (RAS), ``space`` ("RAS"), ``spatial_shape``, ``spacing`` (the column norms of the affine's 3x3 part),
    ``original_channel_dim`` (nan for scalar volumes), ``source_format`` and ``source_dtype`` (numpy dtype
    name of the values after any DICOM rescale or NIfTI scaling), and ``acquisition``: a JSON string of the few
    whitelisted acquisition attributes (field strength, TR, TE, TI, flip angle, modality, contrast given; see
    :mod:`monai_mri_gan.data.acquisition`) from the DICOM header or a NIfTI's BIDS sidecar. Nothing else from
    the file headers is copied: no identifier, no free text.

    Args:
        volume_index: which volume of a 4D image (3D + time, or several volumes) to load; 4D images are
            refused when None. Ignored for 2D and 3D images, so one reader serves images and masks.
        series_uid: SeriesInstanceUID of the series to read from a folder that holds several series.

    Raises:
        DataError: on any bad input, from :meth:`get_data` (see :meth:`read` for why); the message names the
            file or folder.
    """

    def __init__(self, volume_index: int | None = None, series_uid: str | None = None) -> None:
        super().__init__()
        self.volume_index = volume_index
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Tell whether every given path is a format this reader handles.

        Args:
            filename: a file or folder, or a sequence of them.

        Returns:
            True when all of them are DICOM (files or series folders), NIfTI, NRRD or MetaImage.
        """
        return all(file_format(f) is not None for f in ensure_tuple(filename))

    def read(
        self, data: Sequence[PathLike] | PathLike, **kwargs: Any
    ) -> LoadedVolume | list[LoadedVolume] | ReadFailure:
        """Read a volume, a DICOM series (folder or list of files), or several volumes to stack as channels.

        Bad input does not raise here: it is returned as a :class:`ReadFailure` that :meth:`get_data` raises.
        ``LoadImage`` catches any error from ``read`` and silently falls back to MONAI's other readers (which,
        for instance, load a broken DICOM series with an identity affine); ``get_data`` is outside that net.

        Args:
            data: a file or folder path, or a sequence of paths.
            kwargs: ``volume_index`` and ``series_uid``, overriding the reader's own for this call.

        Returns:
            one :class:`LoadedVolume`, a list of them when several non-DICOM volumes are given, or a
            :class:`ReadFailure` holding the :class:`DataError` (unsupported, unreadable or truncated file,
            header that is invalid or claims more voxel data than the file holds, bad DICOM series, NaN or
            infinite voxels, 4D image without ``volume_index``).
        """
        try:
            return self._read(data, **kwargs)
        except DataError as err:
            return ReadFailure(err)

    def _read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> LoadedVolume | list[LoadedVolume]:
        volume_index = kwargs.get("volume_index", self.volume_index)
        series_uid = kwargs.get("series_uid", self.series_uid)
        paths = [str(p) for p in ensure_tuple(data)]
        if not paths:
            raise DataError(".", "no file given to read.")
        formats = [self._format(p) for p in paths]
        dicom_files = all(fmt == "dicom" and not Path(p).is_dir() for p, fmt in zip(paths, formats, strict=True))
        if len(paths) == 1 or dicom_files:
            return self._read_one(paths, formats[0], volume_index, series_uid)
        return [self._read_one([p], fmt, volume_index, series_uid) for p, fmt in zip(paths, formats, strict=True)]

    def get_data(self, img: LoadedVolume | Sequence[LoadedVolume] | ReadFailure) -> tuple[np.ndarray, dict]:
        """Extract the (x, y, z[, c]) array and the geometry metadata of what :meth:`read` returned.

        Args:
            img: a :class:`LoadedVolume`, or a list of them to stack on a new first (channel) axis.

        Returns:
            the array and its metadata dictionary.

        Raises:
            DataError: the error :meth:`read` deferred, or volumes to stack that differ in shape or geometry.
        """
        if isinstance(img, ReadFailure):
            raise img.error
        volumes = list(ensure_tuple(img))
        metas = [_meta(v) for v in volumes]
        if len(volumes) == 1:
            return volumes[0].array, metas[0]
        ref = metas[0]
        for vol, meta in zip(volumes[1:], metas[1:], strict=True):
            if not np.array_equal(meta[MetaKeys.SPATIAL_SHAPE], ref[MetaKeys.SPATIAL_SHAPE]) or not np.allclose(
                meta[MetaKeys.AFFINE], ref[MetaKeys.AFFINE], atol=1e-4
            ):
                raise DataError(vol.path, f"shape or geometry differs from {volumes[0].path}: cannot stack them.")
        meta = dict(ref)
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack([v.array for v in volumes], axis=0), meta

    @staticmethod
    def _format(path: str) -> str:
        if not os.path.exists(path):
            raise DataError(path, "does not exist.")
        fmt = file_format(path)
        if fmt is None:
            raise DataError(
                path,
                "unsupported file type: expected a DICOM file or series folder, NIfTI (.nii, .nii.gz), "
                "NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd).",
            )
        return fmt

    def _read_one(self, paths: list[str], fmt: str, volume_index: int | None, series_uid: str | None) -> LoadedVolume:
        where = paths[0] if len(paths) == 1 else str(Path(paths[0]).parent)
        acquisition: dict = {}
        if fmt == "dicom":
            array, affine, vector, acquisition = self._read_dicom(paths, series_uid)
        elif fmt == "nifti":
            array, affine, vector = _read_nifti(where)
            acquisition = bids_acquisition(where)
        else:
            _check_itk_header(where, fmt)
            try:
                image = sitk.ReadImage(where)
            except RuntimeError as err:
                raise DataError(where, f"SimpleITK cannot read it: {_first_line(err)}") from err
            array, vector = _sitk_array(image)
            affine = _sitk_affine_ras(image)
        array = _to_3d(array, vector, where, volume_index)
        _raise_if_nonfinite(array, where)
        return LoadedVolume(array=array, affine=affine, path=where, source_format=fmt, acquisition=acquisition)

    def _read_dicom(self, paths: list[str], series_uid: str | None) -> tuple[np.ndarray, np.ndarray, bool, dict]:
        where = paths[0]
        if len(paths) == 1 and Path(paths[0]).is_dir():
            files = list_series_files(paths[0])
        else:
            files, where = paths, str(Path(paths[0]).parent) if len(paths) > 1 else paths[0]
        for f in files:
            if not is_dicom_file(f) and Path(f).is_file():
                raise DataError(f, f"is not a DICOM image file; a DICOM series ({where}) must hold only its slices.")
        headers = [read_dicom_header(f) for f in files]
        for ds, f in zip(headers, files, strict=True):
            _require_image_header(ds, f)
        files, headers = _select_series(files, headers, where, series_uid)
        files, affine = read_dicom_series_geometry(files, headers, where)
        image = _read_series_pixels(files, where)
        _check_series_geometry(image, affine, len(files), int(headers[0].Rows), int(headers[0].Columns), where)
        array, vector = _sitk_array(image)
        return array, affine, vector, dicom_acquisition(headers[0])


def _meta(volume: LoadedVolume) -> dict:
    """The geometry metadata of a volume (see :class:`SimpleITKReader`)."""
    affine = volume.affine
    return {
        MetaKeys.ORIGINAL_AFFINE: affine,
        MetaKeys.AFFINE: affine.copy(),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.SPATIAL_SHAPE: np.asarray(volume.array.shape[:3]),
        MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if volume.array.ndim == 3 else -1,
        "spacing": np.linalg.norm(affine[:3, :3], axis=0),
        "source_format": volume.source_format,
        "source_dtype": volume.array.dtype.name,
        "acquisition": acquisition_json(volume.acquisition),
    }


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _sitk_array(image: sitk.Image) -> tuple[np.ndarray, bool]:
    """The voxels of a SimpleITK image with axes (x, y[, z[, t]][, c]), and whether they are vectors."""
    array = sitk.GetArrayFromImage(image)  # ([t, ][z, ]y, x[, c])
    vector = image.GetNumberOfComponentsPerPixel() > 1
    return (np.moveaxis(array.T, 0, -1) if vector else array.T), vector


def _sitk_affine_ras(image: sitk.Image) -> np.ndarray:
    """4x4 RAS affine of the first three (or, for 2D, two) axes of a SimpleITK image."""
    dim = image.GetDimension()
    n = min(dim, 3)
    affine = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(dim, dim)[:n, :n]
    affine[:n, :n] = direction @ np.diag(image.GetSpacing()[:n])
    affine[:n, 3] = image.GetOrigin()[:n]
    return _LPS_TO_RAS @ affine


def _select_series(
    files: list[str], headers: list[Dataset], where: str, series_uid: str | None
) -> tuple[list[str], list[Dataset]]:
    """Keep the files of one series; refuse a mix of series unless ``series_uid`` picks one."""
    groups: dict[str, list[int]] = {}
    for k, ds in enumerate(headers):
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(k)
    if series_uid is not None:
        if series_uid not in groups:
            raise DataError(where, f"holds no DICOM series with the requested series_uid ({len(groups)} series found).")
        keep = groups[series_uid]
    elif len(groups) > 1:
        # series are described by size, SeriesNumber and a file, never by UID: messages may reach logs
        listing = "; ".join(
            f"series #{n + 1}: {len(idx)} file(s), SeriesNumber {headers[idx[0]].get('SeriesNumber', '?')}, "
            f"e.g. {files[idx[0]]}"
            for n, idx in enumerate(groups.values())
        )
        raise DataError(
            where,
            f"holds {len(groups)} DICOM series ({listing}). Pass series_uid=<SeriesInstanceUID> to SimpleITKReader, "
            "or give the list of one series' files (discover_volumes does this).",
        )
    else:
        keep = next(iter(groups.values()))
    return [files[k] for k in keep], [headers[k] for k in keep]


def _read_series_pixels(files: list[str], where: str) -> sitk.Image:
    """Read sorted slices with SimpleITK (which applies rescale slope and intercept); name a bad file on failure."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as err:
        for f in files:
            try:
                sitk.ReadImage(f)
            except RuntimeError as file_err:
                raise DataError(
                    f, f"pixel data cannot be read (truncated or corrupt?) in series {where}: {_first_line(file_err)}"
                ) from err
        raise DataError(where, f"SimpleITK cannot read the series: {_first_line(err)}") from err


def _check_series_geometry(
    image: sitk.Image, affine: np.ndarray, n_slices: int, rows: int, columns: int, where: str
) -> None:
    """Check that the image SimpleITK read agrees with the geometry computed from the headers."""
    size = tuple(image.GetSize())
    if image.GetDimension() != 3 or size != (columns, rows, n_slices):
        raise DataError(where, f"SimpleITK read size {size}, headers say {(columns, rows, n_slices)}.")
    read = _sitk_affine_ras(image)
    # a single slice has no through-plane geometry of its own in SimpleITK: compare in-plane axes and origin
    cols = [0, 1, 2, 3] if n_slices > 1 else [0, 1, 3]
    if not np.allclose(read[:3, cols], affine[:3, cols], atol=_POSITION_TOL_MM, rtol=1e-4):
        raise DataError(where, "geometry read by SimpleITK disagrees with the DICOM headers.")


def _to_3d(array: np.ndarray, vector: bool, where: str, volume_index: int | None) -> np.ndarray:
    """Bring voxels to (x, y, z[, c]): 2D becomes one slice, 4D needs ``volume_index``.

    Axes of size 1 after the third are dropped first (NIfTI may store a 3D volume as 4D with one time point).
    """
    spatial = list(array.shape[: array.ndim - vector])
    components = list(array.shape[array.ndim - vector :])
    while len(spatial) > 3 and spatial[-1] == 1:
        spatial.pop()
    array = array.reshape(spatial + components)
    if len(spatial) == 2:
        return array[:, :, np.newaxis]
    if len(spatial) == 4:
        n = spatial[3]
        if volume_index is None:
            raise DataError(
                where,
                f"is 4D with {n} volumes; choose one with the slicing setting volume_index (--slicing#volume_index i "
                f"in a bundle, SimpleITKReader(volume_index=i) in code), 0 <= i < {n}.",
            )
        if not -n <= volume_index < n:
            raise DataError(where, f"volume_index {volume_index} is out of range: the image has {n} volumes.")
        return array[:, :, :, volume_index % n].copy()
    if len(spatial) != 3:
        raise DataError(where, f"has {len(spatial)} dimensions; only 2D, 3D and 4D (with volume_index) are supported.")
    return array


def _raise_if_nonfinite(array: np.ndarray, where: str) -> None:
    """Refuse NaN or infinite voxels, which would silently poison normalisation."""
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(where, f"has {bad} NaN or infinite voxel(s).")


# ---------------------------------------------------------------- size claims of headers, checked before reading

_GZIP_MAGIC = b"\x1f\x8b"
# zlib's documented upper bound on deflate's compression factor: n compressed bytes never inflate to more
_DEFLATE_MAX_RATIO = 1032
_CHUNK_BYTES = 1 << 20
_HEADER_MAX_BYTES = 1 << 16
_NIFTI_CLASSES = {348: nib.Nifti1Image, 540: nib.Nifti2Image}


def _check_claim(path: str, nbytes: int, what: str, holder: str, held: int, compressed: bool) -> None:
    """Refuse a header whose voxel data (``nbytes``, described by ``what``) cannot fit in the ``held`` bytes."""
    if compressed and nbytes > _DEFLATE_MAX_RATIO * held:
        raise DataError(
            path,
            f"header claims {nbytes} bytes of voxel data ({what}) but {holder} holds {held} compressed bytes, "
            f"which inflate to at most {_DEFLATE_MAX_RATIO * held} (deflate's limit is 1032:1).",
        )
    if not compressed and held < nbytes:
        raise DataError(
            path,
            f"header claims {nbytes} bytes of voxel data ({what}) but {holder} holds {held} "
            "(truncated file, or a header that overstates the size).",
        )


def _header_int(path: str, field: str, text: str) -> int:
    """An integer header field; refuse text that is not one."""
    try:
        return int(text)
    except ValueError as err:
        raise DataError(path, f"header {field} is {text!r}, not an integer.") from err


def _positive_sizes(path: str, field: str, values: Sequence[str]) -> list[int]:
    """Image axis sizes from header text; refuse any that is not a positive integer."""
    sizes = [_header_int(path, field, v) for v in values]
    if not sizes or min(sizes) < 1:
        raise DataError(path, f"header {field} is {' '.join(values)!r}: every axis must hold at least one voxel.")
    return sizes


def _describe(sizes: Sequence[int], type_name: str) -> str:
    """Sizes and voxel type as a message shows them, e.g. "256x256x160 float32"."""
    return f"{'x'.join(str(s) for s in sizes)} {type_name}"


def _read_nifti(path: str) -> tuple[np.ndarray, np.ndarray, bool]:
    """Read a NIfTI-1 or NIfTI-2 file with nibabel after checking its header's size claim.

    Gzip content is recognised by its magic bytes, whatever the suffix (as ITK's reader did). It is
    decompressed in chunks, and reading stops once the claimed bytes have arrived: nothing of the claimed size
    is allocated before the data has been seen.

    Returns:
        the voxels (scaled by nibabel; RGB voxels as a last axis), nibabel's affine, and whether voxels are vectors.
    """
    with open(path, "rb") as raw:
        compressed = raw.read(2) == _GZIP_MAGIC
    opener = gzip.open if compressed else open
    end = None
    try:
        with opener(path, "rb") as stream:
            klass, header, block = _nifti_header(stream, path, "decompressed " if compressed else "")
            shape, offset = header.get_data_shape(), header.get_data_offset()
            nbytes = int(np.prod(shape, dtype=object)) * header.get_data_dtype().itemsize
            what = _describe(shape, header.get_value_label("datatype"))
            if compressed:
                _check_claim(path, nbytes, what, "the file", os.path.getsize(path), compressed=True)
            else:
                held = max(os.fstat(stream.fileno()).st_size - offset, 0)
                _check_claim(path, nbytes, what, "the file", held, compressed=False)
            end = offset + nbytes
            chunks, received = [block], len(block)
            while received < end:
                chunk = stream.read(min(_CHUNK_BYTES, end - received))
                if not chunk:
                    raise DataError(
                        path,
                        f"header claims {nbytes} bytes of voxel data ({what}) but the file holds "
                        f"{max(received - offset, 0)} once decompressed (truncated file, or a header that overstates "
                        "the size).",
                    )
                chunks.append(chunk)
                received += len(chunk)
    except EOFError as err:
        where = "inside the NIfTI header" if end is None else f"before the {end} decompressed bytes its header claims"
        raise DataError(path, f"is truncated: its gzip stream breaks off {where}.") from err
    except (gzip.BadGzipFile, zlib.error) as err:
        raise DataError(path, f"is gzip-compressed but its compressed data is corrupt ({err}).") from err
    except OSError as err:
        raise DataError(path, f"cannot be read: {err.strerror or err}.") from err
    try:
        img = klass.from_bytes(b"".join(chunks))
        data = np.asanyarray(img.dataobj)
    except (HeaderDataError, ImageFileError, ValueError) as err:
        raise DataError(path, f"nibabel cannot read its voxels: {_first_line(err)}") from err
    vector = data.dtype.names is not None
    if vector:
        data = structured_to_unstructured(data)
    return data, np.asarray(img.affine, dtype=float), vector


def _nifti_header(
    stream: BinaryIO, path: str, decompressed: str
) -> tuple[type[nib.Nifti1Image], nib.Nifti1Header, bytes]:
    """Parse and check the NIfTI-1 or NIfTI-2 header at the start of ``stream``.

    Args:
        stream: the file, or its decompressed content.
        path: the file, for error messages.
        decompressed: "decompressed " when ``stream`` is decompressed, else "" (for error messages).

    Returns:
        the nibabel image class, the header, and the header's bytes as read.
    """
    block = stream.read(4)
    if not block:
        raise DataError(path, f"is empty: it holds no {decompressed}bytes at all.")
    klass, order = None, "<"
    if len(block) == 4:
        for order in "<>":
            klass = _NIFTI_CLASSES.get(int(np.frombuffer(block, dtype=f"{order}i4")[0]))
            if klass is not None:
                break
    if klass is None:
        raise DataError(
            path,
            f"is not a NIfTI file: its first four {decompressed}bytes (sizeof_hdr) are neither 348 (NIfTI-1) nor 540 "
            "(NIfTI-2).",
        )
    header_class = klass.header_class
    size = header_class.template_dtype.itemsize
    block += stream.read(size - 4)
    if len(block) < size:
        raise DataError(path, f"is truncated: {len(block)} bytes, shorter than its {size}-byte NIfTI header.")
    raw = header_class(block, endianness=order, check=False)
    magic, single = raw["magic"].item().decode("latin-1"), header_class.single_magic.decode()
    if magic == header_class.pair_magic.decode():
        raise DataError(
            path,
            f"header magic {magic!r} says the voxels are in a separate .img file; a single-file NIfTI (.nii, "
            f".nii.gz) holds them itself (magic {single!r}).",
        )
    if magic != single:
        raise DataError(path, f"is not a NIfTI file: header magic {magic!r} is not {single!r}.")
    dim = [int(v) for v in raw["dim"]]
    if not 1 <= dim[0] <= 7:
        raise DataError(path, f"header dim[0] is {dim[0]}: a NIfTI image has 1 to 7 dimensions.")
    _positive_sizes(path, "dim[1:]", [str(v) for v in dim[1 : dim[0] + 1]])
    try:
        header = header_class(block, endianness=order, check=True)
        header.get_data_dtype()
    except HeaderDataError as err:
        raise DataError(path, f"NIfTI header is invalid: {_first_line(err)}") from err
    return klass, header, block


class _DataClaim(NamedTuple):
    """What an NRRD or MetaImage header says about its voxel data."""

    sizes: list[int]
    type_name: str
    item_bytes: int
    data_name: str | None  # None: the data follows the header in the same file
    header_bytes: int
    skip: int  # bytes to skip before the data; negative: the data is at the end of the file
    compressed: bool


def _check_itk_header(path: str, fmt: str) -> None:
    """Check the size that an NRRD or MetaImage header claims against the bytes of its data file.

    Raw data must hold the claimed bytes; gzip or zlib data must be able to inflate to them. Other encodings,
    and data spread over several files, are left to SimpleITK.
    """
    with open(path, "rb") as f:
        head = f.read(_HEADER_MAX_BYTES)
    claim = _nrrd_claim(head, path) if fmt == "nrrd" else _metaimage_claim(head, path)
    if claim is None:
        return
    if claim.data_name is None:
        data_path, holder, offset = path, "the file", claim.header_bytes
    else:
        data_path = str(Path(path).parent / claim.data_name)
        if not os.path.isfile(data_path):
            raise DataError(path, f"its data file {data_path} does not exist.")
        holder, offset = data_path, 0
    size = os.path.getsize(data_path)
    held = max(size - offset - max(claim.skip, 0), 0)
    nbytes = int(np.prod(claim.sizes, dtype=object)) * claim.item_bytes
    _check_claim(path, nbytes, _describe(claim.sizes, claim.type_name), holder, held, claim.compressed)


_NRRD_TYPES = {
    **dict.fromkeys(("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"), 1),
    **dict.fromkeys(
        ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
         "unsigned short int", "uint16", "uint16_t"),
        2,
    ),
    **dict.fromkeys(
        ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"), 4
    ),
    **dict.fromkeys(
        ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
         "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
        8,
    ),
}  # fmt: skip
_NRRD_ENCODINGS = {"raw": False, "gzip": True, "gz": True}


def _nrrd_claim(head: bytes, path: str) -> _DataClaim | None:
    """The data claim of an NRRD header; None when its type, encoding or data files are not checked here."""
    lines = head.split(b"\n")
    if not lines[0].startswith(b"NRRD"):
        raise DataError(path, "is not an NRRD file: it does not start with the NRRD magic.")
    fields: dict[str, str] = {}
    header_bytes = len(lines[0]) + 1
    for line in lines[1:]:
        header_bytes += len(line) + 1
        text = line.decode("latin-1").rstrip("\r")
        if not text:
            break
        if text.startswith("#") or ":=" in text:
            continue
        key, _, value = text.partition(": ")
        fields[key.strip().lower().replace(" ", "")] = value.strip()
    sizes = _positive_sizes(path, "sizes", fields.get("sizes", "").split())
    type_name = fields.get("type", "").lower()
    encoding = fields.get("encoding", "").lower()
    data_name = fields.get("datafile")
    # "data file: LIST" and "data file: <format> <min> <max> <step>" spread the data over several files
    if (
        type_name not in _NRRD_TYPES
        or encoding not in _NRRD_ENCODINGS
        or data_name in ("LIST", "")
        or (data_name is not None and " " in data_name)
    ):
        return None
    skip = _header_int(path, "byte skip", fields.get("byteskip", "0"))
    compressed = _NRRD_ENCODINGS[encoding]
    return _DataClaim(sizes, type_name, _NRRD_TYPES[type_name], data_name, header_bytes, skip, compressed)


_MET_TYPES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
    "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


def _metaimage_claim(head: bytes, path: str) -> _DataClaim | None:
    """The data claim of a MetaImage header; None when its type, encoding or data files are not checked here."""
    fields: dict[str, str] = {}
    header_bytes = 0
    for line in head.split(b"\n"):
        header_bytes += len(line) + 1
        key, _, value = line.decode("latin-1").partition("=")
        fields[key.strip().lower()] = value.strip()
        if key.strip().lower() == "elementdatafile":
            break
    else:
        raise DataError(path, "is not a MetaImage file: its header has no ElementDataFile field.")
    sizes = _positive_sizes(path, "DimSize", fields.get("dimsize", "").split())
    channels = _header_int(path, "ElementNumberOfChannels", fields.get("elementnumberofchannels", "1"))
    if channels < 1:
        raise DataError(path, f"header ElementNumberOfChannels is {channels}: a voxel holds at least one value.")
    type_name = fields.get("elementtype", "").upper()
    data_name = fields["elementdatafile"]
    binary = fields.get("binarydata", "true").lower() == "true"
    # "LIST" and file-name patterns with "%" spread the data over several files
    if type_name not in _MET_TYPES or not binary or data_name.upper() == "LIST" or "%" in data_name:
        return None
    compressed = fields.get("compresseddata", "false").lower() == "true"
    local = data_name.upper() == "LOCAL"
    item_bytes = _MET_TYPES[type_name] * channels
    # HeaderSize counts the bytes to skip in a separate data file; local data starts right after the header
    skip = 0 if local else _header_int(path, "HeaderSize", fields.get("headersize", "0"))
    return _DataClaim(sizes, type_name, item_bytes, None if local else data_name, header_bytes, skip, compressed)
