"""The privacy contract end to end: a whole-slice GAN trained, evaluated and sampled on a hospital export whose
folder names, file names and datalist fields hold a patient's name and MRN leaves none of them, nor a hash of any
path, in what a user may share; the local outputs are where the docs say."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_painter_synthesis import NAME, export, export_identifiers  # noqa: F401 (the fixture)

from monai_mri_gan.synthesis import SliceSynthesiser, scrub_check

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_mri_gan" / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


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

    forbidden = export_identifiers(export)
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
