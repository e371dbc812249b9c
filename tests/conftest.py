"""Fixtures shared by the whole test suite.

``fmnist_src``: the directory of the Fashion-MNIST IDX files (Debian package ``dataset-fashion-mnist``); tests
using it are skipped where the package is not installed, except under ``CI=true``, where a missing data set
fails them: a CI run must not pass green and nearly empty.

``fmnist_shards``: a small real Fashion-MNIST shard set, built once per session (a few seconds) with
``ensure_fmnist_shards``: ``train`` 2,000 samples (200 per class) in 8 shards of 250, ``validation`` 500
(50 per class) in 2 shards, ``test`` the full 10,000 t10k images in 40 shards; PNG, 28x28 gray, 10 classes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitwarm.data import FMNIST_SRC, ensure_fmnist_shards

# Parameters of the session shard set (see the module docstring). The train split after holding out
# validation has 5,950 images per class; this fraction keeps 200 of each.
FMNIST_TEST_SHARDS = dict(fraction=200 / 5950, val_size=500, shard_size=250, seed=0)


@pytest.fixture(scope="session")
def fmnist_src() -> Path:
    src = Path(FMNIST_SRC)
    if not (src / "train-images-idx3-ubyte.gz").is_file():
        missing = f"Fashion-MNIST not found in {src}: install Debian package dataset-fashion-mnist"
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    return src


@pytest.fixture(scope="session")
def fmnist_shards(fmnist_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fmnist") / "shards"
    return ensure_fmnist_shards(out, src=fmnist_src, workers=2, progress=False, **FMNIST_TEST_SHARDS)


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ImageFolder tree of JPEGs: ``train/`` 3 classes x 8 images, ``val/`` 3 x 2; sizes vary (40-63 px)."""
    root = tmp_path_factory.mktemp("jpeg_folder")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2)):
        for c, cls in enumerate(("n01", "n02", "n03")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 64, size=2)
                # A class-coloured image with noise, so classes differ visibly.
                img = np.clip(rng.normal(60 + 70 * c, 30, size=(h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / cls / f"{cls}_{i}.JPEG", quality=90)
    return root
