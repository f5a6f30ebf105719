"""The privacy contract end to end: a whole-slice GAN trained, evaluated and sampled on a hospital export whose
folder names, file names and datalist fields hold a patient's name and MRN leaves none of them, nor a hash of any
path, in what a user may share; the local outputs are where the docs say."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_painter_synthesis import NAME, export  # noqa: F401 (the fixture)
from test_synthesis import dicom_identifiers

from monai_mri_gan.synthesis import SliceSynthesiser, scrub_check

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_mri_gan" / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


def path_values(hospital) -> set[str]:
    """Every path of the hospital as text (absolute, relative, names, series files) and their common hashes."""
    paths = {str(hospital["folder"]), hospital["folder"].name, str(hospital["datalist"])}
    for item in hospital["items"]:
        for field in ("image", "label"):
            path = Path(item[field])
            paths.update({str(path), path.name, str(path.relative_to(hospital["folder"]))})
            paths.update(str(f) for f in path.glob("*"))
    hashes = set()
    for p in paths:
        for name in ("sha256", "sha1", "md5"):
            digest = hashlib.new(name, p.encode("utf-8")).hexdigest()
            hashes.update({digest, digest[:12]})
    return paths | hashes


def test_shareable_outputs_of_a_training_run_hold_no_identifier(tmp_path, export):  # noqa: F811 (the fixture)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.json"),
           "--datalist", str(export["datalist"]), "--output_dir", str(run), "--image_size", "32", "--max_epochs", "1",
           "--batch_size", "8", "--evaluate_every", "1", "--evaluate_num_samples", "16",
           "--slicing#tumour_min_voxels", "4"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    synthetic = tmp_path / "synthetic"
    SliceSynthesiser(run, synthetic, samples_per_class=3, datalist=export["datalist"], stack_volume=True).run()

    dicom = dicom_identifiers([item["image"] for item in export["items"] if Path(item["image"]).is_dir()])
    assert {"DEMOPID00000", "DEMO^Subject0000"} <= dicom
    subjects = {item["subject"] for item in export["items"]}
    forbidden = {NAME, "DOE_JOHN", "MRN1234567", *subjects, *dicom, *path_values(export)}
    shareable = [synthetic, run / "samples", run / "evaluation", *run.glob("*checkpoint*.pt"), *run.glob("models")]
    assert len(list(synthetic.glob("*.json"))) >= 6 and list((run / "samples").glob("*.png"))
    assert (run / "evaluation" / "metrics.json").is_file() and list(run.glob("checkpoint_*.pt"))
    assert scrub_check(shareable, forbidden) == []
    assert not [p for root in shareable for p in Path(root).rglob("*") if "DOE" in p.name or "MRN" in p.name]

    # the local outputs name the user's own files, as the docs say, and stay in the run folder
    local = [run / "cohort.json", run / "run_fingerprint.json", run / "local" / "closest_pairs.png"]
    assert all(p.is_file() for p in local)
    assert NAME in (run / "run_fingerprint.json").read_text()
    assert json.loads((run / "cohort.json").read_text())["volumes"]["used"] == len(export["items"]) - 1
