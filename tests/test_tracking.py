"""MLflow tracking of a bundle run with MONAI's own flag, ``--tracking mlflow``, on its local SQLite store."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from monai.handlers import MLFlowHandler
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from monai_mri_gan.data import make_demo_cohort
from monai_mri_gan.handlers import describe_tracked_run

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_mri_gan" / "configs"


def _artifacts(client: mlflow.MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_bundle_run_records_params_losses_metrics_and_grids(tmp_path):
    cohort = make_demo_cohort(tmp_path / "cohort", seed=3, num_subjects=4, shape=(48, 52, 12))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(CONFIGS / "train.json"),
           "--tracking", "mlflow", "--datalist", str(cohort), "--output_dir", str(out),
           "--image_size", "32", "--max_epochs", "2", "--batch_size", "8", "--log_every", "1",
           "--evaluate_every", "1", "--evaluate_num_samples", "16"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"PYTHONWARNINGS": "ignore"}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    # the settings' default store: a SQLite database in output_dir, artifacts beside it
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("brain_mri_gan")
    assert experiment is not None and experiment.artifact_location == (out / "mlruns").as_uri()
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    run_id = run.info.run_id

    params = run.data.params
    assert params["image_size"] == "32" and params["latent_dim"] == "128" and params["num_classes"] == "2"
    assert params["loss"] == "bce" and params["max_epochs"] == "2" and params["epoch_length"] == "5"
    assert params["mode_seeking_weight"] == "0.3"

    # losses at every iteration (38 slices in batches of 8: 5 per epoch), the same values TensorBoard received
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    for key in ("g_loss", "d_loss", "d_real", "d_fake", "mode_seeking"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [step for step, _ in history] == list(range(1, 11))
        board = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in board] == list(range(1, 11))
        assert all(abs(a - b) <= 1e-6 * max(1.0, abs(a)) for (_, a), (_, b) in zip(history, board, strict=True))
    assert all(0.0 < m.value < 1.0 for m in client.get_metric_history(run_id, "d_real"))

    # evaluation metrics once per epoch; the last equal the evaluation report
    report = json.loads((out / "evaluation" / "metrics.json").read_text())
    for key in ("kid_mean", "fid", "precision", "recall"):
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert [step for step, _ in history] == [1, 2]
        assert history[-1][1] == pytest.approx(report["generated"][key], rel=1e-9)

    # every sample grid is an artifact, byte for byte the file the run wrote
    artifacts = _artifacts(client, run_id)
    assert {"epoch_0001.png", "epoch_0002.png", "metrics.json", "samples.png", "metrics_vs_floor.png"} <= set(artifacts)
    # local outputs stay local: the executed config (it names the data's folders) and pictures of real slices
    assert (out / "local" / "closest_pairs.png").is_file() and "closest_pairs.png" not in artifacts
    executed = list(out.glob("config_*.json"))
    assert len(executed) == 1 and json.loads(executed[0].read_text())["experiment_name"] == "brain_mri_gan"
    assert not [a for a in artifacts if a.startswith("config_")]
    assert all(str(cohort.parent) not in json.dumps(v) for v in run.data.params.values())
    local = Path(client.download_artifacts(run_id, "epoch_0002.png", str(tmp_path / "download")))
    assert local.read_bytes() == (out / "samples" / "epoch_0002.png").read_bytes()


def test_local_artifacts_are_uploaded_only_when_asked(tmp_path):
    record = {"family": "whole_slice", "image_size": 64}
    for upload_local, expected in [(False, ("grids",)), (True, ("config.json", "grids", "local"))]:
        handler = MLFlowHandler(tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}", artifacts=["config.json"])
        (handler,) = describe_tracked_run([handler], record, ["grids"], log_every=5, local_artifacts=["local"],
                                          upload_local=upload_local)
        assert handler.artifacts == expected
        assert handler.experiment_param == record and handler.iteration_log(None, 10)
