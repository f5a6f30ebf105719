"""Lesion bank, placement and compositing: components, spacing, placement inside the eroded head, blend weights."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import oblique_affine
from monai.data import MetaTensor

from monai_mri_gan.data import LesionCrops, SliceCohort, load_datalist, make_demo_cohort, place_in_bases
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


def _depth(points, mask, spacing=(1.0, 1.0)):
    """Brute-force distance (mm) from each point to the nearest pixel outside ``mask`` (the slice's edge counts)."""
    outside = np.argwhere(np.pad(~mask, 1, constant_values=True)) - 1
    return _min_distance(points, outside, spacing)


def _dot_fits(foreground, spacing, margin, reach):
    """Brute force: the pixels a one-pixel lesion may take, its blend band (every pixel nearer than ``reach`` px)
    lying on pixels of ``foreground`` farther than ``margin`` mm from its edge, inside the slice."""
    grid = np.argwhere(np.ones(foreground.shape, bool))
    allowed = np.zeros(foreground.shape, bool)
    allowed[tuple(grid[_depth(grid, foreground, spacing) > margin].T)] = True
    forbidden = np.argwhere(np.pad(~allowed, reach, constant_values=True)) - reach
    return [(int(r), int(c)) for r, c in np.argwhere(allowed) if _min_distance([(r, c)], forbidden)[0] >= reach]


def _dot(spacing=(1.0, 1.0), **where):
    """A bank of one one-pixel lesion (in a 3x3 box) with the given position, head size or depth."""
    dot = np.zeros((3, 3), np.int16)
    dot[1, 1] = 1
    return LesionBank([Lesion(dot, np.zeros((3, 3), np.float32), spacing, "dot", **where)])


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


def test_components_nearer_than_join_mm_are_one_lesion_at_the_slice_spacing():
    """Oedema islands a few mm from a tumour are that tumour's: components whose facing pixels' centres are within
    ``join_mm`` of each other (to a pixel) are one lesion, in the bank and in the crops, at anisotropic spacing."""
    spacing = (0.9, 1.1)
    labels = np.zeros((60, 70), np.int16)
    labels[10:20, 10:20] = 1
    labels[10:20, 26:29] = 2  # 7 columns right of the main body (last column 19): 7.7 mm <= 8 mm, joined
    labels[10:20, 36:40] = 2  # 8 columns right of that island: 8.8 mm, apart
    labels[30:33, 10:20] = 2  # 11 rows below the main body: 9.9 mm, apart
    labels[44:47, 10:20] = 2
    labels[54:57, 10:20] = 2  # 8 rows below the last: 7.2 mm, joined with it
    assert lesion_components(labels, 20, spacing, join_mm=0) == [
        (slice(10, 20), slice(10, 20)), (slice(10, 20), slice(26, 29)), (slice(10, 20), slice(36, 40)),
        (slice(30, 33), slice(10, 20)), (slice(44, 47), slice(10, 20)), (slice(54, 57), slice(10, 20))]
    joined = lesion_components(labels, 20, spacing, join_mm=8.0)
    assert joined == [(slice(10, 20), slice(10, 29)), (slice(10, 20), slice(36, 40)), (slice(30, 33), slice(10, 20)),
                      (slice(44, 57), slice(10, 20))]
    # min_voxels counts a lesion's components together: two 15 px islands 3 mm apart make one 30 px lesion
    pair = np.zeros((20, 20), np.int16)
    pair[2:5, 2:7], pair[2:5, 10:15] = 2, 2
    assert lesion_components(pair, 20, (1.0, 1.0), join_mm=0) == []
    assert lesion_components(pair, 20, (1.0, 1.0), join_mm=4.0) == [(slice(2, 5), slice(2, 15))]
    # the bank cuts the joined lesion with its islands, and the crops centre one crop on it
    affine = oblique_affine(spacing=(*spacing, 2.5))
    item = _slice_item(labels, np.zeros(labels.shape, np.float32), affine)
    bank = LesionBank.from_slices([item], margin=0, join_mm=8.0)
    assert [b.labels.shape for b in bank] == [(10, 19), (10, 4), (3, 10), (13, 10)]
    np.testing.assert_array_equal(bank[0].labels, labels[10:20, 10:29])
    assert len(LesionCrops([item], crop_size=32, join_mm=8.0)) == 4
    assert len(LesionCrops([item], crop_size=32, join_mm=0)) == 6
    with pytest.raises(ValueError, match="join_mm must be non-negative"):
        lesion_components(labels, 20, spacing, join_mm=-1)


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
    bank = LesionBank.from_slices([_slice_item(near, image, affine, patient="p")], margin=3, source_key="patient",
                                  join_mm=0)
    assert bank[0].source == "p"
    assert not bank[0].labels[14:].any() and bank[1].labels.any()
    with pytest.raises(ValueError, match="no lesion of at least 20 pixels in the 1 labelled slice"):
        LesionBank.from_slices([_slice_item(np.zeros((9, 9)))])
    with pytest.raises(ValueError, match="empty"):
        LesionBank([])
    with pytest.raises(ValueError, match="non-integer"):
        LesionBank.from_slices([_slice_item(labels * 0.5)])


def test_from_slices_records_where_each_lesion_sat_in_its_head():
    """Position in head-box units and head section size, against a hand computation on an oblique,
    anisotropic slice."""
    spacing = (0.9, 1.1)
    head = _disc((70, 60), (34, 30), 27.0, spacing)
    labels = np.zeros((70, 60), np.int16)
    labels[20:26, 36:44] = 1
    item = _slice_item(labels, np.where(head, 0.6, -1.0).astype(np.float32), oblique_affine(spacing=(*spacing, 2.5)))
    lesion = LesionBank.from_slices([item], margin=2)[0]
    rows, cols = np.nonzero(head.any(1))[0], np.nonzero(head.any(0))[0]
    centre = np.array([rows[0] + rows[-1], cols[0] + cols[-1]]) / 2
    half = np.array([rows[-1] - rows[0], cols[-1] - cols[0]]) / 2
    box_centre = np.array([(18 + 27) / 2, (34 + 45) / 2])  # rows 18..27 and cols 34..45: the lesion and 2 px
    assert lesion.position == pytest.approx(tuple((box_centre - centre) / half), abs=1e-12)
    assert lesion.head_mm == pytest.approx(math.sqrt(2 * half[0] * spacing[0] * 2 * half[1] * spacing[1]), abs=1e-9)


def test_location_prior_weighs_each_position_by_its_distance_from_the_lesions_own():
    """Positions are drawn with probability exp(-d^2 / 2 sigma^2) (d in head-box units from the lesion's own
    position, mirrored across the midline when asked): the mean drawn position against the exact expectation."""
    spacing, sigma, own = (1.0, 1.5), 0.3, (0.4, -0.5)
    foreground = _disc((30, 22), (15, 11), 13.0, spacing)
    fits = np.array(_dot_fits(foreground, spacing, 1.0, 1))
    rows, cols = np.nonzero(foreground.any(1))[0], np.nonzero(foreground.any(0))[0]
    centre = np.array([rows[0] + rows[-1], cols[0] + cols[-1]]) / 2
    half = np.array([rows[-1] - rows[0], cols[-1] - cols[0]]) / 2
    for mirror, target in ((0.0, own), (1.0, (own[0], -own[1]))):
        placer = PlaceLesion(_dot(spacing, position=own), **NO_AUGMENT, skull_margin_mm=1.0, dilate_px=0, band_px=0,
                             location_sigma=sigma, mirror_prob=mirror)
        placer.set_random_state(seed=0)
        drawn = []
        for _ in range(800):
            placed = placer(foreground, spacing, mirror_axis=1)
            assert placed.params["location"]["target"] == pytest.approx(target)
            assert placed.params["location"]["mirrored"] == bool(mirror)
            drawn.append(placed.params["bbox_px"][::2])
        weights = np.exp(-((((fits - centre) / half - target) ** 2).sum(1)) / (2 * sigma**2))
        weights /= weights.sum()
        expected = weights @ fits
        spread = np.sqrt(weights @ (fits - expected) ** 2)
        assert np.abs(np.mean(drawn, 0) - expected).max() < 4 * spread.max() / math.sqrt(len(drawn))
        uniform = fits.mean(0)
        assert np.abs(uniform - expected).max() > 12 * spread.max() / math.sqrt(len(drawn))  # the test can tell


def test_section_tolerance_refuses_another_level_of_the_head():
    """A lesion goes only into a head section of about its own size (log ratio within the tolerance)."""
    head = _disc((44, 44), (22, 22), 20.0)  # a head box of 40 mm: log(40 / 50) = -0.22
    with pytest.raises(ValueError, match=r"lesion 0 \(dot\) comes from a head section of 50 mm and this slice's is "
                                         r"40 mm, beyond the section tolerance \(0.2\)"):
        PlaceLesion(_dot(head_mm=50.0), section_tolerance=0.2)(head, (1.0, 1.0))
    PlaceLesion(_dot(head_mm=50.0), section_tolerance=0.25, skull_margin_mm=0.0)(head, (1.0, 1.0))
    PlaceLesion(_dot(head_mm=50.0), section_tolerance=None, skull_margin_mm=0.0)(head, (1.0, 1.0))
    # at another spacing the same pixels are another size: 44 mm, within 0.2 of 50 mm
    PlaceLesion(_dot(head_mm=50.0), section_tolerance=0.2, skull_margin_mm=0.0)(head, (1.1, 1.1))


def test_a_drawn_lesion_is_kept_until_a_transform_fits():
    """A lesion that fits only under some rotations is tried again, not swapped for one that fits anywhere: the
    placed lesions are the bank's in equal shares."""
    bar = np.zeros((5, 31), np.int16)
    bar[2, :] = 1
    bank = LesionBank([Lesion(bar, np.zeros(bar.shape, np.float32), (1.0, 1.0), "bar"), *_dot()])
    corridor = np.zeros((15, 50), bool)
    corridor[3:12, 3:47] = True  # 9 rows: the bar fits only when it lies near the corridor's direction
    placer = PlaceLesion(bank, flip_prob=0.0, scale_range=(1.0, 1.0), elastic_prob=0.0, skull_margin_mm=0.0,
                         dilate_px=0, band_px=2, max_tries=400)
    placer.set_random_state(seed=0)
    placed = [placer(corridor, (1.0, 1.0)).params for _ in range(200)]
    bars = [p for p in placed if p["lesion_index"] == 0]
    assert 70 < len(bars) < 130 and max(p["tries"] for p in bars) > 5
    assert all(abs(math.sin(math.radians(p["angle_deg"]))) < 0.2 for p in bars)


def test_place_lesiond_mirrors_across_the_slices_left_right_axis():
    """The mirror axis comes from the affine: the in-plane axis nearest to RAS x; none for a sagittal slice."""
    head = _disc((60, 60), (30, 30), 26.0)
    image = torch.as_tensor(np.where(head, 0.5, -1.0), dtype=torch.float32)[None, :, :, None]
    bank = _dot(position=(0.3, -0.4))
    for columns, target in (((0, 1, 2), [-0.3, -0.4]), ((1, 0, 2), [0.3, 0.4]), ((2, 1, 0), [0.3, -0.4])):
        affine = torch.eye(4, dtype=torch.float64)[:, [*columns, 3]]
        item = {"image": MetaTensor(image, affine=affine)}
        transform = PlaceLesiond(bank, location_sigma=0.2, mirror_prob=1.0, skull_margin_mm=4.0)
        assert transform.set_random_state(seed=0)(item)["placement"]["location"]["target"] == target


def test_place_in_bases_keeps_the_lesion_across_base_slices():
    labels, image = _tumour(radius_px=6)
    bank = LesionBank([Lesion(labels, image, (1.0, 1.0), "a"), *_dot()])

    def base(radius):
        head = _disc((50, 50), (25, 25), radius)
        return {"image": MetaTensor(torch.as_tensor(np.where(head, 0.5, -1.0), dtype=torch.float32)[None, :, :, None],
                                    affine=torch.eye(4, dtype=torch.float64), meta={"filename_or_obj": f"r{radius}"})}

    cohort = [base(9.0), base(9.0), base(9.0), base(24.0)]  # the tumour fits only the last
    placer = PlaceLesiond(bank, skull_margin_mm=2.0)
    tries = {0: [], 1: []}
    for seed in range(8):
        index = int(np.random.default_rng(seed).integers(2))  # the lesion is place_in_bases' first draw
        placed, position, _ = place_in_bases(placer, cohort, range(4), np.random.default_rng(seed), 50)
        assert placed["placement"]["lesion_index"] == index
        assert position == 3 or index == 1
        tries[index].append(placed["placement"]["base_tries"])
    assert tries[0] and tries[1] and max(tries[0]) > 1
    with pytest.raises(DataError, match=r"r9.0: lesion 0 \(a\) fits into none of the 3 base slices drawn; the last: "
                                        r"slice \?: no room for lesion 0 \(a\) under any of 100 transforms"):
        place_in_bases(placer, cohort[:3], range(3), np.random.default_rng(1), 3)


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
    bank = _dot(spacing)
    placer = PlaceLesion(bank, **NO_AUGMENT, skull_margin_mm=margin, dilate_px=dilate_px, band_px=band_px)
    placer.set_random_state(seed=0)
    drawn = set()
    for _ in range(300):
        r0, r1, c0, c1 = placer(foreground, spacing).params["bbox_px"]
        assert (r1 - r0, c1 - c0) == (1, 1)
        drawn.add((r0, c0))
    fits = _dot_fits(foreground, spacing, margin, dilate_px + band_px + 1)
    assert len(fits) > 30 and drawn == set(fits)


def test_holes_in_the_head_are_room_for_lesions():
    """A dark region the head encloses (a ventricle) is head: the margin is kept from the head's outer edge only."""
    bank = _dot()
    ring = _disc((90, 90), (45, 45), 38.0) & ~_disc((90, 90), (45, 45), 15.0)
    item = {"image": MetaTensor(torch.as_tensor(np.where(ring, 0.5, -1.0), dtype=torch.float32)[None, :, :, None],
                                affine=torch.eye(4, dtype=torch.float64))}
    # 12 mm from both of the ring's edges leaves no room; from the filled head's edge, a 14 mm disc in the middle
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
    with pytest.raises(ValueError, match=r"no room for lesion 0 \(a\) under any of 5 transforms tried \(the smallest, "
                                         r"with its blend band, \d+x\d+ px\) inside the foreground of this 144x160 "
                                         r"slice eroded by 8 mm"):
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
    transform = PlaceLesiond(bank, max_tries=20)
    for sample in range(12):
        # as the synthesiser and the evaluator place: one lesion, base slices drawn until one at its level has room
        out, position, _ = place_in_bases(transform, healthy, range(len(healthy)), np.random.default_rng(sample), 100)
        item = healthy[position]
        new = out["label"][0, :, :, 0].numpy()
        assert set(np.unique(new)) <= {0, *bank.label_values} and new.any()
        assert torch.equal(out["label"].affine, item["image"].affine)
        # at least the head margin from every side of the head's bounding box (a necessary condition)
        head_rows, head_cols = np.nonzero(head_foreground(item["image"][0, :, :, 0].numpy()))
        rows, cols = np.nonzero(new)
        gaps_mm = [(rows.min() - head_rows.min()) * spacing[0], (head_rows.max() - rows.max()) * spacing[0],
                   (cols.min() - head_cols.min()) * spacing[1], (head_cols.max() - cols.max()) * spacing[1]]
        assert min(gaps_mm) > HEAD_MARGIN_MM
