"""A MONAI image reader backed by SimpleITK, with strict DICOM series geometry checks.

DICOM series are ordered by slice position along the slice normal (never by InstanceNumber), checked for
consistent geometry, and read with ``SimpleITK.ImageSeriesReader``. Only geometry reaches the metadata:
no patient, study or series identifier from a DICOM header is ever copied.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import SimpleITK as sitk
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple
from pydicom.dataset import Dataset

from monai_mri_gan.errors import DataError

__all__ = [
    "VOLUME_SUFFIXES",
    "DICOM_SUFFIXES",
    "SimpleITKReader",
    "SimpleITKVolume",
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


def _affine_ras(image: sitk.Image) -> np.ndarray:
    """4x4 RAS affine of a 3D SimpleITK image."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return _LPS_TO_RAS @ affine


def _set_affine_ras(image: sitk.Image, affine: np.ndarray) -> None:
    """Give a 3D SimpleITK image the geometry of a RAS affine (no shear)."""
    lps = _LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())


@dataclass
class SimpleITKVolume:
    """A volume read by :class:`SimpleITKReader`: a 3D SimpleITK image and where it came from.

    Args:
        image: the 3D image (LPS geometry, as SimpleITK holds it).
        path: the file or folder it was read from, for error messages.
        source_format: "dicom", "nifti", "nrrd" or "metaimage".
    """

    image: sitk.Image
    path: str
    source_format: str


@dataclass
class ReadFailure:
    """The error of a failed :meth:`SimpleITKReader.read`, raised by :meth:`SimpleITKReader.get_data`.

    Args:
        error: what went wrong, naming the file or folder.
    """

    error: DataError


class SimpleITKReader(ImageReader):
    """Load DICOM series, single DICOM files, NIfTI, NRRD and MetaImage with SimpleITK, geometry in RAS.

    Use it with ``LoadImage(reader=SimpleITKReader())`` or ``LoadImaged(keys, reader=SimpleITKReader())``.
    A folder is one DICOM series; a list of DICOM files is also read as one series (discovery hands over
    such lists when a folder holds several series). A list of other volumes is stacked as channels, as
    MONAI readers do, and their geometry must agree.

    The returned array has axes (x, y, z) (not reversed). Metadata: ``affine`` and ``original_affine``
    (RAS), ``space`` ("RAS"), ``spatial_shape``, ``spacing``, ``original_channel_dim`` (nan for scalar
    volumes), ``source_format`` and ``source_dtype`` (numpy dtype name of the values after any DICOM
    rescale slope and intercept). Nothing else from the file headers is copied.

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
    ) -> SimpleITKVolume | list[SimpleITKVolume] | ReadFailure:
        """Read a volume, a DICOM series (folder or list of files), or several volumes to stack as channels.

        Bad input does not raise here: it is returned as a :class:`ReadFailure` that :meth:`get_data` raises.
        ``LoadImage`` catches any error from ``read`` and silently falls back to MONAI's other readers (which,
        for instance, load a broken DICOM series with an identity affine); ``get_data`` is outside that net.

        Args:
            data: a file or folder path, or a sequence of paths.
            kwargs: ``volume_index`` and ``series_uid``, overriding the reader's own for this call.

        Returns:
            one :class:`SimpleITKVolume`, a list of them when several non-DICOM volumes are given, or a
            :class:`ReadFailure` holding the :class:`DataError` (unsupported or unreadable file, bad DICOM
            series, NaN or infinite voxels, 4D image without ``volume_index``).
        """
        try:
            return self._read(data, **kwargs)
        except DataError as err:
            return ReadFailure(err)

    def _read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> SimpleITKVolume | list[SimpleITKVolume]:
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

    def get_data(self, img: SimpleITKVolume | Sequence[SimpleITKVolume] | ReadFailure) -> tuple[np.ndarray, dict]:
        """Extract the (x, y, z[, c]) array and the geometry metadata of what :meth:`read` returned.

        Args:
            img: a :class:`SimpleITKVolume`, or a list of them to stack on a new first (channel) axis.

        Returns:
            the array and its metadata dictionary.

        Raises:
            DataError: the error :meth:`read` deferred, or volumes to stack that differ in shape or geometry.
        """
        if isinstance(img, ReadFailure):
            raise img.error
        volumes = list(ensure_tuple(img))
        pairs = [self._array_and_meta(v) for v in volumes]
        arrays, metas = [a for a, _ in pairs], [m for _, m in pairs]
        if len(volumes) == 1:
            return arrays[0], metas[0]
        ref = metas[0]
        for vol, meta in zip(volumes[1:], metas[1:], strict=True):
            if not np.array_equal(meta[MetaKeys.SPATIAL_SHAPE], ref[MetaKeys.SPATIAL_SHAPE]) or not np.allclose(
                meta[MetaKeys.AFFINE], ref[MetaKeys.AFFINE], atol=1e-4
            ):
                raise DataError(vol.path, f"shape or geometry differs from {volumes[0].path}: cannot stack them.")
        meta = dict(ref)
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        return np.stack(arrays, axis=0), meta

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

    def _read_one(
        self, paths: list[str], fmt: str, volume_index: int | None, series_uid: str | None
    ) -> SimpleITKVolume:
        where = paths[0] if len(paths) == 1 else str(Path(paths[0]).parent)
        if fmt == "dicom":
            image = self._read_dicom(paths, series_uid)
        else:
            try:
                image = sitk.ReadImage(paths[0])
            except RuntimeError as err:
                problem = f"SimpleITK cannot read it (corrupt or truncated?): {_first_line(err)}"
                raise DataError(paths[0], problem) from err
        if fmt == "nifti":
            _check_nifti_finite(paths[0], volume_index)
        image = _to_3d(image, where, volume_index)
        _check_finite(image, where)
        return SimpleITKVolume(image=image, path=where, source_format=fmt)

    def _read_dicom(self, paths: list[str], series_uid: str | None) -> sitk.Image:
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
        _set_affine_ras(image, affine)
        return image

    @staticmethod
    def _array_and_meta(volume: SimpleITKVolume) -> tuple[np.ndarray, dict]:
        image = volume.image
        array = sitk.GetArrayFromImage(image)  # (z, y, x[, c])
        scalar = image.GetNumberOfComponentsPerPixel() == 1
        array = array.T if scalar else np.moveaxis(array.T, 0, -1)
        affine = _affine_ras(image)
        meta = {
            MetaKeys.ORIGINAL_AFFINE: affine,
            MetaKeys.AFFINE: affine.copy(),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.SPATIAL_SHAPE: np.asarray(image.GetSize()),
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if scalar else -1,
            "spacing": np.asarray(image.GetSpacing()),
            "source_format": volume.source_format,
            "source_dtype": array.dtype.name,
        }
        return array, meta


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


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
    read = _affine_ras(image)
    # a single slice has no through-plane geometry of its own in SimpleITK: compare in-plane axes and origin
    cols = [0, 1, 2, 3] if n_slices > 1 else [0, 1, 3]
    if not np.allclose(read[:3, cols], affine[:3, cols], atol=_POSITION_TOL_MM, rtol=1e-4):
        raise DataError(where, "geometry read by SimpleITK disagrees with the DICOM headers.")


def _to_3d(image: sitk.Image, where: str, volume_index: int | None) -> sitk.Image:
    """Bring an image to 3D: 2D becomes one slice, 4D needs ``volume_index``."""
    dim = image.GetDimension()
    if dim == 2:
        return sitk.JoinSeries([image])
    if dim == 4:
        n = image.GetSize()[3]
        if volume_index is None:
            raise DataError(
                where,
                f"is 4D with {n} volumes; choose one with SimpleITKReader(volume_index=i), 0 <= i < {n}.",
            )
        if not -n <= volume_index < n:
            raise DataError(where, f"volume_index {volume_index} is out of range: the image has {n} volumes.")
        return image[:, :, :, volume_index % n]
    if dim != 3:
        raise DataError(where, f"has {dim} dimensions; only 2D, 3D and 4D (with volume_index) are supported.")
    return image


def _check_finite(image: sitk.Image, where: str) -> None:
    """Refuse NaN or infinite voxels, which would silently poison normalisation."""
    _raise_if_nonfinite(sitk.GetArrayViewFromImage(image), where)


def _raise_if_nonfinite(array: np.ndarray, where: str) -> None:
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise DataError(where, f"has {bad} NaN or infinite voxel(s).")


def _check_nifti_finite(path: str, volume_index: int | None) -> None:
    """Read a NIfTI's voxels with nibabel too: ITK's NIfTI reader turns NaN and inf into 0 and pads a truncated
    file with zeros, both silently."""
    try:
        data = np.asanyarray(nib.load(path).dataobj)
    except Exception as err:
        raise DataError(path, f"cannot be read (truncated or corrupt?): {_first_line(err)}") from err
    if data.ndim == 4 and volume_index is not None and -data.shape[3] <= volume_index < data.shape[3]:
        data = data[..., volume_index]
    _raise_if_nonfinite(data, path)
