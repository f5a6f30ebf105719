"""The documentation site: ``mkdocs build --strict`` passes, has every page, and fails on broken links or references."""

import html as html_lib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["index", "data", "training", "evaluation", "synthesis", "painting", "scaling", "study", "tracking", "design",
         "api"]


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(project / "mkdocs.yml"), "-d", str(site)]
    return subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=120)


def _text(page: Path) -> str:
    """The text of an HTML page, without tags (code blocks are split into highlighting spans)."""
    return html_lib.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def _copy_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "mkdocs.yml", project)
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copytree(ROOT / "monai_mri_gan", project / "monai_mri_gan", ignore=shutil.ignore_patterns("__pycache__"))
    return project


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    result = _build(ROOT, site)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return site


def test_nav_lists_every_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert [Path(next(iter(item.values()))).stem for item in config["nav"]] == PAGES


def test_site_has_every_page(site):
    for page in PAGES:
        html = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert html.is_file(), f"{page} missing from the site"
    assert (site / "images" / "pipeline.png").is_file() and (site / "images" / "demo_slices.png").is_file()
    index = (site / "index.html").read_text()
    assert 'src="images/pipeline.png"' in index and 'src="images/demo_slices.png"' in index
    # the README's two commands, verbatim
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(python3 -m venv .*)\n```", readme)
    assert len(commands) == 2 and all(c in _text(site / "index.html") for c in commands)
    scaling = _text(site / "scaling" / "index.html")
    assert "torchrun --nproc_per_node=4" in scaling and "--rdzv_endpoint" in scaling
    assert "THROUGHPUT_TABLE" not in scaling
    assert "--tracking mlflow" in _text(site / "tracking" / "index.html")
    # no page loads anything from the network (fonts, scripts)
    for html in site.rglob("*.html"):
        assert "fonts.googleapis.com" not in html.read_text(), html


def test_api_reference_documents_every_public_module(site):
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "monai_mri_gan").rglob("*.py")
        if p.name not in ("__init__.py", "version.py") and not p.name.startswith("_")
    )
    api = (ROOT / "docs" / "api.md").read_text()
    assert [m for m in modules if f"::: {m}\n" not in api] == []
    html = (site / "api" / "index.html").read_text()
    for name in ("engines.distributed.DistributedSliceGanTrainer", "engines.distributed.init_distributed",
                 "engines.trainer.SliceGanTrainer", "handlers.checkpoint.GanCheckpointSaver",
                 "handlers.ema.GeneratorEMA", "data.datasets.SliceCohort"):
        assert f'id="monai_mri_gan.{name}"' in html, name
    # docstring sections are parsed (Args become a parameter table), not shown as raw text
    assert "sync_batchnorm" in html and "Args:" not in html


@pytest.mark.parametrize(
    "broken",
    ["See [the missing page](no_such_page.md).", "See [a missing anchor](scaling.md#no-such-section).",
     "See [a missing object][monai_mri_gan.engines.trainer.NoSuchTrainer]."],
)
def test_strict_build_fails_on_broken_links_and_references(tmp_path, broken):
    project = _copy_project(tmp_path)
    index = project / "docs" / "index.md"
    index.write_text(index.read_text() + f"\n{broken}\n")
    result = _build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "Aborted with" in result.stdout + result.stderr
