"""Both bundles as the MONAI model zoo takes them: training leaves ``models/model.pt`` (the EMA generator, its run
record beside it), inference.json builds ``network_def`` from its own arguments and runs from that file,
``ckpt_export`` turns it into TorchScript, MONAI's inference properties hold, and an offline mirror of the zoo's
``ci/verify_bundle.py`` in full mode passes on a copy of each bundle holding a model file trained by a tiny run."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out
from monai.handlers import CheckpointLoader
from test_synthesis import bundle

from monai_mri_gan.handlers import GanCheckpointSaver
from monai_mri_gan.runs import (
    build_network,
    export_model,
    generator_from_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    model_record_path,
    read_model_record,
)
from monai_mri_gan.synthesis import LesionPainterSynthesiser, SliceSynthesiser, sha256_file, sidecar_path

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"
SCHEMA = BUNDLES / "brain_mri_gan" / "configs" / "meta_schema.json"
NAMES = ("brain_mri_gan", "brain_tumour_painter")
PAINTER_FEATURES = [4, 4, 8, 8, 16, 4]
# the tiny runs' generator arguments that differ from train.json's defaults, as inference.json's own values
TINY_NETWORKS = {"brain_mri_gan": {"image_size": 32}, "brain_tumour_painter": {"g_features": PAINTER_FEATURES}}


@pytest.fixture(scope="module")
def painter_run(gan, tmp_path_factory):
    """A tiny lesion painter (32 px crops) trained by its bundle for two epochs on the tiny GAN's demo cohort."""
    root = tmp_path_factory.mktemp("painter_bundle_run")
    run = root / "run"
    result = bundle("run", "training", "--config_file", str(BUNDLES / "brain_tumour_painter/configs/train.json"),
                    "--datalist", str(gan["datalist"]), "--output_dir", str(run), "--max_epochs", "2",
                    "--batch_size", "4", "--crop_size", "32", "--g_features", str(PAINTER_FEATURES),
                    "--d_channels", "4", "--d_layers", "2", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"root": root, "datalist": gan["datalist"], "run": run, "checkpoint": latest_checkpoint(run)}


@pytest.fixture
def trained(request):
    """The tiny run of the bundle named by the test's ``name`` parameter."""
    return request.getfixturevalue({"brain_mri_gan": "gan", "brain_tumour_painter": "painter_run"}[
        request.node.callspec.params["name"]])


def bundle_copy(tmp_path: Path, name: str, run: Path) -> Path:
    """A copy of a bundle holding the model file a tiny run left, its inference.json set to that run's network."""
    root = tmp_path / name
    shutil.copytree(BUNDLES / name, root)
    shutil.copytree(run / "models", root / "models")
    config = root / "configs" / "inference.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **TINY_NETWORKS[name]}, indent=4))
    return root


def example_inputs(network: torch.nn.Module, size: int) -> tuple[torch.Tensor, ...]:
    """Seeded inputs as synthesis feeds them: latents and classes, or blanked crops, their condition and latents."""
    g = torch.Generator().manual_seed(0)
    if hasattr(network, "num_labels"):
        condition = (torch.rand(4, 1 + network.num_labels, size, size, generator=g) > 0.7).float()
        image = torch.rand(4, 1, size, size, generator=g) * 2 - 1
        return image * (1 - condition[:, :1]), condition, torch.randn(4, network.latent_dim, generator=g)
    return torch.randn(6, network.latent_dim, generator=g), torch.tensor([0, 1, 0, 1, 1, 0])


@pytest.mark.parametrize("name", NAMES)
def test_training_leaves_the_ema_generator_as_models_model_pt(name, trained):
    model = trained["run"] / "models" / "model.pt"
    weights = torch.load(model, weights_only=True)
    checkpoint = load_checkpoint(trained["checkpoint"])
    ema, raw = checkpoint["ema_generator"], checkpoint["generator"]
    assert list(weights) == list(ema)
    assert all(torch.equal(weights[k], ema[k]) for k in weights)  # the last checkpoint's EMA weights, exactly
    assert not all(torch.equal(weights[k], raw[k]) for k in weights)
    described = read_model_record(model)
    assert described["record"] == checkpoint["config"] and described["weights_key"] == "ema_generator"
    assert described["iteration"] == checkpoint["trainer"]["iteration"] > 0
    # as model-zoo tools load it: MONAI's CheckpointLoader, one network, strict
    network = build_network(checkpoint["config"])
    CheckpointLoader(load_path=str(model), load_dict={"model": network}, strict=True)(Engine(lambda e, b: None))
    assert all(torch.equal(v, weights[k]) for k, v in network.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
def test_network_def_is_built_from_the_training_defaults(name):
    configs = BUNDLES / name / "configs"
    train, infer = ConfigParser(), ConfigParser()
    train.read_config(configs / "train.json")
    infer.read_config(configs / "inference.json")
    infer["bundle_root"] = "/bundle"
    generator, network = train.get_parsed_content("generator"), infer.get_parsed_content("network_def")
    assert type(network) is type(generator) and network.init_args == generator.init_args
    assert infer.get_parsed_content("ckpt_path") == "/bundle/models/model.pt"


def test_a_network_def_other_than_the_run_names_both_values(gan, tmp_path):
    parser = ConfigParser()
    parser.read_config(BUNDLES / "brain_mri_gan/configs/inference.json")
    network = parser.get_parsed_content("network_def")  # 64 px by default; the tiny run is 32 px
    with pytest.raises(ValueError, match="image_size=64 given, 32 in the run record") as error:
        SliceSynthesiser(gan["run"] / "models" / "model.pt", tmp_path, datalist=gan["datalist"], generator=network)
    assert "base_channels" in str(error.value)  # the default width follows the size: named too


def test_model_file_and_its_record(gan, tmp_path):
    # any checkpoint entry exports; the pair reads back as a checkpoint of the record and those weights
    model = export_model(gan["checkpoint"], tmp_path / "models" / "model.pt", "generator")
    checkpoint, loaded = load_checkpoint(gan["checkpoint"]), load_checkpoint(model)
    assert sorted(loaded) == ["config", "generator"] and loaded["config"] == checkpoint["config"]
    assert all(torch.equal(v, checkpoint["generator"][k]) for k, v in loaded["generator"].items())
    with pytest.raises(KeyError, match="'ema_generator'"):
        generator_from_checkpoint(model)
    # weights the record does not describe are refused, naming both files' digests
    weights = torch.load(model, weights_only=True)
    weights[next(iter(weights))] += 1
    torch.save(weights, model)
    with pytest.raises(ValueError, match="describes other weights"):
        load_checkpoint(model)
    model_record_path(model).unlink()
    with pytest.raises(KeyError, match="model_record.json"):
        generator_from_checkpoint(model)
    with pytest.raises(ValueError, match="run record"):
        GanCheckpointSaver(tmp_path, {"ema_generator": torch.nn.Linear(1, 1)}, model_weights="ema_generator")


@pytest.mark.parametrize("name", NAMES)
def test_inference_runs_from_the_model_file(name, trained, tmp_path):
    """The bundle's inference.json on its models/model.pt writes what synthesis from the run folder writes."""
    root = bundle_copy(tmp_path, name, trained["run"])
    out, expected = tmp_path / "synthetic", tmp_path / "from_run"
    count = ["--samples_per_class" if name == "brain_mri_gan" else "--num_samples", "2"]
    result = bundle("run", "inference", "--config_file", str(root / "configs/inference.json"), "--bundle_root",
                    str(root), "--datalist", str(trained["datalist"]), "--output_dir", str(out), *count, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    if name == "brain_mri_gan":
        written = SliceSynthesiser(trained["run"], expected, samples_per_class=2, datalist=trained["datalist"]).run()
    else:
        written = LesionPainterSynthesiser(trained["run"], expected, num_samples=2, datalist=trained["datalist"]).run()
    assert len(written) == (4 if name == "brain_mri_gan" else 2)
    for entry in written:
        image = out / entry["image"].name
        np.testing.assert_array_equal(np.asarray(nib.load(image).dataobj), np.asarray(nib.load(entry["image"]).dataobj))
        record = json.loads(sidecar_path(image).read_text())
        assert record["synthetic"] is True and record["checkpoint_sha256"] == sha256_file(root / "models/model.pt")
    # the provenance key stays with the bundle, never beside the weights it ships
    assert (root / "provenance_key").is_file() and not (root / "models" / "provenance_key").exists()


@pytest.mark.parametrize("name,weights", [
    ("brain_mri_gan", "model"), ("brain_mri_gan", "checkpoint"), ("brain_tumour_painter", "model")])
def test_ckpt_export_torchscript_matches_eager(name, weights, trained, tmp_path):
    root = bundle_copy(tmp_path, name, trained["run"])
    target = tmp_path / "generator.ts"
    # the bundle's model file, as the zoo exports it; or a full checkpoint, naming its entry
    source = ["--ckpt_file", str(root / "models/model.pt")] if weights == "model" else [
        "--ckpt_file", str(trained["checkpoint"]), "--key_in_ckpt", "ema_generator"]
    result = bundle("ckpt_export", "network_def", "--filepath", str(target), *source, "--config_file",
                    str(root / "configs/inference.json"), "--meta_file", str(root / "configs/metadata.json"),
                    "--bundle_root", str(root), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(target))
    eager = generator_from_checkpoint(root / "models/model.pt")
    raw = generator_from_checkpoint(trained["checkpoint"], weights_key="generator")
    for size in {32, 80} if name == "brain_tumour_painter" else {32}:  # the run's crops and the default's
        inputs = example_inputs(eager, size)
        with torch.no_grad():
            expected, got = eager(*inputs), scripted(*inputs)
            assert not torch.allclose(raw(*inputs), got, atol=1e-6)  # the EMA weights were exported
        assert got.shape == (len(inputs[0]), 1, size, size)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name,config", [
    ("brain_mri_gan", "inference.json"), ("brain_mri_gan", "evaluate.json"),
    ("brain_tumour_painter", "inference.json"), ("brain_tumour_painter", "evaluate.json")])
def test_configs_are_monai_inference_workflows(name, config, trained, tmp_path):
    """Tools that drive bundles through ``create_workflow`` find MONAI's inference properties; inference.json loads
    the bundle's models/model.pt into its own ``network_def``, and evaluation reads a model file too."""
    root = bundle_copy(tmp_path, name, trained["run"])
    overrides = {"bundle_root": str(root), "datalist": str(trained["datalist"]), "output_dir": str(tmp_path / "out")}
    if config == "evaluate.json":  # evaluation takes the run's model file as it takes a checkpoint
        overrides["ckpt_path"] = str(trained["run"] / "models" / "model.pt")
    if name == "brain_tumour_painter" and config == "evaluate.json":
        overrides["heldout_datalist"] = str(trained["datalist"])
    workflow = ConfigWorkflow(config_file=str(root / "configs" / config), workflow_type="infer", **overrides)
    workflow.initialize()
    assert workflow.check_properties() == []
    assert len(workflow.dataset) > 0 and hasattr(workflow.evaluator, "run")
    if config == "inference.json":
        assert workflow.evaluator.generator is workflow.network_def
        weights = torch.load(root / "models/model.pt", weights_only=True)
        assert all(torch.equal(v, weights[k]) for k, v in workflow.network_def.state_dict().items())


@pytest.mark.parametrize("name", NAMES)
def test_bundle_passes_the_model_zoo_checks_offline(name, trained, tmp_path):
    """What Project-MONAI/model-zoo's ``ci/verify_bundle.py`` checks in full mode, in its order, without a network."""
    root = bundle_copy(tmp_path, name, trained["run"])
    meta_file, config_file = root / "configs/metadata.json", root / "configs/inference.json"
    for required in ("configs/metadata.json", "LICENSE", "models/model.pt", "configs/inference.json"):
        assert (root / required).is_file(), required
    meta = json.loads(meta_file.read_text())
    assert meta["version"] in meta["changelog"]
    verify_metadata(meta_file=str(meta_file), filepath=str(SCHEMA))  # the zoo's eval/schema.json, kept locally
    # properties: the zoo checks those of supported_apps only, and there are none (see the test above for ours)
    assert meta["supported_apps"] == {}
    # data shape: a latent-input generator is left out, as the zoo leaves out mednist_gan; the painter's image
    # input is checked with its condition and latents, which the zoo's check cannot pass
    if name == "brain_tumour_painter":
        shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
        extra = {"condition": torch.zeros(1, 4, *shape), "z": torch.zeros(1, 8)}
        verify_net_in_out(net_id="network_def", meta_file=str(meta_file), config_file=str(config_file),
                          device="cpu", bundle_root=str(root), extra_forward_args=extra)
    # network_def from the config's own arguments takes models/model.pt strictly
    parser = ConfigParser()
    parser.read_config(config_file)
    parser["bundle_root"] = str(root)
    parser.get_parsed_content("network_def").load_state_dict(
        torch.load(parser.get_parsed_content("ckpt_path"), weights_only=True), strict=True)
    # TorchScript, as the zoo exports it (no key in the checkpoint, the bundle's own paths)
    ckpt_export(net_id="network_def", filepath=str(root / "models/verify_model.ts"),
                ckpt_file=str(root / "models/model.pt"), meta_file=str(meta_file), config_file=str(config_file),
                bundle_root=str(root))
    torch.jit.load(str(root / "models/verify_model.ts"))


def test_local_schema_is_the_bundle_schema():
    schema = ConfigParser.load_config_file(SCHEMA)
    meta = ConfigParser.load_config_file(BUNDLES / "brain_mri_gan/configs/metadata.json")
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert set(schema["required"]) <= set(meta)


@pytest.mark.parametrize("bundle_name", NAMES)
def test_verify_metadata_offline(tmp_path, bundle_name):
    # one copy of MONAI's schema, shipped with the first bundle, checks both bundles' metadata offline
    metadata = BUNDLES / bundle_name / "configs" / "metadata.json"
    result = bundle("verify_metadata", "--meta_file", str(metadata), "--filepath", str(SCHEMA), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr
    assert "skipped downloading" in result.stdout + result.stderr
