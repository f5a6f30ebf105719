"""benchmarks/gan_quality.py end to end on a tiny cohort: equal wall time per variant, then the bundle's evaluation."""

import json
from pathlib import Path

import pytest

from monai_mri_gan.data import make_demo_cohort

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_variants_train_for_the_same_wall_time_and_are_evaluated(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gan_quality

    datalist = make_demo_cohort(tmp_path / "demo", seed=3, num_subjects=4, shape=(48, 52, 12))
    output = tmp_path / "gan_quality.json"
    record = gan_quality.main(["--variants", "default", "ada", "--minutes", "0.1", "--num_samples", "64",
                               "--datalist", str(datalist), "--output", str(output),
                               "--work_dir", str(tmp_path / "runs")])
    saved = json.loads(output.read_text())
    assert saved == json.loads(json.dumps(record))
    assert [r["variant"] for r in saved["runs"]] == ["default", "ada"]
    for run in saved["runs"]:
        assert 6.0 <= run["train_seconds"] < 30.0  # stopped by the time limit (6 s), at the end of an iteration
        assert run["iterations"] > 0 and set(run["generated"]) == set(gan_quality.METRICS)
        assert run["real_vs_real"]["precision"] is not None
    ada = saved["runs"][1]
    assert ada["overrides"]["ada_target"] == 0.6 and 0.0 <= ada["augment_p"] <= 1.0
    assert saved["runs"][0]["augment_p"] is None  # off: no adjustment was made
