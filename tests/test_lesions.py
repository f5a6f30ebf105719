"""Lesion bank, placement and compositing: components, spacing, placement inside the eroded head, blend weights."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import oblique_affine
from monai.data import MetaTensor

from monai_mri_gan.data import SliceCohort, load_datalist, make_demo_cohort
from monai_mri_gan.errors import DataError
from monai_mri_gan.transforms import (
    HEAD_MARGIN_MM,
    Lesion,
    LesionBank,
    PlacedLesion,
    PlaceLesion,
    PlaceLesiond,
    blend_weights,
    composite,
    head_foreground,
    lesion_components,
    paste_lesion,
)

pytestmark = pytest.mark.usefixtures("one_thread")

NO_AUGMENT = {"rotate_range": 0.0, "flip_prob": 0.0, "scale_range": (1.0, 1.0), "elastic_prob": 0.0}


def _disc(shape, centre, radius, spacing=(1.0, 1.0)):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) * spacing[0]) ** 2 + ((cols - centre[1]) * spacing[1]) ** 2 <= radius**2


def _tumour(radius_px=9):
    """A BraTS-like lesion: oedema (2) around an enhancing rim (4) around a necrotic core (1)."""
    size = 2 * radius_px + 5
    centre = (size // 2, size // 2)
    labels = np.where(_disc((size, size), centre, radius_px), 2, 0)
    labels[_disc((size, size), centre, 0.6 * radius_px)] = 4
    labels[_disc((size, size), centre, 0.3 * radius_px)] = 1
    image = np.linspace(-1, 1, size * size, dtype=np.float32).reshape(size, size)
    return labels.astype(np.int16), image


def _min_distance(points, targets, spacing=(1.0, 1.0)):
    """Brute-force Euclidean distance (in spacing units) from each point to its nearest target."""
    p = np.asarray(points, float)[:, None, :] * spacing
    t = np.asarray(targets, float)[None, :, :] * spacing
    return np.sqrt(((p - t) ** 2).sum(-1)).min(1)


def _slice_item(labels, image=None, affine=None, **extra):
    affine = oblique_affine() if affine is None else affine
    image = np.zeros(labels.shape, np.float32) if image is None else image
    return {
        "image": MetaTensor(torch.as_tensor(image)[None, :, :, None], affine=torch.as_tensor(affine)),
        "label": MetaTensor(torch.as_tensor(labels, dtype=torch.float32)[None, :, :, None],
                            affine=torch.as_tensor(affine)),
        **extra,
    }


def test_from_slices_keeps_only_lesions_with_tumour_core_when_asked():
    """With the slicing's tumour labels, oedema alone (BraTS 2) or too little core is no lesion to paste: a painted
    slice must be a tumour slice by the rule real slices are classed by (at least min_voxels core pixels)."""
    labels = np.zeros((40, 60), np.int16)
    labels[2:10, 2:10] = 2
    labels[4:8, 4:9] = 1  # 20 px of core inside oedema: kept
    labels[20:30, 2:12] = 2  # 100 px of oedema alone: left out
    labels[2:12, 30:40] = 2
    labels[5:8, 33:39] = 4  # 18 px of core: too little, left out
    labels[25:35, 40:50] = 3  # 100 px, all core: kept
    items = [_slice_item(labels, np.zeros((40, 60), np.float32), np.eye(4))]
    assert len(LesionBank.from_slices(items, min_voxels=20)) == 4
    bank = LesionBank.from_slices(items, min_voxels=20, margin=0, core_labels=[1, 3, 4])
    assert len(bank) == 2 and bank.label_values == (1, 2, 3)
    np.testing.assert_array_equal(bank[0].labels, labels[2:10, 2:10])
    np.testing.assert_array_equal(bank[1].labels, labels[25:35, 40:50])
    with pytest.raises(ValueError, match=r"no lesion of at least 20 pixels of labels \[1, 4\] in the 1 labelled"):
        no_core_1_or_3 = np.where(np.isin(labels, [1, 3]), 2, labels)
        LesionBank.from_slices([_slice_item(no_core_1_or_3, np.zeros((40, 60)), np.eye(4))], core_labels=[4, 1])


def test_components_and_boxes():
    labels = np.zeros((20, 24), np.int16)
    labels[2:7, 3:8] = 2  # 25 px
    labels[7:10, 8:12] = 1  # touches the first blob at a corner only: one component by 8-connectivity
    labels[12:18, 14:20] = 4  # 36 px
    labels[15:17, 2:4] = 2  # 4 px: too small
    assert lesion_components(labels, min_voxels=20) == [(slice(2, 10), slice(3, 12)), (slice(12, 18), slice(14, 20))]
    assert lesion_components(torch.as_tensor(labels), min_voxels=4)[1] == (slice(12, 18), slice(14, 20))
    assert len(lesion_components(labels, min_voxels=4)) == 3
    assert lesion_components(np.zeros((5, 5)), min_voxels=1) == []


def test_from_slices_spacing_margin_and_other_components_zeroed():
    labels = np.zeros((40, 50), np.int16)
    labels[5:15, 5:12] = 2
    labels[8:11, 7:9] = 1
    labels[25:35, 30:45] = 4
    labels[30:33, 2:4] = 2  # too small
    image = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    affine = oblique_affine(spacing=(0.9, 1.1, 2.5))
    items = [_slice_item(labels, image, affine, subject="s1", slice_index=7), {"image": None, "label": None}]
    bank = LesionBank.from_slices(items, min_voxels=20, margin=3)
    assert len(bank) == 2 and bank.label_values == (1, 2, 4)
    first, second = bank[0], bank[1]
    assert first.spacing == pytest.approx((0.9, 1.1)) and first.source == "s1:7"
    assert first.labels.dtype == np.int16 and first.image.dtype == np.float32
    assert first.labels.shape == (16, 13)  # rows 2..18, cols 2..15: the box plus 3 px, clipped at nothing
    np.testing.assert_array_equal(first.labels, labels[2:18, 2:15])  # the small blob at (30, 2) is outside
    np.testing.assert_array_equal(first.image, image[2:18, 2:15])
    assert second.labels.shape == (16, 21)
    np.testing.assert_array_equal(second.labels, labels[22:38, 27:48])
    # a box that reaches another component: that component is zeroed in the labels but kept in the image
    near = labels.copy()
    near[16:18, 5:20] = 2  # 30 px, 1 px below the first blob's box
    bank = LesionBank.from_slices([_slice_item(near, image, affine, patient="p")], margin=3, source_key="patient")
    assert bank[0].source == "p"
    assert not bank[0].labels[14:].any() and bank[1].labels.any()
    with pytest.raises(ValueError, match="no lesion of at least 20 pixels in the 1 labelled slice"):
        LesionBank.from_slices([_slice_item(np.zeros((9, 9)))])
    with pytest.raises(ValueError, match="empty"):
        LesionBank([])
    with pytest.raises(ValueError, match="non-integer"):
        LesionBank.from_slices([_slice_item(labels * 0.5)])


def test_placement_stays_inside_the_eroded_foreground():
    labels, image = _tumour()
    bank = LesionBank([Lesion(labels, image, (1.0, 1.0), "a")])
    spacing, margin = (1.0, 1.5), 6.0
    foreground = _disc((64, 56), (30, 27), 25.0, spacing)
    outside = np.argwhere(np.pad(~foreground, 1, constant_values=True)) - 1  # the slice's edge counts as outside
    placer = PlaceLesion(bank, skull_margin_mm=margin, band_px=3, dilate_px=1)
    placer.set_random_state(seed=0)
    for _ in range(20):
        placed = placer(foreground, spacing)
        lesion = np.argwhere(placed.labels != 0)
        grid = np.argwhere(np.ones(foreground.shape, bool))
        band = grid[_min_distance(grid, lesion) < 1 + 3 + 1]  # weights > 0: within dilate + band + 1 px
        assert _min_distance(band, outside, spacing).min() > margin
        r0, r1, c0, c1 = placed.params["bbox_px"]
        assert (r0, c0) == tuple(lesion.min(0)) and (r1, c1) == tuple(lesion.max(0) + 1)
        assert set(np.unique(placed.labels)) <= {0, 1, 2, 4}  # nearest neighbour: no interpolated labels


@pytest.mark.parametrize("dilate_px, band_px, margin", [(0, 0, 5.0), (1, 1, 2.5), (2, 1, 1.5)])
def test_placement_draws_every_position_that_fits(dilate_px, band_px, margin):
    """The positions drawn are exactly those where the lesion and its blend band keep the margin, by brute force."""
    spacing = (1.0, 1.5)
    foreground = _disc((26, 22), (13, 11), 11.0, spacing)
    foreground[12:14, 3:8] = False  # a notch: the room is not convex
    dot = np.zeros((3, 3), np.int16)
    dot[1, 1] = 1
    bank = LesionBank([Lesion(dot, np.zeros((3, 3), np.float32), spacing, "dot")])
    placer = PlaceLesion(bank, **NO_AUGMENT, skull_margin_mm=margin, dilate_px=dilate_px, band_px=band_px)
    placer.set_random_state(seed=0)
    drawn = set()
    for _ in range(300):
        r0, r1, c0, c1 = placer(foreground, spacing).params["bbox_px"]
        assert (r1 - r0, c1 - c0) == (1, 1)
        drawn.add((r0, c0))
    grid = np.argwhere(np.ones(foreground.shape, bool))
    outside = np.argwhere(np.pad(~foreground, 1, constant_values=True)) - 1  # the slice's edge counts as outside
    allowed = np.zeros(foreground.shape, bool)
    allowed[tuple(grid[_min_distance(grid, outside, spacing) > margin].T)] = True
    # the band: every pixel nearer than dilate + band + 1 px (weights > 0) must be allowed, inside the slice
    reach = dilate_px + band_px + 1
    forbidden = np.argwhere(np.pad(~allowed, reach, constant_values=True)) - reach
    fits = {(int(r), int(c)) for r, c in np.argwhere(allowed) if _min_distance([(r, c)], forbidden)[0] >= reach}
    assert len(fits) > 30 and drawn == fits


def test_holes_in_the_head_are_room_for_lesions():
    """A dark region the head encloses (a ventricle) is head: the margin is kept from the head's outer edge only."""
    dot = np.zeros((3, 3), np.int16)
    dot[1, 1] = 1
    bank = LesionBank([Lesion(dot, np.zeros((3, 3), np.float32), (1.0, 1.0), "dot")])
    ring = _disc((90, 90), (45, 45), 38.0) & ~_disc((90, 90), (45, 45), 15.0)
    item = {"image": MetaTensor(torch.as_tensor(np.where(ring, 0.5, -1.0), dtype=torch.float32)[None, :, :, None],
                                affine=torch.eye(4, dtype=torch.float64))}
    # 24 mm from the ring's edges leaves nothing; from the filled head's edge, a 14 mm disc in the middle
    transform = PlaceLesiond(bank, **NO_AUGMENT, dilate_px=0, band_px=0).set_random_state(seed=0)
    for _ in range(5):
        r0, _, c0, _ = transform(item)["placement"]["bbox_px"]
        assert math.hypot(r0 - 45, c0 - 45) < 38 - HEAD_MARGIN_MM


def test_placed_area_keeps_its_size_in_mm():
    labels, image = _tumour(radius_px=12)
    source_spacing, base_spacing = (0.9, 1.1), (1.3, 1.2)
    bank = LesionBank([Lesion(labels, image, source_spacing, "a")])
    source_mm2 = np.count_nonzero(labels) * np.prod(source_spacing)
    placer = PlaceLesion(bank, elastic_prob=0.0, skull_margin_mm=2.0)
    placer.set_random_state(seed=1)
    scales = []
    for _ in range(10):
        placed = placer(np.ones((60, 60), bool), base_spacing)
        scale = placed.params["scale"]
        assert 0.8 <= scale <= 1.25
        placed_mm2 = np.count_nonzero(placed.labels) * np.prod(base_spacing)
        assert placed_mm2 / (scale**2 * source_mm2) == pytest.approx(1.0, abs=0.06)
        assert placed.params["source_spacing_mm"] == list(source_spacing)
        assert placed.params["base_spacing_mm"] == list(base_spacing)
        scales.append(scale)
    assert max(scales) / min(scales) > 1.2  # the scale is drawn


def test_quarter_turn_moves_pixels_like_rot90():
    labels = np.zeros((9, 14), np.int16)
    labels[1:8, 2:12] = 2
    labels[2:5, 3:7] = 4
    labels[6, 10:12] = 1
    image = np.random.default_rng(0).uniform(-1, 1, labels.shape).astype(np.float32)
    bank = LesionBank([Lesion(labels, image, (1.2, 1.2), "a")])
    placer = PlaceLesion(bank, **{**NO_AUGMENT, "rotate_range": (math.pi / 2, math.pi / 2)}, skull_margin_mm=0.0)
    placed = placer(np.ones((40, 40), bool), (1.2, 1.2))
    assert placed.params["angle_deg"] == pytest.approx(90.0)
    r0, r1, c0, c1 = placed.params["bbox_px"]
    np.testing.assert_array_equal(placed.labels[r0:r1, c0:c1], np.rot90(labels[1:8, 2:12]))
    np.testing.assert_allclose(placed.image[r0:r1, c0:c1], np.rot90(image[1:8, 2:12]), atol=1e-5)
    # the centre of the source box (row 4, col 7 of an odd-padded 9x15 box) lands on centre_px
    centre = placed.params["centre_px"]
    assert placed.labels[centre[0], centre[1]] == labels[4, 7]
    # no rotation, a flip: columns mirrored
    flipped = PlaceLesion(bank, **{**NO_AUGMENT, "flip_prob": 1.0}, skull_margin_mm=0.0)(np.ones((40, 40), bool),
                                                                                         (1.2, 1.2))
    r0, r1, c0, c1 = flipped.params["bbox_px"]
    np.testing.assert_array_equal(flipped.labels[r0:r1, c0:c1], labels[1:8, 2:12][:, ::-1])


def test_elastic_deformation_moves_pixels_but_keeps_labels():
    labels, image = _tumour(radius_px=12)
    bank = LesionBank([Lesion(labels, image, (1.0, 1.0), "a")])
    kwargs = {**NO_AUGMENT, "elastic_prob": 1.0, "elastic_magnitude_range": (3.0, 3.0)}
    placed = PlaceLesion(bank, **kwargs, skull_margin_mm=0.0)(np.ones((60, 60), bool), (1.0, 1.0))
    elastic = placed.params["elastic"]
    assert elastic["magnitude_mm"] == 3.0 and 5.0 <= elastic["sigma_mm"] <= 7.0
    plain = PlaceLesion(bank, **NO_AUGMENT, skull_margin_mm=0.0)(np.ones((60, 60), bool), (1.0, 1.0))
    r0, r1, c0, c1 = plain.params["bbox_px"]
    # align both on their box centres: the deformation changes some pixels, at most by the magnitude
    moved = np.roll(placed.labels, (np.array(plain.params["centre_px"]) - placed.params["centre_px"]), axis=(0, 1))
    changed = np.count_nonzero(moved != plain.labels)
    assert 0 < changed < 0.5 * np.count_nonzero(plain.labels)
    assert set(np.unique(placed.labels)) <= {0, 1, 2, 4}
    assert abs(np.count_nonzero(placed.labels) / np.count_nonzero(plain.labels) - 1) < 0.15


def test_seed_reproduces_placement_byte_for_byte():
    labels, image = _tumour()
    bank = LesionBank([Lesion(labels, image, (1.0, 1.0), "a"), Lesion(labels[3:, 2:], image[3:, 2:], (1.1, 0.9), "b")])
    foreground = _disc((70, 64), (35, 32), 30.0)
    item = {"image": MetaTensor(torch.as_tensor(np.where(foreground, 0.5, -1.0).astype(np.float32))[None, :, :, None],
                                affine=torch.as_tensor(oblique_affine(spacing=(1.0, 1.0, 3.0))))}

    def run(seed):
        transform = PlaceLesiond(bank, skull_margin_mm=4.0).set_random_state(seed=seed)
        return [transform(item) for _ in range(3)]

    first, again, other = run(7), run(7), run(8)
    for a, b in zip(first, again, strict=True):
        assert json.dumps(a["placement"]) == json.dumps(b["placement"])
        assert a["label"].numpy().tobytes() == b["label"].numpy().tobytes()
        assert a["lesion_image"].numpy().tobytes() == b["lesion_image"].numpy().tobytes()
    assert [a["placement"] for a in first] != [c["placement"] for c in other]
    # the wrapped array transform draws from the dictionary transform's state
    transform = PlaceLesiond(bank).set_random_state(seed=3)
    assert transform.placer.R is transform.R


def test_repeat_last_placement():
    labels, image = _tumour()
    placer = PlaceLesion(LesionBank([Lesion(labels, image, (1.0, 1.0), "a")]), skull_margin_mm=0.0)
    with pytest.raises(ValueError, match="nothing has been placed"):
        placer(np.ones((50, 50), bool), (1.0, 1.0), randomize=False)
    placed = placer(np.ones((50, 50), bool), (1.0, 1.0))
    again = placer(np.ones((50, 50), bool), (1.0, 1.0), randomize=False)
    assert again.params == placed.params and np.array_equal(again.labels, placed.labels)
    with pytest.raises(ValueError, match="does not fit"):
        placer(~placed.labels.astype(bool), (1.0, 1.0), randomize=False)


def test_no_room_raises_naming_the_problem():
    labels, image = _tumour()
    placer = PlaceLesion(LesionBank([Lesion(labels, image, (1.0, 1.0), "a")]), max_tries=5)
    small = _disc((144, 160), (70, 80), 20.0)
    with pytest.raises(ValueError, match=r"no room for any of 5 lesions tried \(the smallest, with its blend band, "
                                         r"\d+x\d+ px\) inside the foreground of this 144x160 slice eroded by 8 mm"):
        placer(small, (1.0, 1.0))
    with pytest.raises(ValueError, match="no pixel is left inside the foreground of this 144x160 slice"):
        placer(_disc((144, 160), (70, 80), 7.0), (1.0, 1.0))
    # a few pixels are left, all nearer to the edge than a blend band's 7 px: it fails at once, drawing nothing
    state = placer.R.get_state()[1].copy()
    with pytest.raises(ValueError, match=r"no room for a lesion and its blend band \(7 px\): \d+ px are left inside "
                                         "the foreground of this 144x160 slice eroded by 8 mm, none as far"):
        placer(_disc((144, 160), (70, 80), 12.0), (1.0, 1.0))
    np.testing.assert_array_equal(placer.R.get_state()[1], state)
    item = {"image": MetaTensor(torch.as_tensor(np.where(small, 1.0, -1.0), dtype=torch.float32)[None, :, :, None],
                                meta={"filename_or_obj": "/data/base.nii.gz", "slice_index": 4})}
    with pytest.raises(DataError, match="/data/base.nii.gz: slice 4: no room"):
        PlaceLesiond(LesionBank([Lesion(labels, image, (1.0, 1.0), "a")]), max_tries=2)(item)


def test_blend_weights_values_and_paths_agree():
    labels = np.zeros((31, 33), np.int16)
    labels[15, 16] = 1
    labels[4:7, 2:5] = 2  # near the edge: distances are measured inside the slice only
    weights = blend_weights(labels, dilate_px=2, band_px=4)
    assert weights.dtype == np.float32
    grid = np.argwhere(np.ones(labels.shape, bool))
    d = _min_distance(grid, np.argwhere(labels != 0)).reshape(labels.shape)
    expected = np.clip((2 + 4 + 1 - d) / (4 + 1), 0, 1)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    assert (weights[d <= 2] == 1).all() and (weights[d >= 7] == 0).all()
    assert ((weights > 0) & (weights < 1)).sum() > 0
    ray = weights[15, 16:]
    assert (np.diff(ray) <= 0).all()  # monotone away from the lesion
    np.testing.assert_allclose(ray[:8], [1, 1, 1, 0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-6)
    # batched torch (any leading dims), with autocast on: identical to the numpy path
    other = np.zeros_like(labels)
    other[20:25, 10:30] = 4
    batch = torch.as_tensor(np.stack([labels, other]))[:, None].long()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = blend_weights(batch, dilate_px=2, band_px=4)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    assert torch.equal(out[0, 0], torch.as_tensor(weights))
    assert torch.equal(out[1, 0], torch.as_tensor(blend_weights(other)))
    assert not blend_weights(np.zeros((5, 5))).any()
    # on the meta device nothing can be read back to the host: the path a GPU training step takes never syncs
    meta = blend_weights(torch.zeros(4, 1, 16, 16, dtype=torch.long, device="meta"))
    assert meta.device.type == "meta" and meta.dtype == torch.float32
    assert composite(torch.zeros(4, 1, 16, 16, device="meta"), torch.zeros(1, device="meta"), meta).shape == meta.shape


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_composite_leaves_weight_zero_pixels_bitwise_equal(dtype):
    rng = np.random.default_rng(0)
    base = (rng.normal(size=(2, 1, 24, 24)) * 100).astype(dtype)
    painted = (rng.normal(size=(2, 1, 24, 24)) * 100).astype(np.float32)
    labels = np.zeros((2, 1, 24, 24), np.int16)
    labels[0, 0, 10:12, 10:12] = 1
    labels[1, 0, 3, 20] = 2
    weights = blend_weights(labels)
    for out, ref in ((composite(base, painted, weights), base),
                     (composite(torch.as_tensor(base), torch.as_tensor(painted), torch.as_tensor(weights)).numpy(),
                      base)):
        assert out.dtype == ref.dtype and out.shape == ref.shape
        assert out[weights == 0].tobytes() == ref[weights == 0].tobytes()
        inside = weights == 1
        if np.issubdtype(dtype, np.floating):
            assert out[inside].tobytes() == painted[inside].tobytes()
        else:
            np.testing.assert_array_equal(out[inside], np.rint(painted[inside]).astype(dtype))
        partial = (weights > 0) & (weights < 1)
        blend = ref[partial] * (1 - weights[partial]) + painted[partial] * weights[partial]
        np.testing.assert_allclose(out[partial], blend, atol=0.5 if dtype == np.int16 else 1e-4)


def test_paste_lesion_copies_inside_the_band_only():
    labels, image = _tumour()
    placer = PlaceLesion(LesionBank([Lesion(labels, image, (1.0, 1.0), "a")]), skull_margin_mm=0.0)
    placer.set_random_state(seed=2)
    placed = placer(np.ones((48, 48), bool), (1.0, 1.0))
    base = np.random.default_rng(1).uniform(-1, 1, (48, 48)).astype(np.float32)
    pasted = paste_lesion(base, placed)
    weights = blend_weights(placed.labels)
    assert pasted[weights == 0].tobytes() == base[weights == 0].tobytes()
    np.testing.assert_array_equal(pasted[placed.labels != 0], placed.image[placed.labels != 0])
    assert (pasted != base).sum() > np.count_nonzero(placed.labels)
    with pytest.raises(ValueError, match="differs"):
        paste_lesion(base[:10], placed)
    assert isinstance(placed, PlacedLesion)


def test_place_lesiond_writes_geometry_and_params():
    labels, image = _tumour()
    bank = LesionBank([Lesion(labels, image, (1.0, 1.0), "s:3")])
    affine = torch.as_tensor(oblique_affine(spacing=(0.8, 1.2, 3.0)))
    head = _disc((80, 70), (40, 35), 36.0, (0.8, 1.2))
    existing = np.zeros((80, 70), np.float32)
    existing[38:42, 33:37] = 4
    item = {
        "image": MetaTensor(torch.as_tensor(np.where(head, 0.3, -1.0), dtype=torch.float32)[None, :, :, None],
                            affine=affine, meta={"slice_index": 9, "norm_out_low": -1.0}),
        "label": MetaTensor(torch.as_tensor(existing)[None, :, :, None], affine=affine),
        "brain": torch.as_tensor(head)[None, :, :, None],
        "subject": "x",
    }
    out = PlaceLesiond(bank, foreground_key="brain", skull_margin_mm=3.0).set_random_state(seed=0)(item)
    label, lesion_image = out["label"], out["lesion_image"]
    assert label.shape == (1, 80, 70, 1) and label.dtype == torch.int16
    assert lesion_image.shape == (1, 80, 70, 1) and lesion_image.dtype == torch.float32
    assert torch.equal(label.affine, affine) and torch.equal(lesion_image.affine, affine)
    assert label.affine is not item["image"].affine and label.meta["slice_index"] == 9
    placement = out["placement"]
    assert placement["lesion_source"] == "s:3" and placement["base_spacing_mm"] == pytest.approx([0.8, 1.2])
    json.dumps(placement)
    new = label[0, :, :, 0].numpy()
    assert (new[38:42, 33:37] == 4).all()  # the existing lesion is kept...
    placed = np.argwhere(new * (existing == 0) != 0)
    assert _min_distance(np.argwhere(existing != 0), placed, (0.8, 1.2)).min() > 3.0  # ...and the new one kept away
    r0, r1, c0, c1 = placement["bbox_px"]
    np.testing.assert_array_equal(np.argwhere(new[r0:r1, c0:c1] * (existing[r0:r1, c0:c1] == 0)) + (r0, c0), placed)
    assert out["subject"] == "x"


def test_bank_and_placement_on_the_demo_cohort(tmp_path):
    datalist = make_demo_cohort(tmp_path / "cohort", seed=3, num_subjects=4, shape=(48, 52, 12))
    cohort = SliceCohort(load_datalist(datalist), image_size=64, slicing={"tumour_labels": [1, 3, 4]})
    bank = LesionBank.from_slices(cohort)
    assert len(bank) >= 3 and set(bank.label_values) <= {1, 2, 4} and 2 in bank.label_values
    spacing = bank[0].spacing
    affine = cohort[0]["image"].affine.numpy()
    assert spacing == pytest.approx(tuple(np.linalg.norm(affine[:3, :2], axis=0)))
    assert all(lesion.source.startswith("demo-") for lesion in bank)
    healthy = [item for item in cohort if item.get("label") is None or not item["label"].any()]
    transform = PlaceLesiond(bank, max_tries=20).set_random_state(seed=0)
    placed = 0
    for item in healthy:
        try:
            out = transform(item)
        except DataError as err:
            assert "no room" in str(err)
            continue
        placed += 1
        new = out["label"][0, :, :, 0].numpy()
        assert set(np.unique(new)) <= {0, *bank.label_values} and new.any()
        assert torch.equal(out["label"].affine, item["image"].affine)
        # at least the head margin from every side of the head's bounding box (a necessary condition)
        head_rows, head_cols = np.nonzero(head_foreground(item["image"][0, :, :, 0].numpy()))
        rows, cols = np.nonzero(new)
        gaps_mm = [(rows.min() - head_rows.min()) * spacing[0], (head_rows.max() - rows.max()) * spacing[0],
                   (cols.min() - head_cols.min()) * spacing[1], (head_cols.max() - cols.max()) * spacing[1]]
        assert min(gaps_mm) > HEAD_MARGIN_MM
    assert placed >= len(healthy) // 2
