"""SyntheticSliceWriter and provenance: geometry read back by nibabel and SimpleITK, safe writing, privacy."""

import gzip
import hashlib
import hmac
import json
import os
from datetime import datetime, timezone

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import oblique_affine
from monai.data import MetaTensor
from monai.transforms import SaveImage

from monai_mri_gan.synthesis import (
    PHI_KEYS,
    SyntheticSliceWriter,
    cast_to_dtype,
    keyed_id,
    provenance_record,
    scrub_check,
    sha256_file,
    sidecar_path,
    write_sidecar,
    write_synthetic_slice,
)
from monai_mri_gan.synthesis import provenance as provenance_module
from monai_mri_gan.transforms import slice_to_volume_transform

H, W, K = 37, 29, 7
SOURCE = "/data/site-A/sub-0042/Doe^John/T1w.nii.gz"
CHECKPOINT = hashlib.sha256(b"checkpoint").hexdigest()
KEY = bytes(range(32))  # a run folder's provenance key


def translation(k: float, axis: int = 2) -> np.ndarray:
    t = np.eye(4)
    t[axis, 3] = k
    return t


def slice_affine(k: int = K, **kwargs) -> np.ndarray:
    return oblique_affine(**kwargs) @ translation(k)


def make_slice(rng, affine=None, low=-50.0, high=3000.0, **meta) -> MetaTensor:
    data = rng.uniform(low, high, size=(1, H, W, 1))
    affine = slice_affine() if affine is None else affine
    return MetaTensor(torch.as_tensor(data), affine=torch.as_tensor(affine), meta=meta)


def make_record(affine=None, **kwargs) -> dict:
    args = dict(
        generator_name="ConditionalDCGANGenerator",
        generator_version="0.1.0",
        checkpoint_sha256=CHECKPOINT,
        seed=3,
        sample_index=12,
        class_name="tumour",
        class_index=1,
        reference_id=keyed_id(KEY, "reference_slice", SOURCE),
        reference_slice_index=K,
        reference_affine=slice_affine() if affine is None else affine,
    )
    args.update(kwargs)
    return provenance_record(**args)


def lps(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin, spacing and direction of a RAS affine, in SimpleITK's LPS convention."""
    flip = np.diag([-1.0, -1.0, 1.0])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    return flip @ affine[:3, 3], spacing, flip @ affine[:3, :3] / spacing


def files_in(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", ["int16", "float32"])
def test_slice_header_and_values_read_back_with_nibabel(tmp_path, rng, suffix, dtype):
    affine = slice_affine()
    image = make_slice(rng, low=-40000.0, high=40000.0)
    nifti, sidecar = write_synthetic_slice(image, affine, tmp_path / f"fake{suffix}", make_record(), dtype=dtype)
    assert nifti == tmp_path / f"fake{suffix}" and sidecar == tmp_path / "fake.json"
    assert files_in(tmp_path) == sorted([nifti.name, sidecar.name])
    if suffix == ".nii.gz":
        assert nifti.read_bytes()[:2] == b"\x1f\x8b"
    img = nib.load(nifti)
    hdr = img.header
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.affine, affine, atol=1e-5)
    assert int(hdr["qform_code"]) == 1 and int(hdr["sform_code"]) == 1
    np.testing.assert_allclose(hdr.get_zooms(), [0.9, 1.1, 2.5], atol=1e-5)
    np.testing.assert_allclose(hdr["pixdim"][1:4], np.linalg.norm(affine[:3, :3], axis=0), atol=1e-5)
    assert hdr.get_xyzt_units() == ("mm", "unknown")
    assert hdr["descrip"].item() == b"SYNTHETIC monai-mri-gan 0.1.0 class=tumour seed=3 sample=12"
    assert hdr["intent_name"].item() == b"synthetic"
    assert img.shape == (H, W, 1) and hdr.get_data_dtype() == np.dtype(dtype)
    assert float(hdr["scl_slope"]) in (0.0, 1.0) or np.isnan(hdr["scl_slope"])
    source = image.numpy()[0]
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.dtype(dtype)
    if dtype == "int16":
        expected = np.clip(np.rint(source), -32768, 32767)
        assert data.min() == -32768 and data.max() == 32767
        np.testing.assert_array_equal(data, expected)
    else:
        np.testing.assert_array_equal(data, source.astype(np.float32))


def test_slice_geometry_read_back_with_simpleitk(tmp_path, rng):
    affine = slice_affine(k=11, spacing=(0.7, 1.3, 3.1), angles=(-0.3, 0.25, 0.4))
    image = make_slice(rng, affine=affine)
    nifti, _ = write_synthetic_slice(image, None, tmp_path / "fake.nii.gz", make_record(affine), dtype="int16")
    itk = sitk.ReadImage(str(nifti))
    origin, spacing, direction = lps(affine)
    assert itk.GetSize() == (H, W, 1)
    np.testing.assert_allclose(itk.GetOrigin(), origin, atol=1e-5)
    np.testing.assert_allclose(itk.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(np.reshape(itk.GetDirection(), (3, 3)), direction, atol=1e-5)
    # Pixel (i, j, 0) of the array lands at the world point the affine gives it.
    i, j = 5, 23
    world_lps = itk.TransformIndexToPhysicalPoint((i, j, 0))
    np.testing.assert_allclose(world_lps, np.diag([-1, -1, 1]) @ (affine @ [i, j, 0, 1])[:3], atol=1e-4)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk)[0, j, i], np.rint(image.numpy()[0, i, j, 0]))


def test_fast_serialisation_equals_nibabels(tmp_path, rng):
    writer = SyntheticSliceWriter(output_dtype="int16", overwrite=False)
    writer.set_data_array(make_slice(rng))
    path = writer.write(tmp_path / "fake.nii", descrip="SYNTHETIC check")
    assert path.read_bytes() == writer.create_nifti("SYNTHETIC check").to_bytes()


def test_xform_code_dtype_from_source_and_descrip_prefix(tmp_path, rng):
    image = make_slice(rng, source_dtype="uint8")
    writer = SyntheticSliceWriter(xform_code=2, descrip="from a GAN")
    writer.set_data_array(image)
    img = nib.load(writer.write(tmp_path / "fake.nii"))
    assert int(img.header["qform_code"]) == 2 and int(img.header["sform_code"]) == 2
    assert img.header["descrip"].item() == b"SYNTHETIC from a GAN"
    assert img.get_data_dtype() == np.uint8 and np.asanyarray(img.dataobj).max() == 255
    with pytest.raises(ValueError, match="xform_code"):
        SyntheticSliceWriter(xform_code=0)


def test_descrip_is_ascii_and_at_most_80_bytes(tmp_path, rng):
    record = make_record(class_name="Tumör " + "x" * 100)
    nifti, _ = write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii", record)
    descrip = nib.load(nifti).header["descrip"].item()
    assert len(descrip) == 80 and descrip.startswith(b"SYNTHETIC monai-mri-gan 0.1.0 class=Tum?r xxx")


def test_shear_refused_unless_allowed(tmp_path, rng):
    affine = slice_affine()
    affine[:3, :3] = affine[:3, :3] @ np.array([[1.0, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    image = make_slice(rng, affine=affine)
    with pytest.raises(ValueError, match="shear"):
        write_synthetic_slice(image, None, tmp_path / "fake.nii", make_record(affine))
    assert files_in(tmp_path) == []
    writer = SyntheticSliceWriter(allow_shear=True)
    nifti, _ = writer.write_slice(image, tmp_path / "fake.nii", make_record(affine))
    img = nib.load(nifti)
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    assert np.abs(img.get_qform() - affine).max() > 0.01


def test_refuses_bad_input(tmp_path, rng):
    image = make_slice(rng)
    image[0, 3, 4, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        write_synthetic_slice(image, None, tmp_path / "fake.nii", make_record())
    with pytest.raises(ValueError, match="affine"):
        write_synthetic_slice(np.zeros((1, H, W, 1)), None, tmp_path / "fake.nii", make_record())
    with pytest.raises(ValueError, match="reference affine differs"):
        write_synthetic_slice(make_slice(rng), slice_affine(k=K + 1), tmp_path / "fake.nii", make_record())
    with pytest.raises(ValueError, match=".nii"):
        write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.png", make_record())
    with pytest.raises(ValueError, match="resamples"):
        SyntheticSliceWriter().set_metadata({"affine": np.eye(4)}, resample=True)
    assert files_in(tmp_path) == []


def test_cast_to_dtype_rounds_and_clips():
    values = np.array([-300.6, -0.5, 0.49, 1.5, 2.5, 254.5, 1e6])
    np.testing.assert_array_equal(cast_to_dtype(values, np.uint8), [0, 0, 0, 2, 2, 254, 255])
    big = np.finfo(np.float32).max
    np.testing.assert_array_equal(cast_to_dtype(np.array([1e40, -1e40]), "float32"), np.array([big, -big]))


def test_existing_files_are_not_overwritten_unless_asked(tmp_path, rng):
    path = tmp_path / "fake.nii.gz"
    write_synthetic_slice(make_slice(rng), None, path, make_record(), dtype="int16")
    old_nifti, old_json = path.read_bytes(), sidecar_path(path).read_bytes()
    new = make_slice(rng)
    with pytest.raises(FileExistsError, match="fake.nii.gz"):
        write_synthetic_slice(new, None, path, make_record(seed=4), dtype="int16")
    assert path.read_bytes() == old_nifti and sidecar_path(path).read_bytes() == old_json
    # A lone sidecar also blocks the pair, before anything is written.
    lone = tmp_path / "other.nii"
    sidecar_path(lone).write_text("{}")
    with pytest.raises(FileExistsError, match="other.json"):
        write_synthetic_slice(new, None, lone, make_record())
    assert not lone.exists() and sidecar_path(lone).read_text() == "{}"
    write_synthetic_slice(new, None, path, make_record(seed=4), dtype="int16", overwrite=True)
    np.testing.assert_array_equal(nib.load(path).get_fdata()[..., 0], np.rint(new.numpy()[0, ..., 0]))
    assert json.loads(sidecar_path(path).read_text())["seed"] == 4
    assert files_in(tmp_path) == ["fake.json", "fake.nii.gz", "other.json"]


def test_failure_while_writing_nifti_leaves_nothing(tmp_path, rng, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nib.Nifti1Header, "write_to", fail)
    with pytest.raises(OSError, match="disk full"):
        write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii.gz", make_record())
    assert files_in(tmp_path) == []


def test_sidecar_that_cannot_be_placed_takes_its_nifti_with_it(tmp_path, rng, monkeypatch):
    real_link = os.link

    def racing_link(src, dst, *args, **kwargs):
        if str(dst).endswith(".json"):
            # Another writer claims the sidecar's name between the existence check and the rename.
            with open(dst, "w") as f:
                f.write("other writer")
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(provenance_module.os, "link", racing_link)
    with pytest.raises(FileExistsError, match="fake.json"):
        write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii", make_record())
    assert files_in(tmp_path) == ["fake.json"]
    assert (tmp_path / "fake.json").read_text() == "other writer"


def test_file_systems_without_hard_links_still_write_safely(tmp_path, rng, monkeypatch):
    def no_links(src, dst, *args, **kwargs):
        raise PermissionError("operation not permitted")

    monkeypatch.setattr(provenance_module.os, "link", no_links)
    write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii", make_record())
    assert files_in(tmp_path) == ["fake.json", "fake.nii"]
    with pytest.raises(FileExistsError):
        write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii", make_record())
    assert nib.load(tmp_path / "fake.nii").shape == (H, W, 1)


def test_failure_while_replacing_leaves_old_files(tmp_path, rng, monkeypatch):
    path = tmp_path / "fake.nii"
    write_synthetic_slice(make_slice(rng), None, path, make_record())
    before = {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)}

    def fail(src, dst):
        raise OSError("interrupted")

    monkeypatch.setattr(provenance_module.os, "replace", fail)
    with pytest.raises(OSError, match="interrupted"):
        write_synthetic_slice(make_slice(rng), None, path, make_record(seed=9), overwrite=True)
    assert {name: (tmp_path / name).read_bytes() for name in files_in(tmp_path)} == before


def test_sidecar_content(tmp_path, rng):
    affine = slice_affine()
    created = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    record = make_record(mask_id=keyed_id(KEY, "mask", "/data/site-A/sub-0042/mask.nii.gz"), created=created)
    nifti, sidecar = write_synthetic_slice(make_slice(rng), affine, tmp_path / "fake.nii.gz", record)
    content = json.loads(sidecar.read_text())
    assert content["synthetic"] is True
    assert content["created"] == "2024-05-06T07:08:09Z"
    assert content["generator_name"] == "ConditionalDCGANGenerator" and content["generator_version"] == "0.1.0"
    assert content["checkpoint_sha256"] == CHECKPOINT
    assert (content["seed"], content["sample_index"]) == (3, 12)
    assert (content["class_name"], content["class_index"]) == ("tumour", 1)
    # keyed ids: the HMAC of the sources under the run's key; their plain SHA-256 (which anyone holding a list of
    # candidate paths could match) appears nowhere
    assert content["mask_id"] == hmac.new(KEY, b"mask\x1f/data/site-A/sub-0042/mask.nii.gz", "sha256").hexdigest()
    geometry = content["reference_geometry"]
    assert geometry["reference_id"] == hmac.new(KEY, f"reference_slice\x1f{SOURCE}".encode(), "sha256").hexdigest()
    for plain in (SOURCE, "/data/site-A/sub-0042/mask.nii.gz"):
        assert hashlib.sha256(plain.encode()).hexdigest() not in sidecar.read_text()
    assert (geometry["slice_index"], geometry["axis"], geometry["space"]) == (K, 2, "RAS")
    np.testing.assert_allclose(geometry["affine"], affine, atol=1e-12)
    assert content["software"]["monai_mri_gan"] == "0.1.0"
    assert set(content["software"]) >= {"monai", "torch", "nibabel"}
    assert scrub_check([nifti, sidecar], [SOURCE, "Doe^John", "sub-0042", "site-A"]) == []
    now = datetime.fromisoformat(make_record()["created"].replace("Z", "+00:00"))
    assert abs((now - datetime.now(timezone.utc)).total_seconds()) < 60


def test_provenance_record_validation():
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        make_record(checkpoint_sha256="not-a-hash")
    with pytest.raises(ValueError, match="timezone"):
        make_record(created=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="PatientID"):
        make_record(extra={"acquisition": {"PatientID": "12345"}})
    with pytest.raises(ValueError, match="override"):
        make_record(extra={"synthetic": False})
    assert make_record(extra={"note": "demo"})["note"] == "demo"


@pytest.mark.parametrize("key", ["PatientName", "StudyInstanceUID", "AccessionNumber"])
def test_sidecar_refuses_phi_keys(tmp_path, rng, key):
    record = make_record()
    record["source"] = {"tags": [{"Rows": 64}, {key: "secret-value"}]}
    with pytest.raises(ValueError, match=f"source.tags\\[1\\].{key}") as err:
        write_sidecar(record, tmp_path / "fake.nii.gz")
    assert "secret-value" not in str(err.value)
    with pytest.raises(ValueError, match=key):
        write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii.gz", record)
    assert files_in(tmp_path) == []
    assert {"PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "SOPInstanceUID"} <= set(PHI_KEYS)


def test_sidecar_refuses_records_not_marked_synthetic(tmp_path):
    record = make_record()
    record["synthetic"] = "yes"
    with pytest.raises(ValueError, match="synthetic"):
        write_sidecar(record, tmp_path / "fake.nii")
    path = write_sidecar(make_record(), tmp_path / "fake.nii")
    assert path == tmp_path / "fake.json"
    with pytest.raises(FileExistsError):
        write_sidecar(make_record(), tmp_path / "fake.nii")
    write_sidecar(make_record(seed=5), tmp_path / "fake.nii", overwrite=True)
    assert json.loads(path.read_text())["seed"] == 5
    assert files_in(tmp_path) == ["fake.json"]


def test_scrub_check_finds_values_in_plain_gzipped_and_json_escaped_form(tmp_path, rng):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "plain.txt").write_bytes(b"header Doe^John trailer")
    (tmp_path / "packed.gz").write_bytes(gzip.compress(b"PatientID=ABC123"))
    record = make_record(class_name="Müller")
    nifti, sidecar = write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii", record)
    assert b"M\\u00fcller" in sidecar.read_bytes()
    hits = scrub_check(tmp_path, ["Doe^John", "ABC123", "Müller", "", "never-there"])
    found = sorted((p.name, v) for p, v in hits)
    assert found == [("fake.json", "Müller"), ("packed.gz", "ABC123"), ("plain.txt", "Doe^John")]
    assert scrub_check(tmp_path / "sub" / "plain.txt", [b"doe^john"]) == []


def test_forbidden_values_stop_the_write(tmp_path, rng):
    record = make_record(class_name="Doe^John")
    with pytest.raises(ValueError, match="forbidden") as err:
        write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii", record, forbidden_values=["Doe^John"])
    assert "Doe^John" not in str(err.value)
    assert files_in(tmp_path) == []
    write_synthetic_slice(make_slice(rng), None, tmp_path / "fake.nii", make_record(), forbidden_values=["Doe^John"])
    assert files_in(tmp_path) == ["fake.json", "fake.nii"]


def test_sha256_file_streams(tmp_path):
    path = tmp_path / "checkpoint.pt"
    payload = os.urandom(100_003)
    path.write_bytes(payload)
    assert sha256_file(path, chunk_size=4096) == hashlib.sha256(payload).hexdigest()


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_write_volume_places_slices_on_the_reference_grid(tmp_path, rng, axis, suffix):
    shape = (13, 11, 9)
    vol_affine = oblique_affine()
    indices = [0, 4, shape[axis] - 1]
    in_plane = [s for a, s in enumerate(shape) if a != axis]
    slices = [
        MetaTensor(
            torch.as_tensor(rng.uniform(10, 500, size=(1, *in_plane, 1))),
            affine=torch.as_tensor(vol_affine @ slice_to_volume_transform(axis, k)),
            meta={"source_dtype": "int16"},
        )
        for k in indices
    ]
    record = make_record(affine=vol_affine, reference_axis=axis, reference_slice_index=indices[0])
    nifti, sidecar = SyntheticSliceWriter().write_volume(
        slices, indices, vol_affine, shape, tmp_path / f"vol{suffix}", record, axis=axis, background=-7
    )
    img = nib.load(nifti)
    np.testing.assert_allclose(img.get_qform(), vol_affine, atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), vol_affine, atol=1e-5)
    assert img.shape == shape and img.get_data_dtype() == np.int16
    assert img.header["descrip"].item().startswith(b"SYNTHETIC")
    data = np.asanyarray(img.dataobj)
    for k, s in zip(indices, slices, strict=True):
        np.testing.assert_array_equal(np.take(data, k, axis=axis), np.rint(s.numpy()[0, ..., 0]))
    rest = np.delete(data, indices, axis=axis)
    assert rest.size > 0 and np.all(rest == -7)
    content = json.loads(sidecar.read_text())
    assert content["volume"] == {"axis": axis, "slice_indices": indices, "shape": list(shape), "background": -7}
    # A slice whose own affine says it belongs elsewhere is refused.
    with pytest.raises(ValueError, match="places it elsewhere"):
        SyntheticSliceWriter().write_volume(
            slices[:2], [4, 0], vol_affine, shape, tmp_path / f"bad{suffix}", record, axis=axis
        )
    with pytest.raises(ValueError, match="outside"):
        plain = [s.numpy() for s in slices[:1]]
        SyntheticSliceWriter().write_volume(
            plain, [shape[axis]], vol_affine, shape, tmp_path / f"bad{suffix}", record, axis=axis
        )
    assert files_in(tmp_path) == sorted([nifti.name, sidecar.name])


def test_usable_through_monai_saveimage(tmp_path, rng):
    image = make_slice(rng, filename_or_obj="fake_slice.nii.gz")
    saver = SaveImage(
        output_dir=tmp_path, output_postfix="syn", writer=SyntheticSliceWriter, output_dtype=np.int16,
        separate_folder=False, resample=False,
    )
    saver(image)
    (written,) = tmp_path.glob("*.nii.gz")
    img = nib.load(written)
    assert img.shape == (H, W, 1) and img.get_data_dtype() == np.int16
    np.testing.assert_allclose(img.get_qform(), slice_affine(), atol=1e-5)
    assert img.header["descrip"].item().startswith(b"SYNTHETIC")
