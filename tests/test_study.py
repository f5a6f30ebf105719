"""The downstream augmentation study: subject split, leakage guard, condition subsets, metrics, an end-to-end run."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_mri_gan.data import make_demo_cohort
from monai_mri_gan.metrics import train_slice_classifier
from monai_mri_gan.study import (
    STUDY_REGIMES,
    ClassicAugmentation,
    SubjectLeakageError,
    SubjectSplit,
    binary_classification_metrics,
    check_no_leakage,
    run_study,
    split_subjects,
    subject_classes,
    summarise_runs,
    train_gan,
    training_subset,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "bundles" / "brain_mri_gan" / "configs" / "study.json"
TRAIN_CONFIG = ROOT / "bundles" / "brain_mri_gan" / "configs" / "train.json"


def _cohort_like(num_subjects=20, num_tumour=6, slices=10, tumour_slices=4):
    """Subject ids and classes of slices: tumour subjects have ``tumour_slices`` tumour slices each."""
    subjects, classes = [], []
    for s in range(num_subjects):
        for k in range(slices):
            subjects.append(f"sub-{s:02d}")
            classes.append(int(s < num_tumour and k < tumour_slices))
    return subjects, torch.tensor(classes)


def test_split_is_by_subject_disjoint_stratified_and_seeded():
    subjects, classes = _cohort_like()
    per_subject = subject_classes(subjects, classes)
    assert sum(per_subject.values()) == 6 and len(per_subject) == 20
    split = split_subjects(per_subject, (0.5, 0.2, 0.3), seed=0)
    parts = [set(split.train), set(split.validation), set(split.test)]
    assert parts[0].isdisjoint(parts[1]) and parts[0].isdisjoint(parts[2]) and parts[1].isdisjoint(parts[2])
    assert set().union(*parts) == set(per_subject)
    # stratified: 6 tumour subjects -> 1 validation (round 1.2), 2 test (round 1.8), 3 training; 14 without ->
    # 3 validation (round 2.8), 4 test (round 4.2), 7 training
    tumour = {s for s, c in per_subject.items() if c == 1}
    assert [len(p & tumour) for p in parts] == [3, 1, 2]
    assert [len(p - tumour) for p in parts] == [7, 3, 4]
    # every slice of a subject is in the subject's split: the split is of subjects, never of slices
    assert split.held_out == frozenset(split.validation) | frozenset(split.test)
    assert split_subjects(per_subject, seed=0) == split and split_subjects(per_subject, seed=1) != split
    with pytest.raises(ValueError, match="too few"):
        split_subjects({"a": 1, "b": 1, "c": 0, "d": 0, "e": 0})


def test_subject_split_refuses_a_shared_subject():
    with pytest.raises(ValueError, match="sub-1"):
        SubjectSplit(train=("sub-0", "sub-1"), validation=("sub-2",), test=("sub-1",))


def test_leakage_guard_raises_for_a_held_out_subject(tmp_path):
    split = SubjectSplit(train=("a", "b"), validation=("c",), test=("d",))
    check_no_leakage(["a", "b", "a"], split)  # training subjects only: fine
    with pytest.raises(SubjectLeakageError, match=r"\['d'\]"):
        check_no_leakage(["a", "d"], split)
    with pytest.raises(SubjectLeakageError, match=r"\['c'\]"):
        check_no_leakage(["c"], split)
    # the GAN trainer checks before anything is trained or written
    images, classes = torch.zeros(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])
    with pytest.raises(SubjectLeakageError, match=r"\['d'\]"):
        train_gan(images, classes, ["a", "b", "a", "d"], split, tmp_path / "gan", TRAIN_CONFIG, iterations=1)
    assert not (tmp_path / "gan").exists()


def test_a_missing_training_config_is_a_clear_error(tmp_path):
    split = SubjectSplit(train=("a",), validation=("c",), test=("d",))
    missing = tmp_path / "bundle" / "configs" / "train.json"
    with pytest.raises(FileNotFoundError, match="train.json"):
        train_gan(torch.zeros(2, 1, 32, 32), torch.tensor([0, 1]), ["a", "a"], split, tmp_path / "gan", missing)
    with pytest.raises(FileNotFoundError, match="train.json"):
        run_study([{"image": "none.nii.gz", "subject": "a"}], tmp_path / "study", missing)
    assert not (tmp_path / "gan").exists() and not (tmp_path / "study").exists()


def test_training_subset_reaches_the_tumour_share_within_training_subjects():
    subjects, classes = _cohort_like()
    split = split_subjects(subject_classes(subjects, classes), seed=0)
    train = set(split.train)
    full = training_subset(subjects, classes, split.train)
    assert {subjects[i] for i in full.tolist()} == train and len(full) == 10 * len(train)
    normal = int((classes[full] == 0).sum())  # 3 tumour subjects x 6 + 7 x 10 = 88
    assert normal == 88 and int(classes[full].sum()) == 12
    ten = training_subset(subjects, classes, split.train, tumour_share=0.1)
    five = training_subset(subjects, classes, split.train, tumour_share=0.05)
    assert int(classes[ten].sum()) == round(0.1 * 88 / 0.9) == 10
    assert int(classes[five].sum()) == round(0.05 * 88 / 0.95) == 5
    assert int((classes[ten] == 0).sum()) == int((classes[five] == 0).sum()) == 88
    assert set(five.tolist()) <= set(ten.tolist())  # nested: the scarcer set is a subset
    # tumour slices are kept subject by subject: 5 of them come from 2 subjects (4 + 1), not 5
    assert len({subjects[i] for i in five.tolist() if classes[i] == 1}) == 2
    # a share above the data's drops no-tumour slices instead: 12 tumour slices at 20 % -> 48 no-tumour
    twenty = training_subset(subjects, classes, split.train, tumour_share=0.2)
    assert int(classes[twenty].sum()) == 12 and int((classes[twenty] == 0).sum()) == 48
    # half the training subjects: half of each subject class (round(1.5) = 2 tumour, round(3.5) = 4 without)
    half = training_subset(subjects, classes, split.train, subject_fraction=0.5)
    kept = {subjects[i] for i in half.tolist()}
    assert kept <= train and len(kept) == 6 and int(classes[half].sum()) == 8
    with pytest.raises(ValueError, match="tumour_share"):
        training_subset(subjects, classes, split.train, tumour_share=1.0)


def test_metrics_equal_a_hand_computation():
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    scores = torch.tensor([0.9, 0.6, 0.2, 0.7, 0.4, 0.3, 0.1, 0.05])
    m = binary_classification_metrics(labels, scores)
    # predicted positive (>= 0.5): 0.9, 0.6 (true positives) and 0.7 (a false positive)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # AUROC: of the 3 x 5 positive-negative pairs the positive scores higher in 11 (0.6 loses to 0.7; 0.2 to 0.7,
    # 0.4 and 0.3)
    assert m["auroc"] == pytest.approx(11 / 15)
    assert binary_classification_metrics(labels, scores, threshold=0.15)["sensitivity"] == 1.0
    single = binary_classification_metrics(torch.zeros(3), torch.tensor([0.1, 0.6, 0.2]))
    assert math.isnan(single["sensitivity"]) and math.isnan(single["auroc"])
    assert single["specificity"] == pytest.approx(2 / 3)


def test_summary_is_mean_and_sample_std_over_seeds():
    record = {"conditions": [{"name": "c", "subject_fraction": 1.0, "tumour_share": 0.1, "runs": [
        {"regime": "real", "seed": s, "test": {"balanced_accuracy": v, "sensitivity": v, "specificity": 1.0,
                                               "auroc": math.nan if s == 2 else v}}
        for s, v in enumerate([0.5, 0.7, 0.9])]}]}
    (row,) = summarise_runs(record)
    assert row["seeds"] == 3 and row["balanced_accuracy"]["mean"] == pytest.approx(0.7)
    assert row["balanced_accuracy"]["std"] == pytest.approx(0.2)
    assert row["auroc"]["mean"] == pytest.approx(0.6) and row["auroc"]["std"] == pytest.approx(np.std([0.5, 0.7],
                                                                                                        ddof=1))
    assert row["specificity"] == {"mean": 1.0, "std": 0.0}


def test_classifier_budget_oversampling_and_selection():
    # images carry their class in their pixels, so the augmentation hook can read the classes of each batch
    labels = torch.tensor([1] * 6 + [0] * 42)
    images = labels.float().view(-1, 1, 1, 1).expand(-1, 1, 32, 32).clone()
    seen = []

    def spy(batch):
        seen.append(batch[:, 0, 0, 0].clone())
        return batch

    train_slice_classifier(images, labels, steps=30, batch_size=16, augment=spy)
    assert len(seen) == 30  # the budget is in steps, whatever the data size
    plain_share = float(torch.cat(seen).mean())
    assert plain_share == pytest.approx(6 / 48)  # 10 whole epochs: every slice once per epoch
    seen.clear()
    train_slice_classifier(images, labels, steps=30, batch_size=16, augment=spy, balance=1.0)
    assert 0.4 < float(torch.cat(seen).mean()) < 0.6  # oversampled to about equal draws

    # default arguments are unchanged: 2 epochs are 2 x ceil(48 / 16) = 6 steps
    a = train_slice_classifier(images, labels, epochs=2, batch_size=16, seed=3)
    b = train_slice_classifier(images, labels, steps=6, batch_size=16, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

    # selection keeps the weights with the best score: the second of three scorings here
    scores, states = iter([0.2, 0.9, 0.5]), []

    def select(network):
        states.append({k: v.clone() for k, v in network.state_dict().items()})
        return next(scores)

    chosen = train_slice_classifier(images, labels, steps=9, batch_size=16, select=select, select_every=3)
    assert len(states) == 3
    assert all(torch.equal(v, states[1][k]) for k, v in chosen.state_dict().items())
    assert not all(torch.equal(v, states[2][k]) for k, v in chosen.state_dict().items())


def test_classic_augmentation_is_seeded_and_keeps_the_range():
    images = torch.linspace(-1, 1, 4 * 32 * 32).view(4, 1, 32, 32)
    a, b = ClassicAugmentation(seed=5)(images), ClassicAugmentation(seed=5)(images)
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.equal(a, images) and float(a.min()) >= -1 and float(a.max()) <= 1
    assert not torch.equal(ClassicAugmentation(seed=6)(images), a)


@pytest.fixture(scope="module")
def tiny_datalist(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort") / "demo"
    return make_demo_cohort(root, seed=3, num_subjects=8, shape=(48, 52, 12), tumour_fraction=0.5)


def test_study_end_to_end_on_a_tiny_cohort(tmp_path, monkeypatch, tiny_datalist):
    datalist = tiny_datalist
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import augmentation_study

    out = tmp_path / "out"
    record = augmentation_study.main([
        "--datalist", str(datalist), "--output", str(out / "study.json"), "--figure", str(out / "study.png"),
        "--samples_figure", str(out / "samples.png"), "--work_dir", str(tmp_path / "work"), "--seeds", "0",
        "--subject_fractions", "1.0", "--tumour_shares", "0.1", "--classifier_steps", "4",
        "--gan_iterations", "1", "--image_size", "32", "--threads", "1",
    ])
    sys.modules.pop("augmentation_study", None)
    saved = json.loads((out / "study.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(record["summary"]))
    names = [r.name for r in STUDY_REGIMES]
    (condition,) = saved["conditions"]
    assert [run["regime"] for run in condition["runs"]] == names
    for run in condition["runs"]:
        for metric in ("balanced_accuracy", "sensitivity", "specificity", "auroc"):
            assert 0.0 <= run["test"][metric] <= 1.0, (run["regime"], metric)
    # the condition's slices: 10 % tumour slices of the training subjects' no-tumour slices
    train = condition["train"]
    assert train["tumour"] == max(1, round(0.1 * train["no_tumour"] / 0.9))
    counts = {run["regime"]: run["train_counts"] for run in condition["runs"]}
    assert counts["real"] == {"no_tumour": train["no_tumour"], "tumour": train["tumour"]}
    assert counts["real_gan"] == {"no_tumour": train["no_tumour"], "tumour": train["no_tumour"]}
    assert counts["synthetic_only"] == counts["real_gan"]
    # the GAN saw training subjects only
    subjects = saved["split"]["subjects"]
    gan = json.loads((tmp_path / "work" / "gan" / condition["name"] / "gan_training_subjects.json").read_text())
    assert set(gan["subjects"]) <= set(subjects["train"])
    assert not set(gan["subjects"]) & (set(subjects["validation"]) | set(subjects["test"]))
    assert gan["class_counts"] == [train["no_tumour"], train["tumour"]]
    table = (out / "study.md").read_text().splitlines()
    assert len(table) == 2 + len(names) and all(f"`{n}`" in "\n".join(table) for n in names)
    assert Image.open(out / "study.png").size[0] > 400 and Image.open(out / "samples.png").size[0] > 400


def test_study_bundle_config_runs(tmp_path, tiny_datalist):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(STUDY),
           "--bundle_root", str(STUDY.parents[1]), "--datalist", str(tiny_datalist),
           "--output_dir", str(out), "--seeds", "[1]", "--subject_fractions", "[1.0]", "--tumour_shares", "[0.2]",
           "--classifier_steps", "3", "--gan_iterations", "1", "--image_size", "32"]
    result = subprocess.run(cmd, cwd=tmp_path, env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((out / "augmentation_study.json").read_text())
    assert [(row["regime"], row["seeds"]) for row in record["summary"]] == [(r.name, 1) for r in STUDY_REGIMES]
    assert record["config"]["seeds"] == [1] and record["conditions"][0]["tumour_share"] == 0.2
    assert "| `real_gan` |" in result.stdout and (out / "augmentation_study.md").read_text() in result.stdout + "\n"
    assert (out / "study_results.png").is_file() and (out / "study_gan_samples.png").is_file()
