"""The study's tumour segmenter: slice metrics by hand and against MONAI, training, selection, early stopping."""

import math

import pytest
import torch
from monai.metrics import compute_dice

from monai_mri_gan.study.segmenter import segment, segmentation_metrics, train_segmenter

CHANNELS = (4, 8, 16, 16)


def squares(count: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise slices in [-1, 1] with one bright square each (side 6-11 px), and label maps marking the square."""
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(count, 1, size, size, generator=g) * 0.8 - 1.0)
    masks = torch.zeros(count, 1, size, size, dtype=torch.long)
    for i in range(count):
        side = int(torch.randint(6, 12, (1,), generator=g))
        top, left = (int(v) for v in torch.randint(0, size - side, (2,), generator=g))
        images[i, 0, top: top + side, left: left + side] += 1.2
        masks[i, 0, top: top + side, left: left + side] = int(torch.randint(1, 4, (1,), generator=g))  # any label
    return images.clamp(-1, 1), masks


def test_segmentation_metrics_by_hand():
    predicted = torch.zeros(5, 4, 4, dtype=torch.bool)
    masks = torch.zeros(5, 1, 4, 4, dtype=torch.long)
    masks[0, 0, :2, :2] = 1  # 4 true pixels, 2 predicted of them and 2 more: 2 * 2 / (4 + 4)
    predicted[0, :2, 0] = True
    predicted[0, 2:, 3] = True
    masks[1, 0, 0, :] = 3  # 4 true pixels (another label), nothing predicted: 0
    predicted[2].view(-1)[:12] = True  # healthy, 12 pixels: a false positive at min_pixels 10
    predicted[3].view(-1)[:5] = True  # healthy, 5 pixels: not one
    result = segmentation_metrics(predicted, masks, min_pixels=10)
    # pooled: 2 overlapping pixels; 4 + 0 + 12 + 5 + 0 predicted and 4 + 4 true
    assert result == {"dice": pytest.approx((0.5 + 0.0) / 2), "pooled_dice": pytest.approx(2 * 2 / (21 + 8)),
                      "false_positive_rate": pytest.approx(1 / 3), "n_tumour_slices": 2, "n_healthy_slices": 3}
    assert segmentation_metrics(predicted, masks, min_pixels=5)["false_positive_rate"] == pytest.approx(2 / 3)
    # the same per-slice Dice as MONAI's on the binary masks
    monai_dice = compute_dice(predicted[:2, None].float(), (masks[:2] > 0).float(), include_background=True)
    assert torch.allclose(monai_dice[:, 0].double(), torch.tensor([0.5, 0.0], dtype=torch.float64))

    tumour_only = segmentation_metrics(predicted[:2, None], masks[:2])  # (N, 1, H, W) predictions too
    assert tumour_only["n_healthy_slices"] == 0 and math.isnan(tumour_only["false_positive_rate"])
    healthy_only = segmentation_metrics(predicted[2:], masks[2:, 0])
    assert healthy_only["n_tumour_slices"] == 0 and math.isnan(healthy_only["dice"])
    assert healthy_only["pooled_dice"] == 0.0
    assert segmentation_metrics(predicted[4:], masks[4:])["pooled_dice"] == 1.0  # nothing true, nothing predicted
    with pytest.raises(ValueError, match="one shape"):
        segmentation_metrics(predicted[:, :3], masks)


def test_segmentation_metrics_match_monai_on_random_masks():
    g = torch.Generator().manual_seed(5)
    predicted = torch.rand(6, 8, 8, generator=g) < 0.4
    masks = (torch.rand(6, 1, 8, 8, generator=g) < 0.3).long() * 2
    expected = compute_dice(predicted[:, None].float(), (masks > 0).float(), include_background=True)[:, 0]
    assert segmentation_metrics(predicted, masks)["dice"] == pytest.approx(float(expected.mean()), abs=1e-6)


@pytest.mark.usefixtures("one_thread")
def test_segmenter_learns_squares_reproducibly():
    images, masks = squares(48, seed=0)
    val_images, val_masks = squares(16, seed=1)
    rng_before = torch.get_rng_state()
    settings = {"max_steps": 100, "eval_every": 20, "patience": 3, "batch_size": 8, "learning_rate": 5e-3,
                "channels": CHANNELS}
    network, curve = train_segmenter(images, masks, val_images, val_masks, seed=3, **settings)
    assert torch.equal(torch.get_rng_state(), rng_before)  # private random state only
    assert not network.training
    assert [entry["step"] for entry in curve] == list(range(20, 20 * len(curve) + 1, 20))
    assert all(set(entry) == {"step", "val_pooled_dice", "train_loss"} for entry in curve)
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]
    best = max(entry["val_pooled_dice"] for entry in curve)
    assert best > 0.9
    # validation ran under bf16 autocast (amp): the best score is the selected network's bf16 score, and float32
    # (what test scores use) predicts nearly the same pixels
    scores = segmentation_metrics(segment(network, val_images, batch_size=5, amp=True), val_masks)
    assert scores["pooled_dice"] == pytest.approx(best)
    in_float32 = segment(network, val_images)
    assert float((in_float32 == segment(network, val_images, amp=True)).float().mean()) > 0.99
    assert segmentation_metrics(in_float32, val_masks)["pooled_dice"] == pytest.approx(best, abs=0.02)
    predicted = segment(network, images)
    assert predicted.dtype == torch.bool and predicted.shape == (48, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # segment() predicts in float32 even inside autocast
        assert torch.equal(segment(network, images), predicted)

    again, again_curve = train_segmenter(images, masks, val_images, val_masks, seed=3, **settings)
    assert again_curve == curve
    pairs = zip(network.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


@pytest.mark.usefixtures("one_thread")
def test_segmenter_stops_early_when_nothing_is_learnt():
    images, _ = squares(16, seed=2)
    val_images, _ = squares(8, seed=3)
    g = torch.Generator().manual_seed(4)
    masks = (torch.rand(16, 1, 32, 32, generator=g) < 0.2).long()  # independent of the images
    val_masks = (torch.rand(8, 1, 32, 32, generator=g) < 0.2).long()
    weights = torch.linspace(0.0, 1.0, 16)  # oversampling path; the first slice is never drawn
    seen = []

    def flip(batch, target):
        seen.append(batch.shape[0])
        return batch.flip(-1), target.flip(-1)

    _, curve = train_segmenter(images, masks, val_images, val_masks, max_steps=400, eval_every=10, patience=3,
                               batch_size=4, channels=CHANNELS, sample_weights=weights, augment=flip, amp=False)
    assert curve[-1]["step"] < 400 and len(curve) < 40
    assert len(seen) == curve[-1]["step"] and set(seen) == {4}
    dices = [entry["val_pooled_dice"] for entry in curve]
    assert all(d <= max(dices[:-3]) for d in dices[-3:])  # the last three evaluations did not improve


@pytest.mark.usefixtures("one_thread")
def test_segmenter_validates_at_the_last_step():
    images, masks = squares(4, seed=0)
    _, curve = train_segmenter(images, masks, images, masks, max_steps=7, eval_every=5, batch_size=2,
                               channels=CHANNELS)
    assert [entry["step"] for entry in curve] == [5, 7]


def test_segmenter_refuses_bad_inputs():
    images, masks = squares(4, seed=0)
    with pytest.raises(ValueError, match="no tumour"):
        train_segmenter(images, masks, images, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="sample_weights"):
        train_segmenter(images, masks, images, masks, sample_weights=torch.zeros(4))
    with pytest.raises(ValueError, match="one non-empty"):
        train_segmenter(images, masks[:3], images, masks)
