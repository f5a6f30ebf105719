"""The README's commands and CI's command stay the same."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [lines[i + 1] for i, line in enumerate(lines[:-1]) if line.strip() == "```bash"]


def test_ci_runs_the_readme_test_command():
    train, test = _commands()[:2]
    assert train.endswith("python -m monai.bundle run training --config_file bundles/brain_mri_gan/configs/train.json")
    assert test.endswith("python -m pytest -q")
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
    assert train.split(" && ")[:3] == test.split(" && ")[:3]  # same fresh set-up
