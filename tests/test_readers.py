"""Tests for SimpleITKReader: geometry of every source format, DICOM series checks, and bad-input errors."""

import glob
import gzip
import json
import os
import re
import resource
import struct
import time
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk
from conftest import oblique_affine
from monai.transforms import Compose, LoadImage, LoadImaged
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from monai_mri_gan.data import SliceCohort, volume_transforms
from monai_mri_gan.data.readers import LoadedVolume, SimpleITKReader, file_format, read_dicom_series_geometry
from monai_mri_gan.errors import DataError

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
CT5N = Path(pydicom.data.get_testdata_file("MR_small.dcm")).parent / "dicomdirtests" / "98892001" / "CT5N"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
PATIENT_NAME, PATIENT_ID = "DOE^JANE", "PID-998877"
MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def dicom_slice(pixels, position, orientation, pixel_spacing, series_uid, study_uid, instance, **extra):
    """One MR DICOM slice (int16 pixels given as rows x columns) with the given geometry tags."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MR_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19700101"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.StudyDate = study_uid, series_uid, "20240102"
    ds.InstitutionName, ds.AccessionNumber = "General Hospital", "ACC123"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, instance
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if position is not None:
        ds.ImagePositionPatient = [f"{v:.10g}" for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in orientation]
    if pixel_spacing is not None:
        ds.PixelSpacing = [f"{v:.10g}" for v in pixel_spacing]
    ds.SliceThickness = "2.0"
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<i2").tobytes()
    return ds


def oblique_orientation(angles=(0.2, -0.15, 0.3)):
    """Row and column direction cosines (LPS) of an oblique plane, and its normal."""
    rot = oblique_affine(spacing=(1, 1, 1), angles=angles)[:3, :3]
    return rot[:, 0], rot[:, 1], rot[:, 2]


def write_dicom_series(
    folder,
    shape=(6, 5, 4),
    spacing=(0.7, 1.3, 2.2),
    origin=(-20.5, 30.25, -12.0),
    angles=(0.2, -0.15, 0.3),
    seed=0,
    series_uid=None,
    study_uid=None,
    names=None,
    rescale=(1.0, 0.0),
    **extra,
):
    """Write an oblique, anisotropic MR series (shuffled InstanceNumbers, extensionless names) into ``folder``.

    Returns the files (in slice order), the voxel data (x, y, z) after rescale, and the LPS slice positions.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    row, col, normal = oblique_orientation(angles)
    data = np.random.default_rng(seed).integers(-300, 1200, size=shape).astype(np.int16)
    series_uid, study_uid = series_uid or generate_uid(), study_uid or generate_uid()
    instances = np.random.default_rng(seed + 1).permutation(shape[2]) + 1
    files, positions = [], []
    for k in range(shape[2]):
        position = np.asarray(origin) + k * spacing[2] * normal
        ds = dicom_slice(
            data[:, :, k].T,
            position,
            np.concatenate([row, col]),
            (spacing[1], spacing[0]),
            series_uid,
            study_uid,
            int(instances[k]),
            RescaleSlope=f"{rescale[0]:g}",
            RescaleIntercept=f"{rescale[1]:g}",
            **extra,
        )
        name = names[k] if names else f"IM{int(instances[k]) * 7919 % 10007:05d}"
        ds.save_as(folder / name, enforce_file_format=True)
        files.append(str(folder / name))
        positions.append(position)
    return files, data * rescale[0] + rescale[1], np.asarray(positions)


def load(path, **kwargs):
    return LoadImage(reader=SimpleITKReader(**kwargs), image_only=True, ensure_channel_first=True)(path)


def assert_no_identifiers(meta):
    text = repr({k: v for k, v in meta.items() if k != "filename_or_obj"})
    for secret in (PATIENT_NAME, PATIENT_ID, "19700101", "20240102", "General Hospital", "ACC123", "1.2.826"):
        assert secret not in text
    assert set(meta) <= {
        "affine", "original_affine", "space", "spatial_shape", "original_channel_dim", "spacing",
        "source_format", "source_dtype", "filename_or_obj", "acquisition",
    }  # fmt: skip


def test_nifti_oblique_affine_and_data(tmp_path, rng):
    affine = oblique_affine()
    data = rng.normal(size=(7, 9, 5)).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    img = load(path)
    assert img.shape == (1, 7, 9, 5)
    np.testing.assert_allclose(img.affine.numpy(), affine, atol=1e-5)
    np.testing.assert_array_equal(img[0].numpy(), data)
    assert img.meta["space"] == "RAS"
    assert img.meta["source_format"] == "nifti" and img.meta["source_dtype"] == "float32"
    np.testing.assert_array_equal(img.meta["spatial_shape"], [7, 9, 5])
    np.testing.assert_allclose(img.meta["spacing"], [0.9, 1.1, 2.5], atol=1e-5)
    np.testing.assert_allclose(img.meta["original_affine"], affine, atol=1e-5)


def test_dicom_series_oblique_nested_shuffled(tmp_path):
    folder = tmp_path / "patient" / "study" / "series"
    files, data, positions = write_dicom_series(folder, rescale=(2.0, -100.0))
    img = load(folder)
    assert img.shape == (1, 6, 5, 4)
    np.testing.assert_array_equal(img[0].numpy(), data)
    affine = img.affine.numpy()

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ref = reader.Execute()
    for index in [(0, 0, 0), (5, 4, 3), (2, 3, 1), (5, 0, 2)]:
        world_ras = LPS_TO_RAS[:3, :3] @ np.asarray(ref.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(affine[:3, :3] @ index + affine[:3, 3], world_ras, atol=1e-5)
    for k, position in enumerate(positions):  # slice k of the volume sits where its header says
        np.testing.assert_allclose(affine @ [0, 0, k, 1], LPS_TO_RAS @ [*position, 1], atol=1e-5)
    np.testing.assert_allclose(img.meta["spacing"], [0.7, 1.3, 2.2], atol=1e-6)
    assert img.meta["source_format"] == "dicom"
    assert img.meta["source_dtype"] == sitk.GetArrayViewFromImage(ref).dtype.name
    assert_no_identifiers(img.meta)


def test_acquisition_whitelist_from_dicom_and_bids(tmp_path):
    """Field strength, TR, TE, TI, flip angle, modality and contrast reach the meta in BIDS units; free text not."""
    folder = tmp_path / "series"
    write_dicom_series(folder, MagneticFieldStrength="1.5", RepetitionTime="550", EchoTime="12.5",
                       FlipAngle="70", ContrastBolusAgent="GADOVIST", SeriesDescription=f"T1 {PATIENT_NAME}",
                       ProtocolName=PATIENT_ID)
    meta = load(folder).meta
    assert json.loads(meta["acquisition"]) == {"Modality": "MR", "MagneticFieldStrength": 1.5, "RepetitionTime": 0.55,
                                               "EchoTime": 0.0125, "FlipAngle": 70.0, "ContrastAgentGiven": True}
    assert_no_identifiers(meta)
    assert "GADOVIST" not in meta["acquisition"]
    # a NIfTI with the BIDS sidecar dcm2niix writes; values of the wrong kind are dropped, not copied
    path = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 5, 3), np.float32), oblique_affine()), path)
    (tmp_path / "sub-01_T1w.json").write_text(json.dumps({
        "Modality": "MR", "MagneticFieldStrength": 3, "RepetitionTime": 2.3, "EchoTime": "0.003 (see notes)",
        "InversionTime": 0.9, "FlipAngle": float("nan"), "ContrastBolusIngredient": "", "SeriesDescription":
        PATIENT_NAME, "PatientName": PATIENT_NAME}))
    assert json.loads(load(path).meta["acquisition"]) == {
        "Modality": "MR", "MagneticFieldStrength": 3.0, "RepetitionTime": 2.3, "InversionTime": 0.9,
        "ContrastAgentGiven": False}
    (tmp_path / "sub-01_T1w.json").write_text("{not json")
    assert load(path).meta["acquisition"] == "{}"


def test_read_dicom_series_geometry_orders_by_position(tmp_path):
    files, _, positions = write_dicom_series(tmp_path / "s")
    shuffled = [files[k] for k in (2, 0, 3, 1)]
    ordered, affine = read_dicom_series_geometry(shuffled)
    assert ordered == files
    np.testing.assert_allclose(affine[:3, 3], LPS_TO_RAS[:3, :3] @ positions[0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), [0.7, 1.3, 2.2], atol=1e-6)


def test_list_of_dicom_files_is_one_series(tmp_path):
    files, data, _ = write_dicom_series(tmp_path / "s")
    img = load(files[::-1])
    assert img.shape == (1, 6, 5, 4)
    np.testing.assert_array_equal(img[0].numpy(), data)


def test_ct5n_series():
    img = load(CT5N)
    assert img.shape == (1, 16, 16, 5)
    np.testing.assert_allclose(img.meta["spacing"], [0.488281, 0.488281, 2.5], atol=1e-6)
    headers = sorted((pydicom.dcmread(f) for f in glob.glob(str(CT5N / "*"))), key=lambda d: d.ImagePositionPatient[2])
    expected = np.stack([d.pixel_array.T * d.RescaleSlope + d.RescaleIntercept for d in headers], axis=-1)
    np.testing.assert_array_equal(img[0].numpy(), expected)
    np.testing.assert_allclose(
        img.affine.numpy(),
        [[-0.488281, 0, 0, 72.199997], [0, -0.488281, 0, 143.0], [0, 0, 2.5, -1.2375], [0, 0, 0, 1]],
        atol=1e-5,
    )
    assert img.meta["source_dtype"] == "int32"


def test_single_dicom_file():
    path = pydicom.data.get_testdata_file("MR_small.dcm")
    img = load(path)
    ds = pydicom.dcmread(path)
    assert img.shape == (1, 64, 64, 1)
    np.testing.assert_array_equal(img[0, :, :, 0].numpy(), ds.pixel_array.T)
    np.testing.assert_allclose(img.meta["spacing"], [0.3125, 0.3125, 0.8], atol=1e-6)
    np.testing.assert_allclose(img.affine[:3, 3].numpy(), [83.9063, 91.2, 6.6406], atol=1e-5)
    assert img.meta["source_dtype"] == "int16"


def sitk_oblique_image(rng, size=(6, 7, 5)):
    image = sitk.GetImageFromArray(rng.normal(size=size[::-1]).astype(np.float32))
    lps = LPS_TO_RAS @ oblique_affine(spacing=(1, 1, 1))
    image.SetDirection(lps[:3, :3].ravel().tolist())
    image.SetSpacing((0.8, 1.2, 3.0))
    image.SetOrigin((10.5, -20.25, 7.0))
    return image


@pytest.mark.parametrize("name, fmt", [("vol.nrrd", "nrrd"), ("vol.mha", "metaimage"), ("vol.mhd", "metaimage")])
def test_nrrd_and_metaimage_geometry(tmp_path, rng, name, fmt):
    image = sitk_oblique_image(rng)
    sitk.WriteImage(image, str(tmp_path / name))
    img = load(tmp_path / name)
    expected = np.eye(4)
    expected[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    expected[:3, 3] = image.GetOrigin()
    np.testing.assert_allclose(img.affine.numpy(), LPS_TO_RAS @ expected, atol=1e-5)
    np.testing.assert_array_equal(img[0].numpy(), sitk.GetArrayFromImage(image).T)
    assert img.meta["source_format"] == fmt and file_format(tmp_path / name) == fmt


def test_4d_needs_volume_index():
    path = NIBABEL_DATA / "example4d.nii.gz"
    with pytest.raises(DataError, match=r"4D with 2 volumes.*volume_index") as err:
        load(path)
    assert str(path) in str(err.value)
    img = load(path, volume_index=1)
    ref = nib.load(path)
    assert img.shape == (1, 128, 96, 24)
    np.testing.assert_allclose(img.affine.numpy(), ref.affine, atol=1e-4)
    np.testing.assert_array_equal(img[0].numpy(), np.asanyarray(ref.dataobj)[..., 1])
    with pytest.raises(DataError, match="out of range"):
        load(path, volume_index=2)


def test_2d_image_is_one_slice(tmp_path, rng):
    image = sitk.GetImageFromArray(rng.normal(size=(5, 8)).astype(np.float32))
    image.SetSpacing((0.5, 0.75))
    image.SetOrigin((3.0, -4.0))
    sitk.WriteImage(image, str(tmp_path / "slice.mha"))
    img = load(tmp_path / "slice.mha")
    assert img.shape == (1, 8, 5, 1) and img.affine.shape == (4, 4)
    expected = np.diag([-0.5, -0.75, 1.0, 1.0])
    expected[:3, 3] = [-3.0, 4.0, 0.0]
    np.testing.assert_allclose(img.affine.numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(img[0, :, :, 0].numpy(), sitk.GetArrayFromImage(image).T)
    np.testing.assert_array_equal(img.meta["spatial_shape"], [8, 5, 1])


def test_list_of_volumes_stacks_channels_and_loadimaged(tmp_path, rng):
    affine = oblique_affine()
    for name in ("t1", "t2", "t1_seg"):
        nib.save(nib.Nifti1Image(rng.normal(size=(4, 5, 3)).astype(np.float32), affine), tmp_path / f"{name}.nii.gz")
    img = load([tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"])
    assert img.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(img.affine.numpy(), affine, atol=1e-5)
    item = LoadImaged(keys=["image", "label"], reader=SimpleITKReader(), ensure_channel_first=True, image_only=True)(
        {"image": str(tmp_path / "t1.nii.gz"), "label": str(tmp_path / "t1_seg.nii.gz")}
    )
    assert item["image"].shape == item["label"].shape == (1, 4, 5, 3)
    np.testing.assert_allclose(item["label"].affine.numpy(), affine, atol=1e-5)


def test_stack_refuses_different_geometry(tmp_path, rng):
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), oblique_affine()), tmp_path / "a.nii")
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4)), tmp_path / "b.nii")
    with pytest.raises(DataError, match="cannot stack") as err:
        load([tmp_path / "a.nii", tmp_path / "b.nii"])
    assert str(tmp_path / "b.nii") in str(err.value)


# ---------------------------------------------------------------- bad input


def check_error(path, match, func=load, **kwargs):
    with pytest.raises(DataError, match=match) as err:
        func(path, **kwargs)
    assert str(path) in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("name", ["notes.txt", "picture.png"])
def test_unsupported_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200) if name.endswith(".png") else b"hello\n")
    check_error(path, "unsupported file type")
    assert not SimpleITKReader().verify_suffix(path)


def test_missing_file(tmp_path):
    check_error(tmp_path / "nothere.nii.gz", "does not exist")


def test_nan_voxels(tmp_path):
    data = np.ones((4, 4, 3), np.float32)
    data[1, 2, 0], data[0, 0, 2], data[3, 3, 1] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "nan.nii.gz")
    check_error(tmp_path / "nan.nii.gz", "has 3 NaN or infinite voxel")


@pytest.mark.parametrize(
    "tag, match",
    [
        ("ImagePositionPatient", "no ImagePositionPatient"),
        ("ImageOrientationPatient", "no ImageOrientationPatient"),
        ("PixelSpacing", "no PixelSpacing"),
    ],
)
def test_dicom_missing_geometry_tag(tmp_path, tag, match):
    files, _, _ = write_dicom_series(tmp_path / "s")
    ds = pydicom.dcmread(files[2])
    delattr(ds, tag)
    ds.save_as(files[2])
    message = check_error(tmp_path / "s", match)
    assert files[2] in message


def edit_slice(path, **tags):
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_dicom_inconsistent_orientation(tmp_path):
    files, _, _ = write_dicom_series(tmp_path / "s")
    edit_slice(files[1], ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    message = check_error(tmp_path / "s", "ImageOrientationPatient differs")
    assert files[1] in message


def test_dicom_duplicate_positions(tmp_path):
    files, _, positions = write_dicom_series(tmp_path / "s")
    edit_slice(files[2], ImagePositionPatient=[f"{v:.10g}" for v in positions[1]])
    message = check_error(tmp_path / "s", "duplicated slice position")
    assert files[1] in message or files[2] in message


def test_dicom_gap(tmp_path):
    files, _, _ = write_dicom_series(tmp_path / "s", shape=(6, 5, 5))
    os.remove(files[2])
    check_error(tmp_path / "s", "non-uniform slice spacing")


def test_dicom_mismatched_matrix(tmp_path):
    files, _, positions = write_dicom_series(tmp_path / "s")
    row, col, _ = oblique_orientation()
    odd = dicom_slice(np.zeros((4, 4), np.int16), positions[3], np.concatenate([row, col]), (1.3, 0.7),
                      pydicom.dcmread(files[0]).SeriesInstanceUID, generate_uid(), 9)
    odd.save_as(files[3], enforce_file_format=True)
    message = check_error(tmp_path / "s", r"matrix (4x4 differs from 5x6|5x6 differs from 4x4)")
    assert files[3] in message


def test_dicom_truncated_pixels(tmp_path):
    files, _, _ = write_dicom_series(tmp_path / "s")
    raw = Path(files[1]).read_bytes()
    Path(files[1]).write_bytes(raw[:-20])
    message = check_error(tmp_path / "s", "cannot be read")
    assert files[1] in message


def test_dicom_truncated_header(tmp_path):
    files, _, _ = write_dicom_series(tmp_path / "s")
    for cut in (200, 700):
        Path(files[0]).write_bytes(Path(files[0]).read_bytes()[:cut])
        message = check_error(tmp_path / "s", "truncated")
        assert files[0] in message


def test_non_dicom_file_in_series_folder(tmp_path):
    write_dicom_series(tmp_path / "s")
    (tmp_path / "s" / "notes").write_text("not an image")
    message = check_error(tmp_path / "s", "is not a DICOM image file")
    assert str(tmp_path / "s" / "notes") in message


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    check_error(tmp_path / "empty", "empty folder")


def test_two_series_in_one_folder(tmp_path):
    folder = tmp_path / "mixed"
    study = generate_uid()
    write_dicom_series(folder, series_uid="1.2.826.0.1.1", study_uid=study, names=[f"a{k}" for k in range(4)])
    _, data_b, _ = write_dicom_series(
        folder, shape=(6, 5, 3), seed=5, series_uid="1.2.826.0.1.2", study_uid=study, names=[f"b{k}" for k in range(3)]
    )
    message = check_error(folder, r"holds 2 DICOM series.*series_uid")
    assert "1.2.826" not in message and PATIENT_ID not in message  # no identifiers in messages that may be logged
    assert re.search(r"4 file\(s\).*3 file\(s\)", message)
    img = load(folder, series_uid="1.2.826.0.1.2")
    np.testing.assert_array_equal(img[0].numpy(), data_b)
    check_error(folder, "no DICOM series with the requested series_uid", series_uid="9.9")


# ---------------------------------------------------------------- NIfTI through nibabel: shear, scaling, kinds


def sheared_affine():
    """An oblique, anisotropic RAS affine with shear (0.05 off-diagonal) and a flipped x axis."""
    shear = np.eye(4)
    shear[0, 1], shear[1, 2] = 0.05, -0.05
    affine = oblique_affine(spacing=(0.9, 1.3, 2.2), angles=(0.3, -0.2, 0.25)) @ shear
    affine[:3, 0] *= -1  # LAS-like: orienting to RAS has to flip the first axis
    return affine


def unique_volume(rng, shape, dtype):
    """Voxels whose values are all different and non-zero, so a value names the voxel it came from."""
    return (rng.permutation(int(np.prod(shape))).reshape(shape) + 1).astype(dtype)


def assert_placed_like_source(img, source_data, source_affine):
    """Every voxel of ``img`` sits, through ``img``'s affine, at the world point of the source voxel of its value."""
    values = np.asarray(img[0]).reshape(img.shape[1:])
    where = {v: k for k, v in enumerate(source_data.ravel())}
    source_ijk = np.stack(np.unravel_index([where[v] for v in values.ravel()], source_data.shape))
    ijk = np.indices(values.shape).reshape(len(values.shape), -1)
    affine = img.affine.numpy()
    world = affine[:3, : ijk.shape[0]] @ ijk + affine[:3, 3:]
    expected = source_affine[:3, :3] @ source_ijk + source_affine[:3, 3:]
    np.testing.assert_allclose(world, expected, atol=1e-5)  # mm


def test_nifti_with_shear_loads_and_slices_in_place(tmp_path, rng, one_thread):
    affine, shape = sheared_affine(), (11, 9, 7)
    data, mask = unique_volume(rng, shape, np.float32), unique_volume(rng, shape, np.int32)
    image_path, mask_path = tmp_path / "sheared.nii.gz", tmp_path / "sheared_seg.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), image_path)
    nib.save(nib.Nifti1Image(mask, affine), mask_path)
    with pytest.raises(RuntimeError, match="orthonormal"):  # what made the reader refuse this legal file
        sitk.ReadImage(str(image_path))
    ref = nib.load(image_path)
    gram = ref.affine[:3, :3].T @ ref.affine[:3, :3]
    assert np.abs(gram - np.diag(np.diag(gram))).max() > 0.01  # the axes are not orthogonal

    volume = SimpleITKReader().read(image_path)
    assert isinstance(volume, LoadedVolume)  # no deferred failure
    img = LoadImage(reader=SimpleITKReader(), image_only=True)(image_path)
    np.testing.assert_array_equal(img.numpy(), np.asanyarray(ref.dataobj))
    np.testing.assert_allclose(img.affine.numpy(), ref.affine, atol=1e-5)
    np.testing.assert_allclose(img.meta["spacing"], np.linalg.norm(ref.affine[:3, :3], axis=0), atol=1e-6)
    np.testing.assert_array_equal(img.meta["spatial_shape"], shape)

    item = Compose(volume_transforms())({"image": str(image_path), "label": str(mask_path)})
    assert item["image"].affine[0, 0] > 0  # the flipped axis was oriented to RAS
    assert_placed_like_source(item["image"], data, ref.affine)
    assert_placed_like_source(item["label"], mask, ref.affine)

    cohort = SliceCohort([{"image": str(image_path), "label": str(mask_path)}], image_size=None, min_foreground=0.0)
    assert len(cohort) == shape[2]
    for slice_item in cohort:
        assert slice_item["label"].shape == (1, 11, 9, 1)
        assert_placed_like_source(slice_item["label"], mask, ref.affine)


def test_nifti_scaling_byte_order_and_nifti2_as_nibabel(tmp_path):
    raw = np.arange(3 * 4 * 5, dtype=">i2").reshape(3, 4, 5)
    scaled = nib.Nifti1Image(raw, oblique_affine())
    scaled.header.set_slope_inter(0.5, -10.0)
    nib.save(scaled, tmp_path / "scaled.nii")
    nib.save(nib.Nifti2Image(raw.astype(np.int16), oblique_affine()), tmp_path / "two.nii.gz")
    for name, dtype in (("scaled.nii", "float64"), ("two.nii.gz", "int16")):
        ref = nib.load(tmp_path / name)
        img = LoadImage(reader=SimpleITKReader(), image_only=True, dtype=None)(tmp_path / name)
        np.testing.assert_array_equal(img.numpy(), np.asanyarray(ref.dataobj))
        np.testing.assert_allclose(img.affine.numpy(), ref.affine, atol=1e-6)
        assert img.meta["source_dtype"] == dtype == np.asanyarray(ref.dataobj).dtype.name
    assert float(load(tmp_path / "scaled.nii")[0, 1, 2, 3]) == 0.5 * raw[1, 2, 3] - 10.0


def test_nifti_2d_4d_of_one_and_rgb(tmp_path, rng):
    plane = rng.normal(size=(6, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(plane, oblique_affine()), tmp_path / "plane.nii")
    img = load(tmp_path / "plane.nii")
    assert img.shape == (1, 6, 5, 1)
    np.testing.assert_array_equal(img[0, :, :, 0].numpy(), plane)
    np.testing.assert_allclose(img.affine.numpy(), oblique_affine(), atol=1e-5)
    np.testing.assert_array_equal(img.meta["spatial_shape"], [6, 5, 1])

    nib.save(nib.Nifti1Image(plane[:, :, None, None], oblique_affine()), tmp_path / "one_time_point.nii")
    assert load(tmp_path / "one_time_point.nii").shape == (1, 6, 5, 1)  # a 4D file with one volume is 3D

    rgb = np.zeros((4, 5, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"], rgb["G"], rgb["B"] = 1, 2, 3
    nib.save(nib.Nifti1Image(rgb, oblique_affine()), tmp_path / "rgb.nii.gz")
    img = load(tmp_path / "rgb.nii.gz")
    assert img.shape == (3, 4, 5, 3)
    assert [float(img[c].min()) for c in range(3)] == [float(img[c].max()) for c in range(3)] == [1.0, 2.0, 3.0]


# ---------------------------------------------------------------- bad NIfTI: the real cause, never SimpleITK's


def nifti_bytes(shape=(8, 8, 8), dtype=np.float32, voxel_bytes=None):
    """A single-file NIfTI-1 (header, empty extension flag, then ``voxel_bytes`` of random data or all voxels)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(oblique_affine(), code=1)
    header["vox_offset"] = 352
    if voxel_bytes is None:
        voxel_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return header.binaryblock + bytes(4) + np.random.default_rng(0).bytes(voxel_bytes)


def patched(raw, fmt, offset, value):
    out = bytearray(raw)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def bad_nifti(name):
    good = nifti_bytes()
    gz = gzip.compress(good)
    zeros = gzip.compress(nifti_bytes(voxel_bytes=0) + bytes(2048))
    return {
        "truncated.nii": good[:1200],
        "truncated.nii.gz": gz[: len(gz) // 2],
        "truncated_header.nii.gz": gzip.compress(good)[:30],
        "corrupt.nii.gz": zeros[:12] + b"\xff" * 8 + zeros[20:],
        "short_header.nii": good[:200],
        "text.nii": b"this is not an image, whatever its name says\n" * 20,
        "text.nii.gz": gzip.compress(b"neither is this\n" * 50),
        "zero_dim.nii": patched(good, "<h", 42, 0),
        "negative_dim.nii": patched(good, "<h", 44, -3),
        "dim0.nii": patched(good, "<h", 40, 9),
        "datatype.nii": patched(good, "<h", 70, 999),
        "pair.nii": good[:344] + b"ni1\0" + good[348:],
        "analyze.nii": good[:344] + b"\0\0\0\0" + good[348:],
        "empty.nii": b"",
        "empty.nii.gz": gzip.compress(b""),
    }[name]


@pytest.mark.parametrize(
    "name, match",
    [
        ("truncated.nii", r"header claims 2048 bytes of voxel data \(8x8x8 float32\) but the file holds 848 "),
        ("truncated.nii.gz", r"is truncated: its gzip stream breaks off before the 2400 decompressed bytes"),
        ("truncated_header.nii.gz", "is truncated: its gzip stream breaks off inside the NIfTI header"),
        ("corrupt.nii.gz", "is gzip-compressed but its compressed data is corrupt"),
        ("short_header.nii", "is truncated: 200 bytes, shorter than its 348-byte NIfTI header"),
        ("text.nii", r"is not a NIfTI file: its first four bytes \(sizeof_hdr\) are neither 348"),
        ("text.nii.gz", "is not a NIfTI file: its first four decompressed bytes"),
        ("zero_dim.nii", "header dim\\[1:\\] is '0 8 8': every axis must hold at least one voxel"),
        ("negative_dim.nii", "header dim\\[1:\\] is '8 -3 8': every axis must hold at least one voxel"),
        ("dim0.nii", r"header dim\[0\] is 9: a NIfTI image has 1 to 7 dimensions"),
        ("datatype.nii", "NIfTI header is invalid: data code 999 not recognized"),
        ("pair.nii", "header magic 'ni1' says the voxels are in a separate .img file"),
        ("analyze.nii", "is not a NIfTI file: header magic '' is not 'n\\+1'"),
        ("empty.nii", "is empty: it holds no bytes at all"),
        ("empty.nii.gz", "is empty: it holds no decompressed bytes at all"),
    ],
)
def test_bad_nifti_names_the_real_cause(tmp_path, name, match):
    path = tmp_path / name
    path.write_bytes(bad_nifti(name))
    assert "SimpleITK" not in check_error(path, match)


def test_nifti_named_gz_but_not_compressed_is_read(tmp_path, rng):
    data = rng.normal(size=(4, 5, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, oblique_affine()), tmp_path / "plain.nii")
    (tmp_path / "plain.nii.gz").write_bytes((tmp_path / "plain.nii").read_bytes())
    np.testing.assert_array_equal(load(tmp_path / "plain.nii.gz")[0].numpy(), data)


# ---------------------------------------------------------------- headers that claim more data than the file holds


def run_measured(func, *args):
    """Run ``func``; return its DataError message, the seconds taken, and the peak memory (traced, and max RSS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        func(*args)
    seconds = time.perf_counter() - start
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return str(err.value), seconds, traced, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) * 1024


def write_lying_itk(path, compress=False):
    """An NRRD or MetaImage of 25x20x10 float32 voxels whose header is edited to claim 4000x4000x4000."""
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 20, 25), np.float32)), str(path), compress)
    raw = path.read_bytes()
    lie = raw.replace(b"DimSize = 25 20 10", b"DimSize = 4000 4000 4000")
    lie = lie.replace(b"sizes: 25 20 10", b"sizes: 4000 4000 4000")
    assert lie != raw
    path.write_bytes(lie)


@pytest.mark.parametrize(
    "name, held",
    [
        ("lie.nii", r"the file holds 10000 \("),
        ("lie.nii.gz", r"the file holds \d+ compressed bytes, which inflate to at most \d+"),
        ("lie.mha", r"the file holds 20000 \("),
        ("lie_gz.mha", r"the file holds \d+ compressed bytes, which inflate to at most \d+"),
        ("lie.nrrd", r"the file holds 20000 \("),
        ("lie.mhd", r"lie.raw holds 20000 \("),
    ],
)
def test_header_claiming_more_than_the_file_is_refused_before_allocating(tmp_path, name, held):
    path = tmp_path / name
    if name.endswith(".nii"):
        path.write_bytes(nifti_bytes((4000, 4000, 4000), voxel_bytes=10_000))
    elif name.endswith(".nii.gz"):
        path.write_bytes(gzip.compress(nifti_bytes((4000, 4000, 4000), voxel_bytes=10_000)))
    else:
        write_lying_itk(path, compress="gz" in name)
    message, seconds, traced, rss = run_measured(load, path)
    assert message.startswith(str(path))
    assert re.search(r"header claims 256000000000 bytes of voxel data \(4000x4000x4000 \w+\) but .*" + held, message)
    assert seconds < 2 and traced < 200e6 and rss < 200e6


def test_gzip_nifti_shorter_than_its_header_claims_is_checked_while_streaming(tmp_path):
    """A claim within gzip's reach is checked against the decompressed data, never allocated up front."""
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(nifti_bytes((100, 100, 100), voxel_bytes=10_000)))  # claims 4 MB
    message, seconds, traced, _ = run_measured(load, path)
    claim = "header claims 4000000 bytes of voxel data (100x100x100 float32) but the file holds 10000 once decompressed"
    assert claim in message
    assert message.startswith(str(path)) and seconds < 2 and traced < 2e6


@pytest.mark.parametrize(
    "name, edit, match",
    [
        ("zero.mha", (b"DimSize = 25 20 10", b"DimSize = 25 0 10"), "header DimSize is '25 0 10': every axis"),
        ("negative.nrrd", (b"sizes: 25 20 10", b"sizes: 25 20 -10"), "header sizes is '25 20 -10': every axis"),
        ("no_magic.nrrd", (b"NRRD0004", b"XXXX0004"), "is not an NRRD file"),
        ("no_data.mha", (b"ElementDataFile", b"ElementDataFiel"), "has no ElementDataFile field"),
        ("text_skip.nrrd", (b"encoding: raw", b"encoding: raw\nbyte skip: many"), "header byte skip is 'many', not an"),
    ],
)
def test_bad_itk_headers(tmp_path, name, edit, match):
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((10, 20, 25), np.float32)), str(path))
    raw = path.read_bytes()
    assert edit[0] in raw
    path.write_bytes(raw.replace(*edit))
    check_error(path, match)
