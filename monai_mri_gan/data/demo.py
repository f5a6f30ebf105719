"""The embedded demo cohort: procedurally generated T1-weighted post-contrast head MRI, offline and deterministic.

Half the subjects are written as DICOM series (MR Image Storage, oblique, made-up identifiers) and half as NIfTI
with oblique affines; every subject has a BraTS-labelled tumour mask in NIfTI on its image's grid, all zero for
subjects without a tumour. A MONAI/Decathlon ``datalist.json`` lists them with paths relative to the cohort root.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from ..utils import rotation_matrix
from .phantom import Phantom, brain_phantom

__all__ = [
    "CACHE_ENV",
    "DEMO_CLASSES",
    "DEMO_COHORT_VERSION",
    "DEMO_FIELD_OF_VIEW",
    "DEMO_SHAPE",
    "DemoSubject",
    "default_cache_dir",
    "demo_cohort",
    "demo_subject",
    "load_demo_volume",
    "make_demo_cohort",
    "render_demo_figure",
    "tumour_subjects",
]

#: Class names, indexed by the datalist's ``class`` value.
DEMO_CLASSES = ("no_tumour", "tumour")
#: Version of the generator; part of the cache folder's name, bumped whenever the pixel data would change.
DEMO_COHORT_VERSION = 1
#: Default grid (left-right, posterior-anterior, slices); the field of view is fixed, so shape sets the resolution.
DEMO_SHAPE = (144, 160, 40)
#: Field of view in mm, shared by every subject of a cohort: (180, 208, 140) over the default shape gives
#: 1.25 x 1.3 x 3.5 mm voxels.
DEMO_FIELD_OF_VIEW = (180.0, 208.0, 140.0)
#: Environment variable that moves the cache of :func:`demo_cohort`.
CACHE_ENV = "MONAI_MRI_GAN_CACHE"

_TUMOUR_FRACTION = 0.25
_COMPLETE_MARKER = ".complete"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DESCRIPTION = "monai-mri-gan demo phantom (synthetic, not patient data)"


@dataclass(frozen=True)
class DemoSubject:
    """One demo subject as it is written: arrays in storage order and their RAS affine.

    Args:
        subject: subject id, e.g. ``"demo-0003"``.
        index: position in the cohort.
        tumour: whether the subject carries a tumour (class 1).
        storage: ``"dicom"`` or ``"nifti"``.
        image: int16 T1-weighted post-contrast image in scanner units, axes in storage order.
        mask: uint8 BraTS tumour mask (0, 1 necrotic core, 2 oedema, 4 enhancing rim) on the same grid.
        tissue: uint8 tissue labels (:class:`~monai_mri_gan.data.phantom.Tissue`) on the same grid.
        affine: 4x4 voxel-to-RAS affine of the stored arrays (oblique, anisotropic).
    """

    subject: str
    index: int
    tumour: bool
    storage: str
    image: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray
    affine: np.ndarray


def _flip(arrays: Sequence[np.ndarray], affine: np.ndarray, axes: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Reverse ``axes`` of every array and return the affine that keeps each voxel where it was."""
    affine = affine.copy()
    out = list(arrays)
    for axis in axes:
        n = out[0].shape[axis]
        affine[:3, 3] += affine[:3, axis] * (n - 1)
        affine[:3, axis] *= -1
        out = [np.flip(a, axis) for a in out]
    return [np.ascontiguousarray(a) for a in out], affine


def _acquisition(rng: np.random.Generator, storage: str, shape: Sequence[int], spacing: np.ndarray) -> np.ndarray:
    """An oblique RAS affine for the R-A-S ordered grid: tilted about every axis, off-centre."""
    if storage == "dicom":
        # An axial acquisition angled along the AC-PC line, with a little roll and yaw.
        angles = [rng.uniform(8, 18) * rng.choice([-1, 1]), rng.uniform(2, 6) * rng.choice([-1, 1])]
        angles.append(rng.uniform(2, 6) * rng.choice([-1, 1]))
    else:
        angles = [rng.uniform(3, 12) * rng.choice([-1, 1]) for _ in range(3)]
    rot = rotation_matrix(np.deg2rad(np.asarray(angles, dtype=float)))
    centre = np.array([rng.uniform(-15, 15), rng.uniform(-20, 20), rng.uniform(-20, 20)])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.asarray(shape, dtype=float) - 1) / 2)
    return affine


def _storage(index: int) -> str:
    return "dicom" if index % 2 == 0 else "nifti"


def demo_subject(index: int, seed: int = 0, shape: Sequence[int] = DEMO_SHAPE, tumour: bool = False) -> DemoSubject:
    """Generate one demo subject exactly as :func:`make_demo_cohort` writes it (same seed, index and shape).

    Even indices are stored as DICOM (voxel axes towards left, posterior, superior, as scanners store axial
    series); odd indices as NIfTI, alternately in RAS and LAS order.

    Args:
        index: position of the subject in the cohort; with ``seed`` it decides the anatomy, noise and geometry.
        seed: cohort seed.
        shape: grid size (left-right, posterior-anterior, slices) within the fixed field of view.
        tumour: whether to grow a tumour.

    Returns:
        the subject's arrays in storage order and their RAS affine.
    """
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(DEMO_FIELD_OF_VIEW) / np.asarray(shape)
    phantom: Phantom = brain_phantom(shape, tuple(spacing), np.random.default_rng([seed, index, 0]), tumour=tumour)
    storage = _storage(index)
    affine = _acquisition(np.random.default_rng([seed, index, 1]), storage, shape, spacing)
    image = np.clip(np.rint(phantom.image), 0, np.iinfo(np.int16).max).astype(np.int16)
    if storage == "dicom":
        flips = (0, 1)
    else:
        flips = () if (index // 2) % 2 == 0 else (0,)
    (image, mask, tissue), affine = _flip((image, phantom.tumour, phantom.tissue), affine, flips)
    return DemoSubject(f"demo-{index:04d}", index, tumour, storage, image, mask, tissue, affine)


def tumour_subjects(seed: int, num_subjects: int, tumour_fraction: float = _TUMOUR_FRACTION) -> list[int]:
    """Indices of the subjects that carry a tumour, split as evenly as possible between DICOM and NIfTI.

    Args:
        seed: cohort seed.
        num_subjects: cohort size.
        tumour_fraction: share of subjects with a tumour, rounded to the nearest count.

    Returns:
        the sorted indices.

    Raises:
        ValueError: when ``tumour_fraction`` is outside [0, 1].
    """
    if not 0.0 <= tumour_fraction <= 1.0:
        raise ValueError(f"tumour_fraction must lie in [0, 1], got {tumour_fraction}.")
    count = int(round(tumour_fraction * num_subjects))
    rng = np.random.default_rng([seed, 2**31 - 1])
    dicom, nifti = (rng.permutation(np.arange(start, num_subjects, 2)).tolist() for start in (0, 1))
    alternating = [i for pair in zip_longest(dicom, nifti) for i in pair if i is not None]
    return sorted(alternating[:count])


def _ds(value: float) -> str:
    return format_number_as_ds(float(value))


def _write_dicom_series(folder: Path, subject: DemoSubject, seed: int) -> None:
    """Write one MR Image Storage file per slice, with made-up identifiers and oblique geometry."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng([seed, subject.index, 2])
    number = subject.index
    lps = _LPS @ subject.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row_cosine, col_cosine = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    normal = lps[:3, 2] / spacing[2]

    def uid(kind: str) -> str:
        return generate_uid(entropy_srcs=["monai-mri-gan demo", str(DEMO_COHORT_VERSION), str(seed), str(number), kind])

    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame")
    study_date = datetime.date(2023, 1, 2) + datetime.timedelta(days=int(rng.integers(0, 600)))
    birth_date = datetime.date(1940, 1, 1) + datetime.timedelta(days=int(rng.integers(0, 365 * 50)))
    age = (study_date - birth_date).days // 365
    study_time = f"{int(rng.integers(7, 19)):02d}{int(rng.integers(0, 60)):02d}{int(rng.integers(0, 60)):02d}"
    window_centre = int(np.percentile(subject.image[subject.image > 100], 60)) if (subject.image > 100).any() else 500
    for k in range(subject.image.shape[2]):
        sop_uid = uid(f"instance{k}")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study_time
        ds.AccessionNumber = f"DEMOACC{number:05d}"
        ds.Modality = "MR"
        ds.Manufacturer = "MONAI-MRI-GAN phantom"
        ds.InstitutionName = "Demo Phantom Hospital"
        ds.ReferringPhysicianName = "DEMO^Referrer"
        ds.StationName = "DEMOMR01"
        ds.StudyDescription = "MRI HEAD WITH CONTRAST"
        ds.SeriesDescription = "AX T1 POST GD"
        ds.ProtocolName = "AX T1 POST GD"
        ds.PatientName = f"DEMO^Subject{number:04d}"
        ds.PatientID = f"DEMOPID{number:05d}"
        ds.PatientBirthDate = birth_date.strftime("%Y%m%d")
        ds.PatientSex = "F" if rng.random() < 0.5 else "M"
        ds.PatientAge = f"{age:03d}Y"
        ds.ContrastBolusAgent = "Gadobutrol"
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "SK"
        ds.MRAcquisitionType = "2D"
        ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.RepetitionTime = "550"
        ds.EchoTime = "10"
        ds.MagneticFieldStrength = "1.5"
        ds.FlipAngle = "90"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = f"{number + 1}"
        ds.SeriesNumber = 5
        ds.InstanceNumber = k + 1
        position = lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_cosine, *col_cosine)]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(position @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        # Rows follow the second voxel axis and columns the first: pixel (r, c) is voxel (c, r, k).
        pixels = np.ascontiguousarray(subject.image[:, :, k].T)
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = str(window_centre)
        ds.WindowWidth = str(2 * window_centre)
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "US"
        ds.PixelData = pixels.astype("<i2").tobytes()
        ds.save_as(folder / f"IM{k + 1:04d}.dcm", enforce_file_format=True)


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray, description: str) -> None:
    """Write a gzipped NIfTI-1 with qform and sform both set (scanner code), mm units, and no timestamp."""
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units(xyz="mm")
    image.header["descrip"] = description.encode()[:79]
    path.write_bytes(gzip.compress(image.to_bytes(), compresslevel=1, mtime=0))


def _write_cohort(root: Path, seed: int, num_subjects: int, shape: Sequence[int], tumour_fraction: float) -> Path:
    """Generate and write every subject and the datalist into ``root`` (which must exist and be empty)."""
    tumours = set(tumour_subjects(seed, num_subjects, tumour_fraction))
    (root / "dicom").mkdir()
    (root / "nifti").mkdir()
    items = []
    for index in range(num_subjects):
        subject = demo_subject(index, seed, shape, tumour=index in tumours)
        folder = root / subject.storage
        if subject.storage == "dicom":
            image_path = folder / subject.subject
            _write_dicom_series(image_path, subject, seed)
        else:
            image_path = folder / f"{subject.subject}.nii.gz"
            _write_nifti(image_path, subject.image, subject.affine, _DESCRIPTION)
        label_path = folder / f"{subject.subject}_seg.nii.gz"
        _write_nifti(label_path, subject.mask, subject.affine, _DESCRIPTION + " tumour mask")
        items.append(
            {
                "image": image_path.relative_to(root).as_posix(),
                "label": label_path.relative_to(root).as_posix(),
                "class": int(subject.tumour),
                "subject": subject.subject,
            }
        )
    spacing = [round(float(f / n), 6) for f, n in zip(DEMO_FIELD_OF_VIEW, shape, strict=True)]
    datalist = {
        "name": "monai-mri-gan demo cohort",
        "description": "Procedurally generated T1-weighted post-contrast head MRI phantoms (synthetic, not patient "
        "data); half DICOM series, half NIfTI, oblique geometry; BraTS-labelled tumour masks.",
        "reference": "monai_mri_gan.data.demo",
        "licence": "CC0-1.0",
        "release": f"{DEMO_COHORT_VERSION}",
        "tensorImageSize": "3D",
        "modality": {"0": "T1c"},
        "labels": {"0": "background", "1": "necrotic core", "2": "oedema", "4": "enhancing rim"},
        "classes": list(DEMO_CLASSES),
        "seed": seed,
        "shape": list(shape),
        "spacing": spacing,
        "numTraining": num_subjects,
        "training": items,
    }
    path = root / "datalist.json"
    path.write_text(json.dumps(datalist, indent=2))
    marker = {"version": DEMO_COHORT_VERSION, "seed": seed, "num_subjects": num_subjects, "shape": list(shape)}
    marker["tumour_fraction"] = tumour_fraction
    (root / _COMPLETE_MARKER).write_text(json.dumps(marker))
    return path


def _is_complete(root: Path, expected: dict | None = None) -> bool:
    """Whether ``root`` holds a finished cohort: marker and datalist present and every listed path there."""
    try:
        marker = json.loads((root / _COMPLETE_MARKER).read_text())
        datalist = json.loads((root / "datalist.json").read_text())
    except (OSError, ValueError):
        return False
    if expected is not None and any(marker.get(k) != v for k, v in expected.items()):
        return False
    items = datalist.get("training", [])
    if len(items) != marker.get("num_subjects"):
        return False
    return all((root / item[key]).exists() for item in items for key in ("image", "label"))


def _remove_stale_builds(parent: Path, name: str) -> None:
    """Delete temporary build folders of ``name`` left by processes that no longer run."""
    for folder in parent.glob(f".{name}.building-*"):
        try:
            pid = int(folder.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def make_demo_cohort(
    root: str | os.PathLike,
    seed: int = 0,
    num_subjects: int = 32,
    shape: Sequence[int] = DEMO_SHAPE,
    tumour_fraction: float = _TUMOUR_FRACTION,
    overwrite: bool = False,
) -> Path:
    """Generate the demo cohort into ``root``, atomically: it is built in a temporary sibling folder and renamed.

    Args:
        root: the cohort folder to create.
        seed: decides everything; the same seed gives byte-identical files.
        num_subjects: number of subjects; even indices are DICOM series, odd ones NIfTI.
        shape: grid size (left-right, posterior-anterior, slices) within a fixed 180 x 208 x 140 mm field of view.
        tumour_fraction: share of subjects with a tumour (class 1); the default keeps tumour slices below one in
            ten of the slices with head.
        overwrite: replace an existing, non-empty ``root``.

    Returns:
        the path of ``datalist.json``.

    Raises:
        FileExistsError: when ``root`` exists, is not empty and ``overwrite`` is False.
        ValueError: when ``num_subjects`` < 1, ``shape`` is not three sizes of at least 8, or ``tumour_fraction``
            is outside [0, 1].
    """
    root = Path(root).expanduser().absolute()
    if num_subjects < 1:
        raise ValueError(f"num_subjects must be at least 1, got {num_subjects}.")
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes of at least 8, got {tuple(shape)}.")
    tumour_subjects(seed, num_subjects, tumour_fraction)
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise FileExistsError(f"{root}: already exists and is not empty; pass overwrite=True to replace it.")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(root.parent, root.name)
    building = Path(tempfile.mkdtemp(prefix=f".{root.name}.building-{os.getpid()}-", dir=root.parent))
    try:
        _write_cohort(building, int(seed), int(num_subjects), tuple(int(n) for n in shape), float(tumour_fraction))
        if overwrite and root.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old-", dir=root.parent))
            os.replace(root, old / root.name)
            os.replace(building, root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            # Fails if another process has put a non-empty cohort there in the meantime.
            os.replace(building, root)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return root / "datalist.json"


def default_cache_dir() -> Path:
    """The cache folder: ``$MONAI_MRI_GAN_CACHE`` if set, else ``~/.cache/monai_mri_gan``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "monai_mri_gan"


def demo_cohort(
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    num_subjects: int = 32,
    shape: Sequence[int] = DEMO_SHAPE,
) -> Path:
    """The demo cohort, built on first use in a cache folder and reused afterwards.

    The default cohort (32 subjects of 144 x 160 x 40 voxels) lives in ``<cache_dir>/demo_cohort_v1_seed<seed>``;
    other sizes get a suffix naming them. A folder without its completion marker, or whose datalist names a
    missing file, is rebuilt; an interrupted build leaves only a hidden temporary folder, which a later build
    removes once its process has gone.

    Args:
        cache_dir: parent folder of the cohort; default :func:`default_cache_dir`.
        seed: cohort seed.
        num_subjects: number of subjects.
        shape: grid size (left-right, posterior-anterior, slices).

    Returns:
        the path of the cohort's ``datalist.json``.
    """
    parent = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    shape = [int(n) for n in shape]
    name = f"demo_cohort_v{DEMO_COHORT_VERSION}_seed{seed}"
    if num_subjects != 32 or shape != list(DEMO_SHAPE):
        name += f"_n{num_subjects}_{'x'.join(str(n) for n in shape)}"
    root = parent / name
    expected = {"version": DEMO_COHORT_VERSION, "seed": seed, "num_subjects": num_subjects, "shape": shape}
    if _is_complete(root, expected):
        return root / "datalist.json"
    try:
        return make_demo_cohort(root, seed=seed, num_subjects=num_subjects, shape=shape, overwrite=root.exists())
    except OSError:
        # Another process may have finished the same build first: use its cohort if it is whole.
        if _is_complete(root, expected):
            return root / "datalist.json"
        raise


def load_demo_volume(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a demo image (DICOM series folder or NIfTI file) as an array and its voxel-to-RAS affine.

    Args:
        path: a DICOM series folder or a NIfTI file.

    Returns:
        the array in stored voxel order (x, y, z) and its 4x4 RAS affine.
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path)))
        image = reader.Execute()
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
        lps[:3, 3] = image.GetOrigin()
        return array, _LPS @ lps
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def _canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reorder the voxel axes of ``array`` to point (closest to) right, anterior, superior."""
    ornt = nib.orientations.io_orientation(affine)
    return nib.orientations.apply_orientation(array, ornt)


def render_demo_figure(path: str | os.PathLike, cohort_root: str | os.PathLike | None = None, columns: int = 6) -> Path:
    """Render axial slices of the demo cohort to a PNG: a row without tumours above a row with tumours.

    Slices are shown in radiological convention (patient's right on the left, anterior at the top), in mm
    proportions, each volume windowed from 0 to its 99.5th percentile.

    Args:
        path: the PNG to write.
        cohort_root: a cohort folder; default the cached :func:`demo_cohort`.
        columns: slices per row.

    Returns:
        the path written.
    """
    from PIL import Image

    root = Path(cohort_root) if cohort_root is not None else demo_cohort().parent
    datalist = json.loads((root / "datalist.json").read_text())
    spacing = datalist["spacing"]
    rows = []
    for label_class in (0, 1):
        items = [item for item in datalist["training"] if item["class"] == label_class][:columns]
        tiles = []
        for n, item in enumerate(items):
            image, affine = load_demo_volume(root / item["image"])
            mask, _ = load_demo_volume(root / item["label"])
            image, mask = _canonical(image, affine), _canonical(mask, affine)
            if label_class:
                k = int(np.argmax(np.isin(mask, (1, 4)).sum(axis=(0, 1))))
            else:
                head = np.flatnonzero((image > 200).sum(axis=(0, 1)) > 200)
                k = int(head[0] + (0.3 + 0.4 * n / max(columns - 1, 1)) * (head[-1] - head[0]))
            top = max(float(np.percentile(image, 99.5)), 1.0)
            view = np.clip(image[::-1, ::-1, k].T / top * 255, 0, 255).astype(np.uint8)
            size = (round(view.shape[1] * spacing[0]), round(view.shape[0] * spacing[1]))
            tiles.append(np.asarray(Image.fromarray(view).resize(size, Image.Resampling.BICUBIC)))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]))) for r in rows], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
