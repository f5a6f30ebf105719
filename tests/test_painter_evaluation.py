"""The lesion painter's evaluation: seam, Dice and correlation metrics against hand computations, the crop window,
LesionPainterEvaluator end to end on tiny cohorts, and the painter's evaluation bundle."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from test_painter_synthesis import CONFIGS, PAINTING, SLICING

from monai_mri_gan import runs
from monai_mri_gan.data import load_datalist, make_demo_cohort
from monai_mri_gan.engines import LesionPainterEvaluator
from monai_mri_gan.handlers import PainterReportWriter
from monai_mri_gan.metrics import (
    disjoint_halves,
    distribution_metrics,
    feature_standardisation,
    label_map_correlation,
    masked_correlation,
    seam_band,
    seam_gradient,
    segmentation_dice,
    train_lesion_segmenter,
)
from monai_mri_gan.networks import LesionPainterDiscriminator, LesionPainterGenerator
from monai_mri_gan.transforms import blend_weights, crop_plane, lesion_window

pytestmark = pytest.mark.usefixtures("one_thread")

SAMPLES = 16


def test_seam_band_and_gradient_by_hand():
    # one lesion pixel at (6, 6), dilate 1, band 1: weight 1 for d <= 1 (a plus), > 0 for d < 3 (the 5x5 square)
    labels = torch.zeros(2, 1, 13, 13, dtype=torch.long)
    labels[0, 0, 6, 6] = 2
    band = seam_band(labels, dilate_px=1, band_px=1)[0, 0]
    expected = torch.zeros(13, 13, dtype=torch.bool)
    expected[3:10, 3:10] = True  # the 5x5 square and the ring of weight-0 pixels around it
    for r, c in ((6, 6), (5, 6), (7, 6), (6, 5), (6, 7)):
        expected[r, c] = False  # the plus has weight 1: inside the hole, not the seam
    assert torch.equal(band, expected)
    assert not seam_band(labels, 1, 1)[1].any()
    # f = 0.001 c^3: the normalised Sobel gives ((c + 1)^3 - (c - 1)^3) / 2 * 0.001 = (3 c^2 + 1) * 0.001 across
    # columns and 0 along them; the seam's 44 pixels cover columns 3..9 (7 rows each) less the plus (6, 6, 6, 5, 7)
    cols = torch.arange(13, dtype=torch.float64)
    images = (0.001 * cols**3).expand(2, 1, 13, 13).clone()
    squares = 7 * sum(c * c for c in range(3, 10)) - (3 * 36 + 25 + 49)
    value = seam_gradient(images, labels, dilate_px=1, band_px=1)
    assert value[0].item() == pytest.approx(0.001 * (3 * squares + 44) / 44, rel=1e-12)
    assert math.isnan(value[1].item())  # no lesion, no band


def test_masked_and_label_map_correlation_by_hand():
    mask = torch.zeros(3, 1, 2, 3, dtype=torch.bool)
    mask[:, :, :, :2] = True
    a = torch.tensor([[1.0, 2.0, 99.0], [3.0, 4.0, -5.0]]).expand(3, 1, 2, 3)
    b = torch.stack([torch.tensor([[2.0, 4.0, 0.0], [6.0, 8.0, 0.0]]), torch.tensor([[8.0, 6.0, 1.0], [4.0, 2.0, 1.0]]),
                     torch.full((2, 3), 7.0)])[:, None]
    assert masked_correlation(a, b, mask).tolist() == pytest.approx([1.0, -1.0, 0.0])
    # values 1, 3 (label 1) and 10, 12 (label 2): between-label squares 81 of 85 in all, so sqrt(81 / 85)
    images = torch.tensor([[1.0, 3.0], [10.0, 12.0]])[None, None]
    labels = torch.tensor([[1, 1], [2, 2]])[None, None]
    assert label_map_correlation(images, labels, torch.ones_like(labels, dtype=torch.bool)).item() == \
        pytest.approx(math.sqrt(81 / 85))


class _ThresholdSegmenter(torch.nn.Module):
    """Background and lesion logits ``-x`` and ``x``: the lesion is wherever the image is positive."""

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return torch.cat([-x, x], dim=1)


def test_segmentation_dice_by_hand():
    images = -torch.ones(2, 1, 4, 4)
    images[0, 0, 0, :3] = 1.0  # predicts 3 pixels
    labels = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    labels[0, 0, 0, 1:3] = 4
    labels[0, 0, 1, 1:3] = 1  # 4 lesion pixels (two labels: any label counts), 2 of them predicted
    dice = segmentation_dice(_ThresholdSegmenter(), images, labels)
    assert dice[0].item() == pytest.approx(2 * 2 / (3 + 4))
    assert math.isnan(dice[1].item())  # no lesion in the mask


def test_segmenter_is_seeded_and_leaves_global_state():
    images = torch.randn(6, 1, 16, 16)
    labels = (images > 1).long()
    state = torch.get_rng_state()
    first = train_lesion_segmenter(images, labels, steps=2, batch_size=4, seed=3, channels=(4, 8), strides=(2,))
    assert torch.equal(torch.get_rng_state(), state)
    second = train_lesion_segmenter(images, labels, steps=2, batch_size=4, seed=3, channels=(4, 8), strides=(2,))
    for p, q in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(p, q)


def test_lesion_window_and_crop_plane():
    # centred on the box, then moved inside the slice; a slice smaller than the window is centred and padded
    assert lesion_window([10, 20, 30, 34], 8, (100, 100)) == (11, 28)
    assert lesion_window([0, 4, 96, 100], 8, (100, 100)) == (0, 92)
    assert lesion_window([2, 4, 2, 4], (10, 8), (6, 100)) == (-2, 0)
    plane = np.arange(12, dtype=np.float32).reshape(3, 4)
    crop = crop_plane(plane, (-1, 2), (3, 3), -1.0)
    assert crop.tolist() == [[-1, -1, -1], [2, 3, -1], [6, 7, -1]]
    assert torch.equal(crop_plane(torch.as_tensor(plane), (-1, 2), (3, 3), -1.0), torch.as_tensor(crop))
    assert (crop_plane(plane, (5, 5), (2, 2), 0.0) == 0).all()


def _painter(tmp_path):
    torch.manual_seed(0)
    generator = LesionPainterGenerator(3, 8, features=(4, 4, 8, 8, 16, 4))
    record = runs.RunRecord("lesion_painter", {"generator": generator,
                                               "discriminator": LesionPainterDiscriminator(3, 8, 2)},
                            slicing=SLICING, class_names=["no_tumour", "tumour"], painting=PAINTING)
    path = runs.save_checkpoint({"config": record.state_dict(), "generator": generator.state_dict(),
                                 "ema_generator": generator.state_dict()}, tmp_path / "checkpoint_epoch0001.pt")
    return generator, record.state_dict(), path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny training (seed 3) and held-out (seed 4) cohorts with tumours, and an untrained painter's checkpoint."""
    root = tmp_path_factory.mktemp("painter_evaluation")
    training = make_demo_cohort(root / "training", seed=3, num_subjects=4, shape=(48, 52, 12), tumour_fraction=0.5)
    heldout = make_demo_cohort(root / "heldout", seed=4, num_subjects=4, shape=(48, 52, 12), tumour_fraction=0.5)
    generator, record, path = _painter(root)
    return {"root": root, "training": training, "heldout": heldout, "generator": generator, "record": record,
            "checkpoint": path}


def _evaluator(setup, generator, **kwargs):
    return LesionPainterEvaluator("cpu", generator, setup["record"], load_datalist(setup["training"]),
                                  load_datalist(setup["heldout"]), num_samples=SAMPLES, segmenter_steps=10,
                                  batch_size=6, **kwargs)


@pytest.fixture(scope="module")
def evaluated(setup):
    evaluator = _evaluator(setup, setup["generator"], val_handlers=[PainterReportWriter(setup["root"] / "report")])
    evaluator.run()
    return evaluator


def test_metrics_are_finite_and_floors_use_disjoint_halves(evaluated):
    metrics = evaluated.state.metrics
    for name in ("painted", "copy_paste", "real"):
        for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "seam_gradient", "dice"):
            assert math.isfinite(metrics[f"{name}_{key}"]), f"{name}_{key}"
    for key in ("painted_seam_ratio", "copy_paste_seam_ratio", "painted_source_correlation",
                "painted_memorisation_fraction", "painted_memorisation_max", "label_map_correlation"):
        assert math.isfinite(metrics[key]), key
    assert metrics["painted_seam_ratio"] == pytest.approx(metrics["painted_seam_gradient"] /
                                                          metrics["real_seam_gradient"])
    feats, real = evaluated.real_features, evaluated.real_crops
    first, second = disjoint_halves(len(real), 0)
    assert not set(first.tolist()) & set(second.tolist()) and len(first) == len(real) // 2
    floors = distribution_metrics(feats[first], feats[second], evaluated.kid_subsets, evaluated.kid_subset_size)
    assert {f"real_{k}": v for k, v in floors.items()} == {f"real_{k}": metrics[f"real_{k}"] for k in floors}
    # the across-subject floor: the real training crops, standardised by the held-out ones, against the held-out
    raw = evaluated.feature_extractor(evaluated.training_crops.images)
    mean, scale = feature_standardisation(evaluated.feature_extractor(real.images))
    across = distribution_metrics(feats, (raw - mean) / scale, evaluated.kid_subsets, evaluated.kid_subset_size)
    for key, value in across.items():
        assert metrics[f"training_{key}"] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert metrics["real_seam_gradient"] == pytest.approx(
        float(seam_gradient(real.images, real.labels, 2, 4).nanmean()))
    settings = evaluated.state.report["settings"]
    assert settings["num_painted"] == SAMPLES and settings["num_real"] == len(real) >= 8


def test_crops_change_only_the_blend_band(evaluated):
    crops = evaluated.state.report["crops"]
    outside = crops["weights"] == 0
    assert crops["base"].shape == (SAMPLES, 1, 32, 32) and bool(crops["labels"].flatten(1).any(1).all())
    assert torch.equal(crops["weights"], blend_weights(crops["labels"], 2, 4))
    for key in ("copy_paste", "painted"):
        assert torch.equal(crops[key][outside], crops["base"][outside])
        assert not torch.equal(crops[key], crops["base"])
    assert set(torch.unique(crops["labels"]).tolist()) <= {0, 1, 2, 4}


def test_report_files(evaluated, setup):
    report = json.loads((setup["root"] / "report" / "metrics.json").read_text())
    assert report["num_painted"] == SAMPLES and report["epoch"] == 1
    assert report["metrics"]["painted_kid_mean"] == pytest.approx(evaluated.state.metrics["painted_kid_mean"])
    # rows base | hole | painted | copy-paste, 8 crops of 32 px, shown as the sample grids show slices
    with Image.open(setup["root"] / "report" / "painting_report.png") as png:
        assert png.size == (8 * 32, 4 * 32) and png.mode == "L"


class _CopyingPainter(torch.nn.Module):
    """A painter that returns, in the evaluator's order, the very lesions the masks were cut from."""

    latent_dim = 8

    def __init__(self, lesions):
        super().__init__()
        self.lesions = lesions
        self.unused = torch.nn.Parameter(torch.zeros(1))
        self.done = 0

    def forward(self, blanked, condition, z):
        out = self.lesions[self.done: self.done + blanked.shape[0]]
        self.done += blanked.shape[0]
        return out


def test_a_painter_that_copies_is_flagged_and_scores_as_copy_paste(setup, evaluated):
    evaluator = _evaluator(setup, _CopyingPainter(evaluated.crops["lesion"]))
    # the same data and seed give the same placements: reuse what the first evaluator built (and its segmenter)
    evaluator.__dict__.update({k: getattr(evaluated, k) for k in ("datalists", "training_cohort", "heldout_cohort",
                                                                  "bank", "crops", "segmenter")})
    evaluator.run()
    metrics = evaluator.state.metrics
    assert metrics["painted_memorisation_fraction"] == 1.0 and metrics["painted_memorisation_max"] == pytest.approx(1)
    for key in ("kid_mean", "fid", "seam_gradient", "dice"):
        assert metrics[f"painted_{key}"] == pytest.approx(metrics[f"copy_paste_{key}"]), key
    assert metrics["label_map_correlation"] < 1.0


def test_evaluation_bundle(setup, tmp_path):
    out = tmp_path / "evaluation"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", str(CONFIGS / "evaluate.json"),
           "--ckpt_path", str(setup["checkpoint"].parent), "--output_dir", str(out), "--datalist",
           str(setup["training"]), "--heldout_datalist", str(setup["heldout"]), "--num_samples", "8",
           "--segmenter_steps", "2", "--device", "cpu"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_painted"] == 8 and report["segmenter"]["steps"] == 2
    assert set(report["metrics"]) >= {"painted_kid_mean", "copy_paste_kid_mean", "real_kid_mean", "painted_dice"}
    assert (out / "local" / "painting_report.png").is_file() and not (out / "painting_report.png").exists()
