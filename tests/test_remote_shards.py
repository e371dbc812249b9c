"""Shards and _info.json read through webdataset's URL openers: an HTTP server on 127.0.0.1 started here
serves the session's Fashion-MNIST shards; ``pipe:`` commands stand in for object stores."""

from __future__ import annotations

import functools
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from vitwarm.config import load_config
from vitwarm.data import DataError, make_train_loader, make_val_loader, read_dataset_info, read_splits

from helpers import PER_STEP_LOGS, kill_once, train, train_records

FM = dict(img_size=28, in_chans=1)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # one line per request would flood the test output
        pass


@pytest.fixture(scope="module")
def http_root(fmnist_shards):
    """``http://127.0.0.1:PORT``, serving the shard directory (its _info.json and tar files)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(fmnist_shards)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def assert_same_batches(a, b) -> None:
    a, b = list(a), list(b)
    assert len(a) == len(b) > 0
    for (x, y), (u, v) in zip(a, b):
        assert torch.equal(y, v) and torch.equal(x, u)


def test_info_by_url_describes_the_same_split(fmnist_shards, http_root):
    local = read_dataset_info(fmnist_shards, "validation")
    for source in (http_root, f"{http_root}/", f"{http_root}/_info.json"):
        remote = read_dataset_info(source, "validation")
        assert remote.urls == [f"{http_root}/{os.path.basename(u)}" for u in local.urls]
        assert (remote.num_samples, remote.shard_lengths, remote.num_classes, remote.mean) == \
            (local.num_samples, local.shard_lengths, local.num_classes, local.mean)
    # A pattern of URLs finds its counts in the _info.json served beside the shards.
    pattern = read_dataset_info(f"{http_root}/fashion_mnist-train-{{0000..0007}}.tar", "train")
    assert pattern.num_samples == 2000 and pattern.shard_lengths == [250] * 8


@pytest.mark.parametrize("scheme", ["http", "pipe:curl", "pipe:cat"])
def test_remote_shards_give_the_same_batches_as_local_files(fmnist_shards, http_root, scheme):
    """pipe: commands have no directory: their _info.json (counts, classes, statistics) is given by location."""
    pattern = "fashion_mnist-{split}-{{0000..{last}}}.tar"
    train, val = pattern.format(split="train", last="0007"), pattern.format(split="validation", last="0001")
    command = {"pipe:curl": f"pipe:curl -s -f {http_root}/", "pipe:cat": f"pipe:cat {fmnist_shards}/"}.get(scheme)
    if command is None:
        sources = {"train": read_dataset_info(http_root), "validation": read_dataset_info(http_root, "validation")}
    else:
        info = f"{command}_info.json"
        sources = {"train": read_dataset_info(command + train, "train", info),
                   "validation": read_dataset_info(command + val, "validation", info)}
        assert sources["train"].shard_lengths == [250] * 8 and sources["train"].mean == (0.286,)
    # Default augmentation (RandAugment, random erasing), two workers, rank 1 of 2, a resume inside the epoch.
    common = dict(batch_size=32, rank=1, world_size=2, num_workers=2, seed=3, **FM)
    local, remote = make_train_loader(fmnist_shards, **common), make_train_loader(sources["train"], **common)
    assert len(local) == len(remote) == 31
    assert_same_batches(local.epoch(2), remote.epoch(2))
    assert_same_batches(local.epoch(2, start_batch=7), remote.epoch(2, start_batch=7))
    evaluation = dict(batch_size=100, num_workers=2, crop_pct=1.0, **FM)
    assert_same_batches(make_val_loader(fmnist_shards, **evaluation),
                        make_val_loader(sources["validation"], **evaluation))


def test_unopenable_and_missing_remote_sources(http_root):
    with pytest.raises(DataError, match=r"no opener for s3:// URLs; .* 'pipe:aws s3 cp s3://bucket/shard.tar -'"):
        read_dataset_info("s3://bucket/imagenet1k-train-{0000..1023}.tar|1281167")
    with pytest.raises(FileNotFoundError, match=f"cannot read .{http_root}/nowhere/_info.json"):
        read_dataset_info(f"{http_root}/nowhere")
    with pytest.raises(DataError, match="needs a sample count"):
        read_dataset_info(f"{http_root}/nowhere/x-{{0000..0001}}.tar")
    with pytest.raises(FileNotFoundError, match="cannot read 'pipe:false'"):
        read_dataset_info("pipe:cat x-{0000..0001}.tar|2", info="pipe:false")
    # A pipe: pattern of training shards has no directory to find the validation split in.
    cfg = load_config(overrides=[f"data.source=pipe:curl -s {http_root}/fashion_mnist-train-{{0000..0007}}.tar|2000"])
    with pytest.raises(DataError, match="data.val_split='validation': .* is a command, not a directory.*; give "
                                        "data.val_source"):
        read_splits(cfg.data)


@pytest.mark.slow
def test_killed_run_over_http_resumes_to_the_weights_of_a_local_run(tmp_path, fmnist_shards, http_root):
    reference = train(tmp_path / "local", fmnist_shards, *PER_STEP_LOGS)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "http"
    # Killed once the image phase has written a checkpoint: the resume reopens the remote streams mid-epoch.
    kill_once(run_dir, http_root, lambda: any("image" in p.name for p in (run_dir / "checkpoints").glob("*")),
              *PER_STEP_LOGS)
    resumed = train(run_dir, http_root, "resume=auto", *PER_STEP_LOGS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    expected = load_file(tmp_path / "local" / "model" / "model.safetensors")
    got = load_file(run_dir / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), name
    assert train_records(run_dir) == train_records(tmp_path / "local")
    assert OmegaConf.load(run_dir / "config.yaml").data.source == http_root
