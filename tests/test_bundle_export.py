"""Bundle hygiene: TorchScript export of the generator with ckpt_export, network_def from the checkpoint's own
configuration, and metadata.json against MONAI's bundle schema offline."""


import pytest
import torch
from monai.bundle import ConfigParser
from test_synthesis import CONFIGS, bundle

from monai_mri_gan.runs import generator_from_checkpoint


def test_network_def_follows_the_checkpoint(gan):
    parser = ConfigParser()
    parser.read_config(CONFIGS / "inference.json")
    parser["ckpt_path"] = str(gan["run"])
    network = parser.get_parsed_content("network_def")
    config = torch.load(gan["checkpoint"], weights_only=True)["config"]
    assert network.image_size == config["image_size"] == 32  # not train.json's default 64
    assert network.num_classes == config["num_classes"] == 2 and network.latent_dim == config["latent_dim"]


def test_ckpt_export_torchscript_matches_eager(tmp_path, gan):
    target = tmp_path / "generator.ts"
    result = bundle("ckpt_export", "network_def", "--filepath", str(target), "--ckpt_file", str(gan["checkpoint"]),
                    "--config_file", str(CONFIGS / "inference.json"), "--meta_file", str(CONFIGS / "metadata.json"),
                    "--key_in_ckpt", "ema_generator", "--ckpt_path", str(gan["checkpoint"]), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(target))
    eager = generator_from_checkpoint(gan["checkpoint"], weights_key="ema_generator")
    z = torch.randn(6, eager.latent_dim, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    with torch.no_grad():
        expected = eager(z, labels)
        got = scripted(z, labels)
    assert got.shape == (6, 1, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # the EMA weights were loaded, not the raw generator's
    raw = generator_from_checkpoint(gan["checkpoint"], weights_key="generator")
    with torch.no_grad():
        assert not torch.allclose(raw(z, labels), got, atol=1e-6)


def test_local_schema_is_the_bundle_schema():
    schema = ConfigParser.load_config_file(CONFIGS / "meta_schema.json")
    meta = ConfigParser.load_config_file(CONFIGS / "metadata.json")
    assert meta["schema"].endswith("/meta_schema_20240725.json")
    assert schema["$schema"] == "https://json-schema.org/draft/2019-09/schema"
    assert set(schema["required"]) <= set(meta)


@pytest.mark.parametrize("bundle_name", ["brain_mri_gan", "brain_tumour_painter"])
def test_verify_metadata_offline(tmp_path, bundle_name):
    # one copy of MONAI's schema, shipped with the first bundle, checks both bundles' metadata offline
    metadata = CONFIGS.parents[1] / bundle_name / "configs" / "metadata.json"
    result = bundle("verify_metadata", "--meta_file", str(metadata), "--filepath",
                    str(CONFIGS / "meta_schema.json"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr
    assert "skipped downloading" in result.stdout + result.stderr


@pytest.mark.parametrize("config", ["inference.json", "evaluate.json"])
def test_inference_and_evaluation_configs_are_monai_inference_workflows(gan, tmp_path, config):
    """Tools that drive bundles through ``create_workflow`` find MONAI's inference properties in both configs."""
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=str(CONFIGS / config), workflow_type="infer", ckpt_path=str(gan["run"]),
                              datalist=str(gan["datalist"]), output_dir=str(tmp_path / "out"))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert len(workflow.dataset) > 0 and hasattr(workflow.evaluator, "run")
