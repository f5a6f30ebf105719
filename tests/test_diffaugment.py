"""DiffAugment: identity when off, reproducible, differentiable, and each operation doing what it says."""

import pytest
import torch

from monai_mri_gan.diffaugment import DiffAugment


def shifted(x: torch.Tensor, dy: int, dx: int, background: float) -> torch.Tensor:
    """``x`` (C, H, W) with its content moved by (dy, dx), built slice by slice."""
    out = torch.full_like(x, background)
    _, h, w = x.shape
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_disabled_is_identity():
    x = torch.randn(4, 1, 16, 16)
    assert DiffAugment(p=0.0)(x) is x
    assert DiffAugment(policy=())(x) is x
    assert DiffAugment(policy="")(x) is x


def test_reproducible_with_generator_and_global_seed():
    x = torch.randn(6, 1, 16, 16)
    augment = DiffAugment()
    a = augment(x, torch.Generator().manual_seed(7))
    b = augment(x, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.manual_seed(3)
    c = augment(x)
    torch.manual_seed(3)
    torch.testing.assert_close(augment(x), c, rtol=0, atol=0)
    assert not torch.equal(a, x)


def test_gradient_flows_to_input():
    x = torch.randn(4, 1, 16, 16, requires_grad=True)
    DiffAugment()(x, torch.Generator().manual_seed(0)).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # Translation alone routes each kept pixel to exactly one output pixel: a 0/1 gradient.
    y = torch.randn(4, 1, 16, 16, requires_grad=True)
    DiffAugment(policy=["translation"])(y, torch.Generator().manual_seed(0)).sum().backward()
    assert set(y.grad.unique().tolist()) <= {0.0, 1.0}


def test_translation_moves_content_by_whole_pixels():
    augment = DiffAugment(policy=["translation"], translation_ratio=0.125)  # 16 px -> at most 2 px
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, 0, 7, 9] = 1.0  # one bright pixel on background
    x[:, 0, 3, 2] = 0.5
    out = augment(x, torch.Generator().manual_seed(1))
    seen = set()
    for src, dst in zip(x, out, strict=True):
        (dy, dx) = ((dst[0] == 1.0).nonzero()[0] - torch.tensor([7, 9])).tolist()
        assert abs(dy) <= 2 and abs(dx) <= 2
        torch.testing.assert_close(dst, shifted(src, dy, dx, -1.0), rtol=0, atol=0)
        seen.add((dy, dx))
    assert {dy for dy, _ in seen} == {dx for _, dx in seen} == {-2, -1, 0, 1, 2}  # the whole range is drawn


def test_translation_pads_with_background():
    x = torch.ones(32, 1, 8, 8)
    out = DiffAugment(policy=["translation"], translation_ratio=0.25, background=-1.0)(
        x, torch.Generator().manual_seed(2)
    )
    assert set(out.unique().tolist()) == {-1.0, 1.0}
    assert ((out == -1.0).flatten(1).sum(1) <= 8 * 8 - 6 * 6).all()  # at most 2 rows and 2 columns exposed


def test_cutout_sets_a_square_of_the_expected_size_to_background():
    augment = DiffAugment(policy=["cutout"], cutout_ratio=0.5)  # 16 px -> an 8x8 square
    x = torch.rand(64, 1, 16, 16)  # no pixel at -1 before
    out = augment(x, torch.Generator().manual_seed(4))
    full_squares = 0
    for src, dst in zip(x, out, strict=True):
        cut = dst[0] == -1.0
        rows, cols = cut.any(1).nonzero().flatten(), cut.any(0).nonzero().flatten()
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert cut[top:bottom, left:right].all() and cut.sum() == (bottom - top) * (right - left)
        torch.testing.assert_close(dst[0][~cut], src[0][~cut], rtol=0, atol=0)
        height, width = int(bottom - top), int(right - left)
        assert height <= 8 and width <= 8
        assert height == 8 or top == 0 or bottom == 16  # clipped only at the border
        assert width == 8 or left == 0 or right == 16
        full_squares += height == 8 and width == 8
    assert full_squares > 0


def test_brightness_adds_a_constant_per_sample_in_range():
    x = torch.randn(200, 1, 8, 8)
    out = DiffAugment(policy=["brightness"], brightness=0.5)(x, torch.Generator().manual_seed(5))
    shift = (out - x).flatten(1)
    torch.testing.assert_close(shift, shift[:, :1].expand_as(shift), rtol=0, atol=1e-6)
    assert shift.min() >= -0.5 and shift.max() < 0.5
    assert shift.min() < -0.4 and shift.max() > 0.4


def test_contrast_scales_around_the_sample_mean():
    x = torch.randn(200, 2, 8, 8, dtype=torch.float64)
    out = DiffAugment(policy=["contrast"], contrast=0.5)(x, torch.Generator().manual_seed(6))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3), keepdim=True), mean)
    factor = ((out - mean) / (x - mean)).flatten(1)
    torch.testing.assert_close(factor, factor[:, :1].expand_as(factor))
    assert factor.min() >= 0.5 and factor.max() < 1.5
    assert factor.min() < 0.6 and factor.max() > 1.4


def test_probability_applies_per_sample():
    x = torch.randn(200, 1, 8, 8)
    out = DiffAugment(policy=["brightness"], p=0.5)(x, torch.Generator().manual_seed(8))
    unchanged = (out == x).flatten(1).all(1).float().mean().item()
    assert 0.35 < unchanged < 0.65


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        DiffAugment(policy=["color"])
    with pytest.raises(ValueError, match="p must be"):
        DiffAugment(p=1.5)
    with pytest.raises(ValueError, match="cutout_ratio"):
        DiffAugment(cutout_ratio=2.0)
