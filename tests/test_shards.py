"""Shard writing (Fashion-MNIST and image folders), verification, and reading the result with timm."""

from __future__ import annotations

import importlib.util
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitwarm.data import FMNIST_CLASSES, ensure_fmnist_shards, read_idx, verify_shards, write_folder_shards
from vitwarm.data.fmnist import load_fmnist


def load_cli():
    """tools/ is not a package: load make_shards.py by path."""
    spec = importlib.util.spec_from_file_location("make_shards", Path(__file__).parents[1] / "tools" / "make_shards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def read_samples(root: Path, split: str) -> list[dict]:
    """All samples of a split in shard order: ``{"__key__", ext: bytes}``."""
    info = json.loads((root / "_info.json").read_text())
    samples = []
    for f in info["splits"][split]["filenames"]:
        with tarfile.open(root / f) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                if not samples or samples[-1]["__key__"] != key:
                    samples.append({"__key__": key})
                samples[-1][ext] = tar.extractfile(m).read()
    return samples


@pytest.fixture(scope="module")
def fmnist(fmnist_src):
    return load_fmnist(fmnist_src)


def test_read_idx_rejects_bad_header(tmp_path):
    bad = tmp_path / "bad-idx1-ubyte"
    bad.write_bytes(b"\0\0\x0d\x01" + (3).to_bytes(4, "big") + b"abc")  # type 0x0d = float, not uint8
    with pytest.raises(ValueError, match="unsigned-byte"):
        read_idx(bad)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(b"\0\0\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="holds 3 bytes"):
        read_idx(short)


def test_fmnist_splits_layout_and_labels(fmnist_shards, fmnist):
    info = json.loads((fmnist_shards / "_info.json").read_text())
    assert info["name"] == "fashion_mnist" and info["num_classes"] == 10
    assert info["classes"] == list(FMNIST_CLASSES)
    expected = {"train": (2000, 8), "validation": (500, 2), "test": (10000, 40)}
    for split, (n, shards) in expected.items():
        s = info["splits"][split]
        assert s["name"] == split and s["num_samples"] == n == sum(s["shard_lengths"])
        assert s["filenames"] == [f"fashion_mnist-{split}-{i:04d}.tar" for i in range(shards)]
        assert all((fmnist_shards / f).is_file() for f in s["filenames"])

    rows = {}
    for split in ("train", "validation"):
        samples = read_samples(fmnist_shards, split)
        assert len(samples) == expected[split][0]
        rows[split] = [int(s["__key__"].removeprefix("train_")) for s in samples]
        labels = [int(s["cls"]) for s in samples]
        # Labels are the IDX labels of the row the key names; classes are balanced.
        assert labels == [int(fmnist["train"][1][r]) for r in rows[split]]
        assert set(Counter(labels).values()) == {expected[split][0] // 10}
        # PNG is lossless: spot-check pixels against the IDX images.
        for s, r in list(zip(samples, rows[split]))[:20]:
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(s["png"]))), fmnist["train"][0][r])
        # Shards mix classes (the order was shuffled before cutting).
        assert len(set(labels[:250])) == 10
    assert not set(rows["train"]) & set(rows["validation"])
    assert len(set(rows["train"])) == 2000


def test_verify_detects_wrong_counts(fmnist_shards, tmp_path):
    assert verify_shards(fmnist_shards, ["validation"], progress=False) == {"validation": 500}
    bad = tmp_path / "bad"
    shutil.copytree(fmnist_shards, bad, ignore=shutil.ignore_patterns("*-t*.tar"))  # drop train and test
    info = json.loads((bad / "_info.json").read_text())
    info["splits"]["validation"]["shard_lengths"] = [251, 249]
    (bad / "_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="holds 250 samples but _info.json says 251"):
        verify_shards(bad, ["validation"], progress=False)


def test_ensure_fmnist_shards_is_idempotent(fmnist_shards, fmnist_src):
    from conftest import FMNIST_TEST_SHARDS

    before = (fmnist_shards / "_info.json").stat().st_mtime_ns
    assert ensure_fmnist_shards(fmnist_shards, src=fmnist_src, progress=False, **FMNIST_TEST_SHARDS) == fmnist_shards
    assert (fmnist_shards / "_info.json").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="not the requested"):
        ensure_fmnist_shards(fmnist_shards, src=fmnist_src, progress=False, **{**FMNIST_TEST_SHARDS, "seed": 1})


def test_folder_writer_keeps_bytes_and_names(jpeg_folder, tmp_path):
    out = write_folder_shards(jpeg_folder, tmp_path / "inet", name="imagenet1k", shard_size=5, verify=True,
                              progress=False)
    info = json.loads((out / "_info.json").read_text())
    assert info["classes"] == ["n01", "n02", "n03"] and info["num_classes"] == 3
    assert info["splits"]["train"]["filenames"][0] == "imagenet1k-train-0000.tar"
    assert info["splits"]["train"]["num_samples"] == 24 and len(info["splits"]["train"]["filenames"]) == 5
    assert info["splits"]["validation"]["num_samples"] == 6
    sources = {p.read_bytes(): info["classes"].index(p.parent.name) for p in (jpeg_folder / "train").rglob("*.JPEG")}
    samples = read_samples(out, "train")
    assert {s["jpg"]: int(s["cls"]) for s in samples} == sources  # bytes kept, labels from the folder


def test_cli_help_and_folder(jpeg_folder, tmp_path, capsys):
    make_shards_main = load_cli()
    with pytest.raises(SystemExit) as e:
        make_shards_main(["--help"])
    assert e.value.code == 0 and "fmnist" in capsys.readouterr().out
    make_shards_main(["folder", str(jpeg_folder / "val"), "--out", str(tmp_path / "v"), "--name", "tiny",
                      "--split", "validation", "--verify"])
    assert json.loads((tmp_path / "v" / "_info.json").read_text())["splits"]["validation"]["num_samples"] == 6
    capsys.readouterr()
    status = make_shards_main(["folder", str(jpeg_folder / "val"), "--out", str(tmp_path / "v"), "--name", "tiny",
                               "--split", "validation"])
    assert status == 1 and "not empty" in capsys.readouterr().err


def test_timm_reads_vitwarm_shards(fmnist_shards):
    from timm.data import create_dataset

    ds = create_dataset("wds/fashion_mnist", root=str(fmnist_shards), split="validation", is_training=False)
    labels = [int(target) for img, target in ds]
    assert len(labels) == 500 and ds.reader.num_samples == 500
    expected = [int(s["cls"]) for s in read_samples(fmnist_shards, "validation")]
    assert labels == expected  # unshuffled evaluation reads in shard order
    img, _ = next(iter(ds))
    assert img.size == (28, 28)
