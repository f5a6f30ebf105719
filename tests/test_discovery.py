"""Tests for volume discovery, mask pairing and datalists."""

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import oblique_affine
from monai.transforms import LoadImaged
from pydicom.uid import generate_uid
from test_readers import PATIENT_ID, PATIENT_NAME, write_dicom_series

from monai_mri_gan.data.discovery import build_datalist, discover_volumes, load_datalist, subject_id
from monai_mri_gan.data.readers import SimpleITKReader
from monai_mri_gan.errors import DataError

BRATS_MODALITIES = ("flair", "t1", "t1ce", "t2")


def write_nifti(path, shape=(5, 6, 4), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, oblique_affine()), path)
    return str(path)


def build_mixed_folder(root):
    """A folder with DICOM series (two in one folder, one nested without extensions), NIfTI, BraTS, MHA, junk."""
    study, other_study = generate_uid(), generate_uid()
    a, _, _ = write_dicom_series(root / "mixed", study_uid=study, names=[f"a{k}.dcm" for k in range(4)])
    b, _, _ = write_dicom_series(
        root / "mixed", shape=(6, 5, 3), seed=3, study_uid=study, names=[f"b{k}.dcm" for k in range(3)]
    )
    write_dicom_series(root / "patient" / "visit" / "series", study_uid=other_study, seed=7)
    brain = write_nifti(root / "nifti" / "brain.nii.gz")
    brain_seg = write_nifti(root / "nifti" / "brain_seg.nii.gz", seed=1)
    brats = {m: write_nifti(root / "brats" / f"BraTS20_001_{m}.nii.gz", seed=2) for m in BRATS_MODALITIES}
    brats_seg = write_nifti(root / "brats" / "BraTS20_001_seg.nii.gz", seed=3)
    (root / "other").mkdir()
    scan = str(root / "other" / "scan.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((3, 4, 5), np.int16)), scan)
    write_nifti(root / "other" / "lonely_mask.nii.gz")
    (root / "README.txt").write_text("a cohort")
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return {
        "a": sorted(a), "b": sorted(b), "series": str(root / "patient" / "visit" / "series"), "brain": brain,
        "brain_seg": brain_seg, "brats": brats, "brats_seg": brats_seg, "scan": scan,
        "study": study, "other_study": other_study,
    }  # fmt: skip


def test_discover_mixed_folder(tmp_path, caplog):
    root = tmp_path / "cohort"
    paths = build_mixed_folder(root)
    with caplog.at_level(logging.WARNING):
        items = discover_volumes(root)
    dicom_subject = subject_id(PATIENT_ID, paths["study"])
    brats = {"label": paths["brats_seg"], "subject": subject_id("brats/BraTS20_001")}
    expected = [
        *({"image": paths["brats"][m], **brats} for m in BRATS_MODALITIES),
        {"image": paths["a"], "subject": dicom_subject},
        {"image": paths["b"], "subject": dicom_subject},
        {"image": paths["brain"], "label": paths["brain_seg"], "subject": subject_id("nifti/brain")},
        {"image": paths["scan"], "subject": subject_id("other/scan")},
        {"image": paths["series"], "subject": subject_id(PATIENT_ID, paths["other_study"])},
    ]
    assert items == expected
    text = json.dumps(items)
    assert PATIENT_ID not in text and PATIENT_NAME not in text and paths["study"] not in text
    assert "README.txt: not a DICOM file" in caplog.text and "picture.png: not a DICOM file" in caplog.text
    assert "lonely_mask.nii.gz: no image" in caplog.text
    assert PATIENT_ID not in caplog.text


def test_discovered_items_load(tmp_path):
    paths = build_mixed_folder(tmp_path)
    load = LoadImaged(
        keys=["image", "label"], reader=SimpleITKReader(), ensure_channel_first=True, allow_missing_keys=True
    )
    shapes = {}
    for item in discover_volumes(tmp_path):
        loaded = load(item)
        key = item["image"] if isinstance(item["image"], str) else item["image"][0]
        shapes[key] = tuple(loaded["image"].shape)
        if "label" in item:
            assert loaded["label"].shape == loaded["image"].shape
    assert shapes[paths["a"][0]] == (1, 6, 5, 4)  # one series, not four stacked slices
    assert shapes[paths["b"][0]] == (1, 6, 5, 3)
    assert shapes[paths["series"]] == (1, 6, 5, 4)
    assert shapes[paths["scan"]] == (1, 5, 4, 3)


def test_modality_filter(tmp_path):
    paths = build_mixed_folder(tmp_path)
    items = [i for i in discover_volumes(tmp_path, modality="t1ce") if isinstance(i["image"], str)]
    files = [i for i in items if i["image"].endswith(".nii.gz")]
    subject = subject_id("brats/BraTS20_001")
    assert files == [{"image": paths["brats"]["t1ce"], "label": paths["brats_seg"], "subject": subject}]
    assert paths["series"] in [i["image"] for i in items]


def test_empty_folder_and_not_a_folder(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image volumes found") as err:
        discover_volumes(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with caplog.at_level(logging.WARNING), pytest.raises(DataError, match="no image volumes found"):
        discover_volumes(tmp_path / "junk")
    assert "notes.txt" in caplog.text
    with pytest.raises(DataError, match="is not a folder"):
        discover_volumes(tmp_path / "junk" / "notes.txt")


def _bad_series_and_good_volume(folder):
    """A DICOM series whose second file lacks ImagePositionPatient, and a good NIfTI, under ``folder``."""
    files, _, _ = write_dicom_series(folder / "bad")
    ds = pydicom.dcmread(files[1])
    del ds.ImagePositionPatient
    ds.save_as(files[1])
    return files, write_nifti(folder / "good" / "vol.nii")


def test_bad_series_raise_or_skip(tmp_path, caplog):
    files, good = _bad_series_and_good_volume(tmp_path)
    with pytest.raises(DataError, match="no ImagePositionPatient") as err:
        discover_volumes(tmp_path)
    assert files[1] in str(err.value)
    with caplog.at_level(logging.WARNING):
        items = discover_volumes(tmp_path, on_error="skip")
    assert items == [{"image": good, "subject": subject_id("good/vol")}]
    assert "1 input(s) skipped" in caplog.text


@pytest.mark.parametrize("bundle", ["brain_mri_gan", "brain_tumour_painter"])
def test_skip_reaches_discovery_in_the_training_bundles(tmp_path, bundle):
    """``--on_error skip`` skips a series without ImagePositionPatient at discovery too, not only when slicing."""
    from monai.bundle import ConfigParser

    _, good = _bad_series_and_good_volume(tmp_path)
    parser = ConfigParser()
    parser.read_config(Path(__file__).resolve().parents[1] / "bundles" / bundle / "configs" / "train.json")
    parser.update({"dataset_dir": str(tmp_path), "on_error": "skip"})
    assert parser.get_parsed_content("train#datalist") == [{"image": good, "subject": subject_id("good/vol")}]
    # the run's summary (cohort.json) lists the series discovery left out, and why
    summary = parser.get_parsed_content("train#cohort").summary()
    assert summary["volumes"] == {"read": 2, "used": 1, "skipped": 1}
    (skipped,) = summary["skipped"]
    assert skipped["input"].startswith(str(tmp_path / "bad")) and "no ImagePositionPatient" in skipped["reason"]
    parser.update({"on_error": "raise"})
    with pytest.raises(RuntimeError, match="resolve_datalist") as err:  # MONAI wraps what a component raises
        parser.get_parsed_content("train#datalist", lazy=False)
    assert isinstance(err.value.__cause__, DataError) and "no ImagePositionPatient" in str(err.value.__cause__)


def test_image_with_two_masks(tmp_path):
    image = write_nifti(tmp_path / "brain.nii.gz")
    write_nifti(tmp_path / "brain_seg.nii.gz")
    write_nifti(tmp_path / "brain_mask.nii.gz")
    other = write_nifti(tmp_path / "head.nii")
    with pytest.raises(DataError, match="has several masks") as err:
        discover_volumes(tmp_path)
    assert image in str(err.value)
    assert discover_volumes(tmp_path, on_error="skip") == [{"image": other, "subject": subject_id("head")}]


def test_load_datalist_relative_paths_and_dicom_folder(tmp_path):
    data = tmp_path / "data"
    image = write_nifti(data / "imgs" / "a.nii.gz")
    label = write_nifti(data / "imgs" / "a_seg.nii.gz")
    write_dicom_series(data / "dicom" / "s1")
    datalist = {
        "training": [
            {"image": "imgs/a.nii.gz", "label": "imgs/a_seg.nii.gz", "class": 1},
            {"image": "dicom/s1", "class": 0, "subject": "sub-given"},
        ],
        "validation": ["imgs/a.nii.gz"],
    }
    (data / "datalist.json").write_text(json.dumps(datalist))
    items = load_datalist(data / "datalist.json")
    assert items == [
        {"image": image, "label": label, "class": 1, "subject": subject_id("imgs/a.nii.gz")},
        {"image": str(data / "dicom" / "s1"), "class": 0, "subject": "sub-given"},
    ]
    assert load_datalist(data / "datalist.json", key="validation") == [
        {"image": image, "subject": subject_id("imgs/a.nii.gz")}
    ]
    loaded = LoadImaged(keys="image", reader=SimpleITKReader(), ensure_channel_first=True)(items[1])
    assert loaded["image"].shape == (1, 6, 5, 4)

    elsewhere = tmp_path / "lists" / "list.json"
    elsewhere.parent.mkdir()
    elsewhere.write_text(json.dumps(datalist["training"][:1]))  # a bare list, paths relative to dataset_dir
    assert load_datalist(elsewhere, dataset_dir=data)[0]["image"] == image
    assert build_datalist(dataset_dir=data, datalist=elsewhere)[0]["label"] == label


def test_load_datalist_errors(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(json.dumps({"training": [{"image": "missing.nii.gz"}]}))
    with pytest.raises(DataError, match="does not exist") as err:
        load_datalist(path)
    assert str(tmp_path / "missing.nii.gz") in str(err.value) and str(path) in str(err.value)
    with pytest.raises(DataError, match="has no 'test' list") as err:
        load_datalist(path, key="test")
    assert str(path) in str(err.value)
    write_nifti(tmp_path / "a.nii")
    path.write_text(json.dumps([{"image": "a.nii", "class": "tumour"}]))
    with pytest.raises(DataError, match="'class' must be an integer"):
        load_datalist(path)
    path.write_text(json.dumps([{"label": "a.nii"}]))
    with pytest.raises(DataError, match="item 0 has no 'image'"):
        load_datalist(path)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON datalist") as err:
        load_datalist(path)
    assert str(path) in str(err.value)


def test_datalist_class_names(tmp_path):
    write_nifti(tmp_path / "a.nii")
    path = tmp_path / "list.json"
    names = ["no_tumour", "tumour"]
    path.write_text(json.dumps([{"image": "a.nii", "class": "tumour"}, {"image": "a.nii", "class": "no_tumour"},
                                {"image": "a.nii", "class": 1}]))
    assert [item["class"] for item in load_datalist(path, class_names=names)] == [1, 0, 1]
    # a hospital's own names, renamed with --class_names
    path.write_text(json.dumps([{"image": "a.nii", "class": "glioma"}]))
    assert load_datalist(path, class_names=["healthy", "glioma"])[0]["class"] == 1
    with pytest.raises(DataError, match=r"unknown class 'glioma'; the classes are \['no_tumour', 'tumour'\]") as err:
        load_datalist(path, class_names=names)
    assert f"{path} item 0" in str(err.value)


def test_build_datalist(tmp_path):
    with pytest.raises(ValueError, match="needs dataset_dir"):
        build_datalist()
    image = write_nifti(tmp_path / "x" / "vol.nii.gz")
    assert build_datalist(dataset_dir=tmp_path) == [{"image": image, "subject": subject_id("x/vol")}]


def test_mask_beside_a_dicom_series_folder(tmp_path, caplog):
    """A hospital export: the series in a folder named by its description, its mask beside it by the same name."""
    patient = tmp_path / "Doe^Jane 1234"
    write_dicom_series(patient / "T1 POST GD", study_uid=generate_uid())
    mask = write_nifti(patient / "T1 POST GD_seg.nii.gz", shape=(6, 5, 4))
    lonely = write_nifti(patient / "FLAIR_seg.nii.gz")
    with caplog.at_level(logging.WARNING):
        items = discover_volumes(tmp_path)
    assert [(i["image"], i.get("label")) for i in items] == [(str(patient / "T1 POST GD"), mask)]
    assert f"ignored mask {lonely}: no image named like it" in caplog.text
    assert f"ignored mask {mask}" not in caplog.text
    loaded = LoadImaged(["image", "label"], reader=SimpleITKReader())(items[0])
    assert loaded["image"].shape == loaded["label"].shape

    write_nifti(patient / "T1 POST GD_mask.nii.gz", shape=(6, 5, 4))  # a second mask for the series
    with pytest.raises(DataError, match="has several masks"):
        discover_volumes(tmp_path)
    with pytest.raises(DataError, match="(?s)every image volume found was skipped; 1 input.*has several masks"):
        discover_volumes(tmp_path, on_error="skip")
