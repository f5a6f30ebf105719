"""SliceSynthesiser and the inference bundle: geometry and intensity of written slices, reproducibility, safe
writing, stacked volumes, a named reference, and privacy end to end (train + synthesise from DICOM references)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.utils import convert_to_numpy

from monai_mri_gan.data import load_datalist, make_demo_cohort
from monai_mri_gan.runs import cohort_from_record, generator_from_checkpoint
from monai_mri_gan.synthesis import (
    PHI_KEYS,
    SliceSynthesiser,
    as_flag,
    keyed_id,
    provenance_key,
    scrub_check,
    sha256_file,
    sha256_text,
    sidecar_path,
)
from monai_mri_gan.synthesis import writer as writer_module
from monai_mri_gan.transforms import invert_normalisation

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_mri_gan" / "configs"
LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def bundle(*args, cwd):
    """Run ``python -m monai.bundle <args>`` and return the completed process (output captured)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def tiny_gan(tmp_path_factory) -> dict:
    """A tiny demo cohort and a 1-epoch 32 px checkpoint trained by the bundle, shared by the synthesis test modules.

    It is built once per test session under pytest's base temporary folder; the training logs are kept beside it.
    """
    root = tmp_path_factory.getbasetemp() / "tiny_gan"
    datalist = root / "cohort" / "datalist.json"
    run = root / "run"
    if not (root / "done").exists():
        datalist = make_demo_cohort(root / "cohort", seed=3, num_subjects=4, shape=(48, 52, 12))
        result = bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), "--datalist", str(datalist),
                        "--output_dir", str(run), "--max_epochs", "1", "--image_size", "32",
                        # the tiny phantoms' tumour cores are small: 4 voxels make a tumour slice (2 of 40 slices)
                        "--slicing#tumour_min_voxels", "4", cwd=root)
        (root / "train_stdout.log").write_text(result.stdout)
        (root / "train_stderr.log").write_text(result.stderr)
        assert result.returncode == 0, result.stderr[-3000:]
        (root / "done").touch()
    checkpoint = sorted(run.glob("checkpoint_epoch*.pt"))[-1]
    return {"root": root, "datalist": datalist, "run": run, "checkpoint": checkpoint,
            "logs": [root / "train_stdout.log", root / "train_stderr.log"]}


@pytest.fixture(scope="module")
def cohort(gan):
    """The reference cohort, cut with the checkpoint's slicing configuration."""
    config = torch.load(gan["checkpoint"], weights_only=True)["config"]
    return cohort_from_record(config, load_datalist(gan["datalist"]))


def lps_geometry(affine):
    """Origin, spacing and direction (row-major 3x3) that SimpleITK reports for a RAS voxel-to-world affine."""
    lps = LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return lps[:3, 3], spacing, (lps[:3, :3] / spacing).ravel()


def test_slices_geometry_dtype_and_values(tmp_path, gan, cohort):
    out = tmp_path / "out"
    synth = SliceSynthesiser(gan["run"], out, samples_per_class=6, seed=11, cohort=cohort)
    written = synth.run()
    assert len(written) == 12 and synth.ckpt_path == gan["checkpoint"]
    generator = generator_from_checkpoint(gan["checkpoint"])
    z = torch.randn(6, generator.latent_dim, generator=torch.Generator().manual_seed(11))
    formats = set()
    for class_index in (0, 1):
        with torch.no_grad():
            expected = generator(z, torch.full((6,), class_index, dtype=torch.long)).numpy()
        positions = synth.reference_positions(class_index, 6)
        for i, position in enumerate(positions):
            item = cohort[position]
            reference = item["image"]
            assert item["class"] == class_index
            formats.add(reference.meta["source_format"])
            affine = convert_to_numpy(reference.affine).astype(np.float64)
            name = ["no_tumour", "tumour"][class_index]
            path = out / f"synthetic_{name}_11_{i:05d}.nii.gz"
            img = nib.load(path)
            header = img.header
            np.testing.assert_allclose(img.get_qform(), affine, atol=1e-5)
            np.testing.assert_allclose(img.get_sform(), affine, atol=1e-5)
            assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1
            np.testing.assert_allclose(header.get_zooms(), np.linalg.norm(affine[:3, :3], axis=0), atol=1e-5)
            assert header.get_xyzt_units()[0] == "mm"
            assert bytes(header["descrip"]).startswith(b"SYNTHETIC")
            assert img.get_data_dtype() == np.dtype(reference.meta["source_dtype"])
            data = np.asarray(img.dataobj)
            values = invert_normalisation(expected[i][..., None], reference.meta)
            np.testing.assert_array_equal(data, values[0])
            image = sitk.ReadImage(str(path))
            origin, spacing, direction = lps_geometry(affine)
            np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-5)
            np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-5)
            np.testing.assert_allclose(image.GetDirection(), direction, atol=1e-5)
            record = json.loads(sidecar_path(path).read_text())
            assert record["synthetic"] is True and record["seed"] == 11 and record["sample_index"] == i
            assert record["class_index"] == class_index and record["class_name"] == name
            assert record["checkpoint_sha256"] == sha256_file(gan["checkpoint"])
            geometry = record["reference_geometry"]
            key = provenance_key(gan["run"] / "provenance_key")  # the run folder's key, created by the synthesiser
            assert geometry["reference_id"] == keyed_id(key, "reference_slice", reference.meta["filename_or_obj"],
                                                        str(geometry["axis"]), str(item["slice_index"]))
            assert sha256_text(reference.meta["filename_or_obj"]) not in sidecar_path(path).read_text()
            assert geometry["slice_index"] == item["slice_index"]
            assert str(reference.meta["filename_or_obj"]) not in sidecar_path(path).read_text()
    assert formats == {"dicom", "nifti"}  # both kinds of source were used as references


def test_same_seed_same_files(tmp_path, gan, cohort):
    runs, synths = [], []
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synths.append(SliceSynthesiser(gan["checkpoint"], tmp_path / name, samples_per_class=3, classes=["tumour"],
                                       seed=seed, cohort=cohort, compress=False))
        synths[-1].run()
        runs.append(tmp_path / name)
    # another seed draws other latents and other outputs (a one-epoch generator may still round to equal int16)
    assert not torch.equal(synths[0].latents(3), synths[2].latents(3))
    assert not torch.equal(synths[0].generate(1, 3), synths[2].generate(1, 3))
    for i in range(3):
        a = runs[0] / f"synthetic_tumour_5_{i:05d}.nii"
        b = runs[1] / f"synthetic_tumour_5_{i:05d}.nii"
        assert a.read_bytes() == b.read_bytes()
        ra, rb = (json.loads(sidecar_path(p).read_text()) for p in (a, b))
        ra.pop("created"), rb.pop("created")
        assert ra == rb
        assert json.loads(sidecar_path(runs[2] / f"synthetic_tumour_6_{i:05d}.nii").read_text())["seed"] == 6


def test_no_overwrite_and_interrupted_run(tmp_path, gan, cohort, monkeypatch):
    out = tmp_path / "out"
    SliceSynthesiser(gan["run"], out, samples_per_class=2, classes=[1], cohort=cohort).run()
    first = out / "synthetic_tumour_0_00000.nii.gz"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(FileExistsError, match="synthetic_tumour_0_00000"):
        SliceSynthesiser(gan["run"], out, samples_per_class=2, classes=[1], cohort=cohort, seed=0).run()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    first.write_bytes(b"stale")
    SliceSynthesiser(gan["run"], out, samples_per_class=2, classes=[1], cohort=cohort, overwrite=True).run()
    assert first.read_bytes() == before[first.name]

    # an exception while files are being committed (here after 7 commits: 3 pairs and a half) leaves whole pairs
    real_commit, calls = writer_module.commit_file, []

    def failing_commit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(writer_module, "commit_file", failing_commit)
    broken = tmp_path / "broken"
    with pytest.raises(KeyboardInterrupt):
        SliceSynthesiser(gan["run"], broken, samples_per_class=6, classes=[0], cohort=cohort).run()
    names = sorted(p.name for p in broken.iterdir())
    assert not [n for n in names if n.startswith(".")]  # no temporary files left
    assert names == sorted(f"synthetic_no_tumour_0_{i:05d}{s}" for i in range(3) for s in (".json", ".nii.gz"))
    for name in names:
        if name.endswith(".nii.gz"):
            assert np.asarray(nib.load(broken / name).dataobj).shape == (32, 32, 1)


def test_stacked_volumes(tmp_path, gan, cohort):
    out = tmp_path / "out"
    synth = SliceSynthesiser(gan["run"], out, samples_per_class=5, classes=["no_tumour", "tumour"], seed=2,
                             cohort=cohort, stack_volume=True)
    written = synth.run()
    volumes = [w for w in written if w["kind"] == "volume"]
    slices = {(w["class"], w["sample_index"]): w for w in written if w["kind"] == "slice"}
    assert volumes and sum(len(v["sample_indices"]) for v in volumes) == 10
    for volume in volumes:
        img = nib.load(volume["image"])
        data = np.asarray(img.dataobj)
        assert data.shape == (32, 32, 12)  # the reference volume's 12 slices on the 32 x 32 fitted grid
        np.testing.assert_allclose(img.get_qform(), img.get_sform(), atol=1e-5)
        record = json.loads(volume["provenance"].read_text())
        for s, k in zip(volume["sample_indices"], record["volume"]["slice_indices"], strict=True):
            single = nib.load(slices[(volume["class"], s)]["image"])
            np.testing.assert_array_equal(data[..., k], np.asarray(single.dataobj)[..., 0])
            np.testing.assert_allclose(img.affine @ [0, 0, k, 1], single.affine @ [0, 0, 0, 1], atol=1e-4)
            np.testing.assert_allclose(img.affine[:3, :3], single.affine[:3, :3], atol=1e-5)


def test_named_reference_slice(tmp_path, gan, cohort):
    item = next(s for s in cohort if s["image"].meta["source_format"] == "nifti" and s["slice_index"] == 5)
    volume = item["image"].meta["filename_or_obj"]
    out = tmp_path / "out"
    written = SliceSynthesiser(gan["run"], out, samples_per_class=2, seed=1, reference_image=volume,
                               reference_slice=5).run()
    assert len(written) == 4
    for w in written:
        img = nib.load(w["image"])
        np.testing.assert_allclose(img.affine, convert_to_numpy(item["image"].affine), atol=1e-5)
        record = json.loads(w["provenance"].read_text())
        assert record["reference_choice"] == "named" and record["reference_geometry"]["slice_index"] == 5


def test_options_from_the_command_line(gan):
    assert as_flag("False") is False and as_flag("true") is True and as_flag(np.bool_(True)) is True
    with pytest.raises(ValueError, match="compress must be true or false"):
        as_flag("no", "compress")
    with pytest.raises(ValueError, match="unknown class 'glioma'"):
        SliceSynthesiser(gan["run"], gan["root"] / "unused", classes=["glioma"])
    with pytest.raises(ValueError, match="go together"):
        SliceSynthesiser(gan["run"], gan["root"] / "unused", reference_image=gan["datalist"])
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        SliceSynthesiser(gan["root"] / "cohort", gan["root"] / "unused")


#: what the demo cohort's DICOM series say of their acquisition, in BIDS names and units
DEMO_ACQUISITION = {"Modality": "MR", "MagneticFieldStrength": 1.5, "RepetitionTime": 0.55, "EchoTime": 0.01,
                    "FlipAngle": 90.0, "ContrastAgentGiven": True}


def dicom_identifiers(folders) -> set[str]:
    """Every value of a patient/study identifier (PHI_KEYS) in the DICOM files of ``folders``, read with pydicom."""
    values = set()
    for folder in folders:
        for path in sorted(Path(folder).glob("*.dcm")):
            ds = pydicom.dcmread(path)
            for dataset in (ds, ds.file_meta):
                for key in PHI_KEYS:
                    value = dataset.get(key)
                    if value is not None and str(value):
                        values.add(str(value))
    # one- to three-character values (StudyID "1", "3") identify nothing and occur in any file
    return {v for v in values if len(v) >= 4}


def test_privacy_train_and_synthesise_from_dicom(tmp_path, gan):
    items = [i for i in json.loads(gan["datalist"].read_text())["training"] if "dicom" in i["image"]]
    assert len(items) == 2
    base = gan["datalist"].parent
    datalist = tmp_path / "dicom_only.json"
    datalist.write_text(json.dumps({"training": [{k: str(base / v) if k in ("image", "label") else v
                                                  for k, v in i.items()} for i in items]}))
    folders = [base / i["image"] for i in items]
    identifiers = dicom_identifiers(folders)
    keys = {"DEMO^Subject0000", "DEMOPID00000", "DEMOACC00000", "Demo Phantom Hospital"}
    assert keys <= identifiers and any(v.count(".") > 4 for v in identifiers)  # names, ids and UIDs
    assert scrub_check(folders, identifiers)  # the check does find them where they are

    out = tmp_path / "synthetic"
    result = bundle("run", "inference", "--config_file", str(CONFIGS / "inference.json"), "--ckpt_path",
                    str(gan["run"]), "--image_size", "32", "--datalist", str(datalist), "--output_dir", str(out),
                    "--samples_per_class", "3", "--stack_volume", "True", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    logs = tmp_path / "inference.log"
    logs.write_text(result.stdout + result.stderr)
    assert "wrote 3 synthetic tumour slice(s)" in logs.read_text()
    assert len(list(out.glob("synthetic_*_0_000*.nii.gz"))) == 6 and list(out.glob("*volume-*.nii.gz"))
    # the reference scan's acquisition, whitelisted and in BIDS units, and nothing else of its header
    record = json.loads(next(out.glob("synthetic_tumour_0_00000.json")).read_text())
    assert record["reference_acquisition"] == DEMO_ACQUISITION
    hits = scrub_check([out, gan["run"], logs, *gan["logs"]], identifiers)
    assert hits == []
    # reference locations only as one-way hashes: no series folder path in any output or synthesis log line
    paths = [str(f) for f in folders]
    assert scrub_check(out, paths) == []
    synthesis_lines = [line for line in logs.read_text().splitlines() if "monai_mri_gan.synthesis" in line]
    assert synthesis_lines and not [line for line in synthesis_lines if any(p in line for p in paths)]
