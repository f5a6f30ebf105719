"""Tests of the embedded demo cohort: determinism, layout, DICOM and NIfTI geometry, contrast, tumours, cache."""

import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from monai_mri_gan.data.demo import (
    DEMO_CLASSES,
    DEMO_SHAPE,
    demo_cohort,
    demo_subject,
    load_demo_volume,
    make_demo_cohort,
    render_demo_figure,
    tumour_subjects,
)
from monai_mri_gan.data.phantom import T1C_INTENSITY, Tissue, TumourLabel, brain_phantom

SEED = 3
SMALL = (48, 56, 16)
N_SUBJECTS = 8
HEAD_THRESHOLD = 200  # scanner units: far above the Rician background (about 30), below every head tissue but bone


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return make_demo_cohort(tmp_path_factory.mktemp("demo") / "cohort", seed=SEED, num_subjects=N_SUBJECTS, shape=SMALL)


def _items(datalist_path: Path) -> list[dict]:
    return json.loads(datalist_path.read_text())["training"]


def _volumes(datalist_path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    root = datalist_path.parent
    return [
        (load_demo_volume(root / item["image"])[0], load_demo_volume(root / item["label"])[0])
        for item in _items(datalist_path)
    ]


def _angles_deg(affine: np.ndarray) -> np.ndarray:
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return np.degrees(np.arccos(np.clip(np.abs(np.diag(rot @ np.diag(np.sign(np.diag(rot))))), 0, 1)))


def test_classes():
    assert DEMO_CLASSES == ("no_tumour", "tumour")


def test_same_seed_same_data_other_seed_differs(cohort, tmp_path):
    again = make_demo_cohort(tmp_path / "again", seed=SEED, num_subjects=N_SUBJECTS, shape=SMALL)
    for (img_a, seg_a), (img_b, seg_b) in zip(_volumes(cohort), _volumes(again), strict=True):
        np.testing.assert_array_equal(img_a, img_b)
        np.testing.assert_array_equal(seg_a, seg_b)
    for name in ("nifti/demo-0001.nii.gz", "dicom/demo-0000/IM0005.dcm", "datalist.json"):
        assert (cohort.parent / name).read_bytes() == (again.parent / name).read_bytes()
    other = make_demo_cohort(tmp_path / "other", seed=SEED + 1, num_subjects=2, shape=SMALL)
    for (img_a, _), (img_b, _) in zip(_volumes(cohort)[:2], _volumes(other), strict=True):
        assert img_a.shape == img_b.shape
        assert np.mean(img_a != img_b) > 0.5


def test_existing_cohort_is_not_overwritten(cohort):
    with pytest.raises(FileExistsError):
        make_demo_cohort(cohort.parent, seed=SEED, num_subjects=N_SUBJECTS, shape=SMALL)


def test_datalist_lists_every_subject(cohort):
    datalist = json.loads(cohort.read_text())
    items = datalist["training"]
    assert datalist["numTraining"] == N_SUBJECTS
    assert datalist["labels"] == {"0": "background", "1": "necrotic core", "2": "oedema", "4": "enhancing rim"}
    assert [item["subject"] for item in items] == [f"demo-{i:04d}" for i in range(N_SUBJECTS)]
    tumours = tumour_subjects(SEED, N_SUBJECTS)
    assert len(tumours) == 2 and {i % 2 for i in tumours} == {0, 1}  # one DICOM and one NIfTI tumour subject
    for i, item in enumerate(items):
        assert not Path(item["image"]).is_absolute()
        assert (cohort.parent / item["image"]).exists() and (cohort.parent / item["label"]).exists()
        assert item["class"] == int(i in tumours)
        assert item["image"] == (f"dicom/demo-{i:04d}" if i % 2 == 0 else f"nifti/demo-{i:04d}.nii.gz")
        assert item["label"].endswith(f"demo-{i:04d}_seg.nii.gz")
    for item, (_, seg) in zip(items, _volumes(cohort), strict=True):
        assert set(np.unique(seg)) == ({0, 1, 2, 4} if item["class"] else {0})


def test_dicom_tags_identifiers_and_oblique_orientation(cohort):
    files = sorted((cohort.parent / "dicom" / "demo-0002").glob("IM*.dcm"))
    assert [f.name for f in files] == [f"IM{k + 1:04d}.dcm" for k in range(SMALL[2])]
    datasets = [pydicom.dcmread(f) for f in files]
    first = datasets[0]
    assert first.file_meta.MediaStorageSOPClassUID == pydicom.uid.MRImageStorage == first.SOPClassUID
    assert first.Modality == "MR"
    assert str(first.PatientName) == "DEMO^Subject0002"
    assert first.PatientID == "DEMOPID00002"
    assert first.AccessionNumber == "DEMOACC00002"
    assert first.InstitutionName == "Demo Phantom Hospital"
    assert len(first.PatientBirthDate) == 8 and first.StudyDate == first.SeriesDate
    assert (first.BitsAllocated, first.PixelRepresentation, first.RescaleSlope, first.RescaleIntercept) == (16, 1, 1, 0)
    assert len({ds.SOPInstanceUID for ds in datasets}) == SMALL[2]
    assert len({(ds.StudyInstanceUID, ds.SeriesInstanceUID) for ds in datasets}) == 1
    assert [ds.InstanceNumber for ds in datasets] == list(range(1, SMALL[2] + 1))
    row, col = np.array(first.ImageOrientationPatient[:3]), np.array(first.ImageOrientationPatient[3:])
    assert abs(row @ col) < 1e-9 and abs(np.linalg.norm(row) - 1) < 1e-9
    assert np.abs(row).max() < np.cos(np.radians(1)) and np.abs(col).max() < np.cos(np.radians(5))  # oblique
    spacing = [float(v) for v in first.PixelSpacing] + [float(first.SliceThickness)]
    assert len(set(np.round(spacing, 4))) == 3  # anisotropic, rows and columns differ too
    # The made-up identifiers differ between subjects and are stable across builds.
    other = pydicom.dcmread(cohort.parent / "dicom" / "demo-0000" / "IM0001.dcm")
    assert other.PatientID != first.PatientID and other.StudyInstanceUID != first.StudyInstanceUID


def test_dicom_series_geometry_matches_generator(cohort):
    for index in (0, 2):
        item = _items(cohort)[index]
        subject = demo_subject(index, SEED, SMALL, tumour=bool(item["class"]))
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(cohort.parent / item["image"])))
        image = reader.Execute()
        lps = np.eye(4)
        lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
        lps[:3, 3] = image.GetOrigin()
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
        np.testing.assert_allclose(ras, subject.affine, atol=1e-5)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), subject.image)
        # ImagePositionPatient of the first slice is the RAS origin with x and y negated.
        first = pydicom.dcmread(sorted((cohort.parent / item["image"]).glob("*.dcm"))[0])
        np.testing.assert_allclose(
            [float(v) for v in first.ImagePositionPatient], subject.affine[:3, 3] * [-1, -1, 1], atol=1e-5
        )
        seg = nib.load(cohort.parent / item["label"])
        np.testing.assert_allclose(seg.affine, ras, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(seg.dataobj), subject.mask)
        assert (subject.affine[:3, 0] @ [-1, 0, 0]) > 0.9  # stored like a scanner: columns towards the left


def test_nifti_affines_oblique_and_anisotropic(cohort):
    orientations = set()
    for index in (1, 3, 5):
        item = _items(cohort)[index]
        subject = demo_subject(index, SEED, SMALL, tumour=bool(item["class"]))
        img = nib.load(cohort.parent / item["image"])
        np.testing.assert_allclose(img.affine, subject.affine, atol=1e-5)
        qform, qcode = img.get_qform(coded=True)
        sform, scode = img.get_sform(coded=True)
        assert (int(qcode), int(scode)) == (1, 1)
        np.testing.assert_allclose(qform, sform, atol=1e-5)
        assert img.header.get_xyzt_units()[0] == "mm"
        assert img.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asarray(img.dataobj), subject.image)
        zooms = np.round(img.header.get_zooms(), 4)
        np.testing.assert_allclose(zooms, np.array([180, 208, 140]) / np.array(SMALL), atol=1e-4)
        assert (_angles_deg(img.affine) > 2).all()  # tilted about every axis
        orientations.add("".join(nib.aff2axcodes(img.affine)))
        seg = nib.load(cohort.parent / item["label"])
        np.testing.assert_allclose(seg.affine, img.affine, atol=1e-6)
    assert orientations == {"RAS", "LAS"}


def test_tissue_contrast_is_t1_weighted():
    phantom = brain_phantom((72, 80, 20), (2.5, 2.6, 7.0), np.random.default_rng(7))
    means = {t: phantom.clean[phantom.tissue == t].mean() for t in Tissue if (phantom.tissue == t).any()}
    assert Tissue.TUMOUR not in means
    assert means[Tissue.FAT] > means[Tissue.WHITE_MATTER] > means[Tissue.DEEP_GREY_MATTER]
    assert means[Tissue.DEEP_GREY_MATTER] > means[Tissue.GREY_MATTER] > means[Tissue.CSF]
    assert means[Tissue.VENTRICLE] < means[Tissue.GREY_MATTER] and means[Tissue.BONE] < means[Tissue.CSF] + 150
    assert T1C_INTENSITY[Tissue.WHITE_MATTER] > T1C_INTENSITY[Tissue.GREY_MATTER] > T1C_INTENSITY[Tissue.CSF]
    # Every tissue the brief names is present.
    for tissue in (Tissue.FAT, Tissue.BONE, Tissue.DIPLOE, Tissue.CSF, Tissue.GREY_MATTER, Tissue.VENTRICLE):
        assert tissue in means
    # Rician background: the magnitude of complex Gaussian noise has mean sigma * sqrt(pi / 2).
    background = phantom.image[phantom.clean == 0]  # air beyond the reach of the partial-volume blur
    assert background.size > 10000
    assert background.mean() == pytest.approx(phantom.noise_sigma * np.sqrt(np.pi / 2), rel=0.05)
    assert phantom.image.min() >= 0


def test_tumour_compartments_and_mass_effect():
    shape, spacing = (72, 80, 20), (2.5, 2.6, 7.0)
    healthy = brain_phantom(shape, spacing, np.random.default_rng(11), tumour=False)
    ill = brain_phantom(shape, spacing, np.random.default_rng(11), tumour=True)
    mask = ill.tumour
    assert set(np.unique(mask)) == {0, 1, 2, 4}
    wm = ill.clean[ill.tissue == Tissue.WHITE_MATTER].mean()
    gm = ill.clean[ill.tissue == Tissue.GREY_MATTER].mean()
    rim = ill.clean[mask == TumourLabel.ENHANCING_RIM].mean()
    core = ill.clean[mask == TumourLabel.NECROTIC_CORE].mean()
    oedema = ill.clean[mask == TumourLabel.OEDEMA].mean()
    assert rim > wm > oedema and core < gm
    # The core sits inside the rim: every core voxel's neighbours are core or rim.
    core_vox = np.argwhere(mask == 1)
    for axis in range(2):
        for step in (-1, 1):
            shifted = core_vox.copy()
            shifted[:, axis] += step
            assert np.isin(mask[tuple(shifted.T)], (1, 4)).all()
    # Mass effect: the ventricle on the tumour's side shrinks and the ventricles move away from the tumour.
    side = np.sign(np.argwhere(mask > 0)[:, 0].mean() - (shape[0] - 1) / 2)
    x = np.arange(shape[0])[:, None, None] - (shape[0] - 1) / 2
    vent_h, vent_t = healthy.tissue == Tissue.VENTRICLE, ill.tissue == Tissue.VENTRICLE
    same_side = np.sign(x) == side
    assert (vent_t & same_side).sum() < (vent_h & same_side).sum()
    assert side * (np.argwhere(vent_t)[:, 0].mean() - np.argwhere(vent_h)[:, 0].mean()) < 0
    # Outside the brain, nothing moves.
    scalp = np.isin(healthy.tissue, (Tissue.SKIN, Tissue.FAT, Tissue.BONE))
    np.testing.assert_array_equal(healthy.tissue[scalp], ill.tissue[scalp])


def _slice_counts(datalist_path: Path) -> tuple[int, int]:
    head_slices = tumour_slices = 0
    for image, seg in _volumes(datalist_path):
        head = (image > HEAD_THRESHOLD).sum(axis=(0, 1)) > 20
        head_slices += int(head.sum())
        tumour_slices += int(((seg > 0).any(axis=(0, 1)) & head).sum())
    return head_slices, tumour_slices


def test_tumour_slices_are_a_minority(cohort):
    head, tumour = _slice_counts(cohort)
    assert head >= N_SUBJECTS * SMALL[2] * 0.8
    assert 0 < tumour / head <= 0.2


def test_cache_reuses_a_complete_build(tmp_path):
    first = demo_cohort(tmp_path, seed=5, num_subjects=2, shape=SMALL)
    assert first == tmp_path / "demo_cohort_v1_seed5_n2_48x56x16" / "datalist.json"
    stamp = first.stat().st_mtime_ns, (first.parent / "nifti" / "demo-0001.nii.gz").stat().st_mtime_ns
    time.sleep(0.01)
    again = demo_cohort(tmp_path, seed=5, num_subjects=2, shape=SMALL)
    assert again == first
    assert (again.stat().st_mtime_ns, (again.parent / "nifti" / "demo-0001.nii.gz").stat().st_mtime_ns) == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.parent.name]  # no temporary folders left


def test_cache_ignores_interrupted_builds(tmp_path, monkeypatch):
    monkeypatch.setenv("MONAI_MRI_GAN_CACHE", str(tmp_path))
    name = "demo_cohort_v1_seed6_n2_48x56x16"
    # A build killed half-way: a temporary sibling of a process that no longer exists, holding part of a cohort.
    dead = tmp_path / f".{name}.building-{2**22 + 12345}-abc123"
    (dead / "dicom" / "demo-0000").mkdir(parents=True)
    (dead / "dicom" / "demo-0000" / "IM0001.dcm").write_bytes(b"partial")
    # A folder under the final name without the completion marker (e.g. copied in by hand, half-way).
    (tmp_path / name / "nifti").mkdir(parents=True)
    (tmp_path / name / "datalist.json").write_text('{"training": []}')
    path = demo_cohort(seed=6, num_subjects=2, shape=SMALL)
    assert path == tmp_path / name / "datalist.json"
    assert len(_items(path)) == 2 and (path.parent / ".complete").exists()
    assert all((path.parent / item["image"]).exists() for item in _items(path))
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_render_demo_figure(cohort, tmp_path):
    out = render_demo_figure(tmp_path / "figure.png", cohort_root=cohort.parent, columns=3)
    picture = np.asarray(Image.open(out))
    tile_h, tile_w = 208, 180  # the field of view in mm, one pixel per mm
    assert picture.shape == (2 * tile_h, 3 * tile_w)
    top, bottom = picture[:tile_h], picture[tile_h:]
    assert top.max() > 200 and bottom.max() > 200 and (top < 20).mean() > 0.2  # heads on a dark background


@pytest.mark.slow
def test_default_cohort_build_time_and_balance(tmp_path):
    start = time.perf_counter()
    path = demo_cohort(tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"default cohort took {elapsed:.1f} s"
    assert json.loads(path.read_text())["shape"] == list(DEMO_SHAPE)
    head, tumour = _slice_counts(path)
    print(f"default cohort: {elapsed:.1f} s, {head} slices with head, tumour fraction {tumour / head:.3f}")
    assert head >= 1000 and tumour / head <= 0.2
    assert os.path.basename(path.parent) == "demo_cohort_v1_seed0"
