"""Feature extractors, FID, KID, precision/recall and MS-SSIM diversity against known answers."""

import math

import pytest
import torch
from torch import nn

from monai_mri_gan.metrics import (
    EncoderFeatureExtractor,
    LocalWeightsFeatureExtractor,
    RadiomicsFeatureExtractor,
    build_backbone,
    build_feature_extractor,
    disjoint_halves,
    feature_extractor_names,
    frechet_distance,
    kernel_inception_distance,
    metric_cmp_fn_for,
    ms_ssim_diversity,
    ms_ssim_settings,
    polynomial_mmd2_unbiased,
    precision_recall,
    radiological_view,
    real_vs_real_baseline,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def head_phantoms(n: int, size: int = 64, seed: int = 0, texture: float = 0.6) -> torch.Tensor:
    """``(n, 1, size, size)`` ellipse 'heads' in [-1, 1] on a -1 background, with random shape and texture."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    a = 0.6 + 0.25 * torch.rand(n, 1, 1, generator=g)
    b = 0.7 + 0.2 * torch.rand(n, 1, 1, generator=g)
    cx, cy = 0.1 * torch.randn(n, 1, 1, generator=g), 0.1 * torch.randn(n, 1, 1, generator=g)
    r = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2
    noise = torch.nn.functional.avg_pool2d(torch.randn(n, 1, size, size, generator=g), 3, 1, 1)[:, 0]
    images = torch.where(r < 1, 0.2 + 0.4 * torch.cos(6 * r) + texture * noise, torch.tensor(-1.0))
    return images.clamp(-1, 1).unsqueeze(1)


def checkerboard(size: int = 32, low: float = -0.5, high: float = 0.5) -> torch.Tensor:
    """A one-pixel checkerboard ``(1, 1, size, size)``."""
    idx = torch.arange(size)
    board = (idx.view(-1, 1) + idx.view(1, -1)) % 2 == 0
    return torch.where(board, torch.tensor(high), torch.tensor(low)).view(1, 1, size, size)


def feature(extractor: RadiomicsFeatureExtractor, features: torch.Tensor, name: str) -> torch.Tensor:
    return features[:, extractor.feature_names.index(name)]


# --- radiomics features ---


def test_radiomics_shape_determinism_and_finiteness():
    extractor = build_feature_extractor("radiomics", batch_size=7)
    images = torch.cat([head_phantoms(10, seed=1), torch.full((1, 1, 64, 64), -1.0)])
    first, second = extractor(images), extractor(images)
    assert extractor.name == "radiomics" and "radiomics" in feature_extractor_names()
    assert first.shape == (11, len(extractor.feature_names)) == (11, 75)
    assert first.dtype == torch.float64
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    # batching does not change the result
    assert torch.allclose(RadiomicsFeatureExtractor(batch_size=64)(images), first, atol=1e-6)
    # an empty slice has no foreground: all its features are 0 (correlation too, with no pairs)
    assert torch.all(first[-1] == 0)


def test_radiomics_glcm_and_first_order_on_checkerboard():
    # quantised to 16 levels: -0.5 -> level 4, 0.5 -> level 12. At distance 1, horizontal and vertical pairs always
    # differ by 8 levels, diagonal pairs never: contrast (64 + 0 + 64 + 0) / 4 = 32. At distance 2 nothing differs.
    extractor = RadiomicsFeatureExtractor(scales=(1,))
    f = extractor(checkerboard())
    expected = {
        "s1_glcm_d1_contrast": 32.0,
        "s1_glcm_d1_homogeneity": (2 / 65 + 2) / 4,
        "s1_glcm_d1_correlation": 0.0,  # -1 across, +1 diagonally
        "s1_glcm_d1_energy": 0.5,
        "s1_glcm_d1_entropy": 1.0,
        "s1_glcm_d2_contrast": 0.0,
        "s1_glcm_d2_homogeneity": 1.0,
        "s1_glcm_d2_correlation": 1.0,
        "s1_mean": 0.0,
        "s1_std": 0.5,
        "s1_skewness": 0.0,
        "s1_kurtosis": 1.0,
        "s1_p10": -0.5,
        "s1_p50": 0.0,  # halfway between the two middle values
        "s1_p90": 0.5,
        "s1_entropy": 1.0,
        "s1_energy": 0.25,
        "s1_area_fraction": 1.0,
    }
    for name, value in expected.items():
        assert feature(extractor, f, name).item() == pytest.approx(value, abs=1e-6), name


def test_radiomics_gradient_of_a_ramp():
    # columns rise by s per pixel: Sobel magnitude s inside, s / 2 on the two edge columns (replicate padding)
    size = 64
    ramp = torch.linspace(-0.5, 0.5, size).expand(size, size).reshape(1, 1, size, size)
    slope = 1.0 / (size - 1)
    extractor = RadiomicsFeatureExtractor(scales=(1,))
    f = extractor(ramp)
    assert feature(extractor, f, "s1_gradient_mean").item() == pytest.approx(slope * (size - 1) / size, rel=1e-5)
    assert feature(extractor, f, "s1_gradient_p90").item() == pytest.approx(slope, rel=1e-5)


def test_radiomics_sensitive_to_texture_and_foreground():
    smooth = head_phantoms(4, seed=3, texture=0.0)
    rough = head_phantoms(4, seed=3, texture=0.8)
    extractor = RadiomicsFeatureExtractor()
    f_smooth, f_rough = extractor(smooth), extractor(rough)
    contrast = "s1_glcm_d1_contrast"
    assert torch.all(feature(extractor, f_rough, contrast) > 5 * feature(extractor, f_smooth, contrast))
    # identical shapes: the foreground area is the same up to clipped texture
    area = "s1_area_fraction"
    assert torch.allclose(feature(extractor, f_rough, area), feature(extractor, f_smooth, area), atol=0.02)


def test_radiomics_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        RadiomicsFeatureExtractor()(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="Unknown feature extractor"):
        build_feature_extractor("inception")


# --- network extractors ---


class SmallEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(x)).mean((2, 3)))


def test_encoder_layer_hook_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    network = SmallEncoder()
    images = head_phantoms(5, size=32, seed=4)
    extractor = build_feature_extractor("encoder", network=network, layer="act", batch_size=2)
    with torch.no_grad():
        expected = network.act(network.conv(images)).mean((2, 3)).double()
    assert torch.allclose(extractor(images), expected, atol=1e-6)
    assert extractor(images).shape == (5, 4)
    # network output when no layer is named
    with torch.no_grad():
        assert torch.allclose(EncoderFeatureExtractor(network)(images), network(images).double(), atol=1e-6)
    with pytest.raises(ValueError, match="conv"):
        EncoderFeatureExtractor(network, layer="penultimate")

    path = tmp_path / "checkpoint.pt"
    torch.save({"discriminator": network.state_dict(), "epoch": 3}, path)
    loaded = EncoderFeatureExtractor.from_checkpoint(path, SmallEncoder, key="discriminator", layer="act")
    # the weights load bit for bit; the features agree to float32 rounding (oneDNN may sum a convolution in another
    # order for another module instance: seen on an AVX2-only CPU, never on AVX-512 ones)
    original = network.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.network.state_dict().items()) and len(original) == 4
    assert torch.allclose(loaded(images), extractor(images), rtol=0, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        EncoderFeatureExtractor.from_checkpoint(tmp_path / "missing.pt", SmallEncoder)


def test_local_weights_missing_file_says_nothing_is_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found at .*never downloads"):
        build_feature_extractor("local_weights", weights_path=tmp_path / "resnet50.pth", architecture="resnet50")
    with pytest.raises(ValueError, match="available offline"):
        LocalWeightsFeatureExtractor(tmp_path / "x.pth", architecture="inception_v3")


def test_local_weights_resnet_reproduces_original_network(tmp_path):
    torch.manual_seed(1)
    original = build_backbone("resnet18", in_channels=3).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(original.state_dict(), path)
    extractor = LocalWeightsFeatureExtractor(path, architecture="resnet18", input_size=48, batch_size=3)
    images = head_phantoms(4, size=64, seed=5)
    resized = torch.nn.functional.interpolate(images, size=(48, 48), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = original(((resized.expand(-1, 3, -1, -1) + 1) / 2 - mean) / std).double()
    features = extractor(images)
    assert features.shape == (4, 512)
    assert torch.allclose(features, expected, atol=1e-5)
    assert extractor.name == "local_weights:resnet18"
    # weights of another architecture do not fit
    with pytest.raises(ValueError, match="do not fit"):
        LocalWeightsFeatureExtractor(path, architecture="resnet34")


def test_local_weights_densenet_torchvision_keys_one_channel(tmp_path):
    torch.manual_seed(2)
    original = build_backbone("densenet121", in_channels=1).eval()
    # torchvision names: denselayerN.norm1 (MONAI: denselayerN.layers.norm1) and a 'classifier' head
    state = {k.replace(".layers.", "."): v for k, v in original.state_dict().items()}
    state["classifier.weight"], state["classifier.bias"] = torch.zeros(1000, 1024), torch.zeros(1000)
    path = tmp_path / "densenet121.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    extractor = LocalWeightsFeatureExtractor(path, architecture="densenet121", input_size=None)
    images = head_phantoms(2, size=32, seed=6)
    with torch.no_grad():
        expected = original(images).double()
    assert extractor.in_channels == 1
    assert torch.allclose(extractor(images), expected, atol=1e-5)


# --- Fréchet distance ---


def test_frechet_distance_of_a_set_with_itself_is_zero():
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(20, 20, generator=g, dtype=torch.float64)
    feats = torch.randn(500, 20, generator=g, dtype=torch.float64) @ mixing
    scale = torch.cov(feats.T).trace().item()
    assert frechet_distance(feats, feats) < 1e-6 * scale


def test_frechet_distance_matches_gaussian_closed_form():
    mu_b = torch.tensor([1.0, 0.5, 0.0, -1.0], dtype=torch.float64)
    var_a = torch.tensor([1.0, 2.0, 0.5, 1.0], dtype=torch.float64)
    var_b = torch.tensor([4.0, 1.0, 0.5, 0.25], dtype=torch.float64)
    # diagonal covariances: ||mu_a - mu_b||^2 + sum(var_a + var_b - 2 sqrt(var_a var_b)) = 2.25 + 1.4216 = 3.6716
    expected = mu_b.square().sum() + (var_a + var_b - 2 * (var_a * var_b).sqrt()).sum()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 4, generator=g, dtype=torch.float64) * var_a.sqrt()
    b = torch.randn(20000, 4, generator=g, dtype=torch.float64) * var_b.sqrt() + mu_b
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=0.04)
    # a common rotation makes the covariances full but leaves the distance unchanged
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    assert frechet_distance(a @ rotation, b @ rotation) == pytest.approx(frechet_distance(a, b), rel=1e-9)


def test_frechet_distance_rank_deficient_and_against_monai():
    g = torch.Generator().manual_seed(1)
    few = torch.randn(10, 30, generator=g, dtype=torch.float64)  # rank 9 covariance in 30 dimensions
    shift = torch.linspace(-1, 1, 30, dtype=torch.float64)
    # equal covariances: the distance is the squared mean shift, exactly
    assert frechet_distance(few, few + shift) == pytest.approx(shift.square().sum().item(), rel=1e-6)
    scipy = pytest.importorskip("scipy")
    assert scipy is not None
    from monai.metrics import FIDMetric

    a = torch.randn(400, 8, generator=g, dtype=torch.float64)
    b = 1.5 * torch.randn(400, 8, generator=g, dtype=torch.float64) + 0.3
    assert frechet_distance(a, b) == pytest.approx(FIDMetric()(a, b).item(), rel=1e-8)


# --- kernel distance ---


def test_polynomial_mmd_equals_hand_computation():
    x = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, -1.0], [0.5, 0.5]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0], [3.0, 0.0], [-1.0, 2.0], [0.0, 0.0]], dtype=torch.float64)

    def k(u, v):
        return (sum(ui * vi for ui, vi in zip(u.tolist(), v.tolist(), strict=True)) / 2 + 1) ** 3

    m = 4
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    expected = xx + yy - 2 * xy
    assert polynomial_mmd2_unbiased(x, y) == pytest.approx(expected, rel=1e-12)
    # one subset of all rows is a permutation of the sets: the same value, and no spread
    mean, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=100)
    assert mean == pytest.approx(expected, rel=1e-12)
    assert std == 0.0


def test_kid_near_zero_for_one_distribution_and_positive_for_shifted():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(600, 16, generator=g, dtype=torch.float64)
    b = torch.randn(600, 16, generator=g, dtype=torch.float64)
    mean, std = kernel_inception_distance(a, b, num_subsets=20, subset_size=300)
    assert abs(mean) < max(3 * std, 1e-3)
    mean_shift, std_shift = kernel_inception_distance(a, b + 0.5, num_subsets=20, subset_size=300)
    assert mean_shift > 0.05 and mean_shift > 10 * std_shift
    # reproducible with a seed
    first = kernel_inception_distance(a, b, num_subsets=3, seed=5)
    assert first == kernel_inception_distance(a, b, num_subsets=3, seed=5)
    assert first != kernel_inception_distance(a, b, num_subsets=3, seed=6)


# --- precision and recall ---


def test_precision_recall_identical_sets():
    feats = torch.randn(300, 5, generator=torch.Generator().manual_seed(4))
    assert precision_recall(feats, feats.clone(), batch_size=64) == (1.0, 1.0)


def test_precision_recall_half_manifold_and_far_away():
    g = torch.Generator().manual_seed(5)
    real = torch.rand(2000, 2, generator=g, dtype=torch.float64)
    half = torch.rand(1000, 2, generator=g, dtype=torch.float64) * torch.tensor([0.5, 1.0], dtype=torch.float64)
    precision, recall = precision_recall(real, half, k=3, batch_size=512)
    assert precision > 0.95
    assert 0.45 < recall < 0.6
    precision, recall = precision_recall(real, half + 10.0)
    assert precision == 0.0 and recall == 0.0


def test_real_vs_real_baseline_splits_into_disjoint_halves():
    reals = torch.arange(21, dtype=torch.float64).view(-1, 1).repeat(1, 2)
    first, second = real_vs_real_baseline(reals, lambda a, b: (a, b), seed=0)
    assert first.shape == second.shape == (10, 2)
    assert not set(first[:, 0].tolist()) & set(second[:, 0].tolist())
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(1000, 4, generator=g, dtype=torch.float64)
    floor = real_vs_real_baseline(feats, frechet_distance)
    assert 0 <= floor < 0.1 < frechet_distance(feats[:500], feats[500:] + 0.5)


def test_disjoint_halves_are_the_real_vs_real_split():
    first, second = disjoint_halves(21, seed=3)
    assert len(first) == len(second) == 10 and not set(first.tolist()) & set(second.tolist())
    reals = torch.arange(21, dtype=torch.float64).view(-1, 1).repeat(1, 2)
    a, b = real_vs_real_baseline(reals, lambda x, y: (x, y), seed=3)
    assert torch.equal(a[:, 0].long(), first) and torch.equal(b[:, 0].long(), second)
    with pytest.raises(ValueError, match="at least 4"):
        disjoint_halves(3)


def test_metric_cmp_fn_for_knows_which_way_is_better():
    assert metric_cmp_fn_for("kid_mean")(0.1, 0.2) and not metric_cmp_fn_for("kid_mean")(0.3, 0.2)
    assert metric_cmp_fn_for("precision")(0.9, 0.8) and not metric_cmp_fn_for("precision")(0.7, 0.8)


def test_radiological_view():
    # a 2 x 3 RAS slice: x (towards the patient's right) down the rows, y (towards anterior) along the columns
    slice_ = torch.arange(6).view(2, 3).numpy()
    # anterior (the last y) on the top row, the patient's right (the last x) in the viewer's left column
    assert radiological_view(slice_).tolist() == [[5, 2], [4, 1], [3, 0]]
    assert radiological_view(slice_[None].repeat(4, 0)).shape == (4, 3, 2)


# --- MS-SSIM diversity ---


def test_ms_ssim_settings_fit_the_image_size():
    assert ms_ssim_settings(128)[0] == 7 and len(ms_ssim_settings(128)[1]) == 5
    assert ms_ssim_settings(64)[0] == 3 and len(ms_ssim_settings(64)[1]) == 5
    assert ms_ssim_settings(256) == (11, (0.0448, 0.2856, 0.3001, 0.2363, 0.1333))
    kernel, weights = ms_ssim_settings(32)
    assert kernel == 3 and len(weights) == 4 and math.isclose(sum(weights), 1.0)


@pytest.mark.parametrize("size", [64, 128])
def test_ms_ssim_diversity_identical_and_noise(size):
    one = head_phantoms(1, size=size, seed=7)
    assert ms_ssim_diversity(one.repeat(6, 1, 1, 1), num_pairs=20) == pytest.approx(1.0, abs=1e-5)
    noise = torch.rand(20, 1, size, size, generator=torch.Generator().manual_seed(8)) * 2 - 1
    assert ms_ssim_diversity(noise, num_pairs=40) < 0.1
    heads = head_phantoms(20, size=size, seed=9)
    assert 0.1 < ms_ssim_diversity(heads, num_pairs=40) < 1.0
