"""Adaptive augmentation (StyleGAN2-ADA's control of DiffAugment's p) and the objective's r_t term."""

import contextlib

import pytest
import torch
from ignite.engine import Engine, Events

from monai_mri_gan.diffaugment import DiffAugment
from monai_mri_gan.engines import StepLosses
from monai_mri_gan.handlers import AdaptiveAugmentation
from monai_mri_gan.objectives import Terms, WholeSliceObjective


def _engine(values, batch=8):
    """An engine whose iteration i outputs a decollated batch whose losses hold d_real_sign = values[i]."""
    def step(engine, _):
        losses = StepLosses({Terms.D_REAL_SIGN: torch.tensor(values[engine.state.iteration - 1])})
        return [{"loss": losses} for _ in range(batch)]
    return Engine(step)


def test_p_moves_by_the_images_seen_towards_the_target():
    augment = DiffAugment(("translation",), p=1.0)
    handler = AdaptiveAugmentation(augment, target=0.6, interval=4, speed_images=128)
    assert handler.p == 0.0  # ADA starts from 0
    # 4 iterations at mean r_t 0.75 > 0.6: + 4 * 8 / 128; then 4 at mean 0.5 < 0.6: back down; then clamped at 0
    values = [1.0, 0.5, 1.0, 0.5] + [0.5] * 4 + [-1.0] * 8
    engine = _engine(values)
    handler.attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(handler.p))
    engine.run([0] * len(values), max_epochs=1)
    expected = [0.0] * 3 + [0.25] + [0.25] * 3 + [0.0] + [0.0] * 8
    assert seen == pytest.approx(expected)
    assert engine.state.metrics["augment_p"] == 0.0 and engine.state.metrics["augment_rt"] == pytest.approx(-1.0)


def test_p_is_clamped_saved_and_restored():
    augment = DiffAugment(("translation",))
    handler = AdaptiveAugmentation(augment, target=0.6, interval=2, speed_images=16, max_p=0.8)
    engine = _engine([1.0] * 10)
    handler.attach(engine)
    engine.run([0] * 10, max_epochs=1)
    assert augment.p == pytest.approx(0.8)  # + 2 * 8 / 16 = 1.0 per adjustment, clamped at max_p
    other = AdaptiveAugmentation(DiffAugment(("translation",)), target=0.6)
    other.load_state_dict(handler.state_dict())
    assert other.p == pytest.approx(0.8)


def test_off_leaves_p_alone_and_bad_settings_are_refused():
    augment = DiffAugment(("translation",), p=0.7)
    handler = AdaptiveAugmentation(augment, target=None)
    engine = _engine([1.0] * 8)
    handler.attach(engine)
    engine.run([0] * 8, max_epochs=1)
    assert augment.p == 0.7 and "augment_p" not in engine.state.metrics
    for bad in ({"target": 1.5}, {"interval": 0}, {"speed_images": 0}, {"initial_p": 0.9, "max_p": 0.5}):
        with pytest.raises(ValueError):
            AdaptiveAugmentation(augment, **bad)
    handler = AdaptiveAugmentation(augment)
    engine = Engine(lambda e, b: [{"loss": StepLosses({"d_real": torch.tensor(0.5)})}])
    handler.attach(engine)
    with pytest.raises(KeyError, match="d_real_sign"):
        engine.run([0], max_epochs=1)


class _Runner:
    """Just enough of a trainer: a fixed discriminator output for reals and for fakes."""

    device = torch.device("cpu")

    def __init__(self, real_logits, fake_logits):
        self.outputs = [real_logits, fake_logits]

    def generate(self, z, labels):
        return torch.zeros(z.shape[0], 1, 8, 8)

    def discriminate(self, images, condition):
        return self.outputs.pop(0)

    def autocast(self):
        return contextlib.nullcontext()


def test_objective_logs_the_mean_sign_of_the_real_logits():
    objective = WholeSliceObjective(latent_dim=4)
    real_logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -0.2])
    terms = objective.discriminator_terms(_Runner(real_logits, torch.zeros(5)), torch.zeros(5, 1, 8, 8), None, 1)
    assert float(terms.logs[Terms.D_REAL_SIGN]) == pytest.approx((1 - 1 + 1 + 1 - 1) / 5)
