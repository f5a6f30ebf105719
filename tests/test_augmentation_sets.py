"""Balanced augmentation sets: exact class counts, loadable items, synthetic flags, the augment bundle."""

import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, load_decathlon_datalist
from monai.losses import DiceCELoss
from monai.networks.nets import Classifier, UNet
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SqueezeDimd
from test_painter_synthesis import CONFIGS as PAINTER_CONFIGS
from test_painter_synthesis import NAME, export, painter  # noqa: F401 (fixtures)
from test_synthesis import CONFIGS, bundle

from monai_mri_gan.data import load_datalist, volume_transforms
from monai_mri_gan.runs import cohort_from_record
from monai_mri_gan.synthesis import (
    AUGMENTED_DATALIST,
    SliceSynthesiser,
    build_balanced_set,
    build_painted_set,
    synthetic_quota,
)
from monai_mri_gan.synthesis.provenance import sidecar_path
from monai_mri_gan.transforms import normalisation_stats

pytestmark = pytest.mark.usefixtures("one_thread")


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
    """Check counts, flags, keys and loadability of an augmented datalist; return its items."""
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
    # one set of keys for every item: a plain DataLoader collates them
    assert {frozenset(i) for i in items} == {frozenset({"image", "class", "synthetic", "subject"})}
    assert all(not i["image"].startswith("/") for i in items)
    base = path.parent
    for item in synthetic:
        record = json.loads(sidecar_path(base / item["image"]).read_text())
        assert record["synthetic"] is True and record["class_index"] == item["class"]
        assert item["subject"] == "synthetic"
    return items


def load_items(path):
    """The datalist's items read the plain MONAI way: LoadImaged + EnsureChannelFirstd, nothing of this project."""
    items = load_decathlon_datalist(str(path), data_list_key="training", base_dir=str(path.parent))
    keys = ["image", "label"] if "label" in items[0] else ["image"]
    load = Compose([LoadImaged(keys), EnsureChannelFirstd(keys)])
    return [load(i) for i in items]


def background_levels(datalist):
    """The ``norm_background`` of every source volume of a datalist (what its air is in source units)."""
    load = Compose(volume_transforms())
    return {normalisation_stats(load({"image": i["image"]})["image"])["norm_background"]
            for i in load_datalist(datalist)}


def check_alike(loaded, backgrounds=None):
    """Real and synthetic items: same shape, dtype, orientation; spacing of the same kind; air at the source level."""
    real = [d for d in loaded if not d["synthetic"]]
    synthetic = [d for d in loaded if d["synthetic"]]
    assert real and synthetic
    for key in [k for k in ("image", "label") if k in loaded[0]]:
        assert {tuple(d[key].shape) for d in synthetic} <= {tuple(d[key].shape) for d in real}
        assert {d[key].dtype for d in loaded} == {real[0][key].dtype}
        assert {nib.aff2axcodes(d[key].affine.numpy()) for d in synthetic} <= {
            nib.aff2axcodes(d[key].affine.numpy()) for d in real}
    spacing = {tuple(np.round(np.linalg.norm(d["image"].affine.numpy()[:3, :3], axis=0), 5)) for d in real}
    assert all(tuple(np.round(np.linalg.norm(d["image"].affine.numpy()[:3, :3], axis=0), 5)) in spacing
               for d in synthetic)
    # the air in a corner: at the source's own level (constant, when ``backgrounds`` are given), in real and
    # synthetic slices alike
    corners = {flag: [d["image"][0, :3, :3].float().mean().item() for d in loaded if d["synthetic"] == flag]
               for flag in (False, True)}
    assert min(corners[False]) <= min(corners[True]) and max(corners[True]) <= max(corners[False])
    for d in loaded if backgrounds is not None else ():
        corner = d["image"][0, :2, :2].numpy()
        assert len(set(corner.ravel().tolist())) == 1 and float(corner.ravel()[0]) in backgrounds, d["synthetic"]


def train_two_steps(loaded, with_label):
    """Two optimiser steps of a MONAI network on batches that mix real and synthetic items; return the losses."""
    torch.manual_seed(0)
    squeeze = SqueezeDimd(["image", "label"] if with_label else ["image"], dim=-1)
    data = [squeeze(d) for d in loaded]
    loader = DataLoader(Dataset(data), batch_size=len(data) // 2, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    if with_label:
        net = UNet(2, 1, 2, channels=(4, 8), strides=(2,))
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    else:
        net = Classifier(tuple(data[0]["image"].shape), classes=2, channels=(4, 8), strides=(2, 2))
        loss_fn = torch.nn.CrossEntropyLoss()
    optimiser = torch.optim.Adam(net.parameters(), 1e-3)
    before = [p.detach().clone() for p in net.parameters()]
    losses, seen = [], []
    for _, batch in zip(range(2), loader, strict=False):
        image = batch["image"].float()
        image = (image - image.mean()) / image.std()
        target = (batch["label"] > 0).long() if with_label else batch["class"]
        seen.extend(batch["synthetic"].tolist())
        loss = loss_fn(net(image), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses) and set(seen) == {True, False}
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    return losses


@pytest.fixture
def air_like_generator(monkeypatch):
    """Generated slices whose air is noisy near -1 with bright specks, as a trained generator's is.

    The default run's generator put its corners at a median of -0.989 (99th percentile -0.81); the 1-epoch test GAN
    draws no air at all, so it cannot show where generated air lands. These are the cohort's own training-space
    slices with such air.
    """
    def generate(self, class_index, count):
        images, classes = self.reference_cohort.tensors()
        images = images[classes == class_index]
        rng = torch.Generator().manual_seed(count)
        picks = images[torch.randint(len(images), (count,), generator=rng)]
        air = -1 + torch.empty(picks.shape).exponential_(1 / 0.011, generator=rng)
        specks = torch.rand(picks.shape, generator=rng) < 0.01
        return torch.where(picks <= -1, torch.where(specks, -0.8, air.clamp(max=1)), picks)

    monkeypatch.setattr(SliceSynthesiser, "generate", generate)


def test_build_balanced_set(tmp_path, gan, real_counts, air_like_generator):
    out = tmp_path / "aug"
    path = build_balanced_set(gan["run"], out, datalist=gan["datalist"], target_ratio=1.0, seed=4)
    assert path == out / AUGMENTED_DATALIST
    check_datalist(path, real_counts, 1.0)
    loaded = load_items(path)
    assert {tuple(d["image"].shape) for d in loaded} == {(1, 32, 32, 1)}
    check_alike(loaded, background_levels(gan["datalist"]))
    train_two_steps(loaded, with_label=False)
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


def test_build_painted_set(tmp_path, export, painter):  # noqa: F811 (the imported fixtures)
    """Real and painted slices with masks: one key set, native grids alike, air and units of the sources."""
    out = tmp_path / "painted"
    path = build_painted_set(painter["run"], out, datalist=export["datalist"], target_ratio=0.5, seed=2)
    document = json.loads(path.read_text())
    items = document["training"]
    assert {frozenset(i) for i in items} == {frozenset({"image", "label", "class", "synthetic", "subject"})}
    real = [i for i in items if not i["synthetic"]]
    painted = [i for i in items if i["synthetic"]]
    counts = {c: sum(1 for i in real if i["class"] == c) for c in (0, 1)}
    assert len(painted) == math.ceil(0.5 * counts[0]) - counts[1] > 0 and {i["class"] for i in painted} == {1}
    assert document["synthetic_counts"] == {"0": 0, "1": len(painted)}
    loaded = load_items(path)
    check_alike(loaded)  # air as the scanner gave it: noisy in real and painted slices alike
    for d in loaded:
        assert d["label"].dtype == loaded[0]["label"].dtype
        assert torch.equal(d["label"].affine, d["image"].affine)
        tumour = bool((d["label"] > 0).any())
        assert tumour == (d["class"] == 1), "a healthy item has an empty mask; a tumour item a non-empty one"
    # a painted item's subject is its base slice's: healthy real items of that subject exist
    assert {i["subject"] for i in painted} <= {i["subject"] for i in real if i["class"] == 0}
    # nothing of the export's names reaches file names, subjects or the datalist
    assert NAME not in path.read_text() and not any(NAME in p.name for p in out.rglob("*"))
    train_two_steps(loaded, with_label=True)
    # the painter bundle's augment config does the same, here with copy-paste and uncompressed files
    bundled = tmp_path / "bundled"
    result = bundle("run", "--config_file", str(PAINTER_CONFIGS / "augment.json"), "--ckpt_path", str(painter["run"]),
                    "--datalist", str(export["datalist"]), "--output_dir", str(bundled), "--target_ratio", "0.5",
                    "--method", "copy_paste", "--compress", "false", "--seed", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads((bundled / AUGMENTED_DATALIST).read_text())
    assert again["method"] == "copy_paste" and again["total_counts"] == document["total_counts"]
    assert all(i["image"].endswith(".nii") for i in again["training"])
