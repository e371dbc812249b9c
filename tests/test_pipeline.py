"""Train/val loaders: exact epoch lengths, coverage over ranks, determinism, resume, faults and errors.

Most tests use an identity augmentation (full-image crop, no flip, no RandAugment, no erasing) so every output
image can be mapped back to its Fashion-MNIST pixels: a loader's output is then compared with the multiset
of (pixels, label) pairs that the split's shards hold.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from timm.data import create_transform

import vitwarm.data
from vitwarm.config import AugConfig
from vitwarm.data import (
    DataError,
    ImageTransform,
    SampleError,
    make_mixup,
    make_train_loader,
    make_val_loader,
    read_dataset_info,
    verify_shards,
    write_folder_shards,
)
from vitwarm.data.fmnist import FMNIST_MEAN, FMNIST_STD
from vitwarm.data.transforms import AUG_OPTIONS, fix_posterize
from vitwarm.seeds import derive_seed, seeded

from helpers import ROOT

IDENTITY = dict(auto_augment=None, re_prob=0.0, hflip=0.0, color_jitter=0.0, scale=(1.0, 1.0), ratio=(1.0, 1.0))
FM = dict(img_size=28, in_chans=1)


def pairs(images: torch.Tensor, labels: torch.Tensor) -> list[tuple[bytes, int]]:
    """Undo the normalisation of identity-augmented 1-channel images: [(uint8 pixel bytes, label)]."""
    pixels = ((images[:, 0] * FMNIST_STD[0] + FMNIST_MEAN[0]) * 255).round().to(torch.uint8)
    return [(p.numpy().tobytes(), int(y)) for p, y in zip(pixels, labels)]


def shard_pairs(root: Path, split: str) -> Counter:
    """The multiset of (pixel bytes, label) pairs held by a split's shards."""
    info = json.loads((root / "_info.json").read_text())
    out = Counter()
    for f in info["splits"][split]["filenames"]:
        with tarfile.open(root / f) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar}
        for name, data in files.items():
            if name.endswith(".png"):
                img = Image.open(io.BytesIO(data))
                out[(img.tobytes(), int(files[name[:-4] + ".cls"]))] += 1
    return out


@pytest.fixture(scope="module")
def train_pairs(fmnist_shards) -> Counter:
    return shard_pairs(fmnist_shards, "train")


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_epoch_is_exact_and_covers_the_split_once(fmnist_shards, train_pairs, world_size, num_workers):
    seen = Counter()
    for rank in range(world_size):
        loader = make_train_loader(fmnist_shards, batch_size=50, rank=rank, world_size=world_size,
                                   num_workers=num_workers, aug=IDENTITY, **FM)
        assert len(loader) == 2000 // (50 * world_size)
        batches = list(loader.epoch(0))
        assert len(batches) == len(loader)
        for images, labels in batches:
            assert images.shape == (50, 1, 28, 28) and images.dtype == torch.uint8
            assert labels.shape == (50,) and labels.dtype == torch.int64
            assert loader.on_device(images).dtype == torch.float32
            seen.update(pairs(loader.on_device(images), labels))
        assert loader.skipped == 0
    # 8 shards of 250 split evenly over every (rank, worker): each sample exactly once, with its IDX label.
    assert seen == train_pairs


def test_uneven_split_keeps_the_same_length_on_every_rank(fmnist_shards):
    # 3 ranks over 8 shards: ranks hold 750, 750 and 500 samples but each must give 2000 // (40 * 3) = 16.
    for rank in range(3):
        loader = make_train_loader(fmnist_shards, batch_size=40, rank=rank, world_size=3, num_workers=0,
                                   aug=IDENTITY, **FM)
        assert len(loader) == 16 and sum(1 for _ in loader.epoch(3)) == 16


def test_order_depends_on_epoch_and_seed_but_not_on_worker_processes(fmnist_shards):
    def labels(epoch, seed=0, num_workers=0):
        loader = make_train_loader(fmnist_shards, "validation", batch_size=50, num_workers=num_workers, seed=seed,
                                   aug=IDENTITY, **FM)
        return torch.cat([y for _, y in loader.epoch(epoch)])

    first = labels(0)
    assert torch.equal(first, labels(0, num_workers=1))  # 0 and 1 workers: the same single logical worker
    assert not torch.equal(first, labels(1))
    assert not torch.equal(first, labels(0, seed=1))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_gives_the_tail_of_the_epoch(fmnist_shards, num_workers):
    # Default augmentation (RandAugment, random erasing): the batches must be equal tensor for tensor.
    loader = make_train_loader(fmnist_shards, batch_size=32, rank=1, world_size=2, num_workers=num_workers,
                               seed=3, **FM)
    full = list(loader.epoch(2))
    assert len(full) == len(loader) == 31
    for k in (5, 30, 31):
        tail = list(loader.epoch(2, start_batch=k))
        assert len(tail) == len(full) - k
        for (a, y), (b, z) in zip(full[k:], tail):
            assert torch.equal(y, z) and torch.equal(a, b)
    with pytest.raises(ValueError, match="start_batch"):
        loader.epoch(2, start_batch=32)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_iteration_across_epochs_gives_the_epochs(fmnist_shards, num_workers):
    """``epochs`` (the image phase's batches: the workers start the next epoch while the current one ends) gives
    batch for batch what ``epoch`` gives epoch after epoch, from the start or from a resume position, also when
    the workers do not divide an epoch's batches (15 here, 2 workers)."""
    loader = make_train_loader(fmnist_shards, batch_size=64, rank=1, world_size=2, num_workers=num_workers,
                               seed=3, **FM)
    assert len(loader) == 15
    epochs = {e: list(loader.epoch(e)) for e in (0, 1, 2)}
    for epoch, start in ((0, 0), (1, 4)):
        expected = epochs[epoch][start:] + [b for e in range(epoch + 1, 3) for b in epochs[e]]
        across = loader.epochs(epoch, start_batch=start)
        for (a, y), (b, z) in zip(expected, across):
            assert torch.equal(y, z) and torch.equal(a, b)
    with pytest.raises(ValueError, match="start_batch"):
        loader.epochs(0, start_batch=15)


def test_a_process_exits_with_its_loader_workers_mid_epoch(fmnist_shards):
    """Loader workers ignore SIGTERM (a scheduler's signal to every process is the trainer's to handle):
    a process that ends while its workers still run must end them itself, not wait for them forever."""
    script = ("import sys; from vitwarm.data import make_train_loader; "
              "loader = make_train_loader(sys.argv[1], batch_size=32, num_workers=2, img_size=28, in_chans=1); "
              "batches = loader.epochs(0); next(batches); next(batches); print('exiting')")
    result = subprocess.run([sys.executable, "-c", script, str(fmnist_shards)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env=os.environ | {"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0 and result.stdout == "exiting\n", result.stderr[-2000:]


@pytest.mark.parametrize(("world_size", "num_workers"), [(1, 0), (3, 2)])
def test_validation_sees_every_sample_once(fmnist_shards, train_pairs, world_size, num_workers):
    seen, batches = Counter(), []
    for rank in range(world_size):
        loader = make_val_loader(fmnist_shards, "train", batch_size=64, rank=rank, world_size=world_size,
                                 num_workers=num_workers, crop_pct=1.0, **FM)
        n = 0
        for images, labels in loader:
            seen.update(pairs(loader.on_device(images), labels))
            n += 1
        assert n == len(loader)
        batches.append(n)
    assert seen == train_pairs
    if world_size == 3:
        assert len(set(batches)) > 1  # ranks hold 3, 3 and 2 shards: batch counts differ, nothing is padded


def reference_transform(is_training: bool, in_chans: int, mean, std, **options):
    """The float pipeline before batches left the workers as uint8: timm's create_transform ending in
    ToTensor + Normalize (+ RandomErasing), fed RGB, channel 0 kept for one channel."""
    mean3, std3 = tuple(mean) * (3 // in_chans), tuple(std) * (3 // in_chans)
    tfm = create_transform((3, 28, 28), is_training=is_training, mean=mean3, std=std3, **options)
    fix_posterize(tfm)
    if in_chans == 1:
        return lambda img: tfm(img.convert("L").convert("RGB"))[:1]
    return lambda img: tfm(img.convert("RGB"))


AUGMENTED = dict(auto_augment="rand-m9-mstd0.5-inc1", hflip=0.5, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                 interpolation="bicubic", color_jitter=None, re_mode="pixel")


@pytest.mark.parametrize("in_chans", [1, 3])
def test_uint8_batches_normalised_on_the_device_are_the_float_pipelines_pixels(fmnist_shards, in_chans):
    """Workers ship uint8 and ``on_device`` normalises where the model is: the float32 pixels are exactly those
    of timm's own float pipeline (same random draws under the same seeds), for training with RandAugment and
    for evaluation. With random erasing on, the workers ship the very same uint8 images (erasing is the
    device's, tests/test_erasing.py)."""
    images = [Image.open(io.BytesIO(data)) for data in first_pngs(fmnist_shards, 16)]
    mean, std = (0.5, 0.4, 0.3)[:in_chans], (0.2, 0.25, 0.3)[:in_chans]
    cases = [(True, dict(AUGMENTED, re_prob=0.0)), (False, dict(crop_pct=0.875, interpolation="bicubic"))]
    erasing = ImageTransform(is_training=True, img_size=28, in_chans=in_chans, mean=mean, std=std,
                             **dict(AUGMENTED, re_prob=0.25))
    for is_training, options in cases:
        ours = ImageTransform(is_training=is_training, img_size=28, in_chans=in_chans, mean=mean, std=std, **options)
        reference = reference_transform(is_training, in_chans, mean, std, **options)
        for i, img in enumerate(images):
            with seeded(derive_seed(5, "augment", i)):
                shipped = ours(img)
            with seeded(derive_seed(5, "augment", i)):
                expected = reference(img)
            assert shipped.dtype == torch.uint8
            assert expected.dtype == torch.float32 and expected.shape == (in_chans, 28, 28)
            assert torch.equal(ours.on_device(torch.stack([shipped, shipped])), torch.stack([expected, expected]))
            if is_training:
                with seeded(derive_seed(5, "augment", i)):
                    assert torch.equal(erasing(img), shipped)


def first_pngs(root: Path, n: int) -> list[bytes]:
    with tarfile.open(root / "fashion_mnist-validation-0000.tar") as tar:
        return [tar.extractfile(m).read() for m in tar if m.name.endswith(".png")][:n]


@pytest.mark.slow
def test_persistent_workers_give_the_epochs_of_fresh_workers_and_resume_exactly(fmnist_shards):
    """One loader's two workers persist across epochs and evaluations; every epoch (and every resumed tail)
    is batch for batch what a loader with freshly started workers gives."""
    def make():
        return make_train_loader(fmnist_shards, batch_size=32, num_workers=2, seed=4, **FM)

    loader, val = make(), make_val_loader(fmnist_shards, batch_size=100, num_workers=2, **FM)
    fresh = {e: list(make().epoch(e)) for e in (0, 1)}
    pids = None
    for epoch, start in ((0, 0), (1, 0), (1, 59), (1, 61), (0, 0), (1, 7)):
        got = list(loader.epoch(epoch, start_batch=start))
        assert len(got) == len(loader) - start == len(fresh[epoch]) - start
        for (a, y), (b, z) in zip(fresh[epoch][start:], got):
            assert torch.equal(a, b) and torch.equal(y, z)
        evaluation = [y for _, y in val]
        assert sum(len(y) for y in evaluation) == 500
        # The same worker processes every time (torch keeps them in the loader's iterator).
        workers = [w.pid for w in loader._loader._iterator._workers]
        assert pids is None or workers == pids
        pids = workers


def test_validation_split_and_channel_conversion(fmnist_shards):
    loader = make_val_loader(fmnist_shards, batch_size=200, rank=1, world_size=2, num_workers=2, img_size=32,
                             in_chans=3, crop_pct=1.0)
    assert loader.num_workers == 1  # one shard on this rank
    images = torch.cat([x for x, _ in loader])
    assert images.shape == (250, 3, 32, 32)
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])


def test_timm_style_jpeg_shards_by_pattern(jpeg_folder, tmp_path):
    out = write_folder_shards(jpeg_folder, tmp_path / "inet", name="imagenet1k", shard_size=4, progress=False)
    pattern = str(out / "imagenet1k-train-{0000..0005}.tar")
    info = read_dataset_info(pattern)
    assert info.num_samples == 24 and info.num_classes == 3 and len(info.urls) == 6
    loader = make_train_loader(pattern, batch_size=4, num_workers=2, img_size=32, in_chans=3)
    batches = list(loader.epoch(0))
    assert len(batches) == 6 and batches[0][0].shape == (4, 3, 32, 32)
    # Without _info.json the count comes from '|N'; imagenet1k-validation-{00..01}-style names work alike.
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in out.glob("imagenet1k-validation-*.tar"):
        shutil.copy(f, bare / f.name)
    val = make_val_loader(str(bare / "imagenet1k-validation-{0000..0001}.tar|6"), batch_size=4, num_workers=0,
                          img_size=32, in_chans=1)
    labels = torch.cat([y for _, y in val])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]


# ---------------------------------------------------------------------------------------------------------
# Faults and errors


def write_tiny_set(root: Path, shards: list[list[tuple[bytes, bytes]]], ext: str = "png") -> Path:
    """Shards of (image bytes, cls bytes) samples (the image under key ``ext``) with an _info.json; returns root."""
    root.mkdir(parents=True)
    names = []
    for i, samples in enumerate(shards):
        names.append(f"tiny-train-{i:04d}.tar")
        with tarfile.open(root / names[-1], "w") as tar:
            for j, (png, cls) in enumerate(samples):
                for key, data in ((ext, png), ("cls", cls)):
                    member = tarfile.TarInfo(f"s{i}_{j}.{key}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
    lengths = [len(s) for s in shards]
    info = {"name": "tiny", "num_classes": 10, "splits": {"train": {
        "name": "train", "num_samples": sum(lengths), "filenames": names, "shard_lengths": lengths}}}
    (root / "_info.json").write_text(json.dumps(info))
    return root


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (8, 8), value).save(buf, format="PNG")
    return buf.getvalue()


def good(n: int) -> list[tuple[bytes, bytes]]:
    return [(png(10 * i), str(i % 10).encode()) for i in range(n)]


TINY = dict(img_size=8, in_chans=1, num_workers=0)


def test_corrupt_samples_are_skipped_or_raise(tmp_path):
    bad = good(10)
    bad[3] = (b"not a png", b"3")
    bad[6] = (png(5), b"x")  # unparsable label
    bad[7] = (png(5), b"12")  # label outside [0, 10)
    root = write_tiny_set(tmp_path / "t", [good(10), bad, good(10), good(10)])
    val = make_val_loader(root, "train", batch_size=8, **TINY)
    assert sum(len(y) for _, y in val) == 37 and val.skipped == 3
    train = make_train_loader(root, batch_size=8, aug=IDENTITY, **TINY)
    assert sum(1 for _ in train.epoch(0)) == 5 and train.skipped >= 3  # refilled from a second pass
    for loader in (make_val_loader(root, "train", batch_size=8, strict=True, **TINY),
                   make_val_loader(root, "train", batch_size=8, strict=True, **{**TINY, "num_workers": 1})):
        with pytest.raises(SampleError, match="s1_3") as raised:
            list(loader)
        # From a worker process too: the error itself, not torch's wrapper with the worker's traceback.
        assert str(raised.value).startswith("sample s1_3 of ") and "\n" not in str(raised.value)


def test_verify_reads_what_the_loaders_read(tmp_path):
    """verify_shards reads with the loaders' reader and decoder: it lists exactly the samples the loader
    skips, and passes every image key the loader reads (``jpeg`` too)."""
    bad = good(10)
    bad[3] = (b"not a png", b"3")
    bad[7] = (png(5), b"12")  # label outside [0, 10)
    root = write_tiny_set(tmp_path / "t", [good(10), bad])
    with pytest.raises(ValueError, match=r"^2 problem\(s\)") as raised:
        verify_shards(root, progress=False)
    assert "sample s1_3 of " in str(raised.value) and "sample s1_7 of " in str(raised.value)
    val = make_val_loader(root, "train", batch_size=8, **TINY)
    assert sum(len(y) for _, y in val) == 18 and val.skipped == 2
    jpeg = write_tiny_set(tmp_path / "j", [good(4)], ext="jpeg")
    assert verify_shards(jpeg, progress=False) == {"train": 4}
    assert sum(len(y) for _, y in make_val_loader(jpeg, "train", batch_size=8, **TINY)) == 4


def test_truncated_shard_is_skipped_or_raises(tmp_path):
    root = write_tiny_set(tmp_path / "t", [good(10)] * 4)
    shard = root / "tiny-train-0002.tar"
    shard.write_bytes(shard.read_bytes()[:3000])  # breaks off inside the 3rd or 4th sample
    val = make_val_loader(root, "train", batch_size=8, **{**TINY, "num_workers": 2})
    n = sum(len(y) for _, y in val)
    assert 30 < n < 40 and val.skipped == 1
    with pytest.raises(SampleError, match="broke off"):
        list(make_val_loader(root, "train", batch_size=8, strict=True, **TINY))
    train = make_train_loader(root, batch_size=8, strict=True, aug=IDENTITY, **TINY)
    with pytest.raises(SampleError, match="tiny-train-0002"):
        list(train.epoch(0))


def test_info_counts_that_disagree_with_shards_raise(tmp_path):
    root = write_tiny_set(tmp_path / "t", [good(10)] * 4)
    info = json.loads((root / "_info.json").read_text())
    info["splits"]["train"]["shard_lengths"] = [10, 10, 10, 11]
    (root / "_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="add up to 41 samples but the count given is 40"):
        read_dataset_info(root)
    info["splits"]["train"]["num_samples"] = 41
    (root / "_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="holds 10 samples but _info.json says 11"):
        list(make_val_loader(root, "train", batch_size=8, **TINY))
    with pytest.raises(ValueError, match="add up to 41"):
        read_dataset_info(str(root / "tiny-train-{0000..0003}.tar|40"))


def test_configuration_errors(fmnist_shards, tmp_path):
    with pytest.raises(ValueError, match=r"fewer than world_size \* num_workers = 2 \* 2"):
        make_train_loader(fmnist_shards, "validation", batch_size=8, world_size=2, num_workers=2, **FM)
    with pytest.raises(ValueError, match="split 'val' .* valid: \\['test', 'train', 'validation'\\]"):
        read_dataset_info(fmnist_shards, "val")
    with pytest.raises(ValueError, match="empty data source"):
        read_dataset_info("")
    with pytest.raises(ValueError, match="needs a sample count"):
        root = write_tiny_set(tmp_path / "nocount", [good(2)])
        (root / "_info.json").unlink()
        read_dataset_info(str(root / "tiny-train-{0000..0000}.tar"))
    with pytest.raises(FileNotFoundError, match="1 of 9 shard"):
        read_dataset_info(str(fmnist_shards / "fashion_mnist-train-{0000..0008}.tar"))
    missing = write_tiny_set(tmp_path / "missing", [good(2)] * 2)
    (missing / "tiny-train-0001.tar").unlink()
    with pytest.raises(FileNotFoundError, match="tiny-train-0001.tar"):
        make_train_loader(missing, batch_size=2, **TINY)
    with pytest.raises(FileNotFoundError, match="_info.json"):
        read_dataset_info(tmp_path)
    (missing / "_info.json").write_text('{"splits": {"train": ')
    with pytest.raises(DataError, match=r"missing/_info.json is not valid JSON \(Expecting value: line 1"):
        read_dataset_info(missing)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        make_train_loader(fmnist_shards, batch_size=2000, world_size=2, num_workers=0, **FM)
    with pytest.raises(ValueError, match="in_chans"):
        make_train_loader(fmnist_shards, batch_size=8, num_workers=0, img_size=28, in_chans=2)
    with pytest.raises(ValueError, match="unknown augmentation option"):
        make_train_loader(fmnist_shards, batch_size=8, num_workers=0, aug={"randaug": "x"}, **FM)
    with pytest.raises(ValueError, match="rank"):
        make_train_loader(fmnist_shards, batch_size=8, rank=2, world_size=2, **FM)


def test_aug_options_are_the_config_schema():
    """make_train_loader(aug=...) takes exactly data.aug's fields, and ImageTransform's defaults are the schema's."""
    schema = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
              for f in dataclasses.fields(AugConfig)}
    assert sorted(AUG_OPTIONS) == sorted(schema)
    defaults = inspect.signature(vitwarm.data.ImageTransform).parameters
    for name, value in schema.items():
        default = defaults[name].default
        assert (list(default) if isinstance(default, tuple) else default) == value, name


def test_data_does_not_import_the_config():
    """vitwarm.data is a library of plain arguments: no module of it imports vitwarm.config."""
    for path in Path(vitwarm.data.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert "from ..config" not in text and "vitwarm.config" not in text, path.name


def test_make_mixup():
    mixup, loss = make_mixup(0.8, 1.0, 0.1, num_classes=10)
    images, targets = mixup(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert targets.shape == (4, 10) and torch.allclose(targets.sum(1), torch.ones(4))
    assert loss(torch.randn(4, 10), targets).ndim == 0
    mixup, loss = make_mixup(0.0, 0.0, 0.1, num_classes=10)
    assert mixup is None and type(loss).__name__ == "LabelSmoothingCrossEntropy"
    mixup, loss = make_mixup(0.0, 0.0, 0.0, num_classes=10)
    assert mixup is None and isinstance(loss, torch.nn.CrossEntropyLoss)
