"""Tumour / no-tumour slice classifier: training on the demo cohort, class fidelity, encoder feature space."""

import pytest
import torch
from torch import nn

from monai_mri_gan.data import SliceCohort, load_datalist, make_demo_cohort
from monai_mri_gan.metrics import (
    class_fidelity,
    classifier_feature_extractor,
    classifier_logits,
    load_slice_classifier,
    predict_classes,
    save_slice_classifier,
    train_slice_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def slices(tmp_path_factory):
    root = make_demo_cohort(tmp_path_factory.mktemp("cohort") / "demo", seed=3, num_subjects=4, shape=(48, 52, 12))
    images, labels = SliceCohort(load_datalist(root), image_size=32, tumour_min_voxels=20).tensors()
    return images, labels


def test_classifier_separates_demo_classes_reproducibly(slices, tmp_path):
    images, labels = slices
    counts = torch.bincount(labels).tolist()
    assert len(counts) == 2 and min(counts) >= 2  # both classes present, tumour slices a minority
    rng_before = torch.get_rng_state()
    network = train_slice_classifier(images, labels, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_before)  # private random state only
    result = class_fidelity(network, images, labels)
    assert result["counts"] == counts
    # better than chance on each class, although tumour slices are rare (class-weighted loss)
    assert min(result["per_class"]) > 0.5
    assert sum(result["per_class"]) / 2 >= 0.75
    # the same seed gives the same network
    again = train_slice_classifier(images, labels, seed=0)
    pairs = zip(network.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)

    path = save_slice_classifier(network, tmp_path / "clf.pt", class_names=("no_tumour", "tumour"))
    assert not list(tmp_path.glob(".*.tmp"))
    saved = torch.load(path, weights_only=True)
    assert saved["config"] == {"num_classes": 2, "widths": [8, 16, 32, 64], "class_names": ["no_tumour", "tumour"]}
    reloaded = load_slice_classifier(path)
    assert torch.equal(predict_classes(reloaded, images), predict_classes(network, images))
    logits = classifier_logits(network, images, batch_size=7)
    assert logits.shape == (len(images), 2) and torch.equal(predict_classes(network, images), logits.argmax(1))
    with pytest.raises(FileNotFoundError):
        load_slice_classifier(tmp_path / "missing.pt")


def test_classifier_needs_both_classes(slices):
    images, labels = slices
    with pytest.raises(ValueError, match="every class"):
        train_slice_classifier(images[labels == 0], labels[labels == 0], num_classes=2)


class BrightIsClassOne(nn.Module):
    """Fixed rule: class 1 when the mean intensity is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.flatten(1).mean(1)
        return torch.stack([-mean, mean], dim=1)


def test_class_fidelity_against_a_hand_count():
    values = [-0.5, 0.5, 0.2, -0.1, 0.9, -0.8, 0.3]  # predicted: 0 1 1 0 1 0 1
    labels = torch.tensor([0, 0, 1, 1, 1, 0, 0])  # correct:     y n y n y y n
    images = torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 1, 4, 4).contiguous()
    result = class_fidelity(BrightIsClassOne(), images, labels, batch_size=3)
    assert result["counts"] == [4, 3]
    assert result["per_class"] == [pytest.approx(2 / 4), pytest.approx(2 / 3)]
    assert result["overall"] == pytest.approx(4 / 7)
    # a class without slices has no accuracy
    assert class_fidelity(BrightIsClassOne(), images[:2], labels[:2], num_classes=2)["per_class"] == [0.5, None]


def test_encoder_features_are_the_penultimate_layer(slices):
    images, labels = slices
    network = train_slice_classifier(images, labels, epochs=1, seed=1)
    features = classifier_feature_extractor(network, batch_size=16)(images)
    assert features.shape == (len(images), 64) and features.dtype == torch.float64
    # the classification layer applied to the features gives the network's logits
    with torch.no_grad():
        logits = network(images)
        assert torch.allclose(network.fc(features.float()), logits, atol=1e-5)
