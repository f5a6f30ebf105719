"""LesionPainterSynthesiser and the painter's inference bundle: geometry, source values outside the blend band (integer
and float sources), the mask, reproducibility, copy-paste, safe writing, and privacy with a hospital-style export
whose folder, file names and datalist fields hold a patient's name and MRN."""

import hashlib
import hmac
import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import Compose
from monai.utils import convert_to_numpy
from test_synthesis import bundle, dicom_identifiers, lps_geometry

from monai_mri_gan import runs
from monai_mri_gan.data import load_datalist, make_demo_cohort, volume_transforms
from monai_mri_gan.networks import LesionPainterDiscriminator, LesionPainterGenerator, SliceGenerator
from monai_mri_gan.synthesis import (
    LesionPainterSynthesiser,
    keyed_id,
    provenance_key,
    scrub_check,
    sha256_file,
)
from monai_mri_gan.transforms import blend_weights, cut_slice, invert_normalisation

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_tumour_painter" / "configs"
NAME = "DOE_JOHN_MRN1234567"
SLICING = {"axis": 2, "spacing": None, "norm_mode": "percentile", "min_foreground": 0.05, "tumour_min_voxels": 4,
           "tumour_labels": None, "drop_ambiguous": True}
PAINTING = {"label_values": [1, 2, 4], "crop_size": 32, "dilate_px": 2, "band_px": 4}


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """The tiny demo cohort copied as a hospital export would name it, plus a float32 NIfTI subject.

    Every folder and file name holds the patient's name and MRN; half the items carry it as their ``subject``, the
    others get the datalist's own (path-hashed) subject id. ``float.json`` lists the float subject alone.
    """
    root = tmp_path_factory.mktemp("painter")
    demo = make_demo_cohort(root / "demo", seed=3, num_subjects=4, shape=(48, 52, 12), tumour_fraction=0.5)
    folder = root / f"export_{NAME}"
    folder.mkdir()
    items = []
    for i, item in enumerate(json.loads(demo.read_text())["training"]):
        new = {"class": item["class"]}
        for key in ("image", "label"):
            source = demo.parent / item[key]
            target = folder / f"{NAME}_{source.name}"
            (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
            new[key] = str(target)
        if i % 2 == 0:
            new["subject"] = f"{NAME}-{i}"
        new["patient"] = NAME
        items.append(new)
    datalist = folder / "datalist.json"
    datalist.write_text(json.dumps({"training": items}))
    source = next(i for i in items if i["image"].endswith(".nii.gz"))
    img = nib.load(source["image"])
    values = np.asarray(img.dataobj, dtype=np.float64) * 0.731 + 0.25  # fractional values: a float source
    float_img = nib.Nifti1Image(values.astype(np.float32), img.affine, img.header)
    float_img.set_data_dtype(np.float32)
    float_path = folder / f"{NAME}_float.nii.gz"
    nib.save(float_img, float_path)
    float_label = folder / f"{NAME}_float_seg.nii.gz"
    shutil.copy(source["label"], float_label)
    float_datalist = folder / "float.json"
    float_datalist.write_text(json.dumps({"training": [{"image": str(float_path), "label": str(float_label),
                                                       "subject": f"{NAME}-float"}]}))
    assert sum(i["class"] for i in items) == 2 and {Path(i["image"]).suffix for i in items} == {"", ".gz"}
    return {"root": root, "folder": folder, "datalist": datalist, "float_datalist": float_datalist,
            "items": load_datalist(datalist) + load_datalist(float_datalist)}


def export_identifiers(export) -> set[str]:
    """What must never reach a shareable output of the export: the name and MRN, the subjects, the DICOM
    identifiers, every path of the export as text (absolute, relative, names, series files) and their SHA-256, SHA-1
    and MD5 digests (full and 12-digit)."""
    paths = {str(export["folder"]), export["folder"].name, str(export["datalist"])}
    for item in export["items"]:
        for field in ("image", "label"):
            path = Path(item[field])
            paths.update({str(path), path.name, str(path.relative_to(export["folder"]))})
            paths.update(str(f) for f in path.glob("*"))
    digests = {hashlib.new(name, p.encode("utf-8")).hexdigest() for p in paths for name in ("sha256", "sha1", "md5")}
    dicom = dicom_identifiers([item["image"] for item in export["items"] if Path(item["image"]).is_dir()])
    assert {"DEMOPID00000", "DEMO^Subject0000"} <= dicom
    subjects = {item["subject"] for item in export["items"]}
    return {NAME, "DOE_JOHN", "MRN1234567", *paths, *digests, *(d[:12] for d in digests), *subjects, *dicom}


@pytest.fixture(scope="module")
def painter(tmp_path_factory):
    """A tiny untrained lesion painter checkpoint (32 px crops) in its own run folder."""
    run = tmp_path_factory.mktemp("painter_run")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = LesionPainterGenerator(features=(4, 4, 8, 8, 16, 4))
        discriminator = LesionPainterDiscriminator(channels=4, num_layers=2)
    record = runs.RunRecord("lesion_painter", {"generator": generator, "discriminator": discriminator},
                            slicing=SLICING, class_names=["no_tumour", "tumour"], painting=PAINTING)
    checkpoint = run / "checkpoint_epoch0001.pt"
    runs.save_checkpoint({"config": record.state_dict(), "generator": generator.state_dict(),
                          "ema_generator": generator.state_dict()}, checkpoint)
    return {"run": run, "checkpoint": checkpoint, "key": run / "provenance_key"}


def raw_plane(item) -> np.ndarray:
    """The base slice of a cohort item as loaded from its source, without normalisation."""
    volume = Compose(volume_transforms())({"image": item["image"].meta["filename_or_obj"]})["image"]
    return convert_to_numpy(cut_slice(volume, int(item["slice_index"]), int(item["slice_axis"])))[0, :, :, 0]


def base_ids(synth, key) -> dict:
    """Cohort slices by the keyed id a sidecar names them with (subject, volume path, axis and slice index)."""
    return {keyed_id(key, "base_slice", str(s.get("subject", "")), s["image"].meta["filename_or_obj"],
                     str(s["slice_axis"]), str(s["slice_index"])): s for s in synth.base_cohort}


def check_geometry(path, affine):
    """nibabel and SimpleITK read the file at the base slice's origin, spacing and direction."""
    img = nib.load(path)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert bytes(img.header["descrip"]).startswith(b"SYNTHETIC")
    image = sitk.ReadImage(str(path))
    origin, spacing, direction = lps_geometry(affine)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-5)
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), direction, atol=1e-5)


def test_painted_geometry_mask_and_source_values(tmp_path, export, painter):
    out = tmp_path / "out"
    synth = LesionPainterSynthesiser(painter["run"], out, num_samples=8, seed=5, datalist=export["datalist"])
    written = synth.run()
    assert [w["image"].name for w in written] == [f"painted_{i:04d}.nii.gz" for i in range(8)]
    key = provenance_key(painter["key"])
    by_id = base_ids(synth, key)
    lesion_ids = {keyed_id(key, "lesion", lesion.source) for lesion in synth.bank}
    formats, base_tries = set(), []
    for i, entry in enumerate(written):
        assert entry["mask"].name == entry["image"].name.replace(".nii.gz", "_mask.nii.gz")
        record = json.loads(entry["provenance"].read_text())
        placed = synth.place(i)
        base = by_id[record["base_slice"]]
        assert base is synth.base_cohort[placed["position"]] and base["class"] == 0
        assert not torch.as_tensor(base["label"]).any()
        formats.add(base["image"].meta["source_format"])
        base_tries.append(record["placement"]["base_tries"])
        affine = convert_to_numpy(base["image"].affine).astype(np.float64)
        check_geometry(entry["image"], affine)
        check_geometry(entry["mask"], affine)

        mask = np.asarray(nib.load(entry["mask"]).dataobj)[..., 0]
        np.testing.assert_array_equal(mask, convert_to_numpy(placed["label"])[0, :, :, 0])
        assert mask.dtype == np.int16 and set(np.unique(mask)) - {0} and set(np.unique(mask)) <= {0, 1, 2, 4}
        rows, cols = np.nonzero(mask)
        assert record["placement"]["bbox_px"] == [rows.min(), rows.max() + 1, cols.min(), cols.max() + 1]

        img = nib.load(entry["image"])
        assert img.get_data_dtype() == np.dtype(base["image"].meta["source_dtype"]) == np.int16
        data = np.asarray(img.dataobj)[..., 0]
        raw = raw_plane(base)
        if base["image"].meta["source_format"] == "nifti":  # the source, read independently
            source = np.asarray(nib.as_closest_canonical(nib.load(base["image"].meta["filename_or_obj"])).dataobj)
            np.testing.assert_array_equal(raw, source[:, :, int(base["slice_index"])])
        weights = blend_weights(mask, PAINTING["dilate_px"], PAINTING["band_px"])
        outside = weights == 0
        assert outside.mean() > 0.5
        assert data[outside].tobytes() == raw.astype(np.int16)[outside].tobytes()  # bit for bit
        hole = weights == 1
        assert not np.array_equal(data[hole], raw[hole])
        intensity = record["intensity"]
        assert np.all((data[hole] >= np.floor(intensity["source_low"])) & (data[hole] <= intensity["source_high"]))

        assert record["synthetic"] is True and record["contains_real_anatomy"] is True
        assert record["family"] == "lesion_painter" and record["method"] == "gan"
        assert record["weights"] == "ema_generator" and record["generator_name"].endswith("LesionPainterGenerator")
        assert record["checkpoint_sha256"] == sha256_file(painter["checkpoint"])
        assert record["seed"] == 5 and record["sample_index"] == i
        assert record["lesion_source"] in lesion_ids and record["class_name"] == "tumour"
        assert record["latent"]["seed"] == placed["latent_seed"]
        expected = {k: v for k, v in placed["placement"].items() if k != "lesion_source"}
        assert record["placement"] == json.loads(json.dumps(expected))
        assert record["mask"]["file"] == entry["mask"].name
        assert record["reference_geometry"]["slice_index"] == int(base["slice_index"])
        assert record["reference_geometry"]["reference_id"] == record["base_slice"]
    assert formats == {"dicom", "nifti"}
    assert max(base_tries) > 1  # some drawn bases had no room for a lesion: another was drawn
    assert set(synth.timings) == {"load_s", "place_s", "paint_s", "write_s"}


def test_float_source_copy_paste_uncompressed(tmp_path, export, painter):
    out = tmp_path / "out"
    synth = LesionPainterSynthesiser(painter["run"], out, num_samples=3, seed=2, datalist=export["float_datalist"],
                                     lesion_datalist=export["datalist"], method="copy_paste", compress=False)
    written = synth.run()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"copypaste_{i:04d}{s}" for i in range(3) for s in (".nii", "_mask.nii", ".json"))
    assert synth.lesion_cohort is not synth.base_cohort
    for i, entry in enumerate(written):
        placed = synth.place(i)
        base = synth.base_cohort[placed["position"]]
        img = nib.load(entry["image"])
        assert img.get_data_dtype() == np.float32
        check_geometry(entry["image"], convert_to_numpy(base["image"].affine).astype(np.float64))
        data = np.asarray(img.dataobj)[..., 0]
        mask = np.asarray(nib.load(entry["mask"]).dataobj)[..., 0]
        np.testing.assert_array_equal(mask, convert_to_numpy(placed["label"])[0, :, :, 0])
        raw = raw_plane(base)
        assert not np.array_equal(raw, np.rint(raw))  # a float source indeed
        weights = blend_weights(mask, PAINTING["dilate_px"], PAINTING["band_px"])
        outside, hole = weights == 0, weights == 1
        assert data[outside].tobytes() == raw[outside].astype(np.float32).tobytes()
        # the hole holds the lesion's own pixels, mapped to the base volume's units
        lesion = invert_normalisation(convert_to_numpy(placed["lesion_image"])[0, :, :, 0], base["image"].meta,
                                      dtype=np.float64)
        np.testing.assert_array_equal(data[hole], lesion[hole].astype(np.float32))
        record = json.loads(entry["provenance"].read_text())
        assert record["method"] == "copy_paste" and record["generator_name"] == "copy_paste"
        assert record["weights"] is None and "latent" not in record and record["contains_real_anatomy"] is True


def test_seed_reproduces_samples_byte_for_byte(tmp_path, export, painter):
    def paint(name, seed, count):
        out = tmp_path / name
        LesionPainterSynthesiser(painter["run"], out, num_samples=count, seed=seed, datalist=export["datalist"]).run()
        return out

    first, more, other = paint("a", 5, 3), paint("b", 5, 5), paint("c", 6, 3)
    for i in range(3):
        for suffix in (".nii.gz", "_mask.nii.gz"):
            name = f"painted_{i:04d}{suffix}"
            assert (first / name).read_bytes() == (more / name).read_bytes()
        records = [json.loads((folder / f"painted_{i:04d}.json").read_text()) for folder in (first, more)]
        assert records[0].pop("created") and records[1].pop("created")
        assert records[0] == records[1]
    assert all((first / f"painted_{i:04d}.nii.gz").read_bytes() != (other / f"painted_{i:04d}.nii.gz").read_bytes()
               for i in range(3))


def test_no_overwrite_unless_asked(tmp_path, export, painter):
    out = tmp_path / "out"
    LesionPainterSynthesiser(painter["run"], out, num_samples=2, seed=1, datalist=export["datalist"]).run()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = LesionPainterSynthesiser(painter["run"], out, num_samples=2, seed=9, datalist=export["datalist"])
    with pytest.raises(FileExistsError, match="painted_0000.nii.gz"):
        again.run()
    assert again.timings == {} and again._cohort is None  # refused before reading or painting anything
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    LesionPainterSynthesiser(painter["run"], out, num_samples=2, seed=9, datalist=export["datalist"],
                             overwrite="true").run()
    assert json.loads((out / "painted_0001.json").read_text())["seed"] == 9
    assert sorted(p.name for p in out.iterdir()) == sorted(before)  # no temporary file left


def test_a_failed_write_stops_the_run_and_leaves_complete_samples(tmp_path, export, painter, monkeypatch):
    out = tmp_path / "out"
    synth = LesionPainterSynthesiser(painter["run"], out, num_samples=7, seed=1, datalist=export["datalist"],
                                     batch_size=2)
    write_slice, calls = synth.writer.write_slice, []

    def failing(values, path, *args, **kwargs):
        calls.append(Path(path).name)
        if len(calls) == 4:
            raise OSError("disk full")
        return write_slice(values, path, *args, **kwargs)

    monkeypatch.setattr(synth.writer, "write_slice", failing)
    with pytest.raises(OSError, match="disk full"):
        synth.run()
    # written in a thread while later batches are painted, yet in order: nothing after the failed sample, and
    # neither its mask nor any staged file is left
    assert calls == [f"painted_{i:04d}.nii.gz" for i in range(4)]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"painted_{i:04d}{s}" for i in range(3) for s in (".nii.gz", "_mask.nii.gz", ".json"))
    assert synth.timings["write_s"] > 0 and synth.timings["load_s"] > 0


def test_privacy_of_a_hospital_export(tmp_path, export, painter, caplog):
    key_file = painter["key"]
    key_before = key_file.read_bytes() if key_file.exists() else None
    out = tmp_path / "shareable"
    caplog.set_level("DEBUG")
    for method, datalist in (("gan", export["datalist"]), ("copy_paste", export["float_datalist"])):
        LesionPainterSynthesiser(painter["run"], out, num_samples=4, seed=3, datalist=datalist,
                                 lesion_datalist=export["datalist"], method=method).run()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    if key_before is not None:
        assert key_file.read_bytes() == key_before  # created once, never replaced
    key_hex = key_file.read_text().strip()

    forbidden = export_identifiers(export) | {key_hex}
    files = sorted(out.iterdir())
    assert len(files) == 24 and not [f for f in files if "DOE" in f.name or "MRN" in f.name]
    assert scrub_check(out, forbidden) == []
    assert [m for m in caplog.messages if NAME in m or "MRN" in m] == []


def test_refusals(tmp_path, export, painter):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="inside the output folder"):
        LesionPainterSynthesiser(painter["run"], out, num_samples=1, datalist=export["datalist"],
                                 key_path=out / "keys" / "provenance_key").run()
    with pytest.raises(ValueError, match="method"):
        LesionPainterSynthesiser(painter["run"], out, method="diffusion")
    with pytest.raises(ValueError, match="placement may set"):
        LesionPainterSynthesiser(painter["run"], out, placement={"band_px": 9})
    generator = SliceGenerator(latent_dim=8, image_size=32, base_channels=8)
    whole = tmp_path / "whole_slice.pt"
    runs.save_checkpoint({"config": runs.RunRecord("whole_slice", {"generator": generator}).state_dict(),
                          "ema_generator": generator.state_dict()}, whole)
    with pytest.raises(ValueError, match="not a lesion painter checkpoint"):
        LesionPainterSynthesiser(whole, out)
    assert not out.exists()


def test_provenance_key_and_keyed_ids(tmp_path):
    path = tmp_path / "run" / "provenance_key"
    key = provenance_key(path)
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert provenance_key(path) == key and list(path.parent.iterdir()) == [path]
    assert keyed_id(key, "a", "b") != keyed_id(provenance_key(tmp_path / "other"), "a", "b")
    assert keyed_id(key, "lesion", "x") == hmac.new(key, b"lesion\x1fx", hashlib.sha256).hexdigest()
    path.write_text("not a key\n")
    with pytest.raises(ValueError, match="not a provenance key"):
        provenance_key(path)


def test_inference_bundle(tmp_path, export, painter):
    out = tmp_path / "synthetic"
    result = bundle("run", "inference", "--config_file", str(CONFIGS / "inference.json"), "--ckpt_path",
                    str(painter["run"]), "--datalist", str(export["datalist"]), "--output_dir", str(out),
                    "--num_samples", "2", "--method", "copy_paste", "--compress", "false", "--seed", "4",
                    "--placement", "{'skull_margin_mm': 12.0}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"copypaste_{i:04d}{s}" for i in range(2) for s in (".nii", "_mask.nii", ".json"))
    record = json.loads((out / "copypaste_0001.json").read_text())
    assert record["seed"] == 4 and record["draws"]["placement_args"] == {"skull_margin_mm": 12.0}
