"""Packaging for monai-mri-gan."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version: dict = {}
exec((ROOT / "monai_mri_gan" / "version.py").read_text(), version)

setup(
    name="monai-mri-gan",
    version=version["__version__"],
    description="MONAI extension: GANs for brain MRI slices, written back to NIfTI with geometry and provenance.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["monai_mri_gan", "monai_mri_gan.*"]),
    install_requires=[
        "torch>=2.2",
        "monai>=1.4",
        "pytorch-ignite>=0.4.11",
        "nibabel>=5.0",
        "pydicom>=2.4",
        "SimpleITK>=2.3",
        "numpy>=1.24",
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "pillow>=9.0",
        "fire>=0.5",  # the `python -m monai.bundle` command line needs it
    ],
    extras_require={
        # jsonschema: offline bundle metadata check; mkdocs and plugins: tests/test_docs.py builds the site;
        # mlflow: tests/test_tracking.py records a run; import-linter: tests/test_code_shape.py checks the layers of
        # pyproject.toml (none of these tests may skip)
        "test": ["pytest>=7.4", "pydicom-data", "ruff", "jsonschema", "mkdocs>=1.5", "mkdocs-material>=9.0",
                 "mkdocstrings[python]>=0.24", "mlflow>=2.8", "import-linter>=2.1"],
        "docs": ["mkdocs>=1.5", "mkdocs-material>=9.0", "mkdocstrings[python]>=0.24"],
        "mlflow": ["mlflow>=2.8"],
    },
)
