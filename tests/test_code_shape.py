"""The code keeps its shape: ruff is clean, and the layers of pyproject.toml hold (and fail on an upward import)."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                              "sys.exit(lint_imports_command())", "--no-cache"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*LINT, "--config", str(cwd / "pyproject.toml")], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"}, timeout=300)


def test_layers_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Contracts: 1 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    shutil.copytree(ROOT / "monai_mri_gan", tmp_path / "monai_mri_gan", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    generator = tmp_path / "monai_mri_gan" / "networks" / "generator.py"
    # a network reaching up into the training handlers, as a quick fix might
    generator.write_text(generator.read_text() + "\nfrom ..handlers import every_n  # noqa: E402\n")
    result = _lint(tmp_path)
    assert result.returncode == 1
    assert "monai_mri_gan.networks is not allowed to import monai_mri_gan.handlers" in result.stdout
    assert "monai_mri_gan.networks.generator -> monai_mri_gan.handlers" in result.stdout


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
