"""The lesion painter family: its networks, loss terms against their formulas, compositing, a toy that learns, and
its training bundle."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from monai_mri_gan.data import LesionCrops, SliceCohort, load_datalist, make_demo_cohort
from monai_mri_gan.diffaugment import DiffAugment
from monai_mri_gan.engines import SliceGanTrainer, prepare_lesion_batch
from monai_mri_gan.losses import feature_matching_loss, masked_l1_loss
from monai_mri_gan.networks import LesionPainterDiscriminator, LesionPainterGenerator
from monai_mri_gan.objectives import LesionPainterObjective, painter_condition
from monai_mri_gan.runs import RunRecord, build_network, generator_from_checkpoint, load_checkpoint

SIZE = 32
TRAIN = Path(__file__).resolve().parents[1] / "bundles" / "brain_tumour_painter" / "configs" / "train.json"


def test_masked_l1_against_its_formula():
    g = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(2, 1, 5, 6, generator=g), torch.randn(2, 1, 5, 6, generator=g)
    weights = torch.rand(2, 1, 5, 6, generator=g) * (torch.rand(2, 1, 5, 6, generator=g) > 0.5)
    expected = sum(float(w) * abs(float(p) - float(t)) for w, p, t in
                   zip(weights.flatten(), prediction.flatten(), target.flatten(), strict=True)) / float(weights.sum())
    assert float(masked_l1_loss(prediction, target, weights)) == pytest.approx(expected, rel=1e-5)
    # no weight anywhere: zero, not NaN
    assert float(masked_l1_loss(prediction, target, torch.zeros_like(weights))) == 0.0


def test_feature_matching_against_its_formula():
    fake = [torch.ones(2, 3, 4, 4), torch.full((2, 5, 2, 2), 2.0)]
    real = [torch.zeros(2, 3, 4, 4), torch.full((2, 5, 2, 2), -1.0)]
    assert float(feature_matching_loss(fake, real)) == pytest.approx((1.0 + 3.0) / 2)
    with pytest.raises(ValueError, match="layers"):
        feature_matching_loss(fake, real[:1])


def _labels(batch=2):
    labels = torch.zeros(batch, 1, SIZE, SIZE, dtype=torch.long)
    labels[:, :, 12:20, 10:18] = 2  # oedema
    labels[:, :, 14:18, 12:16] = 4  # enhancing core inside it
    return labels


def test_condition_channels_and_compositing_keep_the_base_outside_the_hole():
    labels = _labels()
    condition = painter_condition(labels, (1, 2, 4), dilate_px=2, band_px=4)
    assert condition.shape == (2, 4, SIZE, SIZE)
    assert torch.equal(condition[:, 1], torch.zeros(2, SIZE, SIZE))  # no necrotic core in this mask
    assert torch.equal(condition[:, 2] + condition[:, 3], (labels[:, 0] > 0).float())
    weights = condition[:, 0]
    assert bool((weights[labels[:, 0] > 0] == 1).all()) and bool((weights[:, 0, 0] == 0).all())
    base = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    painter = LesionPainterGenerator(num_labels=3, latent_dim=4, features=(8, 8, 8, 8, 8, 8))
    painted = LesionPainterObjective.paint(painter, base, condition, torch.randn(2, 4))
    outside = condition[:, :1] == 0
    assert torch.equal(painted[outside], base[outside])  # bitwise: the painter never touches pixels out of the band
    assert not torch.equal(painted[~outside], base[~outside])


def test_painter_networks_rebuild_from_their_record():
    g = LesionPainterGenerator(num_labels=3, latent_dim=4, features=(8, 8, 16, 16, 32, 8))
    d = LesionPainterDiscriminator(num_labels=3, channels=8, num_layers=2)
    networks = {"generator": g, "discriminator": d}
    record = RunRecord("lesion_painter", networks, painting={"crop_size": SIZE}).state_dict()
    rebuilt = build_network(record, "generator")
    rebuilt.load_state_dict(g.state_dict())
    x, c, z = torch.randn(2, 1, SIZE, SIZE), torch.rand(2, 4, SIZE, SIZE), torch.randn(2, 4)
    torch.testing.assert_close(rebuilt.eval()(x, c, z), g.eval()(x, c, z))
    assert record["painting"] == {"crop_size": SIZE}
    assert build_network(record, "discriminator").init_args == d.init_args


def _trainer(l1_weight=20.0, feature_matching_weight=5.0, mode_seeking_weight=1.0, steps=4, lr=2e-4):
    torch.manual_seed(0)
    g = LesionPainterGenerator(num_labels=3, latent_dim=4, features=(8, 8, 16, 16, 32, 8))
    d = LesionPainterDiscriminator(num_labels=3, channels=8, num_layers=2)
    images = torch.rand(8, 1, SIZE, SIZE) * 0.2 - 0.5
    labels = _labels(8)
    images[labels > 0] = 0.8  # a bright lesion on a dark, textured background
    data = [{"image": images[i], "label": labels[i]} for i in range(8)]
    objective = LesionPainterObjective((1, 2, 4), latent_dim=4, l1_weight=l1_weight,
                                       feature_matching_weight=feature_matching_weight,
                                       mode_seeking_weight=mode_seeking_weight,
                                       diffaugment=DiffAugment(("translation",)))
    trainer = SliceGanTrainer(
        device="cpu", max_epochs=steps, train_data_loader=DataLoader(data, batch_size=4), generator=g,
        discriminator=d, g_optimizer=torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999)),
        d_optimizer=torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999)), objective=objective,
        prepare_batch=prepare_lesion_batch)
    return trainer, objective, images, labels


def test_generator_terms_against_their_formulas(monkeypatch, one_thread):
    trainer, objective, _, _ = _trainer(steps=1)
    seen = {}
    real_discriminate = trainer.discriminate

    def discriminate(images, condition):
        out = real_discriminate(images, condition)
        seen.setdefault("calls", []).append((images.detach(), condition.detach(), [o.detach() for o in out]))
        return out

    monkeypatch.setattr(trainer, "discriminate", discriminate)
    trainer.run()
    losses = trainer.state.output[0]["loss"]
    (_, _, real_out), (_, _, fake_out) = seen["calls"][-2:]  # the generator step's real and painted pairs
    reals = trainer.state.output
    real_crops = torch.stack([item["image"] for item in reals])
    hinge = -fake_out[-1].float().mean()
    matching = torch.stack([(f - r).abs().mean() for f, r in zip(fake_out[:-1], real_out[:-1], strict=True)]).mean()
    fakes = torch.stack([item["pred"] for item in reals])
    hole = objective.condition(torch.stack([item["label"] for item in reals]))[:, :1]
    l1 = (hole * (fakes - real_crops).abs()).sum() / hole.sum()
    assert losses["l1"] == pytest.approx(float(l1), rel=1e-4)
    assert losses["feature_matching"] == pytest.approx(float(matching), rel=1e-4)
    expected = hinge + 20.0 * l1 + 5.0 * matching + 1.0 * losses["mode_seeking"]
    assert losses["g_loss"] == pytest.approx(float(expected), rel=1e-4)
    assert 0.0 <= losses["d_real"] <= 1.0 and 0.0 <= losses["d_fake"] <= 1.0
    # outside the hole, the painted crops are the real crops, bit for bit
    assert torch.equal(fakes[hole == 0], real_crops[hole == 0])


def test_reconstruction_learns_a_toy_lesion(one_thread):
    trainer, objective, images, labels = _trainer(feature_matching_weight=0.0, mode_seeking_weight=0.0, steps=40,
                                                  lr=3e-3)
    condition = objective.condition(labels)
    z = torch.zeros(len(images), 4)

    @torch.no_grad()
    def hole_error() -> float:
        painted = objective.paint(trainer.generator.eval(), images, condition, z)
        return float(masked_l1_loss(painted, images, condition[:, :1]))

    before = hole_error()
    trainer.run()
    after = hole_error()
    assert after < 0.5 * before, (before, after)


def test_colour_augmentation_is_refused():
    with pytest.raises(ValueError, match="only move pixels"):
        LesionPainterObjective((1, 2, 4), diffaugment=DiffAugment(("translation", "brightness")))


def test_painter_bundle_trains_and_records_its_run(tmp_path):
    cohort = make_demo_cohort(tmp_path / "demo", seed=3, num_subjects=4, shape=(48, 52, 12))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(TRAIN), "--datalist",
           str(cohort), "--output_dir", str(out), "--max_epochs", "2", "--batch_size", "4", "--crop_size", "32",
           "--log_every", "1", "--g_features", "[8, 8, 16, 16, 32, 8]", "--d_channels", "8"]
    result = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONWARNINGS="ignore"), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "l1" in result.stdout and "feature_matching" in result.stdout
    ckpt = load_checkpoint(out)
    record = ckpt["config"]
    assert record["family"] == "lesion_painter" and record["slicing"]["tumour_labels"] is None
    assert record["painting"] == {"label_values": [1, 2, 4], "crop_size": 32, "dilate_px": 2, "band_px": 4}
    painter = generator_from_checkpoint(ckpt)
    assert isinstance(painter, LesionPainterGenerator) and painter.init_args["features"] == [8, 8, 16, 16, 32, 8]
    grid = np.asarray(Image.open(out / "samples" / "epoch_0002.png"))
    # real | hole and labels | painted rows, one column per crop (at most eight; this tiny cohort has fewer lesions)
    assert grid.shape[0] == 3 * 32 and grid.shape[1] in range(32, 8 * 32 + 1, 32)


def test_painter_trains_on_two_ranks(tmp_path):
    """The painter's multi_gpu_train.json over its train.json: torchrun with two gloo processes, one epoch."""
    cohort = make_demo_cohort(tmp_path / "demo", seed=3, num_subjects=4, shape=(48, 52, 12))
    out = tmp_path / "run"
    configs = [str(TRAIN), str(TRAIN.with_name("multi_gpu_train.json"))]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29573",
           "-m", "monai.bundle", "run", "training", "--config_file", repr(configs), "--datalist", str(cohort),
           "--output_dir", str(out), "--max_epochs", "1", "--batch_size", "2", "--crop_size", "32",
           "--g_features", "[8, 8, 16, 16, 32, 8]", "--d_channels", "8", "--log_every", "1"]
    result = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["family"] == "lesion_painter"
    # each rank read its half of the crops (DistributedSampler), two at a time, for one epoch
    slicing = {"tumour_min_voxels": 20, "tumour_labels": None, "drop_ambiguous": True}
    crops = len(LesionCrops(SliceCohort(load_datalist(cohort), image_size=None, slicing=slicing), crop_size=32))
    assert ckpt["trainer"]["iteration"] == ckpt["trainer"]["epoch_length"] == math.ceil(math.ceil(crops / 2) / 2)
    assert (out / "samples" / "epoch_0001.png").is_file()
