"""Converters of the paper's data sets: tiny data sets written in each real on-disk format, read back through
torchvision's classes (download=False) by vitwarm.data.convert_torchvision, checked sample by sample.

Tiny files cannot carry the MD5 sums torchvision knows for the real CIFAR and STL-10 files, so for those
two the tests replace torchvision's ``check_integrity`` with a check that the file exists; everything else
(file layout, pickles, binaries, JSON, annotation files) is torchvision's and the converter's own code.
"""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitwarm.cli.make_shards import main as make_shards
from vitwarm.data import verify_shards
from vitwarm.data.convert_torchvision import write_torchvision_shards


@pytest.fixture
def files_exist_is_integrity(monkeypatch):
    def exists(fpath, md5=None):
        return Path(fpath).is_file()

    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", exists)
    monkeypatch.setattr("torchvision.datasets.stl10.check_integrity", exists)


def shard_samples(root: Path, split: str) -> dict[str, tuple[bytes, str, int]]:
    """``{key: (image bytes, image extension, label)}`` of one split, read from the tar files."""
    info = json.loads((root / "_info.json").read_text())
    members: dict[str, dict[str, bytes]] = {}
    for name in info["splits"][split]["filenames"]:
        with tarfile.open(root / name) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return {k: (next(v[e] for e in ("png", "jpg") if e in v), next(e for e in ("png", "jpg") if e in v),
                int(v["cls"])) for k, v in members.items()}


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def random_images(rng, n: int, size: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def write_jpeg(path: Path, rng, size: int = 24) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_images(rng, 1, size)[0]).save(path, format="JPEG", quality=90)
    return path.read_bytes()


def write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """CIFAR's row layout: (N, 3072) = all red values, then green, then blue, each 32 x 32 row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar(tmp_path, files_exist_is_integrity, name):
    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(10 if name == "cifar10" else 100)]
    label_key = "labels" if name == "cifar10" else "fine_labels"
    folder = tmp_path / "src" / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    batches = ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]) if name == "cifar10" else (["train"], ["test"])
    expected = {"train": [], "test": []}
    for split, files in zip(("train", "test"), batches):
        for f in files:
            images, labels = random_images(rng, 3, 32), rng.integers(0, len(classes), 3).tolist()
            write_pickle(folder / f, {"data": cifar_rows(images), label_key: labels})
            expected[split] += list(zip(images, labels))
    write_pickle(folder / ("batches.meta" if name == "cifar10" else "meta"),
                 {"label_names" if name == "cifar10" else "fine_label_names": classes})

    out = write_torchvision_shards(name, tmp_path / "src", tmp_path / "out", shard_size=4, progress=False)
    info = json.loads((out / "_info.json").read_text())
    assert info["classes"] == classes and info["num_classes"] == len(classes)
    assert verify_shards(out, progress=False) == {"train": len(expected["train"]), "test": 3}
    for split in ("train", "test"):
        samples = shard_samples(out, split)
        assert len(samples) == len(expected[split])
        for key, (data, ext, label) in samples.items():
            image, want = expected[split][int(key.split("_")[1])]  # key = <split>_<source index>
            assert ext == "png" and label == want and np.array_equal(pixels(data), image)


def test_stl10(tmp_path, files_exist_is_integrity):
    rng = np.random.default_rng(1)
    folder = tmp_path / "src" / "stl10_binary"
    folder.mkdir(parents=True)
    classes = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(classes) + "\n")
    expected = {}
    for split, n in (("train", 5), ("test", 4)):
        images, labels = random_images(rng, n, 96), rng.integers(0, 10, n)
        # STL-10's binaries: per image 3 x 96 x 96 bytes, each channel column-major; labels 1..10.
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        expected[split] = list(zip(images, labels.tolist()))
    (folder / "unlabeled_X.bin").write_bytes(random_images(rng, 2, 96).transpose(0, 3, 2, 1).tobytes())

    out = tmp_path / "out"
    make_shards(["stl10", str(tmp_path / "src"), "--out", str(out), "--shard-size", "2", "--verify"])
    info = json.loads((out / "_info.json").read_text())
    assert info["classes"] == classes and sorted(info["splits"]) == ["test", "train"]  # no unlabeled split
    for split in ("train", "test"):
        samples = shard_samples(out, split)
        assert len(samples) == len(expected[split])
        for key, (data, _, label) in samples.items():
            image, want = expected[split][int(key.split("_")[1])]
            assert label == want and np.array_equal(pixels(data), image)


def test_food101(tmp_path):
    rng = np.random.default_rng(2)
    base = tmp_path / "src" / "food-101"
    classes = ["apple_pie", "baby_back_ribs", "baklava"]
    meta, expected = {"train": {}, "test": {}}, {"train": {}, "test": {}}
    for c, cls in enumerate(classes):
        for split, n in (("train", 3), ("test", 1)):
            for i in range(n):
                ident = f"{cls}/{split}{i}{c}"
                meta[split].setdefault(cls, []).append(ident)
                expected[split][write_jpeg(base / "images" / f"{ident}.jpg", rng)] = c
    (base / "meta").mkdir()
    for split in meta:
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))

    out = write_torchvision_shards("food101", tmp_path / "src", tmp_path / "out", shard_size=5, progress=False)
    assert json.loads((out / "_info.json").read_text())["classes"] == classes
    for split in ("train", "test"):
        samples = shard_samples(out, split)
        # JPEG bytes copied as they are, each with its class.
        assert {data: label for data, ext, label in samples.values() if ext == "jpg"} == expected[split]


def test_tiny_imagenet(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819", "n01641577"]
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids[::-1]) + "\n")  # the real file is not sorted either
    (root / "words.txt").write_text("".join(f"{w}\tthing {w}\n" for w in wnids))
    train, val, annotations = {}, {}, []
    for c, wnid in enumerate(wnids):
        for i in range(2):
            train[write_jpeg(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", rng)] = c
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t10\t10\n")
        name = f"val_{c}.JPEG"
        val[write_jpeg(root / "val" / "images" / name, rng)] = c
        annotations.append(f"{name}\t{wnid}\t1\t2\t30\t40")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")

    out = write_torchvision_shards("tiny_imagenet", root, tmp_path / "out", progress=False)
    info = json.loads((out / "_info.json").read_text())
    assert info["classes"] == wnids and info["name"] == "tiny_imagenet"
    assert {d: y for d, _, y in shard_samples(out, "train").values()} == train
    assert {d: y for d, _, y in shard_samples(out, "validation").values()} == val


def test_missing_root_is_one_clear_line(tmp_path, capsys):
    status = make_shards(["cifar10", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    message = capsys.readouterr().err
    assert status == 1 and message.startswith("vitwarm: error: CIFAR10 under ") and "nowhere" in message
    assert message.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "out").exists()
