"""vitwarm: procedural warm-up of vision transformers (timm + webdataset + Accelerate)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="vitwarm",
    version="0.1.0",
    description="Procedural warm-up of timm vision transformers on formal-grammar token sequences",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["vitwarm", "vitwarm.*"]),
    python_requires=">=3.10",
    install_requires=[
        # The torch/torchvision pair must match; the Makefile pins the pair that installs here.
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0.15",
        "webdataset>=0.2.100",
        "accelerate>=1.0",
        "omegaconf>=2.3",
        "safetensors>=0.4",
        "numpy>=1.24",
        "pillow>=10",
        "tqdm>=4.66",
    ],
    extras_require={
        "report": ["matplotlib>=3.8"],
        "tensorboard": ["tensorboard>=2.15"],
        "slurm": ["submitit>=1.5"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "matplotlib>=3.8", "tensorboard>=2.15"],
    },
)
