"""GanEvaluator: metrics, floors, memorisation, best checkpoints, and the evaluation bundle on a trained run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from PIL import Image
from torch import nn

from monai_mri_gan.data import SliceCohort, SliceTensorDataset, load_datalist, make_demo_cohort
from monai_mri_gan.engines import GanEvaluator, class_allocation
from monai_mri_gan.handlers import BestCheckpointSaver, EvaluationReportWriter
from monai_mri_gan.metrics import (
    disjoint_halves,
    frechet_distance,
    kernel_inception_distance,
    memorisation_report,
    precision_recall,
)
from monai_mri_gan.networks import SliceGenerator
from monai_mri_gan.runs import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_mri_gan" / "configs"
METRICS = {"fid", "kid_mean", "kid_std", "precision", "recall", "ms_ssim", "memorisation_fraction",
           "memorisation_max", "class_fidelity", "class_fidelity_no_tumour", "class_fidelity_tumour"}
CLASS_NAMES = ["no_tumour", "tumour"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_demo_cohort(tmp_path_factory.mktemp("cohort") / "demo", seed=3, num_subjects=4, shape=(48, 52, 12))


@pytest.fixture(scope="module")
def dataset(cohort):
    return SliceCohort(load_datalist(cohort), image_size=32, tumour_min_voxels=20).training_dataset()


def fresh_generator(seed: int = 0, latent_dim: int = 16, num_classes: int = 2) -> SliceGenerator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SliceGenerator(latent_dim=latent_dim, image_size=32, num_classes=num_classes).eval()


def test_class_fidelity_is_skipped_when_the_reals_lack_a_class(dataset, tmp_path, caplog):
    no_tumour = SliceTensorDataset(*[t[dataset.classes == 0] for t in (dataset.images, dataset.classes)])
    evaluator = GanEvaluator("cpu", fresh_generator(), no_tumour, num_samples=24, batch_size=24,
                             class_names=CLASS_NAMES, class_fidelity=True, work_dir=tmp_path, ms_ssim_pairs=20)
    with caplog.at_level("WARNING"):
        evaluator.run(1)
    assert "no slice of class 'tumour'" in caplog.text
    assert not any(k.startswith("class_fidelity") for k in evaluator.state.metrics)
    assert "kid_mean" in evaluator.state.metrics and not (tmp_path / "slice_classifier.pt").exists()


def test_evaluator_tiny_run(dataset, tmp_path):
    evaluator = GanEvaluator("cpu", fresh_generator(), dataset, num_samples=48, batch_size=20,
                             class_names=CLASS_NAMES, class_fidelity=True, work_dir=tmp_path, ms_ssim_pairs=100,
                             val_handlers=[EvaluationReportWriter(tmp_path / "report")])
    rng_before = torch.get_rng_state()
    evaluator.run(3)
    assert torch.equal(torch.get_rng_state(), rng_before)  # training resumes stay exact
    metrics = dict(evaluator.state.metrics)
    assert set(metrics) == METRICS
    assert all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert evaluator.state.iteration == 3  # 48 samples in batches of 20
    assert evaluator.state.generated.shape == (48, 1, 32, 32)
    # classes in the real proportions (39 : 4 slices)
    assert torch.bincount(evaluator.labels).tolist() == [44, 4]
    assert evaluator.state.key_metric_name == "kid_mean"
    assert evaluator.state.best_metric == metrics["kid_mean"] and evaluator.state.best_metric_epoch == 3
    assert (tmp_path / "slice_classifier.pt").is_file()  # trained for class fidelity, kept for the next run
    # an untrained generator is far from the reals: its KID exceeds the real-vs-real floor
    assert metrics["kid_mean"] > evaluator.floors["kid_mean"] + 3 * metrics["kid_std"]

    # the same fixed sample gives the same metrics on the next run
    evaluator.run(4)
    assert evaluator.state.metrics == metrics
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["epoch"] == 4 and report["feature_space"] == "radiomics" and report["num_real"] == len(dataset)
    assert report["generated"] == pytest.approx(metrics) and set(report["real_vs_real"]) == METRICS
    grid = Image.open(tmp_path / "report" / "samples.png")
    assert grid.size == (8 * 32, 2 * 32)
    for name in ("closest_pairs.png", "metrics_vs_floor.png"):
        assert Image.open(tmp_path / "report" / name).size[0] > 0


def test_floors_are_computed_once_on_disjoint_halves(dataset):
    evaluator = GanEvaluator("cpu", fresh_generator(), dataset, num_samples=16, seed=5, ms_ssim_pairs=50)
    first, second = disjoint_halves(len(dataset), seed=5)
    assert len(first) == len(second) == len(dataset) // 2
    assert not set(first.tolist()) & set(second.tolist())
    feats = evaluator.real_features
    floors = evaluator.floors
    assert floors["fid"] == pytest.approx(frechet_distance(feats[first], feats[second]))
    assert floors["kid_mean"] == pytest.approx(kernel_inception_distance(feats[first], feats[second], seed=5)[0])
    assert (floors["precision"], floors["recall"]) == pytest.approx(precision_recall(feats[first], feats[second]))
    reals = dataset.images
    report = memorisation_report(reals[second], reals[first])
    assert floors["memorisation_max"] == pytest.approx(float(report["pixel_similarity"].max()))
    # no slice appears in both halves, so no pair is an exact copy
    assert floors["memorisation_max"] < 0.999
    assert evaluator.floors is floors  # cached
    assert "class_fidelity" not in floors  # no classifier requested


class CopyingGenerator(nn.Module):
    """Returns training slices, chosen from the latent vector: a generator that has memorised its data."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images.clone())
        self.latent_dim = 8
        self.num_classes = 0

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        index = (z[:, 0].abs() * 1000).long() % self.images.shape[0]
        return self.images[index]


def test_copying_generator_is_flagged(dataset):
    evaluator = GanEvaluator("cpu", CopyingGenerator(dataset.images), dataset, num_samples=40, ms_ssim_pairs=50)
    evaluator.run()
    metrics = evaluator.state.metrics
    assert metrics["memorisation_fraction"] == 1.0
    assert metrics["memorisation_max"] == pytest.approx(1.0, abs=1e-5)
    assert evaluator.floors["memorisation_fraction"] < 1.0
    assert set(metrics) == METRICS - {"class_fidelity", "class_fidelity_no_tumour", "class_fidelity_tumour"}
    # an honest generator of the same interface is not flagged
    assert evaluator.evaluate(fresh_generator(latent_dim=8, num_classes=0))["memorisation_fraction"] < 0.5


def drive(saver: BestCheckpointSaver, values: list[float], name: str) -> list[int | None]:
    """Run an engine whose epochs report ``values``; return the epoch stored in the file after each epoch."""
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = name
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: e.state.metrics.update({name: values[e.state.epoch - 1]}))
    saver.attach(engine)
    stored: list[int | None] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: stored.append(
        torch.load(saver.ckpt_path, weights_only=True)["metric"]["epoch"] if saver.ckpt_path.exists()
        else None))
    engine.run([0], max_epochs=len(values))
    return stored


def test_best_checkpoint_written_only_on_improvement(tmp_path):
    network = nn.Linear(2, 1)
    path = tmp_path / "best_checkpoint.pt"
    saver = BestCheckpointSaver(path, {"ema_generator": network}, config={"image_size": 32})
    assert drive(saver, [0.5, 0.7, 0.3, 0.3, 0.4], "kid_mean") == [1, 1, 3, 3, 3]
    saved = load_checkpoint(path)
    assert saved["metric"] == {"name": "kid_mean", "value": 0.3, "epoch": 3, "feature_space": None}
    assert saved["config"] == {"image_size": 32} and set(saved["ema_generator"]) == {"weight", "bias"}
    # a resumed run must beat the recorded best
    resumed = BestCheckpointSaver(path, {"ema_generator": network})
    assert drive(resumed, [0.35, 0.2], "kid_mean") == [3, 2]
    # higher is better for precision
    higher = BestCheckpointSaver(tmp_path / "p.pt", {"g": network})
    assert drive(higher, [0.2, 0.1, 0.6], "precision") == [1, 1, 3]


def test_class_allocation():
    labels = torch.tensor([0] * 39 + [1] * 4)
    assert torch.bincount(class_allocation(labels, 100, 2)).tolist() == [91, 9]
    assert torch.bincount(class_allocation(None, 101, 2, "balanced")).tolist() == [51, 50]
    assert class_allocation(labels, 100, 0) is None
    with pytest.raises(ValueError):
        class_allocation(labels, 10, 2, "uniform")


def test_local_weights_needs_a_local_file(dataset, tmp_path):
    evaluator = GanEvaluator("cpu", fresh_generator(), dataset, num_samples=16, feature_space="local_weights")
    with pytest.raises(ValueError, match="never downloads"):
        evaluator.run()
    missing = GanEvaluator("cpu", fresh_generator(), dataset, num_samples=16, feature_space="local_weights",
                           weights_path=tmp_path / "resnet18.pth", feature_kwargs={"architecture": "resnet18"})
    with pytest.raises(FileNotFoundError, match="never downloads"):
        missing.run()
    with pytest.raises(ValueError, match="feature_space"):
        GanEvaluator("cpu", fresh_generator(), dataset, num_samples=16, feature_space="inception")


def _bundle(*args, cwd):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cohort):
    """One epoch of the training bundle, evaluating after the epoch (best checkpoint written)."""
    out = tmp_path_factory.mktemp("train") / "run"
    result = _bundle("training", "--config_file", str(CONFIGS / "train.json"), "--datalist", str(cohort),
                     "--output_dir", str(out), "--max_epochs", "1", "--image_size", "32", "--evaluate_every", "1",
                     "--evaluate_num_samples", "48", "--slicing#tumour_min_voxels", "4", cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_training_bundle_evaluates_and_keeps_best(trained_run):
    best = load_checkpoint(trained_run / "best_checkpoint.pt")
    assert best["metric"]["name"] == "kid_mean" and best["metric"]["epoch"] == 1
    assert best["metric"]["feature_space"] == "radiomics"
    assert best["config"]["image_size"] == 32 and {"generator", "ema_generator"} <= set(best)
    report = json.loads((trained_run / "evaluation" / "metrics.json").read_text())
    assert report["num_generated"] == 48 and report["generated"]["kid_mean"] == pytest.approx(best["metric"]["value"])


def test_evaluation_bundle(trained_run, cohort, tmp_path):
    out = tmp_path / "evaluation"
    result = _bundle("evaluating", "--config_file", str(CONFIGS / "evaluate.json"), "--ckpt_path", str(trained_run),
                     "--datalist", str(cohort), "--output_dir", str(out), "--num_samples", "48", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["generated"]) == set(report["untrained"]) == set(report["real_vs_real"]) == METRICS
    for section in ("generated", "untrained", "real_vs_real"):
        assert all(isinstance(v, float) for v in report[section].values()), section
    assert report["feature_space"] == "radiomics" and report["num_generated"] == 48
    # the checkpoint's own sample: same fixed latents, so the same KID as the in-training evaluation
    training_report = json.loads((trained_run / "evaluation" / "metrics.json").read_text())
    # (up to float noise: the EMA generator may run channels-last in training, and KID's cubic kernel amplifies it)
    assert report["generated"]["kid_mean"] == pytest.approx(training_report["generated"]["kid_mean"], rel=1e-3)
    assert report["real_vs_real"]["kid_mean"] < report["untrained"]["kid_mean"]
    assert (out / "slice_classifier.pt").is_file()
    for name in ("samples.png", "metrics_vs_floor.png"):
        assert (out / name).is_file()
    # real training slices are shown only in the local folder, which trackers do not upload unless asked
    assert (out / "local" / "closest_pairs.png").is_file() and not (out / "closest_pairs.png").exists()
