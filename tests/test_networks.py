"""Slice generator and discriminator: shapes, ranges, conditioning, spectral norm, memory format, TorchScript."""

import pytest
import torch
from torch.nn.utils import parametrize

from monai_mri_gan.networks import (
    SkipLayerExcitation,
    SliceDiscriminator,
    SliceGenerator,
    build_networks,
    feature_channels,
    minibatch_stddev,
    seeded_latents,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("size, base, max_channels", [(64, None, 256), (128, None, 256), (256, 4, 32)])
def test_output_shapes_and_range(size, base, max_channels):
    generator, discriminator = build_networks(
        image_size=size, latent_dim=16, base_channels=base, channels=2, max_channels=max_channels
    )
    images = generator(torch.randn(3, 16))
    assert images.shape == (3, 2, size, size)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert discriminator(images).shape == (3,)
    discriminator.eval()  # in training mode every call runs one more power iteration of spectral norm
    logits = discriminator(images)
    torch.testing.assert_close(discriminator.probability(images), torch.sigmoid(logits))


def test_channel_schedule():
    # base channels at full resolution, doubling per halving, capped
    assert [feature_channels(64, r, 32, 256) for r in (64, 32, 16, 8, 4)] == [32, 64, 128, 256, 256]
    generator = SliceGenerator(latent_dim=8, image_size=64)  # 16 channels at 64 px: 256, 128, 64, 32, 16
    assert generator.initial_channels == 256 and generator.to_image.conv.in_channels == 16
    assert [block.conv.conv.out_channels for block in generator.blocks] == [128, 64, 32, 16]
    assert SliceGenerator(latent_dim=8, image_size=128).to_image.conv.in_channels == 8
    discriminator = SliceDiscriminator(image_size=64)
    assert discriminator.blocks[0].conv.out_channels == 32 and discriminator.feature_dim == (256 + 1) * 16
    assert SliceDiscriminator(image_size=64, minibatch_std=False).feature_dim == 256 * 16
    with pytest.raises(ValueError, match="image_size"):
        SliceGenerator(image_size=100)


def test_dcgan_initialisation():
    generator = SliceGenerator(latent_dim=8, image_size=64)
    weight = generator.blocks[1].conv.conv.weight
    assert abs(weight.mean().item()) < 0.002 and weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert generator.initial_norm.bn.weight.std().item() == pytest.approx(0.02, rel=0.2)


def test_conditional_generator_depends_on_label():
    generator = SliceGenerator(latent_dim=16, image_size=64, num_classes=3).eval()
    with torch.no_grad():  # class shifts as training leaves them (they start at zero)
        for norm in [generator.initial_norm] + [block.norm for block in generator.blocks]:
            norm.shift.weight.normal_(0.0, 0.5)
    z = torch.randn(1, 16).expand(3, 16)
    images = generator(z, torch.tensor([0, 1, 2]))
    assert (images[0] - images[1]).abs().max() > 1e-3 and (images[1] - images[2]).abs().max() > 1e-3
    torch.testing.assert_close(generator(z, torch.tensor([1, 1, 1]))[0], images[1])
    with pytest.raises(ValueError, match="required"):
        generator(z)


def test_unconditional_networks_reject_labels():
    generator, discriminator = build_networks(image_size=64, latent_dim=8)
    with pytest.raises(ValueError, match="unconditional"):
        generator(torch.randn(2, 8), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        discriminator(torch.zeros(2, 1, 64, 64), torch.tensor([0, 1]))


def test_projection_discriminator_adds_embedding_feature_product():
    discriminator = SliceDiscriminator(image_size=64, num_classes=2).eval()
    x = torch.rand(1, 1, 64, 64).expand(2, 1, 64, 64) * 2 - 1
    logits = discriminator(x, torch.tensor([0, 1]))
    features = discriminator.features(x[:1])[0]
    embedding = discriminator.embedding.weight  # spectrally normalised, as used in forward
    torch.testing.assert_close(logits[0] - logits[1], features @ (embedding[0] - embedding[1]))
    assert (logits[0] - logits[1]).abs() > 1e-6
    unconditional_part = discriminator.linear(features[None]).squeeze()
    torch.testing.assert_close(logits[0], unconditional_part + features @ embedding[0])
    with pytest.raises(ValueError, match="required"):
        discriminator(x)


def test_auxiliary_classifier_adds_class_logits():
    discriminator = SliceDiscriminator(image_size=32, num_classes=3, auxiliary_classifier=True).eval()
    plain = SliceDiscriminator(image_size=32, num_classes=3)
    plain.load_state_dict({k: v for k, v in discriminator.state_dict().items() if not k.startswith("classifier")})
    plain.eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    labels = torch.tensor([0, 1, 2, 1])
    out = discriminator(x, labels)
    assert out.shape == (4, 4)
    features = discriminator.features(x)
    torch.testing.assert_close(out[:, 0], plain(x, labels))  # column 0: the same real/fake logit
    torch.testing.assert_close(out[:, 1:], discriminator.classifier(features))
    torch.testing.assert_close(discriminator.probability(x, labels), torch.sigmoid(out[:, 0]))
    with pytest.raises(ValueError, match="auxiliary_classifier needs classes"):
        SliceDiscriminator(image_size=32, auxiliary_classifier=True)


def test_spectral_norm_bounds_the_largest_singular_value():
    discriminator = SliceDiscriminator(image_size=64, num_classes=2, spectral_norm=True)
    layers = [block.conv for block in discriminator.blocks] + [discriminator.linear, discriminator.embedding]
    assert all(parametrize.is_parametrized(layer, "weight") for layer in layers)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.modules())
    x, y = torch.rand(2, 1, 64, 64), torch.tensor([0, 1])
    with torch.no_grad():
        for _ in range(30):  # power iterations run on each training-mode forward pass
            discriminator(x, y)
    for layer in layers:
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.02)

    plain = SliceDiscriminator(image_size=64, spectral_norm=False)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules()) == len(plain.blocks) - 1


def test_channels_last_matches_contiguous():
    generator, discriminator = build_networks(image_size=64, latent_dim=16, num_classes=2)
    generator.eval()
    discriminator.eval()
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 1, 0])
    images = generator(z, y)
    logits = discriminator(images, y)
    generator.to(memory_format=torch.channels_last)
    discriminator.to(memory_format=torch.channels_last)
    images_cl = generator(z, y)
    torch.testing.assert_close(images_cl, images, rtol=0, atol=1e-5)
    logits_cl = discriminator(images.contiguous(memory_format=torch.channels_last), y)
    torch.testing.assert_close(logits_cl, logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_classes,skip_excitation", [(0, False), (3, False), (3, True)])
def test_generator_scripts_and_traces(num_classes, skip_excitation):
    generator = SliceGenerator(latent_dim=16, image_size=64, num_classes=num_classes,
                               skip_excitation=skip_excitation).eval()
    z = torch.randn(3, 16)
    labels = torch.tensor([0, 2, 1]) if num_classes else None
    expected = generator(z, labels)
    scripted = torch.jit.script(generator)
    torch.testing.assert_close(scripted(z, labels), expected, rtol=0, atol=1e-6)
    if num_classes:
        with pytest.raises(Exception, match="labels are required"):
            scripted(z)
    traced = torch.jit.trace(generator, (z, labels) if num_classes else (z,))
    other = torch.randn(3, 16)
    torch.testing.assert_close(traced(other, labels) if num_classes else traced(other), generator(other, labels))


def test_spectral_norm_generator_traces():
    generator = SliceGenerator(latent_dim=16, image_size=64, spectral_norm=True).eval()
    assert parametrize.is_parametrized(generator.project, "weight")
    z = torch.randn(2, 16)
    traced = torch.jit.trace(generator, (z,))
    torch.testing.assert_close(traced(z), generator(z))


def test_minibatch_stddev_channel():
    h = torch.stack([torch.full((2, 4, 4), float(v)) for v in (1.0, 3.0, 5.0)])  # (3, 2, 4, 4)
    extra = minibatch_stddev(h, eps=0.0)
    # population std of (1, 3, 5) is sqrt(8/3), the same at every feature and position
    assert extra.shape == (3, 1, 4, 4)
    torch.testing.assert_close(extra, torch.full((3, 1, 4, 4), (8 / 3) ** 0.5))
    # identical samples get (almost) zero: the signal that exposes a collapsed generator
    assert minibatch_stddev(torch.ones(4, 2, 4, 4)).max() < 1e-3
    d = SliceDiscriminator(image_size=32, base_channels=4)
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    same = x[:1].expand(4, -1, -1, -1)
    assert d.features(x)[0, -16:].mean() > d.features(same)[0, -16:].mean()


def test_conditional_batch_norm_starts_as_batch_norm():
    g = SliceGenerator(latent_dim=8, image_size=32, num_classes=3)
    for norm in [g.initial_norm] + [block.norm for block in g.blocks]:
        assert norm.scale.weight.mean().item() == pytest.approx(1.0, abs=0.01)
        assert norm.scale.weight.std().item() == pytest.approx(0.02, rel=0.3)
        assert torch.count_nonzero(norm.shift.weight) == 0
    # the label embedding concatenated to z keeps the DCGAN initialisation
    assert g.label_embedding.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_seeded_latents_are_the_documented_draw():
    expected = torch.randn(6, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(seeded_latents(6, 5, 7), expected)
    rng_before = torch.get_rng_state()
    assert torch.equal(seeded_latents(6, 5, 7), expected)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global random state is not consumed
    # a generator is drawn on from where it stands
    generator = torch.Generator().manual_seed(7)
    torch.randperm(10, generator=generator)
    continued = torch.Generator().manual_seed(7)
    torch.randperm(10, generator=continued)
    assert torch.equal(seeded_latents(4, 3, generator), torch.randn(4, 3, generator=continued))


def test_skip_layer_excitation_is_the_formula_and_gates_the_fine_levels():
    torch.manual_seed(0)
    block = SkipLayerExcitation(6, 3)
    fine, coarse = torch.randn(2, 3, 16, 16), torch.randn(2, 6, 8, 8)
    # by hand: 2x2 average pooling of an 8x8 map to 4x4, the valid 4x4 convolution as a sum, SiLU, the 1x1 mix
    pooled = coarse.reshape(2, 6, 4, 2, 4, 2).mean(dim=(3, 5))
    reduced = torch.einsum("bchw,ochw->bo", pooled, block.reduce.weight)
    silu = reduced * torch.sigmoid(reduced)
    gate = torch.sigmoid(silu @ block.mix.weight[:, :, 0, 0].T)
    torch.testing.assert_close(block(fine, coarse), fine * gate[:, :, None, None], rtol=1e-5, atol=1e-6)

    # in the generator: 4x4 gates 32x32 and 8x8 gates 64x64 at 64 px, nothing coarser; without it the state dict
    # has no new key, so older checkpoints load strictly
    generator = SliceGenerator(latent_dim=16, image_size=64, num_classes=2, skip_excitation=True)
    gated = [(i + 1, e) for i, e in enumerate(generator.excitations) if isinstance(e, SkipLayerExcitation)]
    assert [(level, e.reduce.in_channels, e.reduce.out_channels) for level, e in gated] == [(3, 256, 32), (4, 128, 16)]
    plain = SliceGenerator(latent_dim=16, image_size=64, num_classes=2)
    assert not any(isinstance(e, SkipLayerExcitation) for e in plain.excitations)
    assert not any(key.startswith("excitations") for key in plain.state_dict())
    z, labels = torch.randn(4, 16), torch.tensor([0, 1, 0, 1])
    generator(z, labels).square().mean().backward()
    assert all(e.reduce.weight.grad is not None and e.reduce.weight.grad.abs().sum() > 0 for _, e in gated)
    assert parametrize.is_parametrized(
        SliceGenerator(latent_dim=16, image_size=64, skip_excitation=True, spectral_norm=True).excitations[2].reduce,
        "weight")


def test_switches_from_a_command_line_are_booleans():
    """``--spectral_norm false`` reaches the constructor as the string "false", which must not switch it on."""
    generator = SliceGenerator(latent_dim=8, image_size=32, spectral_norm="false", skip_excitation="True")
    assert generator.init_args["spectral_norm"] is False and generator.init_args["skip_excitation"] is True
    assert not parametrize.is_parametrized(generator.project, "weight")
    discriminator = SliceDiscriminator(image_size=32, spectral_norm="false", minibatch_std="false")
    assert discriminator.init_args["spectral_norm"] is False and discriminator.minibatch_std is False
    with pytest.raises(ValueError, match="skip_excitation must be true or false, got 'yes'"):
        SliceGenerator(latent_dim=8, image_size=32, skip_excitation="yes")
