"""SliceGanTrainer: conditional and unconditional steps, ragged batches, modes, AMP, exact resume, divergence."""

import pytest
import torch
from ignite.engine import Events
from monai.handlers import from_engine
from torch.utils.data import DataLoader

from monai_mri_gan.data.datasets import SliceTensorDataset
from monai_mri_gan.diffaugment import DiffAugment
from monai_mri_gan.engines import SliceGanTrainer, prepare_slice_batch
from monai_mri_gan.errors import TrainingDiverged
from monai_mri_gan.handlers import DivergenceGuard, GanCheckpointSaver, GeneratorEMA, ResumeFromCheckpoint, ema_copy
from monai_mri_gan.losses import AdversarialLoss, R1Regulariser
from monai_mri_gan.networks import build_networks
from monai_mri_gan.objectives import WholeSliceObjective
from monai_mri_gan.runs import RandomState, latest_checkpoint, load_checkpoint

SIZE, LATENT = 32, 16


def _data(n=10, classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, SIZE, SIZE, 1, generator=g) * 2 - 1  # slices keep their through-plane axis
    labels = torch.arange(n) % classes
    return SliceTensorDataset(images, labels)


def _trainer(out_dir=None, num_classes=2, max_epochs=1, batch_size=4, d_steps=1, amp=False, handlers=True,
             class_loss_weight=0.0, mode_seeking_weight=0.0):
    torch.manual_seed(0)
    g, d = build_networks(image_size=SIZE, latent_dim=LATENT, num_classes=num_classes, base_channels=8,
                          auxiliary_classifier=class_loss_weight > 0)
    ema = ema_copy(g)
    g_opt = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    loader = DataLoader(_data(classes=max(num_classes, 1)), batch_size=batch_size, shuffle=True)
    trainer = SliceGanTrainer(
        device="cpu", max_epochs=max_epochs, train_data_loader=loader, generator=g, discriminator=d,
        g_optimizer=g_opt, d_optimizer=d_opt, d_steps=d_steps, amp=amp,
        objective=WholeSliceObjective(
            latent_dim=LATENT, num_classes=num_classes, loss=AdversarialLoss("bce"),
            regulariser=R1Regulariser(gamma=1.0, every=2), diffaugment=DiffAugment(("translation", "cutout")),
            class_loss_weight=class_loss_weight, mode_seeking_weight=mode_seeking_weight),
    )
    objects = {"generator": g, "ema_generator": ema, "discriminator": d, "g_optimizer": g_opt,
               "d_optimizer": d_opt, "trainer": trainer, "random_state": RandomState()}
    if handlers:
        trainer.attach_handlers([
            ResumeFromCheckpoint(out_dir, objects),
            DivergenceGuard(ckpt_dir=out_dir),
            GeneratorEMA(g, ema, decay=0.9),
            GanCheckpointSaver(out_dir, objects, keep_last=5),
        ])
    return trainer, objects


@pytest.mark.parametrize("num_classes", [0, 2])
def test_training_steps_change_both_networks(tmp_path, num_classes):
    trainer, obj = _trainer(tmp_path, num_classes=num_classes, d_steps=2)
    g0 = [p.detach().clone() for p in obj["generator"].parameters()]
    d0 = [p.detach().clone() for p in obj["discriminator"].parameters()]
    sizes = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: sizes.append(len(e.state.output)))
    trainer.run()
    assert sizes == [4, 4, 2]  # ragged last batch of 10 slices, one output item per real slice
    items = trainer.state.output
    batch = trainer.state.batch
    for i, item in enumerate(items):  # MONAI's decollated form: the slice, its fake and class, the losses replicated
        torch.testing.assert_close(item["image"], batch["image"][i, ..., 0].as_subclass(torch.Tensor))
        assert item["pred"].shape == (1, SIZE, SIZE) and item["loss"] is items[0]["loss"]
        assert int(item["label"]) == int(batch["class"][i])
    out = from_engine(["loss"], first=True)(items)
    assert all(torch.isfinite(torch.tensor(out[k])) for k in ("g_loss", "d_loss", "r1", "d_real", "d_fake"))
    assert 0.0 <= out["d_real"] <= 1.0 and 0.0 <= out["d_fake"] <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(g0, obj["generator"].parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, obj["discriminator"].parameters(), strict=True))
    assert obj["generator"].training and obj["discriminator"].training
    assert all(p.requires_grad for p in obj["discriminator"].parameters())
    assert latest_checkpoint(tmp_path).name == "checkpoint_epoch0001.pt"


def test_bf16_autocast_runs_on_cpu(tmp_path):
    trainer, _ = _trainer(tmp_path, amp=True, handlers=False)
    assert trainer.amp_dtype == torch.bfloat16
    seen = []
    trainer.generator.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer.run()
    assert torch.bfloat16 in seen  # autocast really applied
    assert torch.isfinite(torch.tensor(from_engine(["loss"], first=True)(trainer.state.output)["g_loss"]))


def test_auxiliary_class_losses(monkeypatch):
    trainer, obj = _trainer(handlers=False, class_loss_weight=0.5)
    seen = []
    real_step = trainer.discriminate

    def spy(images, labels):
        out = real_step(images, labels).float()
        logits, classes = out[:, 0], out[:, 1:]
        seen.append((logits.detach(), classes.detach(), labels))
        return out

    monkeypatch.setattr(trainer, "discriminate", spy)
    trainer.run()
    losses = from_engine(["loss"], first=True)(trainer.state.output)
    assert set(losses) >= {"class_real", "class_fake"}
    # the generator's loss is its adversarial loss plus the weighted cross-entropy of its fakes' class logits
    g_logits, g_classes, labels = seen[-1]  # the last call of an iteration is the generator's step
    adversarial = torch.nn.functional.softplus(-g_logits).mean()
    cross_entropy = -torch.log_softmax(g_classes, dim=1)[torch.arange(len(labels)), labels].mean()
    assert losses["class_fake"] == pytest.approx(float(cross_entropy), rel=1e-5)
    assert losses["g_loss"] == pytest.approx(float(adversarial + 0.5 * cross_entropy), rel=1e-5)
    unconditional, parts = _trainer(num_classes=0, handlers=False)
    with pytest.raises(ValueError, match="class_loss_weight"):
        SliceGanTrainer(device="cpu", max_epochs=1, train_data_loader=unconditional.data_loader,
                        generator=parts["generator"], discriminator=parts["discriminator"],
                        g_optimizer=parts["g_optimizer"], d_optimizer=parts["d_optimizer"],
                        objective=WholeSliceObjective(latent_dim=LATENT, class_loss_weight=1.0))
    plain, _ = _trainer(handlers=False)
    plain.objective.class_loss_weight = 1.0
    with pytest.raises(ValueError, match="auxiliary classifier"):
        plain.run()


def test_mode_seeking_term(monkeypatch):
    trainer, _ = _trainer(handlers=False, batch_size=5, mode_seeking_weight=0.25)
    seen = {}
    real_generate, real_discriminate = trainer.generate, trainer.discriminate

    def generate(z, labels):
        out = real_generate(z, labels)
        seen["generate"] = (z, labels, out.detach())
        return out

    def discriminate(images, labels):
        out = real_discriminate(images, labels)
        seen["logits"] = out.float().reshape(-1).detach()
        return out

    monkeypatch.setattr(trainer, "generate", generate)
    monkeypatch.setattr(trainer, "discriminate", discriminate)
    trainer.run()
    losses = from_engine(["loss"], first=True)(trainer.state.output)
    z, labels, fakes = seen["generate"]  # the generator step's latents, classes and fakes
    pairs = []  # by hand: consecutive members of each class, an odd one out left unpaired
    for c in labels.unique():
        members = [i for i in range(len(labels)) if labels[i] == c]
        pairs += list(zip(members[0::2], members[1::2], strict=False))
    assert pairs  # 5 slices of 2 classes hold a pair of one class
    image_distance = torch.stack([(fakes[a] - fakes[b]).abs().mean() for a, b in pairs]).mean()
    latent_distance = torch.stack([(z[a] - z[b]).abs().mean() for a, b in pairs]).mean()
    expected = 1 / (1e-5 + image_distance / latent_distance)
    assert losses["mode_seeking"] == pytest.approx(float(expected), rel=1e-5)
    adversarial = torch.nn.functional.softplus(-seen["logits"]).mean()
    assert losses["g_loss"] == pytest.approx(float(adversarial + 0.25 * expected), rel=1e-5)
    plain, _ = _trainer(handlers=False)
    plain.run()
    assert "mode_seeking" not in from_engine(["loss"], first=True)(plain.state.output)
    with pytest.raises(ValueError, match="mode_seeking_weight"):
        _trainer(handlers=False, mode_seeking_weight=-1.0)


def test_conditional_batch_without_classes_is_refused():
    trainer, _ = _trainer(handlers=False)
    trainer.state.device = torch.device("cpu")
    with pytest.raises(ValueError, match="needs a class"):
        trainer._iteration(trainer, {"image": torch.zeros(2, 1, SIZE, SIZE)})


def test_prepare_slice_batch_shapes():
    images, classes = prepare_slice_batch({"image": torch.zeros(3, 1, 8, 8, 1), "class": [0, 1, 1]}, "cpu")
    assert images.shape == (3, 1, 8, 8) and classes.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match=r"shaped \(B, C, H, W, 1\)"):
        prepare_slice_batch({"image": torch.zeros(3, 1, 8, 8, 2)}, "cpu")


def _state(objects):
    return {k: v.state_dict() for k, v in objects.items() if k != "random_state"}


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


def test_resume_continues_exactly(tmp_path):
    straight, objs_a = _trainer(tmp_path / "a", max_epochs=3)
    straight.run()

    first, _ = _trainer(tmp_path / "b", max_epochs=2)
    first.run()
    saved = load_checkpoint(tmp_path / "b")
    assert saved["trainer"]["iteration"] == 6
    resumed, objs_b = _trainer(tmp_path / "b", max_epochs=3)  # fresh objects, as a new process would have
    started = []
    resumed.add_event_handler(Events.ITERATION_STARTED, lambda e: started.append(e.state.iteration))
    resumed.run()
    assert started[0] == 7  # continued from the saved iteration
    assert resumed.state.epoch == 3
    _assert_same(saved["d_optimizer"], load_checkpoint(tmp_path / "b" / "checkpoint_epoch0002.pt")["d_optimizer"])
    _assert_same(_state(objs_a), _state(objs_b))


def test_divergence_guard_keeps_last_good_checkpoint(tmp_path):
    trainer, obj = _trainer(tmp_path, max_epochs=3)

    @trainer.on(Events.ITERATION_STARTED)
    def poison(engine):
        if engine.state.epoch == 2 and engine.state.iteration == 5:
            with torch.no_grad():
                next(obj["discriminator"].parameters()).fill_(float("nan"))

    with pytest.raises(TrainingDiverged, match=r"epoch 2, iteration 5.*checkpoint_epoch0001\.pt"):
        trainer.run()
    assert [p.name for p in tmp_path.glob("checkpoint_*.pt")] == ["checkpoint_epoch0001.pt"]
    good = load_checkpoint(tmp_path)
    assert all(torch.isfinite(v).all() for v in good["discriminator"].values() if v.is_floating_point())
    assert good["trainer"]["iteration"] == 3
