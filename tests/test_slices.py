"""Slice transforms: exact slice geometry and values, class labels, foreground skipping, fitting to S x S."""

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import oblique_affine
from monai.data import MetaTensor, list_data_collate
from monai.transforms import Compose

from monai_mri_gan.errors import DataError
from monai_mri_gan.transforms import (
    ExtractSlices,
    ExtractSlicesd,
    FitSlice,
    FitSliced,
    RobustNormalised,
    cut_slice,
    slice_to_volume_transform,
)

SHAPE = (37, 45, 11)


def volume(rng, shape=SHAPE, channels=2, name="sub-03/flair.nii.gz") -> MetaTensor:
    """A random multi-channel volume in [-1, 1] on an oblique, anisotropic grid."""
    data = torch.from_numpy(rng.uniform(-1.0, 1.0, (channels, *shape)).astype(np.float32))
    meta = {
        "filename_or_obj": name,
        "spatial_shape": np.array(shape),
        "original_affine": oblique_affine(spacing=(1.0, 1.0, 1.0)),
        "source_dtype": "int16",
    }
    return MetaTensor(data, affine=torch.as_tensor(oblique_affine()), meta=meta)


def pixel_grid(height: int, width: int) -> np.ndarray:
    """Homogeneous slice coordinates (4, H*W) of every pixel (i, j, 0)."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([i.ravel(), j.ravel(), np.zeros(i.size), np.ones(i.size)]).astype(np.float64)


def voxel_indices(axis: int, index: int, height: int, width: int) -> np.ndarray:
    """Integer voxel indices (3, H*W) of the volume voxels under every slice pixel, written out by hand."""
    i, j = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    k = np.full(i.size, index)
    return {0: np.stack([k, i.ravel(), j.ravel()]), 1: np.stack([i.ravel(), k, j.ravel()])}.get(
        axis, np.stack([i.ravel(), j.ravel(), k])
    )


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_every_pixel_sits_on_its_source_voxel(rng, axis):
    vol = volume(rng)
    vol_affine = vol.affine.numpy()
    slices = ExtractSlices(axis=axis, min_foreground=0.0)(vol)
    assert [s.meta["slice_index"] for s in slices] == list(range(SHAPE[axis]))
    in_plane = tuple(n for a, n in enumerate(SHAPE) if a != axis)
    data = vol.numpy()
    for k, slc in enumerate(slices):
        assert isinstance(slc, MetaTensor)
        assert slc.shape == (2, *in_plane, 1)
        assert tuple(slc.meta["spatial_shape"]) == tuple(slc.shape[1:])
        assert slc.meta["slice_axis"] == axis and slc.meta["slice_index"] == k
        assert slc.affine.shape == (4, 4) and slc.affine.dtype == torch.float64
        assert slc.untyped_storage().nbytes() == slc.numel() * 4, "a slice must not hold the whole volume"
        voxels = voxel_indices(axis, k, *in_plane)
        world_slice = slc.affine.numpy() @ pixel_grid(*in_plane)
        world_volume = vol_affine @ np.vstack([voxels, np.ones(voxels.shape[1])])
        assert np.abs(world_slice - world_volume).max() < 1e-5
        expected = data[:, voxels[0], voxels[1], voxels[2]].reshape(2, *in_plane)
        np.testing.assert_array_equal(slc[..., 0].numpy(), expected)
        np.testing.assert_array_equal(slc.meta["original_affine"], vol.meta["original_affine"])
        assert slc.meta["filename_or_obj"] == "sub-03/flair.nii.gz"
        through = np.linalg.norm(slc.affine.numpy()[:3, 2])
        assert through == pytest.approx((0.9, 1.1, 2.5)[axis], abs=1e-12), "through-plane spacing is kept"
    assert tuple(vol.meta["spatial_shape"]) == SHAPE, "the volume's meta must not change"


def test_slice_to_volume_transform_is_a_permutation_and_shift():
    t = slice_to_volume_transform(axis=0, index=4)
    np.testing.assert_array_equal(t @ [2, 3, 0, 1], [4, 2, 3, 1])
    np.testing.assert_array_equal(slice_to_volume_transform(1, 4) @ [2, 3, 0, 1], [2, 4, 3, 1])
    np.testing.assert_array_equal(slice_to_volume_transform(2, 4) @ [2, 3, 0, 1], [2, 3, 4, 1])
    with pytest.raises(ValueError):
        slice_to_volume_transform(3, 0)


def test_cut_slice_negative_index_and_errors(rng):
    vol = volume(rng)
    last = cut_slice(vol, -1, axis=2)
    assert last.meta["slice_index"] == SHAPE[2] - 1
    np.testing.assert_array_equal(last[..., 0].numpy(), vol[..., -1].numpy())
    with pytest.raises(DataError, match="sub-03/flair.nii.gz: slice indices \\[11\\] are out of range"):
        cut_slice(vol, 11, axis=2)
    with pytest.raises(DataError, match="expected a channel-first volume"):
        cut_slice(vol[0], 0)


def test_nibabel_reads_the_slice_where_it_was(rng, tmp_path):
    vol = volume(rng)
    slc = cut_slice(vol, 6, axis=1)
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(slc[0].numpy(), slc.affine.numpy()), path)
    back = nib.load(path)
    assert back.shape == (SHAPE[0], SHAPE[2], 1)
    np.testing.assert_array_equal(back.get_fdata(), slc[0].numpy())
    for i, j in [(0, 0), (36, 10), (17, 3)]:
        expected = vol.affine.numpy() @ [i, 6, j, 1]
        # the header stores the affine as float32, hence 1e-4 mm rather than 1e-5
        np.testing.assert_allclose(back.affine @ [i, j, 0, 1], expected, atol=1e-4)


def foreground_volume() -> MetaTensor:
    """Background -1 with a block of foreground covering a known fraction of axial slices 2..8."""
    data = torch.full((1, *SHAPE), -1.0)
    data[0, :10, :10, 2] = 0.5  # 100 / 1665 = 6.0% of the slice
    data[0, :5, :10, 3] = 0.5  # 3.0%
    data[0, :, :, 4:9] = 0.3  # 100%
    data[0, :, :, 9] = -0.92  # below the default threshold -0.9
    meta = {"filename_or_obj": "fg.nii", "norm_out_low": -1.0, "norm_out_high": 1.0}
    return MetaTensor(data, affine=torch.as_tensor(oblique_affine()), meta=meta)


def test_foreground_skipping():
    vol = foreground_volume()
    extractor = ExtractSlices(axis=2, min_foreground=0.05)
    assert extractor.threshold(vol) == pytest.approx(-0.9)
    np.testing.assert_allclose(extractor.foreground_fractions(vol)[:4].numpy(), [0, 0, 100 / 1665, 50 / 1665])
    assert extractor.kept_indices(vol) == [2, 4, 5, 6, 7, 8]
    assert ExtractSlices(axis=2, min_foreground=0.02).kept_indices(vol) == [2, 3, 4, 5, 6, 7, 8]
    assert ExtractSlices(axis=2, foreground_threshold=-0.95).kept_indices(vol) == [2, 4, 5, 6, 7, 8, 9]
    assert ExtractSlices(axis=2, slice_indices=[0, 5, -3, 3]).kept_indices(vol) == [5, 8]
    assert ExtractSlices(axis=2, min_foreground=0.0, slice_indices=[0, -1]).kept_indices(vol) == [0, 10]
    assert ExtractSlices(axis=2, min_foreground=1.0).kept_indices(vol) == [4, 5, 6, 7, 8]
    with pytest.raises(DataError, match="fg.nii: slice indices \\[11\\] are out of range"):
        ExtractSlices(axis=2, slice_indices=[1, 11]).kept_indices(vol)
    plain = torch.zeros(1, 4, 4, 3)
    plain[0, :, :, 1] = 10.0
    assert ExtractSlices().kept_indices(plain) == [1], "without a record the volume's own range sets the threshold"


def test_dictionary_slices_classes_and_pass_through(rng):
    vol = volume(rng, channels=1)
    t2 = volume(rng, channels=1, name="sub-03/t2.nii.gz")
    label = MetaTensor(torch.zeros(1, *SHAPE), affine=vol.affine.clone(), meta={"filename_or_obj": "seg.nii"})
    label[0, 3:5, 3:5, 4] = 1.0  # 4 voxels
    label[0, 10:13, 20:23, 5] = 2.0  # 9 voxels, another tumour class: still tumour
    label[0, 0, 0, 6] = 1.0  # 1 voxel
    item = {"image": vol, "t2": t2, "label": label, "subject": "sub-03", "extra": {"site": "A"}, "class": 7}
    transform = ExtractSlicesd(keys=("image", "t2"), min_foreground=0.0, tumour_min_voxels=4)
    out = transform(item)
    assert isinstance(out, list) and len(out) == SHAPE[2]
    assert [o["class"] for o in out] == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert [o["class"] for o in ExtractSlicesd(keys="image", min_foreground=0.0)(item)][4:7] == [1, 1, 1]
    for k, o in enumerate(out):
        assert set(o) == {"image", "t2", "label", "subject", "extra", "class", "slice_index", "slice_axis"}
        assert o["slice_index"] == k and o["slice_axis"] == 2
        assert o["subject"] == "sub-03" and o["extra"] == {"site": "A"}
        assert o["extra"] is not item["extra"], "other keys are copied, not shared between slices"
        np.testing.assert_array_equal(o["image"][..., 0].numpy(), vol[..., k].numpy())
        np.testing.assert_array_equal(o["t2"][..., 0].numpy(), t2[..., k].numpy())
        np.testing.assert_array_equal(o["label"][..., 0].numpy(), label[..., k].numpy())
        assert torch.equal(o["label"].affine, o["image"].affine)
        assert tuple(o["label"].meta["spatial_shape"]) == (SHAPE[0], SHAPE[1], 1)
        assert o["t2"].meta["filename_or_obj"] == "sub-03/t2.nii.gz"


def test_tumour_labels_and_ambiguous_slices(rng):
    vol = volume(rng, channels=1)
    label = MetaTensor(torch.zeros(1, *SHAPE), affine=vol.affine.clone(), meta={"filename_or_obj": "seg.nii"})
    label[0, 2:6, 2:6, 3] = 2.0  # 16 voxels of oedema only
    label[0, 2:6, 2:6, 4] = 2.0
    label[0, 3:5, 3:5, 4] = 4.0  # 4 of them enhancing tumour: 12 oedema + 4 tumour core
    label[0, 3:5, 3:6, 5] = 1.0  # 6 voxels of necrotic core
    label[0, 0, 0, 6] = 4.0  # 1 voxel of enhancing tumour: too little
    item = {"image": vol, "label": label}
    whole = ExtractSlicesd(min_foreground=0.0, tumour_min_voxels=4)(item)
    assert [o["class"] for o in whole][3:7] == [1, 1, 1, 0]
    core = ExtractSlicesd(min_foreground=0.0, tumour_min_voxels=4, tumour_labels=(1, 3, 4))(item)
    assert [o["class"] for o in core][3:7] == [0, 1, 1, 0]
    assert len(core) == SHAPE[2], "without drop_ambiguous every slice stays"
    clean = ExtractSlicesd(min_foreground=0.0, tumour_min_voxels=4, tumour_labels=(1, 3, 4), drop_ambiguous=True)(item)
    kept = [o["slice_index"] for o in clean]
    assert kept == [0, 1, 2, 4, 5, 7, 8, 9, 10], "oedema-only slice 3 and one-voxel slice 6 are left out"
    assert [o["class"] for o in clean] == [0, 0, 0, 1, 1, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="tumour_labels"):
        ExtractSlicesd(tumour_labels=(0, 1))


def test_dictionary_without_label_keeps_the_item_class(rng):
    vol = volume(rng, channels=1)
    with_class = ExtractSlicesd(min_foreground=0.0, slice_indices=[1, 2])({"image": vol, "class": 1})
    assert [o["class"] for o in with_class] == [1, 1]
    assert "label" not in with_class[0]
    default = ExtractSlicesd(min_foreground=0.0, slice_indices=[1])({"image": vol})
    assert default[0]["class"] == 0 and default[0]["slice_index"] == 1


def test_dictionary_rejects_mismatched_grids_and_skips_background():
    vol = foreground_volume()
    label = MetaTensor(torch.zeros(1, 37, 45, 10), meta={"filename_or_obj": "seg.nii"})
    with pytest.raises(DataError, match="seg.nii: 'label' has spatial shape \\(37, 45, 10\\)"):
        ExtractSlicesd()({"image": vol, "label": label})
    assert [o["slice_index"] for o in ExtractSlicesd()({"image": vol})] == [2, 4, 5, 6, 7, 8]
    empty = MetaTensor(torch.full((1, 5, 5, 3), -1.0), meta={"norm_out_low": -1.0, "norm_out_high": 1.0})
    assert ExtractSlicesd()({"image": empty}) == []
    with pytest.raises(ValueError):
        ExtractSlicesd(tumour_min_voxels=0)


def expected_fit_affine(slice_affine: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """Slice affine after resizing the longer side to ``size`` and padding symmetrically, written out by hand."""
    scale = size / max(height, width)
    new = [int(np.floor(height * scale + 0.5)), int(np.floor(width * scale + 0.5))]
    mapping = np.eye(4)
    for axis, (old, out) in enumerate(zip((height, width), new, strict=True)):
        pad_before = (size - out) // 2
        step = old / out
        # output pixel i' samples input coordinate (i' - pad_before + 0.5) * step - 0.5
        mapping[axis, axis] = step
        mapping[axis, 3] = (0.5 - pad_before) * step - 0.5
    return slice_affine @ mapping


@pytest.mark.parametrize("size", [64, 128, 256, 50])
@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("mode", ["area", "bilinear"])
def test_fit_slice_affine(rng, size, axis, mode):
    vol = volume(rng)
    slc = cut_slice(vol, 5, axis=axis)
    height, width = slc.shape[1:3]
    fitted = FitSlice(spatial_size=size, mode=mode)(slc)
    assert fitted.shape == (2, size, size, 1) and fitted.dtype == torch.float32
    assert tuple(fitted.meta["spatial_shape"]) == (size, size, 1)
    expected = expected_fit_affine(slc.affine.numpy(), height, width, size)
    assert np.abs(fitted.affine.numpy() - expected).max() < 1e-5
    assert fitted.meta["slice_index"] == 5 and fitted.meta["filename_or_obj"] == "sub-03/flair.nii.gz"


def test_fit_slice_bilinear_samples_where_the_affine_says(rng):
    """A field linear in world space is reproduced exactly by bilinear resizing away from the borders."""
    gradient, offset = np.array([0.004, -0.003, 0.002]), 0.1
    affine = oblique_affine()
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=0).reshape(3, -1)
    world = affine[:3, :3] @ grid + affine[:3, 3:]
    data = (gradient @ world + offset).reshape(1, *SHAPE).astype(np.float64)
    vol = MetaTensor(torch.from_numpy(data), affine=torch.as_tensor(affine), meta={"filename_or_obj": "ramp.nii"})
    slc = cut_slice(vol, 3, axis=2)
    fitted = FitSlice(spatial_size=128, mode="bilinear")(slc)
    height, width = SHAPE[0], SHAPE[1]
    new_h = int(np.floor(height * 128 / width + 0.5))
    pad = (128 - new_h) // 2
    pixels = pixel_grid(128, 128)
    field = gradient @ (fitted.affine.numpy() @ pixels)[:3] + offset
    u = (pixels[0] - pad + 0.5) * height / new_h - 0.5
    v = (pixels[1] + 0.5) * width / 128 - 0.5
    inside = (u >= 0) & (u <= height - 1) & (v >= 0) & (v <= width - 1) & (pixels[0] >= pad) & (pixels[0] < pad + new_h)
    assert inside.sum() > 0.6 * 128 * new_h
    values = fitted[0, :, :, 0].numpy().ravel()
    np.testing.assert_allclose(values[inside], field[inside], atol=1e-5)
    padded = (pixels[0] < pad) | (pixels[0] >= pad + new_h)
    assert np.all(values[padded] == -1.0)


def test_fit_slice_padding_only_is_pixel_exact(rng):
    vol = volume(rng)
    slc = cut_slice(vol, 7, axis=2)  # 37 x 45: the longer side is already 45
    fitted = FitSlice(spatial_size=45, pad_value=-5.0)(slc)
    assert fitted.shape == (2, 45, 45, 1)
    np.testing.assert_array_equal(fitted[:, 4:41].numpy(), slc.numpy())
    assert np.all(fitted[:, :4].numpy() == -5.0) and np.all(fitted[:, 41:].numpy() == -5.0)
    expected = slc.affine.numpy().copy()
    expected[:3, 3] -= 4 * expected[:3, 0]
    np.testing.assert_allclose(fitted.affine.numpy(), expected, atol=1e-9)
    world = fitted.affine.numpy() @ [4 + 10, 20, 0, 1]
    np.testing.assert_allclose(world, vol.affine.numpy() @ [10, 20, 7, 1], atol=1e-9)
    assert float(FitSlice(spatial_size=45)(slc)[0, 0, 0, 0]) == -1.0


def test_fit_slice_pads_with_the_recorded_background(rng):
    slc = cut_slice(volume(rng), 0)
    slc.meta["norm_out_low"] = 0.0
    assert float(FitSlice(spatial_size=64)(slc)[0, 0, 0, 0]) == 0.0


def test_fit_slice_rejects_volumes(rng):
    with pytest.raises(DataError, match="sub-03/flair.nii.gz: expected a \\(C, H, W, 1\\) slice"):
        FitSlice()(volume(rng))
    with pytest.raises(ValueError):
        FitSlice(mode="cubic")


def test_fit_sliced_label_nearest_and_geometry(rng):
    vol = volume(rng, channels=1)
    label = MetaTensor(torch.zeros(1, *SHAPE, dtype=torch.uint8), affine=vol.affine.clone())
    label[0, 10:20, 15:30, :] = 1
    label[0, 12:14, 17:19, :] = 3
    item = ExtractSlicesd(min_foreground=0.0, slice_indices=[4])({"image": vol, "label": label, "subject": "s"})[0]
    out = FitSliced(keys="image", spatial_size=64)(item)
    image, lab = out["image"], out["label"]
    assert image.shape == lab.shape == (1, 64, 64, 1)
    assert lab.dtype == torch.uint8 and set(torch.unique(lab).tolist()) == {0, 1, 3}
    assert torch.allclose(image.affine, lab.affine)
    assert tuple(lab.meta["spatial_shape"]) == (64, 64, 1)
    assert out["subject"] == "s" and out["class"] == 1
    # nearest-exact: every output pixel takes the input pixel nearest to its sampling point
    new_h = int(np.floor(37 * 64 / 45 + 0.5))
    pad = (64 - new_h) // 2
    rows = np.floor((np.arange(new_h) + 0.5) * 37 / new_h).astype(int)
    cols = np.floor((np.arange(64) + 0.5) * 45 / 64).astype(int)
    src = item["label"][0, :, :, 0].numpy()
    np.testing.assert_array_equal(lab[0, pad : pad + new_h, :, 0].numpy(), src[np.ix_(rows, cols)])
    assert np.all(lab[0, :pad].numpy() == 0)
    assert FitSliced(keys="image")({"image": item["image"]})["image"].shape == (1, 128, 128, 1)


def test_pipeline_normalise_slice_fit_collate(rng):
    raw = volume(rng, channels=1).abs() * 300.0
    raw[0, :4] = 0.0
    pipeline = Compose(
        [
            RobustNormalised(keys="image"),
            ExtractSlicesd(keys="image", label_key=None, axis=2, min_foreground=0.1),
            FitSliced(keys="image", spatial_size=64),
        ]
    )
    items = pipeline({"image": raw, "subject": "sub-03"})
    assert len(items) == SHAPE[2]
    batch = list_data_collate(items)
    assert batch["image"].shape == (SHAPE[2], 1, 64, 64, 1)
    assert batch["slice_index"].tolist() == list(range(SHAPE[2]))
    assert batch["image"].meta["norm_in_high"].shape == (SHAPE[2],)
    assert batch["image"].affine.shape == (SHAPE[2], 4, 4)
