"""Balanced augmentation sets: exact class counts, loadable items, synthetic flags, the augment bundle."""

import json
import math

import pytest
import torch
from monai.transforms import LoadImage
from test_synthesis import CONFIGS, bundle

from monai_mri_gan.data import load_datalist
from monai_mri_gan.runs import cohort_from_record
from monai_mri_gan.synthesis import AUGMENTED_DATALIST, build_balanced_set, synthetic_quota


@pytest.fixture(scope="module")
def real_counts(gan):
    """Real slices per class, cut independently with the checkpoint's slicing configuration."""
    config = torch.load(gan["checkpoint"], weights_only=True)["config"]
    return cohort_from_record(config, load_datalist(gan["datalist"])).class_counts()


def test_synthetic_quota_values():
    assert synthetic_quota({0: 39, 1: 4}, 2, 1.0) == {0: 0, 1: 35}
    assert synthetic_quota({0: 39, 1: 4}, 2, 0.5) == {0: 0, 1: 16}  # ceil(19.5) = 20 tumour slices
    assert synthetic_quota({0: 10, 1: 1}, 2, 0.3) == {0: 0, 1: 2}  # 0.3 x 10 is 3, not 3.0000000000000004 -> 4
    assert synthetic_quota({0: 3, 1: 10, 2: 0}, 3, 1.0) == {0: 7, 1: 0, 2: 10}
    assert synthetic_quota({0: 10, 1: 8}, 2, 0.5) == {0: 0, 1: 0}
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="target_ratio"):
            synthetic_quota({0: 3, 1: 1}, 2, bad)
    with pytest.raises(ValueError, match="two or more classes"):
        synthetic_quota({0: 3}, 0, 1.0)


def check_datalist(path, real_counts, ratio):
    """Check counts, flags and loadability of an augmented datalist; return its items."""
    document = json.loads(path.read_text())
    items = document["training"]
    real = [i for i in items if i["synthetic"] is False]
    synthetic = [i for i in items if i["synthetic"] is True]
    assert len(real) + len(synthetic) == len(items)
    counts = {c: sum(1 for i in real if i["class"] == c) for c in (0, 1)}
    assert counts == {c: real_counts.get(c, 0) for c in (0, 1)}
    majority = max(counts.values())
    minority = min(counts, key=counts.get)
    expected = math.ceil(round(ratio * majority, 9)) - counts[minority]
    assert len(synthetic) == expected and all(i["class"] == minority for i in synthetic)
    total = {c: counts[c] + sum(1 for i in synthetic if i["class"] == c) for c in (0, 1)}
    assert min(total.values()) / max(total.values()) >= ratio
    assert min(total.values()) - 1 < ratio * max(total.values())  # the least number that reaches the ratio
    assert document["total_counts"] == {str(c): n for c, n in total.items()}
    for item in real:
        assert set(item) >= {"image", "slice_index", "slice_axis", "class", "subject", "synthetic"}
        assert item["slice_axis"] == 2 and not item["image"].startswith("/")
    load = LoadImage(image_only=True)
    base = path.parent
    for image in sorted({i["image"] for i in real}):
        assert load(str(base / image)).ndim == 3  # DICOM series folders and NIfTI volumes
    for item in synthetic:
        assert tuple(load(str(base / item["image"])).shape) == (32, 32, 1)
        record = json.loads((base / item["provenance"]).read_text())
        assert record["synthetic"] is True and record["class_index"] == item["class"]
    return items


def test_build_balanced_set(tmp_path, gan, real_counts):
    out = tmp_path / "aug"
    path = build_balanced_set(gan["run"], out, datalist=gan["datalist"], target_ratio=1.0, seed=4)
    assert path == out / AUGMENTED_DATALIST
    check_datalist(path, real_counts, 1.0)
    with pytest.raises(FileExistsError, match=AUGMENTED_DATALIST):
        build_balanced_set(gan["run"], out, datalist=gan["datalist"], target_ratio=1.0, seed=4)


def test_augment_bundle(tmp_path, gan, real_counts):
    out = tmp_path / "aug"
    result = bundle("run", "--config_file", str(CONFIGS / "augment.json"), "--ckpt_path", str(gan["checkpoint"]),
                    "--datalist", str(gan["datalist"]), "--output_dir", str(out), "--target_ratio", "0.5",
                    "--compress", "false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    items = check_datalist(out / AUGMENTED_DATALIST, real_counts, 0.5)
    assert all(i["image"].endswith(".nii") for i in items if i["synthetic"])
