"""Adversarial losses against their formulas on small fixed logits, and the (lazy) R1 penalty."""

import math

import pytest
import torch
import torch.nn.functional as F

from monai_mri_gan.losses import (
    AdversarialLoss,
    R1Regulariser,
    bce_discriminator_loss,
    bce_generator_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    lsgan_discriminator_loss,
    lsgan_generator_loss,
    mode_seeking_loss,
    r1_penalty,
    same_class_pairs,
)

REAL = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
FAKE = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_bce_losses_by_hand():
    d_expected = sum(softplus(-r) for r in REAL.tolist()) / 3 + sum(softplus(f) for f in FAKE.tolist()) / 3
    assert bce_discriminator_loss(REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-12)
    # -log(sigmoid(f)) = softplus(-f): the non-saturating loss.
    g_expected = sum(-math.log(1 / (1 + math.exp(-f))) for f in FAKE.tolist()) / 3
    assert bce_generator_loss(FAKE).item() == pytest.approx(g_expected, rel=1e-12)
    # log(1 - sigmoid(f)) = -softplus(f): the original minimax loss.
    sat_expected = sum(math.log(1 - 1 / (1 + math.exp(-f))) for f in FAKE.tolist()) / 3
    assert bce_generator_loss(FAKE, saturating=True).item() == pytest.approx(sat_expected, rel=1e-12)


def test_bce_matches_torch_bce_with_logits():
    real = torch.tensor([-2.0, 0.0, 3.0, 0.7])
    fake = torch.tensor([1.0, -1.0])  # a ragged pair: each term is its own mean
    expected = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )
    torch.testing.assert_close(bce_discriminator_loss(real, fake), expected)
    torch.testing.assert_close(bce_generator_loss(fake), F.binary_cross_entropy_with_logits(fake, torch.ones(2)))


def test_hinge_losses_by_hand():
    # relu(1 - [-2, 0, 3]) = [3, 1, 0]; relu(1 + [1, -1, 0.5]) = [2, 0, 1.5]
    assert hinge_discriminator_loss(REAL, FAKE).item() == pytest.approx(4 / 3 + 3.5 / 3)
    assert hinge_generator_loss(FAKE).item() == pytest.approx(-0.5 / 3)


def test_lsgan_losses_by_hand():
    # (real - 1)^2 = [9, 1, 4]; fake^2 = [1, 1, 0.25]; (fake - 1)^2 = [0, 4, 0.25]
    assert lsgan_discriminator_loss(REAL, FAKE).item() == pytest.approx(0.5 * (14 / 3 + 2.25 / 3))
    assert lsgan_generator_loss(FAKE).item() == pytest.approx(0.5 * 4.25 / 3)


@pytest.mark.parametrize(
    "kind, d_loss, g_loss",
    [
        ("bce", bce_discriminator_loss, bce_generator_loss),
        ("hinge", hinge_discriminator_loss, hinge_generator_loss),
        ("lsgan", lsgan_discriminator_loss, lsgan_generator_loss),
    ],
)
def test_adversarial_loss_module(kind, d_loss, g_loss):
    loss = AdversarialLoss(kind)
    assert loss.discriminator_loss(REAL, FAKE).item() == d_loss(REAL, FAKE).item()
    assert loss.generator_loss(FAKE).item() == g_loss(FAKE).item()
    assert loss(FAKE, REAL).item() == d_loss(REAL, FAKE).item()
    assert loss(FAKE).item() == g_loss(FAKE).item()


def test_adversarial_loss_options():
    assert AdversarialLoss("bce", saturating=True).generator_loss(FAKE).item() == pytest.approx(
        -sum(softplus(f) for f in FAKE.tolist()) / 3
    )
    with pytest.raises(ValueError, match="kind"):
        AdversarialLoss("wasserstein")
    with pytest.raises(ValueError, match="saturating"):
        AdversarialLoss("hinge", saturating=True)


def test_r1_penalty_of_linear_discriminator_is_squared_weight_norm():
    w = torch.tensor([0.5, -1.0, 2.0, 0.25], dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 1, 2, 2, dtype=torch.float64, requires_grad=True)
    penalty = r1_penalty(x.flatten(1) @ w, x)
    assert penalty.item() == pytest.approx(0.25 + 1.0 + 4.0 + 0.0625, rel=1e-12)
    # create_graph=True: the penalty back-propagates into the weights, d||w||^2/dw = 2w.
    penalty.backward()
    torch.testing.assert_close(w.grad, 2 * w.detach())


def test_r1_penalty_is_a_batch_mean():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]], requires_grad=True)
    logits = 0.5 * x.square().sum(dim=1)  # grad_x D = x
    assert r1_penalty(logits, x).item() == pytest.approx((5.0 + 9.0) / 2)
    with pytest.raises(ValueError, match="require grad"):
        r1_penalty(logits.detach(), x.detach())


def test_lazy_r1_schedule_and_scaling():
    w = torch.tensor([[1.0, 2.0], [0.0, 3.0]])  # one weight vector per class

    def discriminator(x, labels):
        return (x.flatten(1) * w[labels]).sum(dim=1)

    images = torch.randn(4, 1, 1, 2)
    labels = torch.tensor([0, 1, 1, 1])
    r1 = (5.0 + 3 * 9.0) / 4
    regulariser = R1Regulariser(gamma=10.0, every=4)
    values = [regulariser(discriminator, images, labels, i).item() for i in range(9)]
    assert values == pytest.approx([10.0 / 2 * 4 * r1, 0, 0, 0, 10.0 / 2 * 4 * r1, 0, 0, 0, 10.0 / 2 * 4 * r1])
    assert not images.requires_grad  # the caller's batch is left alone
    every_step = R1Regulariser(gamma=2.0, every=1)
    assert every_step(lambda x: x.flatten(1).sum(dim=1), images, None, 3).item() == pytest.approx(2.0)
    assert R1Regulariser(gamma=0.0)(discriminator, images, labels, 0).item() == 0.0
    with pytest.raises(ValueError, match="every"):
        R1Regulariser(every=0)


def test_same_class_pairs():
    labels = torch.tensor([1, 0, 1, 0, 0, 1, 1])
    first, second = same_class_pairs(labels, 7)
    pairs = sorted(zip(first.tolist(), second.tolist(), strict=False))
    assert pairs == [(0, 2), (1, 3), (5, 6)]  # consecutive members per class; the odd one out (4) is unpaired
    first, second = same_class_pairs(None, 5)
    assert first.tolist() == [0, 2] and second.tolist() == [1, 3]


def test_mode_seeking_loss_by_hand():
    images = torch.tensor([[0.0, 1.0], [1.0, 1.0], [0.5, -0.5], [0.0, 0.0]]).reshape(4, 1, 1, 2)
    latents = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, -1.0]])
    # unconditional pairs (0, 1) and (2, 3): image |diffs| 1, 0, 0.5, 0.5 -> mean 0.5; latent 2, 0, 0, 2 -> mean 1
    assert float(mode_seeking_loss(images, latents, eps=0.0)) == pytest.approx(1 / 0.5)
    # classes pair (0, 2) and (1, 3): images 0.5, 1.5, 1, 1 -> 1; latents 1, 1, 1, 1 -> 1
    labels = torch.tensor([0, 1, 0, 1])
    assert float(mode_seeking_loss(images, latents, labels, eps=1e-5)) == pytest.approx(1 / (1e-5 + 1.0))
    # identical images (a collapsed generator) cost 1 / eps; no pair of one class costs 0
    assert float(mode_seeking_loss(torch.zeros(4, 1, 2, 2), latents, eps=1e-3)) == pytest.approx(1e3)
    loose = torch.zeros(2, 1, 2, 2, requires_grad=True)
    loss = mode_seeking_loss(loose, latents[:2], torch.tensor([0, 1]))
    assert float(loss.detach()) == 0.0
    loss.backward()  # the zero keeps a gradient path, so a batch without pairs does not break the step
    with pytest.raises(ValueError, match="latent"):
        mode_seeking_loss(images, latents[:3])
