"""The downstream study: subject splits, scarcity levels, the leakage guard, metrics, and the --quick run."""

import json
import math
import statistics
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import get_track_meta, set_track_meta

from monai_mri_gan.metrics import train_slice_classifier
from monai_mri_gan.study import (
    ClassicAugmentation,
    StudyJournal,
    StudySettings,
    SubjectLeakageError,
    SubjectSplit,
    check_no_leakage,
    classification_metrics,
    no_lesion_floor,
    run_study,
    scarce_training_subjects,
    split_subjects,
    study_datalist,
    subject_classes,
    write_training_datalist,
)
from monai_mri_gan.study.data import datalist_slices, tumour_mask
from monai_mri_gan.study.scoring import tumour_probabilities

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]


def comparable(runs):
    """Run records without their timings: what must not depend on workers or interruptions."""
    return [{k: v for k, v in run.items() if k != "seconds"} for run in runs]


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


def test_leakage_guard_refuses_a_held_out_subject(tmp_path):
    split = SubjectSplit(train=("a", "b"), validation=("c",), test=("d",))
    check_no_leakage(["a", "b", "a"], split)  # training subjects only: fine
    with pytest.raises(SubjectLeakageError, match=r"\['d'\]"):
        check_no_leakage(["a", "d"], split)
    with pytest.raises(SubjectLeakageError, match=r"\['c'\]"):
        check_no_leakage(["c"], split)
    # the datalist a condition's generators train on is checked before it is written
    items = [{"image": "a.nii.gz", "subject": "a"}, {"image": "d.nii.gz", "subject": "d"}]
    with pytest.raises(SubjectLeakageError, match=r"\['d'\]"):
        write_training_datalist(items, split, tmp_path / "train_datalist.json")
    assert not (tmp_path / "train_datalist.json").exists()
    written = write_training_datalist(items[:1], split, tmp_path / "train_datalist.json")
    assert json.loads(written.read_text())["training"] == items[:1]


def test_scarcity_is_in_tumour_subjects_and_nested():
    subjects, classes = _cohort_like(num_subjects=30, num_tumour=12)
    per_subject = subject_classes(subjects, classes)
    split = split_subjects(per_subject, seed=3)
    tumour = [s for s in split.train if per_subject[s] == 1]
    healthy = [s for s in split.train if per_subject[s] == 0]
    levels = {k: scarce_training_subjects(split, per_subject, k, seed=3) for k in (1, 2, 4, None)}
    for k, chosen in levels.items():
        assert set(healthy) <= set(chosen) and set(chosen) <= set(split.train)
        assert sum(per_subject[s] for s in chosen) == (len(tumour) if k is None else k)
    assert set(levels[1]) <= set(levels[2]) <= set(levels[4]) <= set(levels[None])
    assert scarce_training_subjects(split, per_subject, 2, seed=3) == levels[2]
    assert any(scarce_training_subjects(split, per_subject, 2, seed=s) != levels[2] for s in range(4, 9))
    with pytest.raises(ValueError, match="between 1 and"):
        scarce_training_subjects(split, per_subject, len(tumour) + 1)


def test_classification_metrics_at_the_validation_threshold():
    # validation: ten healthy slices scored 0.0 .. 0.9; 90 % specificity needs the threshold at 0.8
    val_labels = torch.tensor([0] * 10 + [1, 1])
    val_scores = torch.tensor([i / 10 for i in range(10)] + [0.95, 0.5])
    test_labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    test_scores = torch.tensor([0.9, 0.85, 0.7, 0.1, 0.81, 0.2, 0.3, 0.05])
    m = classification_metrics(val_labels, val_scores, test_labels, test_scores)
    assert m["threshold"] == pytest.approx(0.8)
    # called tumour above 0.8: 0.9, 0.85 of the tumour slices (2 of 4), 0.81 of the healthy ones (1 of 4)
    assert m["sensitivity_at_90_specificity"] == pytest.approx(0.5)
    assert m["test_specificity"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.75) / 2)
    # AUROC: of the 16 tumour-healthy pairs the tumour slice scores higher in 12 (0.7 loses to 0.81; 0.1 to three)
    assert m["auroc"] == pytest.approx(12 / 16)
    with pytest.raises(ValueError, match="no healthy slice"):
        classification_metrics(torch.ones(3), torch.rand(3), test_labels, test_scores)


def test_no_lesion_floor_learns_where_tumour_slices_lie():
    # tumour slices sit mid-volume: position alone ranks them, though no feature shows a lesion
    position = torch.linspace(0, 1, 200)
    labels = ((position - 0.5).abs() < 0.15).long()
    features = torch.stack([position, position**2, torch.rand(200, generator=torch.Generator().manual_seed(0))], 1)
    scores = no_lesion_floor(features, labels, features)
    assert classification_metrics(labels, scores, labels, scores)["auroc"] > 0.95


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


def test_classic_augmentation_is_seeded_keeps_the_range_and_moves_masks():
    images = torch.linspace(-1, 1, 4 * 32 * 32).view(4, 1, 32, 32)
    a, b = ClassicAugmentation(seed=5)(images), ClassicAugmentation(seed=5)(images)
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.equal(a, images) and float(a.min()) >= -1 and float(a.max()) <= 1
    assert not torch.equal(ClassicAugmentation(seed=6)(images), a)
    # a mask moves with its slice: a square mask of a square bright patch stays on the patch
    patch = -torch.ones(8, 1, 32, 32)
    patch[:, :, 10:20, 4:14] = 1.0
    masks = (patch > 0).to(torch.uint8)
    moved, moved_masks = ClassicAugmentation(seed=2)(patch, masks)
    assert moved_masks.dtype == torch.uint8 and set(moved_masks.unique().tolist()) <= {0, 1}
    assert not torch.equal(moved_masks, masks)
    assert float((moved[moved_masks.bool()] > 0).float().mean()) > 0.9
    # it runs on plain tensors for speed: the same values as with MONAI's metadata tracking, which it leaves on
    set_track_meta(False)
    try:
        untracked = ClassicAugmentation(seed=2)(patch, masks)
    finally:
        set_track_meta(True)
    assert torch.equal(untracked[0], moved) and torch.equal(untracked[1], moved_masks) and get_track_meta()


def test_datalist_slices_reads_the_synthetic_items_alone_when_asked(tmp_path):
    """The study reads only a set's synthetic items: the same slices as reading all of them and keeping those."""
    rng = np.random.default_rng(0)
    affine = np.diag([0.9, 1.1, 3.0, 1.0])
    items = []
    for n in range(6):
        image = rng.uniform(0, 500, size=(24, 20, 1)).astype(np.float32)
        label = np.zeros((24, 20, 1), np.int16)
        label[5 + n:10 + n, 4:9] = 1 + n % 4
        nib.save(nib.Nifti1Image(image, affine), tmp_path / f"s{n}.nii")
        nib.save(nib.Nifti1Image(label, affine), tmp_path / f"s{n}_mask.nii")
        items.append({"image": f"s{n}.nii", "label": f"s{n}_mask.nii", "class": int(n % 2),
                      "synthetic": n >= 4, "subject": f"subject-{n}"})
    path = tmp_path / "datalist_augmented.json"
    path.write_text(json.dumps({"training": items}))
    everything = datalist_slices(path, 16, [1, 3, 4])
    synthetic = datalist_slices(path, 16, [1, 3, 4], synthetic_only=True)
    assert len(everything) == 6 and len(synthetic) == 2 and bool(synthetic.synthetic.all())
    kept = everything.subset([4, 5])
    assert torch.equal(synthetic.images, kept.images) and torch.equal(synthetic.masks, kept.masks)
    assert synthetic.subjects == ["subject-4", "subject-5"] and synthetic.classes.tolist() == [0, 1]
    assert synthetic.masks.sum() > 0 and int(synthetic.masks.max()) == 1  # labels 1 and 2: only 1 counts


def test_quick_study_runs_and_its_paired_differences_are_per_split_differences(tmp_path, monkeypatch):
    """``--quick`` end to end: the output contract, and paired differences recomputed from the runs."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import augmentation_study

    output = tmp_path / "out" / "augmentation_study.json"
    record = augmentation_study.main(["--quick", "--output", str(output), "--work_dir", str(tmp_path / "work"),
                                      "--threads", "1"])
    saved = json.loads(output.read_text())
    assert {"summary", "paired", "splits", "runs", "settings", "conditions"} <= set(saved)
    assert output.with_suffix(".md").is_file() and output.with_suffix(".png").is_file()
    assert len(saved["splits"]) == 2 and {r["tumour_subjects"] for r in saved["runs"]} == {2}
    for row in saved["summary"]:
        assert set(row) == {"task", "tumour_subjects", "regime", "metric", "mean", "ci_low", "ci_high", "n_splits"}
    # every condition trained on its own training subjects only: no held-out subject in a training datalist
    for split in saved["splits"]:
        held_out = set(split["validation"]) | set(split["test"])
        path = tmp_path / "work" / f"split{split['split']}" / "k2" / "train_datalist.json"
        subjects = {i["subject"] for i in json.loads(path.read_text())["training"]}
        assert subjects and subjects <= set(split["train"]) and not subjects & held_out
    # the paired differences are the differences of the per-split metrics
    def value(regime, split, metric, task):
        found = [r["metrics"][metric] for r in saved["runs"]
                 if (r["regime"], r["split"], r["task"]) == (regime, split, task)]
        return statistics.mean(v for v in found if v is not None) if found else None

    checked = 0
    for row in saved["paired"]:
        diffs = [value(row["regime"], s["split"], row["metric"], row["task"])
                 - value(row["versus_regime"], s["split"], row["metric"], row["task"]) for s in saved["splits"]
                 if value(row["regime"], s["split"], row["metric"], row["task"]) is not None
                 and value(row["versus_regime"], s["split"], row["metric"], row["task"]) is not None]
        if diffs and row["mean_difference"] is not None:
            assert row["mean_difference"] == pytest.approx(statistics.mean(diffs), abs=1e-9)
            assert row["n_splits"] == len(diffs)
            checked += 1
    assert checked >= 10
    assert {r["versus"] for r in saved["paired"]} == {"best_standard_fix", "copy_paste"}
    assert record["quick"] is True and math.isfinite(record["wall_seconds"])


def test_classifier_stops_early_and_keeps_its_curve():
    labels = torch.tensor([1] * 8 + [0] * 24)
    images = torch.randn(32, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    history = []
    train_slice_classifier(images, labels, steps=200, batch_size=8, select=lambda network: 0.5, select_every=10,
                           patience=3, history=history, amp=True)
    # a score that never improves: the first scoring is the best, three more without improvement stop the run
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert all(h["score"] == 0.5 and math.isfinite(h["loss"]) for h in history)


def test_tumour_probabilities_softmax_and_its_bf16_validation_form():
    images = torch.randn(40, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    network = train_slice_classifier(images, torch.tensor([0, 1] * 20), num_classes=2, widths=(4, 8, 8, 8), steps=5,
                                     batch_size=8, seed=0)
    with torch.no_grad():
        logits = network.eval()(images).float()
    expected = torch.exp(logits[:, 1]) / torch.exp(logits).sum(1)
    assert torch.allclose(tumour_probabilities(network, images, batch_size=7), expected, atol=1e-6)
    fast = tumour_probabilities(network, images, amp=True)  # bf16: close, not equal
    assert fast.dtype == torch.float32 and torch.allclose(fast, expected, atol=0.03)


def test_tumour_mask_counts_the_study_labels_only():
    label = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 2.0]])
    assert tumour_mask(label, [1, 3, 4]).tolist() == [[0, 1, 0, 1, 1, 0]]
    assert tumour_mask(label, None).tolist() == [[0, 1, 1, 1, 1, 1]]
    assert tumour_mask(label, None).dtype == torch.uint8


def test_workers_change_the_wall_time_not_the_record(tmp_path):
    """Two spawned workers give every run exactly as one process does (both conditions of one split)."""
    datalist = study_datalist(demo_subjects=24)
    settings = StudySettings(image_size=32, classifier_steps=6, segmenter_steps=6, eval_every=3, patience=1)
    options = {"painter_config": ROOT / "bundles" / "brain_tumour_painter" / "configs" / "train.json",
               "split_seeds": [1], "tumour_subjects": [2, None], "regimes": ["oversampling"], "settings": settings}
    one = run_study(datalist, tmp_path / "one", workers=1, **options)
    seen = []
    two = run_study(datalist, tmp_path / "two", workers=2, on_run=seen.append, **options)

    assert len(one["runs"]) == 2 * 3  # per level: the no-lesion floor, a classifier and a segmenter
    assert comparable(one["runs"]) == comparable(two["runs"]) == comparable(seen)  # every run reported, in order
    assert one["splits"] == two["splits"] and one["cohort"]["slices"] == two["cohort"]["slices"]
    assert [c["tumour_subjects"] for c in two["conditions"]] == [2, "all"]
    with pytest.raises(ValueError, match="workers"):
        run_study(datalist, tmp_path / "none", workers=0, **options)
    # a condition that fails in a worker stops the study with its own error
    with pytest.raises(ValueError, match="tumour_subjects must be between 1 and"):
        run_study(datalist, tmp_path / "bad", workers=2, **{**options, "tumour_subjects": [2, 50]})


def test_an_interrupted_study_resumes_from_its_journal_to_the_same_record(tmp_path):
    """A study stopped after its first condition goes on from the journal: only the second condition runs again,
    and the record equals an uninterrupted study's, run by run; another study's journal is refused."""
    datalist = study_datalist(demo_subjects=24)
    settings = StudySettings(image_size=32, classifier_steps=6, segmenter_steps=6, eval_every=3, patience=1)
    options = {"painter_config": ROOT / "bundles" / "brain_tumour_painter" / "configs" / "train.json",
               "split_seeds": [1], "tumour_subjects": [2, None], "regimes": ["oversampling"], "settings": settings}
    whole = run_study(datalist, tmp_path / "whole", **options)

    class Stop(Exception):
        pass

    path, fingerprint = tmp_path / "study.journal.jsonl", {"settings": "a", "code": "abc"}
    journal = StudyJournal(path, fingerprint)

    def stop_after_one(result):
        journal.add(result)
        raise Stop

    with pytest.raises(Stop):
        run_study(datalist, tmp_path / "first", on_condition=stop_after_one, **options)
    with path.open("a") as handle:
        handle.write('{"condition": {"runs": [')  # the line being written when the machine went down
    with pytest.raises(FileExistsError, match="--resume"):
        StudyJournal(path, fingerprint)
    with pytest.raises(ValueError, match=r"code: journal 'abc', now 'abd'"):
        StudyJournal(path, {**fingerprint, "code": "abd"}, resume=True)
    resumed = StudyJournal(path, fingerprint, resume=True)
    assert len(resumed.completed) == 1 and resumed.completed[0]["condition"]["tumour_subjects"] == 2
    seen = []
    again = run_study(datalist, tmp_path / "again", completed=resumed.completed, on_condition=resumed.add,
                      on_run=seen.append, **options)

    assert again["resumed"] == 1 and {r["tumour_subjects"] for r in seen} == {"all"}  # only k = all ran again
    assert comparable(again["runs"]) == comparable(json.loads(json.dumps(whole["runs"])))
    assert json.loads(json.dumps(again["splits"])) == json.loads(json.dumps(whole["splits"]))
    assert [c["tumour_subjects"] for c in again["conditions"]] == [2, "all"]
    timeline = resumed.timeline(12.5)
    assert [row["conditions"] for row in timeline] == [1, 1] and timeline[1]["counted_seconds"] == 12.5
    assert timeline[0]["counted_seconds"] > 0  # the first invocation counts to its one finished condition
    resumed.remove()
    assert not path.exists()
