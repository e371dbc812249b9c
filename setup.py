"""vitwarm: procedural warm-up of vision transformers (timm + webdataset + Accelerate)."""

from pathlib import Path

from setuptools import find_packages, setup

# The repository's recipes/ ships inside the package as vitwarm/recipes (found by vitwarm.catalog): one
# package per folder, e.g. recipes/imagenet -> vitwarm.recipes.imagenet. setup.py runs in the project root.
RECIPES = {".".join(("vitwarm", *d.parts)): d.as_posix()
           for d in sorted({f.parent for f in Path("recipes").rglob("*") if f.is_file()})}

setup(
    name="vitwarm",
    version="0.1.0",
    description="Procedural warm-up of timm vision transformers on formal-grammar token sequences",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    keywords=["vision transformer", "timm", "procedural data", "formal grammars", "pretraining", "webdataset"],
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    packages=find_packages(include=["vitwarm", "vitwarm.*"]) + list(RECIPES),
    package_dir=RECIPES,
    package_data={pkg: ["*.yaml", "*.sbatch"] for pkg in RECIPES},
    python_requires=">=3.11",  # hashlib.file_digest (the checkpoints' and exports' content hashes)
    install_requires=[
        # The torch/torchvision pair must match; the Makefile pins the pair that installs here.
        "torch>=2.4",
        "torchvision>=0.19",
        "timm>=1.0.15",
        "huggingface_hub>=0.23",  # timm's save_for_hf (the hub-format exports) needs it
        "webdataset>=0.2.100",
        "accelerate>=1.0",
        "omegaconf>=2.3",
        "safetensors>=0.4",
        "numpy>=1.24",
        "scipy>=1.11",  # the analysis's t-intervals and p-values (vitwarm.analysis.stats)
        "pillow>=10",
        "tqdm>=4.66",
        "matplotlib>=3.8",  # every run draws RUN_DIR/curves.png (the sweep report's plots too)
    ],
    extras_require={
        "report": ["matplotlib>=3.8"],
        "tensorboard": ["tensorboard>=2.15"],
        "wandb": ["wandb"],
        "mlflow": ["mlflow"],
        "aim": ["aim"],
        "slurm": ["submitit>=1.5"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "matplotlib>=3.8", "tensorboard>=2.15"],
    },
    entry_points={
        "console_scripts": [
            "vitwarm = vitwarm.cli.main:main",
            "vitwarm-train = vitwarm.cli.train:main",
            "vitwarm-shards = vitwarm.cli.make_shards:main",
            "vitwarm-sweep = vitwarm.cli.sweep:main",
            "vitwarm-report = vitwarm.cli.report:main",
            "vitwarm-study = vitwarm.cli.study:main",
            "vitwarm-recipes = vitwarm.cli.recipes:main",
            "vitwarm-grammars = vitwarm.cli.grammars:main",
        ],
    },
)
