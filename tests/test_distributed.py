"""Data-parallel training with torchrun: 2 CPU processes on gloo, through ``python -m monai.bundle``."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from monai.bundle import ConfigParser

from monai_mri_gan.data import make_demo_cohort
from monai_mri_gan.engines.distributed import is_main_process, local_device
from monai_mri_gan.runs import build_network, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundles" / "brain_mri_gan" / "configs"
TRAIN, MULTI = CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json"
# handlers that write files or print: rank 0 only; the others change training state and run on every rank
RANK_ZERO_TARGETS = {
    "monai.handlers.StatsHandler", "monai.handlers.TensorBoardStatsHandler", "ignite.handlers.ProgressBar",
    "monai_mri_gan.handlers.SampleGridSaver", "monai_mri_gan.handlers.GanCheckpointSaver",
    "monai.handlers.ValidationHandler", "monai_mri_gan.handlers.CohortSummaryWriter",
}
NETWORKS = ("generator", "ema_generator", "discriminator")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dump_config(path: Path, dump_dir: Path) -> Path:
    """A test-only config merged last: at finalize, every rank saves its networks, named by its rank."""
    save = ("$torch.save({" + ", ".join(f"'{n}': @{n}.state_dict()" for n in NETWORKS) + "}, '"
            + str(dump_dir) + "/rank' + str(torch.distributed.get_rank()) + '.pt')")
    finalize = ConfigParser.load_config_file(MULTI)["finalize"]
    path.write_text(json.dumps({"finalize": [finalize[0], save, *finalize[1:]]}))
    return path


def _torchrun(tmp_path: Path, cohort: Path, out: Path, dump: Path, max_epochs: int, logs: Path):
    configs = [str(TRAIN), str(MULTI), str(dump)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "--log_dir", str(logs), "--redirects", "3",
           "-m", "monai.bundle", "run", "training", "--config_file", repr(configs), "--datalist", str(cohort),
           "--output_dir", str(out), "--image_size", "32", "--max_epochs", str(max_epochs), "--batch_size", "4",
           "--log_every", "1", "--r1_every", "4",  # the lazy R1 double backward through DDP at iterations 4, 8
           "--slicing#tumour_min_voxels", "4"]  # the tiny phantoms' tumour cores are small: 2 tumour slices of 40
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    rank_logs = {int(p.parent.name): p.read_text() + (p.parent / "stderr.log").read_text()
                 for p in logs.glob("*/attempt_0/*/stdout.log")}
    assert result.returncode == 0, result.stderr[-2000:] + "".join(v[-2000:] for v in rank_logs.values())
    assert sorted(rank_logs) == [0, 1]
    return rank_logs


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_multi_gpu_config_limits_writers_to_rank_zero():
    """The main_process switch of multi_gpu_train.json turns off exactly the handlers that write or print."""
    parser = ConfigParser()
    parser.read_config([str(TRAIN), str(MULTI)])
    handlers = [h for h in parser["train"]["handlers"] if isinstance(h, dict)]  # not references to components
    gated = {h["_target_"] for h in handlers if "main_process" in str(h.get("_disabled_", ""))}
    assert gated == RANK_ZERO_TARGETS
    assert parser["summary_writer"]["_disabled_"] == "$not @main_process"
    # every component that builds a SummaryWriter (a file, at construction) is gated too
    for section in (parser["train"]["handlers"], parser["validate"]["handlers"]):
        for h in section:
            if isinstance(h, dict) and h["_target_"].endswith("TensorBoardStatsHandler"):
                assert "main_process" in h["_disabled_"]
    assert parser["train"]["trainer"]["_target_"].endswith("DistributedSliceGanTrainer")
    # each rank draws from its own shard with the class-balanced weights of the single-process sampler
    assert parser["train"]["sampler"]["_target_"] == "monai.data.DistributedWeightedRandomSampler"
    assert parser["train"]["dataloader"]["sampler"] == "@train#sampler"


def test_single_process_defaults():
    """Without torchrun: rank 0, the CPU (here), nothing to initialise."""
    assert is_main_process() == (int(os.environ.get("RANK", "0")) == 0)
    assert local_device() == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))


def test_torchrun_two_ranks_train_identical_networks_and_resume(tmp_path):
    cohort = make_demo_cohort(tmp_path / "cohort", seed=3, num_subjects=4, shape=(48, 52, 12))
    out, dumps = tmp_path / "run", tmp_path / "dumps"
    dumps.mkdir()
    dump = _dump_config(tmp_path / "dump.json", dumps)
    workdir = tmp_path / "work"
    workdir.mkdir()

    logs = _torchrun(workdir, cohort, out, dump, 1, tmp_path / "logs1")
    # both ranks trained; only rank 0 printed stats and wrote files
    assert "Engine run finished" in logs[0] and "Engine run finished" in logs[1]
    assert "g_loss" in logs[0] and "saved checkpoint" in logs[0] and "sample grid" in logs[0]
    assert "g_loss" not in logs[1] and "saved checkpoint" not in logs[1] and "sample grid" not in logs[1]
    # losses are averaged over ranks; the R1 penalty was applied at iteration 4
    assert "Iter: 4/5" in logs[0] and "r1: 0.0000" not in logs[0].split("Iter: 4/5")[1].splitlines()[0]
    files = _files(out)
    events = [f for f in files if f.startswith("tensorboard/")]
    assert len(events) == 1  # one SummaryWriter, rank 0's
    written = ["checkpoint_epoch0001.pt", "cohort.json", "models/model.pt", "models/model_record.json",
               "run_fingerprint.json", "samples/epoch_0001.png"]
    assert sorted(set(files) - set(events)) == written
    assert _files(workdir) == []  # no stray ./runs from a default TensorBoard writer on rank 1

    ckpt = load_checkpoint(out)
    # 4 subjects give 40 slices; each rank reads 20 of them in batches of 4
    epoch_length = ckpt["trainer"]["epoch_length"]
    assert epoch_length == 5 and ckpt["trainer"]["iteration"] == epoch_length
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name in NETWORKS:
        assert ranks[0][name].keys() == ranks[1][name].keys() == ckpt[name].keys()
        for key, value in ranks[0][name].items():
            assert torch.equal(value, ranks[1][name][key]), f"{name}.{key} differs between ranks"
            assert torch.equal(value, ckpt[name][key]), f"{name}.{key} differs from the checkpoint"
    # the checkpoint holds unwrapped state dicts: single-process networks load it as it is
    config = ckpt["config"]
    g = build_network(config, "generator")
    g.load_state_dict(ckpt["ema_generator"])
    build_network(config, "discriminator").load_state_dict(ckpt["discriminator"])
    trained = ranks[0]["generator"]["project.weight"].clone()

    # a second epoch under torchrun resumes on both ranks from rank 0's checkpoint, and the ranks stay in step
    logs = _torchrun(workdir, cohort, out, dump, 2, tmp_path / "logs2")
    assert all("Restored all variables from" in logs[r] for r in (0, 1))
    resumed = load_checkpoint(out)
    assert resumed["trainer"]["iteration"] == 2 * epoch_length
    ranks = [torch.load(dumps / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert all(torch.equal(v, ranks[1][n][k]) for n in NETWORKS for k, v in ranks[0][n].items())
    assert not torch.equal(trained, ranks[0]["generator"]["project.weight"])
    assert _files(workdir) == []
