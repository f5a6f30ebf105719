"""Memorisation audit: planted copies of training slices are found, distinct slices are not, pairs are drawn."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_metrics import head_phantoms

from monai_mri_gan.metrics import RadiomicsFeatureExtractor, memorisation_report, save_closest_pairs_png

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohort():
    """40 training slices; 13 generated ones: 11 distinct, an exact copy of training slice 7 at index 5, and at
    index 12 a copy of training slice 23 with noise, shifted by one pixel down and one left."""
    training = head_phantoms(40, size=64, seed=10)
    distinct = head_phantoms(11, size=64, seed=11)
    noise = 0.05 * torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    moved = torch.roll((training[23:24] + noise).clamp(-1, 1), shifts=(1, -1), dims=(-2, -1))
    generated = torch.cat([distinct[:5], training[7:8], distinct[5:], moved])
    return generated, training


def test_exact_copy_is_flagged_with_its_index(cohort):
    generated, training = cohort
    report = memorisation_report(generated, training, threshold=0.95, top_k_pairs=4)
    assert report["flagged"].tolist() == [5]
    assert report["pixel_nearest"][5].item() == 7
    assert report["pixel_similarity"][5].item() == pytest.approx(1.0, abs=1e-5)
    assert report["fraction_above_threshold"] == pytest.approx(1 / 13)
    assert report["closest_pairs"][0][:2] == (5, 7)
    assert len(report["closest_pairs"]) == 4
    distinct = torch.ones(13, dtype=torch.bool)
    distinct[[5, 12]] = False
    assert torch.all(report["pixel_similarity"][distinct] < 0.95)
    assert report["feature_similarity"] is None and report["feature_fraction_above_threshold"] is None


def test_noisy_shifted_copy_is_found_with_shift_search(cohort):
    generated, training = cohort
    plain = memorisation_report(generated, training, max_shift=0)
    assert 12 not in plain["flagged"].tolist()
    report = memorisation_report(generated, training, max_shift=1, batch_size=16)
    assert sorted(report["flagged"].tolist()) == [5, 12]
    assert report["pixel_nearest"][12].item() == 23
    # undoing the planted shift (1, -1) is a shift of (-1, 1)
    assert report["pixel_shift"][12].tolist() == [-1, 1]
    assert report["pixel_similarity"][12] > 0.99 > plain["pixel_similarity"][12]


def test_feature_space_nearest_neighbours(cohort):
    generated, training = cohort
    extractor = RadiomicsFeatureExtractor()
    report = memorisation_report(generated, training, extractor(generated), extractor(training), threshold=0.95)
    assert report["feature_nearest"][5].item() == 7
    assert report["feature_similarity"][5].item() == pytest.approx(1.0, abs=1e-9)
    assert report["feature_similarity"].shape == (13,)
    assert 0 < report["feature_fraction_above_threshold"] <= 1
    with pytest.raises(ValueError, match="both"):
        memorisation_report(generated, training, gen_feats=extractor(generated))


def test_closest_pairs_png(cohort, tmp_path):
    generated, training = cohort
    report = memorisation_report(generated, training, top_k_pairs=3)
    path = save_closest_pairs_png(report, generated, training, tmp_path / "audit" / "pairs.png", n=8, gap=2)
    image = np.asarray(Image.open(path))
    assert image.shape == (3 * 64 + 2 * 2, 2 * 64 + 2)  # only 3 pairs in the report
    top_left = ((generated[5, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    top_right = ((training[7, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(image[:64, :64], top_left)
    assert np.array_equal(image[:64, 66:], top_right)
    assert np.all(image[64:66] == 255)
    assert sorted(p.name for p in path.parent.iterdir()) == ["pairs.png"]  # no temporary file left
    with pytest.raises(FileExistsError):
        save_closest_pairs_png(report, generated, training, path)
    save_closest_pairs_png(report, generated, training, path, n=1, overwrite=True)
    assert np.asarray(Image.open(path)).shape == (64, 130)


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="equal C, H, W"):
        memorisation_report(torch.zeros(2, 1, 32, 32), torch.zeros(3, 1, 64, 64))
