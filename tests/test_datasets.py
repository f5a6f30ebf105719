"""SliceCohort end to end: every slice pixel sits where SimpleITK says its source voxel is; error policy."""

import io
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import oblique_affine
from test_readers import write_dicom_series

from monai_mri_gan.data import SliceCohort, SliceTensorDataset, class_balanced_sampler, resolve_datalist
from monai_mri_gan.errors import DataError

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _nifti(path, data, affine):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return str(path)


def _sitk_volume(source):
    if source.endswith(".nii.gz"):
        return sitk.ReadImage(source)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(source))
    return reader.Execute()


def _check_slices_against_sitk(cohort, source):
    """Each pixel of each slice equals the normalised voxel SimpleITK finds at the pixel's world point."""
    ref = _sitk_volume(source)
    voxels = sitk.GetArrayFromImage(ref).transpose(2, 1, 0).astype(np.float64)  # (x, y, z)
    checked = 0
    for item in cohort:
        img = item["image"]
        meta = img.meta
        lo, hi = float(meta["norm_in_low"]), float(meta["norm_in_high"])
        affine = img.affine.numpy()
        values = img[0, :, :, 0].numpy()
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                world_lps = (LPS @ affine @ [i, j, 0, 1])[:3]
                index = np.array(ref.TransformPhysicalPointToContinuousIndex(world_lps.tolist()))
                nearest = np.round(index).astype(int)
                inside = np.all(nearest >= 0) and np.all(nearest < np.array(ref.GetSize()))
                if not inside:
                    assert values[i, j] == pytest.approx(-1.0)  # padding
                    continue
                assert np.abs(index - nearest).max() < 1e-4  # the pixel lands on a voxel centre
                expected = (np.clip(voxels[tuple(nearest)], lo, hi) - lo) / (hi - lo) * 2 - 1
                assert values[i, j] == pytest.approx(expected, abs=1e-5)
                checked += 1
    assert checked > 0


def test_nifti_cohort_geometry_matches_simpleitk(tmp_path, rng):
    data = rng.integers(0, 1000, size=(9, 7, 4)).astype(np.int16)
    path = _nifti(tmp_path / "vol.nii.gz", data, oblique_affine())
    cohort = SliceCohort([{"image": path, "subject": "s1"}], image_size=9, min_foreground=0.0)
    assert len(cohort) == 4
    assert all(item["image"].shape == (1, 9, 9, 1) for item in cohort)
    assert [item["slice_index"] for item in cohort] == [0, 1, 2, 3]
    _check_slices_against_sitk(cohort, path)


def test_dicom_cohort_geometry_matches_simpleitk(tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(folder, shape=(9, 7, 4))
    cohort = SliceCohort([{"image": str(folder), "subject": "s1"}], image_size=9, min_foreground=0.0)
    assert len(cohort) == 4
    _check_slices_against_sitk(cohort, str(folder))


def test_classes_from_mask_and_tensor_view(tmp_path, rng):
    affine = oblique_affine()
    data = rng.integers(100, 1000, size=(10, 10, 5)).astype(np.int16)
    mask = np.zeros_like(data, dtype=np.uint8)
    mask[2:6, 2:6, 3] = 1  # 16 voxels on slice 3
    mask[4, 4, 1] = 1  # one voxel on slice 1: below the threshold
    item = {"image": _nifti(tmp_path / "v.nii.gz", data, affine),
            "label": _nifti(tmp_path / "v_seg.nii.gz", mask, affine)}
    cohort = SliceCohort([item], image_size=16, min_foreground=0.0, tumour_min_voxels=4)
    assert [s["class"] for s in cohort] == [0, 0, 0, 1, 0]
    assert cohort.class_counts() == {0: 4, 1: 1}
    images, classes = cohort.tensors()
    assert images.shape == (5, 1, 16, 16) and classes.tolist() == [0, 0, 0, 1, 0]
    ds = cohort.training_dataset()
    assert isinstance(ds, SliceTensorDataset) and torch.equal(ds[3]["image"], images[3])


def test_source_slices_are_the_source_values_in_place(tmp_path, rng):
    affine = oblique_affine()
    data = rng.integers(-50, 1000, size=(9, 7, 5)).astype(np.int16)
    mask = np.zeros(data.shape, np.uint8)
    mask[2:5, 2:5, 3] = 2
    item = {"image": _nifti(tmp_path / "v.nii.gz", data, affine), "label": _nifti(tmp_path / "m.nii.gz", mask, affine)}
    cohort = SliceCohort([item], image_size=None, min_foreground=0.0)
    found = cohort.source_slices([3, 1])
    assert sorted(found) == [1, 3]
    for position, pair in found.items():
        assert torch.equal(pair["image"].affine, cohort[position]["image"].affine)
        # each pixel holds the source voxel (not normalised, not clipped) at the pixel's world point
        voxel_of = np.linalg.inv(affine) @ pair["image"].affine.numpy()
        for i in range(pair["image"].shape[1]):
            for j in range(pair["image"].shape[2]):
                index = voxel_of @ [i, j, 0, 1]
                nearest = tuple(np.round(index[:3]).astype(int))
                assert np.abs(index[:3] - nearest).max() < 1e-5
                assert pair["image"][0, i, j, 0] == data[nearest] and pair["label"][0, i, j, 0] == mask[nearest]
    with pytest.raises(ValueError, match="native resolution"):
        SliceCohort([item], image_size=8, min_foreground=0.0).source_slices([0])


def test_bad_volume_raise_or_skip(tmp_path, rng, caplog):
    good = _nifti(tmp_path / "good.nii.gz", rng.integers(0, 500, size=(8, 8, 3)).astype(np.int16), np.eye(4))
    bad_data = rng.random((8, 8, 3)).astype(np.float32)
    bad_data[1, 2, 0] = np.nan
    bad = _nifti(tmp_path / "bad.nii.gz", bad_data, np.eye(4))
    items = [{"image": good}, {"image": bad}]
    with pytest.raises(DataError, match=r"bad\.nii\.gz.*(NaN|non-finite)"):
        SliceCohort(items, image_size=8, min_foreground=0.0)
    cohort = SliceCohort(items, image_size=8, min_foreground=0.0, on_error="skip")
    assert len(cohort) == 3 and len(cohort.policy.errors) == 1
    assert "1 input(s) skipped" in caplog.text and "bad.nii.gz" in caplog.text
    summary = cohort.summary(["no_tumour", "tumour"])
    assert summary["volumes"] == {"read": 2, "used": 1, "skipped": 1} and summary["formats"] == {"nifti": 1}
    assert summary["slices"] == {"total": 3, "no_tumour": 3} and summary["single_slice_volumes"] == 0
    (skipped,) = summary["skipped"]
    assert skipped["input"] == str(bad) and ("NaN" in skipped["reason"] or "non-finite" in skipped["reason"])
    # a 2D input is a one-slice volume, which the summary counts (the run warns about it)
    flat = _nifti(tmp_path / "flat.nii.gz", rng.integers(0, 500, size=(8, 8, 1)).astype(np.int16), np.eye(4))
    assert SliceCohort([{"image": flat}], image_size=8, min_foreground=0.0).summary()["single_slice_volumes"] == 1


def test_mask_grid_mismatch_names_the_mask(tmp_path, rng):
    image = _nifti(tmp_path / "img.nii.gz", rng.integers(0, 500, size=(8, 8, 3)).astype(np.int16), np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    mask = _nifti(tmp_path / "img_seg.nii.gz", np.zeros((8, 8, 3), np.uint8), shifted)
    with pytest.raises(DataError, match=r"img_seg\.nii\.gz.*geometry"):
        SliceCohort([{"image": image, "label": mask}], image_size=8)
    small = _nifti(tmp_path / "small_seg.nii.gz", np.zeros((8, 8, 2), np.uint8), np.eye(4))
    with pytest.raises(DataError, match=r"small_seg\.nii\.gz.*shape"):
        SliceCohort([{"image": image, "label": small}], image_size=8)


def test_persistent_cache_gives_same_slices(tmp_path, rng):
    path = _nifti(tmp_path / "vol.nii.gz", rng.integers(0, 900, size=(9, 7, 4)).astype(np.int16), oblique_affine())
    first = SliceCohort([{"image": path}], image_size=16, min_foreground=0.0, cache_dir=tmp_path / "cache")
    assert any((tmp_path / "cache").rglob("*.pt"))
    (tmp_path / "vol.nii.gz").unlink()  # the second read must come from the cache alone
    second = SliceCohort([{"image": path}], image_size=16, min_foreground=0.0, cache_dir=tmp_path / "cache")
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.allclose(a["image"].affine, b["image"].affine)


def test_resolve_datalist_user_datalist(tmp_path, rng):
    path = _nifti(tmp_path / "a.nii.gz", rng.integers(0, 9, size=(4, 4, 2)).astype(np.int16), np.eye(4))
    (tmp_path / "list.json").write_text(json.dumps({"training": [{"image": "a.nii.gz", "class": 1}]}))
    items = resolve_datalist(datalist=tmp_path / "list.json")
    assert items[0]["image"] == path and items[0]["class"] == 1


@pytest.mark.parametrize("balance", [0.0, 0.5, 1.0])
def test_class_balanced_sampler_shares(balance):
    classes = torch.tensor([0] * 90 + [1] * 10)
    dataset = SliceTensorDataset(torch.zeros(100, 1, 2, 2), classes)
    sampler = class_balanced_sampler(dataset, balance=balance)
    probabilities = sampler.weights / sampler.weights.sum()
    expected = 10 ** (1 - balance) / (90 ** (1 - balance) + 10 ** (1 - balance))
    assert probabilities[classes == 1].sum().item() == pytest.approx(expected)
    assert len(sampler) == 100
    torch.manual_seed(0)
    drawn = classes[list(iter(class_balanced_sampler(dataset, balance, num_samples=20000)))]
    assert drawn.float().mean().item() == pytest.approx(expected, abs=0.02)
    with pytest.raises(ValueError, match="balance"):
        class_balanced_sampler(dataset, balance=1.5)


def test_a_folder_of_malformed_inputs_is_skipped_case_by_case(tmp_path, rng):
    """Good volumes among every kind of bad one: ``skip`` keeps the good, and says for each bad one what is wrong."""
    affine = oblique_affine()
    head = np.zeros((20, 22, 6), np.int16)
    head[4:16, 4:18] = rng.integers(300, 900, size=(12, 14, 6))
    nan = head.astype(np.float32)
    nan[5, 5, 2] = np.nan
    lying = bytearray(nib.Nifti1Image(head, affine).to_bytes())
    lying[42:48] = np.array([4000, 4000, 4000], "<i2").tobytes()  # dim[1:4]
    volumes = {"good1/t1.nii.gz": head, "good2/t1.nii.gz": head, "const/t1.nii.gz": np.full(head.shape, 7, np.int16),
               "fourd/t1.nii.gz": np.stack([head, head], -1), "nan/t1.nii.gz": nan, "mask/t1.nii.gz": head,
               "mask/t1_seg.nii.gz": np.zeros((5, 5, 5), np.uint8)}
    files = {"empty/t1.nii": b"", "text/t1.nii": b"not an image\n" * 40, "lies/t1.nii": bytes(lying[:1500])}
    for name in [*volumes, *files]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
    for name, data in volumes.items():
        _nifti(tmp_path / name, data, affine)
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    items = resolve_datalist(tmp_path, on_error="skip")
    cohort = SliceCohort(items, image_size=16, min_foreground=0.0, on_error="skip")
    summary = cohort.summary()
    assert summary["volumes"] == {"read": 9, "used": 2, "skipped": 7}
    reasons = {Path(s["input"]).parent.name: s["reason"] for s in summary["skipped"]}
    assert reasons.keys() == {"const", "fourd", "nan", "mask", "empty", "text", "lies"}
    assert "constant volume" in reasons["const"] and "4D with 2 volumes" in reasons["fourd"]
    assert "NaN" in reasons["nan"] and "does not match its image" in reasons["mask"]
    assert "is empty" in reasons["empty"] and "is not a NIfTI file" in reasons["text"]
    assert "header claims 128000000000 bytes" in reasons["lies"]  # 4000^3 int16 voxels
    assert {Path(s["image"].meta["filename_or_obj"]).parent.name for s in cohort} == {"good1", "good2"}


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_only(tmp_path, rng, monkeypatch):
    item = {"image": _nifti(tmp_path / "v.nii.gz", rng.integers(0, 500, size=(8, 8, 3)).astype(np.int16), np.eye(4))}
    for stream, shown in ((_Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr(sys, "stderr", stream)
        SliceCohort([item], image_size=8, min_foreground=0.0)
        assert ("reading and slicing volumes" in stream.getvalue()) == shown
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    SliceCohort([item], image_size=8, min_foreground=0.0, progress=False)
    assert terminal.getvalue() == ""
