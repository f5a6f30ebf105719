"""The training bundle through ``python -m monai.bundle``: a short run on a tiny demo cohort."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_mri_gan.data import make_demo_cohort
from monai_mri_gan.networks import SliceGenerator
from monai_mri_gan.runs import build_network, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "bundles" / "brain_mri_gan" / "configs" / "train.json"


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    return make_demo_cohort(tmp_path_factory.mktemp("cohort") / "demo", seed=3, num_subjects=4, shape=(48, 52, 12))


def _bundle(*args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("conditional", [True, False])
def test_training_bundle_short_run(tmp_path, tiny_cohort, conditional):
    out = tmp_path / "run"
    args = ["training", "--config_file", str(TRAIN), "--datalist", str(tiny_cohort), "--output_dir", str(out),
            "--max_epochs", "2", "--batch_size", "8", "--image_size", "32", "--conditional", str(conditional),
            "--log_every", "1"]
    result = _bundle(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "g_loss" in result.stdout and "d_loss" in result.stdout
    # the run says what it found, in the log and in cohort.json
    summary = json.loads((out / "cohort.json").read_text())
    assert summary["volumes"] == {"read": 4, "used": 4, "skipped": 0} and summary["formats"] == {"dicom": 2, "nifti": 2}
    assert summary["subjects"] == 4 and summary["slices"]["total"] == sum(
        v for k, v in summary["slices"].items() if k != "total")
    assert "cohort: 4 of 4 volumes used (2 dicom, 2 nifti), 4 subjects" in result.stdout + result.stderr
    ckpt = load_checkpoint(out)
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]
    config = ckpt["config"]
    assert config["num_classes"] == (2 if conditional else 0) and config["image_size"] == 32
    # the checkpoint alone rebuilds the EMA generator
    g = build_network(config, "generator")
    assert isinstance(g, SliceGenerator) and g.latent_dim == config["latent_dim"]
    g.load_state_dict(ckpt["ema_generator"])
    grid = np.asarray(Image.open(out / "samples" / "epoch_0002.png"))
    rows = 2  # one per class, or two unconditional rows
    assert grid.shape == (rows * 32, 8 * 32)
    assert any((out / "tensorboard").iterdir())

    # a rerun with more epochs resumes from the saved iteration instead of starting again
    more = _bundle(*[a if a != "2" else "3" for a in args], cwd=tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    assert "Restored all variables from" in more.stdout + more.stderr
    resumed = load_checkpoint(out)
    assert resumed["trainer"]["iteration"] == 3 * ckpt["trainer"]["epoch_length"]
    assert not torch.equal(resumed["generator"][next(iter(resumed["generator"]))],
                           ckpt["generator"][next(iter(ckpt["generator"]))])
    if not conditional:
        return
    # another run's settings into the same folder: refused before any step, naming what differs
    other = _bundle(*args, "--learning_rate", "0.001", cwd=tmp_path)
    assert other.returncode != 0 and "RunMismatchError" in other.stderr
    assert "settings.learning_rate: 0.0002 in the folder's run, 0.001 now" in other.stderr
    assert load_checkpoint(out)["trainer"]["iteration"] == resumed["trainer"]["iteration"]
    forced = _bundle(*args, "--learning_rate", "0.001", "--max_epochs", "4", "--force_resume", "true",
                     cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert load_checkpoint(out)["trainer"]["iteration"] == 4 * ckpt["trainer"]["epoch_length"]


def test_training_bundle_default_run_id(tmp_path, tiny_cohort):
    """``monai.bundle run`` without a run id trains too (``run`` section)."""
    out = tmp_path / "run"
    result = _bundle("--config_file", str(TRAIN), "--datalist", str(tiny_cohort), "--output_dir", str(out),
                     "--max_epochs", "1", "--image_size", "32", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert load_checkpoint(out)["trainer"]["iteration"] > 0


def test_training_bundle_adaptive_augmentation(tmp_path, tiny_cohort):
    """``ada_target`` turns on ADA's control of DiffAugment's p; p is kept in the checkpoint and restored."""
    out = tmp_path / "run"
    args = ["training", "--config_file", str(TRAIN), "--datalist", str(tiny_cohort), "--output_dir", str(out),
            "--max_epochs", "2", "--batch_size", "8", "--image_size", "32", "--ada_target", "0.6",
            "--ada_speed_images", "64", "--diffaugment", "['translation','cutout']", "--evaluate_every", "0"]
    result = _bundle(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(out)
    assert ckpt["trainer"]["iteration"] >= 4  # at least one adjustment, by the slices seen over 64 either way
    p = ckpt["augmentation"]["p"]
    assert 0.0 <= p <= 1.0 and p * 64 == pytest.approx(round(p * 64)) and p != 1.0  # moved from 0 by k / 64
    assert ckpt["config"]["settings"]["ada_target"] == 0.6
    off = _bundle(*[a if a != str(out) else str(tmp_path / "off") for a in args[:-8]], "--evaluate_every", "0",
                  cwd=tmp_path)
    assert off.returncode == 0, off.stderr[-3000:]
    assert load_checkpoint(tmp_path / "off")["augmentation"]["p"] == 1.0  # off: DiffAugment's p as configured


def test_training_bundle_skip_excitation_trains_and_infers(tmp_path, tiny_cohort):
    """``g_skip_excitation`` builds the generator with FastGAN's skip-layer excitation, kept in the run record;
    inference needs the same switch and names it when it differs."""
    out = tmp_path / "run"
    result = _bundle("training", "--config_file", str(TRAIN), "--datalist", str(tiny_cohort), "--output_dir",
                     str(out), "--max_epochs", "1", "--batch_size", "8", "--image_size", "32", "--evaluate_every", "0",
                     "--g_skip_excitation", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["networks"]["generator"]["args"]["skip_excitation"] is True
    assert any(k.startswith("excitations.2.reduce") for k in ckpt["ema_generator"])  # 4 px gates 32 px
    infer = ["inference", "--config_file", str(TRAIN.with_name("inference.json")), "--ckpt_path", str(out),
             "--datalist", str(tiny_cohort), "--image_size", "32", "--samples_per_class", "2", "--classes",
             "['no_tumour']"]
    made = _bundle(*infer, "--output_dir", str(tmp_path / "synthetic"), "--g_skip_excitation", "true", cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-3000:]
    assert len(list((tmp_path / "synthetic").glob("synthetic_*.nii.gz"))) == 2
    refused = _bundle(*infer, "--output_dir", str(tmp_path / "refused"), cwd=tmp_path)
    assert refused.returncode != 0 and "skip_excitation" in refused.stderr
