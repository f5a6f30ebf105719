"""Intensity transforms: Otsu head foreground, robust normalisation, its record and its inverse."""

import numpy as np
import pytest
import torch
from conftest import oblique_affine
from monai.data import MetaTensor, list_data_collate

from monai_mri_gan.errors import DataError
from monai_mri_gan.transforms import (
    NORM_META_KEYS,
    HeadForegroundMask,
    RobustNormalise,
    RobustNormalised,
    head_foreground,
    head_region,
    invert_normalisation,
    invert_slice_normalisation,
    otsu_threshold,
)

SHAPE = (41, 47, 13)


def ellipsoid(shape=SHAPE, radii=(0.8, 0.75, 0.7)) -> np.ndarray:
    """A bool ellipsoid centred in ``shape`` with semi-axes ``radii`` times the half sizes."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return sum((g / r) ** 2 for g, r in zip(grids, radii, strict=True)) <= 1.0


def head_volume(rng, name="subject-01/t1.nii.gz") -> tuple[MetaTensor, np.ndarray]:
    """A T1-like int16 head: dark noisy background, bright tissue, a few very bright outliers."""
    head = ellipsoid()
    vol = np.abs(rng.normal(0.0, 6.0, SHAPE))
    vol[head] = rng.normal(420.0, 60.0, int(head.sum())).clip(250, None)
    vol[tuple(np.argwhere(head)[:5].T)] = 4000.0
    vol = np.rint(vol).astype(np.int16).astype(np.float32)[None]
    meta = {"filename_or_obj": name, "source_dtype": "int16", "spatial_shape": np.array(SHAPE)}
    return MetaTensor(torch.from_numpy(vol), affine=torch.as_tensor(oblique_affine()), meta=meta), head


def test_otsu_threshold_two_levels():
    values = np.concatenate([np.zeros(300), np.full(100, 10.0), np.full(80, 12.0)])
    t = otsu_threshold(values)
    assert 0.0 < t < 10.0


def test_head_foreground_finds_the_head(rng):
    vol, head = head_volume(rng)
    t = otsu_threshold(vol)
    assert 6.0 * 4 < t < 250.0
    mask = head_foreground(vol)
    assert isinstance(mask, MetaTensor) and mask.dtype == torch.bool
    np.testing.assert_array_equal(mask[0].numpy(), head)
    assert torch.allclose(mask.affine, vol.affine)
    np.testing.assert_array_equal(head_foreground(vol.numpy()), mask.numpy())
    transformed = HeadForegroundMask()(vol)
    np.testing.assert_array_equal(transformed.numpy(), mask.numpy())


def test_head_foreground_rejects_nan(rng):
    vol, _ = head_volume(rng, name="bad/nan.nii")
    vol[0, 3, 4, 5] = float("nan")
    with pytest.raises(DataError, match="bad/nan.nii.*1 NaN or infinite"):
        HeadForegroundMask()(vol)


def test_percentile_statistics_match_numpy(rng):
    vol, head = head_volume(rng)
    out = RobustNormalise(mode="percentile", lower=0.5, upper=99.5)(vol)
    src = vol[0].numpy().astype(np.float64)
    lo, hi = np.percentile(src[head], [0.5, 99.5])
    meta = out.meta
    assert meta["norm_mode"] == "percentile" and meta["norm_mask"] == "otsu"
    assert meta["norm_in_low"] == pytest.approx(lo, abs=1e-9)
    assert meta["norm_in_high"] == pytest.approx(hi, abs=1e-9)
    assert (meta["norm_out_low"], meta["norm_out_high"]) == (-1.0, 1.0)
    assert meta["norm_foreground_voxels"] == int(head.sum())
    assert (meta["norm_lower_pct"], meta["norm_upper_pct"]) == (0.5, 99.5)
    assert np.isnan(meta["norm_mean"]) and np.isnan(meta["norm_std"])
    air = src[~head]
    assert meta["norm_background"] == np.median(air[air <= lo])
    expected = -1.0 + 2.0 * (np.clip(src, lo, hi) - lo) / (hi - lo)
    assert out.dtype == torch.float32 and out.shape == vol.shape
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0
    assert np.all(out[0].numpy()[~head] == -1.0), "background must map to the low end of the range"
    assert torch.allclose(out.affine, vol.affine)
    assert "norm_mode" not in vol.meta, "the input's meta must not be modified"


def test_zscore_statistics_match_numpy_on_given_mask(rng):
    vol, head = head_volume(rng)
    brain = ellipsoid(radii=(0.5, 0.5, 0.5))
    out = RobustNormalise(mode="zscore", zscore_clip=2.5, out_range=(0.0, 1.0))(vol, brain[None], mask_name="brain")
    src = vol[0].numpy().astype(np.float64)
    mean, std = src[brain].mean(), src[brain].std()
    meta = out.meta
    assert meta["norm_mode"] == "zscore" and meta["norm_mask"] == "brain"
    assert meta["norm_mean"] == pytest.approx(mean, rel=1e-12)
    assert meta["norm_std"] == pytest.approx(std, rel=1e-12)
    assert meta["norm_in_low"] == pytest.approx(mean - 2.5 * std, rel=1e-12)
    assert meta["norm_in_high"] == pytest.approx(mean + 2.5 * std, rel=1e-12)
    assert meta["norm_foreground_voxels"] == int(brain.sum())
    assert np.isnan(meta["norm_lower_pct"]) and np.isnan(meta["norm_otsu_threshold"])
    lo, hi = mean - 2.5 * std, mean + 2.5 * std
    np.testing.assert_allclose(out[0].numpy(), (np.clip(src, lo, hi) - lo) / (hi - lo), atol=1e-6)


@pytest.mark.parametrize("mode", ["percentile", "zscore"])
def test_round_trip_recovers_clipped_source(rng, mode):
    vol, _ = head_volume(rng)
    out = RobustNormalise(mode=mode)(vol)
    lo, hi = out.meta["norm_in_low"], out.meta["norm_in_high"]
    back = invert_normalisation(out, out.meta, dtype=np.float64)
    assert back.dtype == np.float64 and back.shape == tuple(vol.shape)
    np.testing.assert_allclose(back, np.clip(vol.numpy().astype(np.float64), lo, hi), atol=1e-4 * (hi - lo))


def test_invert_casts_to_source_dtype_and_clips(rng):
    vol, _ = head_volume(rng)
    out = RobustNormalise()(vol)
    lo, hi = out.meta["norm_in_low"], out.meta["norm_in_high"]
    generated = torch.tensor([-3.0, -1.0, 0.0, 0.25, 1.0, 1.7])
    back = invert_normalisation(generated, out.meta)
    assert back.dtype == np.int16
    mapped = lo + (np.array([-1.0, -1.0, 0.0, 0.25, 1.0, 1.0]) + 1.0) / 2.0 * (hi - lo)
    np.testing.assert_array_equal(back, np.rint(mapped).astype(np.int16))
    as_uint8 = invert_normalisation(generated, out.meta, dtype="uint8")
    np.testing.assert_array_equal(as_uint8, np.clip(np.rint(mapped), 0, 255).astype(np.uint8))
    assert as_uint8.max() == 255
    as_float = invert_normalisation(generated, {k: out.meta[k] for k in NORM_META_KEYS})
    assert as_float.dtype == np.float32
    np.testing.assert_allclose(as_float, mapped, rtol=1e-6)


def test_invert_without_record_names_the_file():
    with pytest.raises(DataError, match="x.nii.*norm_in_low"):
        invert_normalisation(np.zeros(3), {"filename_or_obj": "x.nii"})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_voxels_are_an_error_naming_the_file(rng, bad):
    vol, _ = head_volume(rng, name="/data/sub-07/anat.nii.gz")
    vol[0, 10, 10, 5] = bad
    vol[0, 11, 10, 5] = bad
    with pytest.raises(DataError, match=r"/data/sub-07/anat.nii.gz: 2 NaN or infinite"):
        RobustNormalise()(vol)


def test_constant_volume_is_an_error():
    vol = MetaTensor(torch.full((1, 5, 6, 7), 17.0), meta={"filename_or_obj": "flat.nii"})
    for mode in ("percentile", "zscore"):
        with pytest.raises(DataError, match="flat.nii: constant volume"):
            RobustNormalise(mode=mode)(vol)


def test_constant_foreground_is_an_error(rng):
    vol, head = head_volume(rng, name="flatbrain.nii")
    vol[0][torch.from_numpy(head)] = 300.0
    with pytest.raises(DataError, match="flatbrain.nii: the 0.5th and 99.5th foreground percentiles are equal"):
        RobustNormalise()(vol)
    with pytest.raises(DataError, match="flatbrain.nii: the foreground is constant"):
        RobustNormalise(mode="zscore")(vol)


def test_bad_masks_are_errors(rng):
    vol, _ = head_volume(rng, name="m.nii")
    with pytest.raises(DataError, match="m.nii: the foreground .* is empty"):
        RobustNormalise()(vol, np.zeros(SHAPE, bool))
    with pytest.raises(DataError, match="m.nii: mask shape"):
        RobustNormalise()(vol, np.ones((3, 3, 3), bool))
    unnamed = torch.ones(1, 4, 4, 4)
    with pytest.raises(DataError, match="<unknown>: constant volume"):
        RobustNormalise()(unnamed)


def test_invalid_settings():
    with pytest.raises(ValueError):
        RobustNormalise(mode="minmax")
    with pytest.raises(ValueError):
        RobustNormalise(lower=60, upper=40)(torch.rand(1, 4, 4, 4))
    with pytest.raises(ValueError):
        RobustNormalise(out_range=(1.0, -1.0))(torch.rand(1, 4, 4, 4))


def test_plain_arrays_keep_their_type(rng):
    vol, head = head_volume(rng)
    arr = vol.numpy()
    out = RobustNormalise()(arr)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, RobustNormalise()(vol).numpy(), atol=0)


def test_dictionary_form_uses_the_mask_key_and_collates(rng):
    vol_a, _ = head_volume(rng, name="a.nii")
    vol_b, _ = head_volume(rng, name="b.nii")
    brain = torch.from_numpy(ellipsoid(radii=(0.4, 0.4, 0.4))[None].astype(np.float32))
    items = [
        {"image": vol_a, "brain": brain, "subject": "a"},
        {"image": vol_b, "brain": brain, "subject": "b"},
    ]
    transform = RobustNormalised(keys="image", mask_key="brain")
    out = [transform(item) for item in items]
    src = vol_a[0].numpy().astype(np.float64)[brain[0].numpy() > 0]
    assert out[0]["image"].meta["norm_mask"] == "brain"
    assert out[0]["image"].meta["norm_in_low"] == pytest.approx(np.percentile(src, 0.5), abs=1e-9)
    assert out[0]["subject"] == "a" and out[0]["brain"] is brain
    batch = list_data_collate(out)
    assert batch["image"].shape == (2, 1, *SHAPE)
    for key in NORM_META_KEYS:
        assert len(batch["image"].meta[key]) == 2, key
    assert torch.allclose(
        batch["image"].meta["norm_in_high"].double(),
        torch.tensor([o["image"].meta["norm_in_high"] for o in out], dtype=torch.float64),
    )
    with pytest.raises(DataError, match="a.nii: mask key 'brain' is missing"):
        transform({"image": vol_a})
    passthrough = RobustNormalised(keys=("image", "t2"), allow_missing_keys=True)({"image": vol_a})
    assert passthrough["image"].meta["norm_mask"] == "otsu" and "t2" not in passthrough


def test_head_region_drops_specks_and_fills_holes():
    plane = np.full((30, 34), -1.0)
    plane[5:25, 6:28] = 0.5  # the head
    plane[12:16, 14:18] = -1.0  # a dark ventricle inside it
    plane[1, 1] = plane[28, 2] = 0.9  # bright specks in the air
    region = head_region(plane, threshold=-0.9)
    expected = np.zeros(plane.shape, bool)
    expected[5:25, 6:28] = True
    assert isinstance(region, np.ndarray) and np.array_equal(region, expected)
    assert torch.equal(head_region(torch.as_tensor(plane), -0.9), torch.as_tensor(expected))
    with pytest.raises(ValueError, match="one 2D plane"):
        head_region(plane[None], -0.9)


def test_invert_slice_gives_air_the_source_background(rng):
    vol, head = head_volume(rng)
    out = RobustNormalise()(vol)
    meta = out.meta
    k = SHAPE[2] // 2
    real = out[:, :, :, k : k + 1]  # one slice, (1, H, W, 1)
    air = ~head[:, :, k]
    # a real slice mapped back: its air is the source's background level, the head as invert_normalisation gives it
    back = invert_slice_normalisation(real, meta)
    assert back.dtype == np.int16 and back.shape == tuple(real.shape)
    assert np.all(back[0, air, 0] == np.rint(meta["norm_background"]))
    np.testing.assert_array_equal(back[0, ~air, 0], invert_normalisation(real, meta)[0, ~air, 0])
    # a generated slice: air noisy near -1 with bright specks (as a trained generator draws it) lands there too
    noise = torch.as_tensor(rng.exponential(0.011, real.shape), dtype=torch.float32)
    fake = torch.where(real <= -1, -1 + noise, real)
    fake[0, 0, 0, 0] = fake[0, -1, 3, 0] = -0.7
    generated = invert_slice_normalisation(fake, meta)
    assert np.all(generated[0, air, 0] == np.rint(meta["norm_background"]))
    # without the record of the background it refuses rather than guess
    with pytest.raises(DataError, match="norm_background"):
        invert_slice_normalisation(real, {k: v for k, v in meta.items() if k != "norm_background"})
