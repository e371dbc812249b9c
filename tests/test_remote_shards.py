"""Shards and _info.json read through webdataset's URL openers: an HTTP server on 127.0.0.1 started here
serves the session's Fashion-MNIST shards (and records the requests it answers); ``pipe:`` commands stand in
for object stores."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from vitwarm.cli.train import main as train_main
from vitwarm.config import load_config
from vitwarm.data import DataError, make_train_loader, make_val_loader, read_dataset_info, read_splits

from helpers import ENV, PER_STEP_LOGS, ROOT, TINY, kill_once, train, train_command, train_records

FM = dict(img_size=28, in_chans=1)


class RecordingHandler(SimpleHTTPRequestHandler):
    """Serves files quietly and appends each request's (method, path) to ``requests``."""

    requests: list[tuple[str, str]]

    def log_request(self, code="-", size="-") -> None:
        self.requests.append((self.command, self.path))

    def log_message(self, *args) -> None:  # one line per request would flood the test output
        pass


class StallingHandler(RecordingHandler):
    """Answers a GET of ``stalled`` (a path) with its headers and its first 20 kB, then sends nothing more until
    ``released`` is set: what a hung gateway or object-store proxy does. Everything else is served."""

    stalled: str
    released: threading.Event

    def do_GET(self) -> None:
        if self.path != self.stalled:
            return super().do_GET()
        body = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)  # recorded in ``requests`` (log_request)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:20_000])
        self.wfile.flush()
        self.released.wait()


@contextlib.contextmanager
def serve(directory, stalled: str | None = None) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """``http://127.0.0.1:PORT`` serving ``directory``, and the list of the requests it answered; with
    ``stalled`` (a path such as ``/x-0003.tar``), a server that stalls that file's body (StallingHandler)."""
    requests: list[tuple[str, str]] = []
    released = threading.Event()
    handler = type("Handler", (StallingHandler if stalled else RecordingHandler,),
                   {"requests": requests, "stalled": stalled, "released": released})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        released.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def served(fmnist_shards):
    """``(http://127.0.0.1:PORT, requests)``, serving the shard directory (its _info.json and tar files)."""
    with serve(fmnist_shards) as root_and_requests:
        yield root_and_requests


@pytest.fixture(scope="module")
def http_root(served):
    return served[0]


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
    with pytest.raises(FileNotFoundError, match=f"^{http_root}/nowhere/_info.json answered HTTP 404 "):
        read_dataset_info(f"{http_root}/nowhere")
    with pytest.raises(DataError, match="needs a sample count"):
        read_dataset_info("pipe:cat x-{0000..0001}.tar")
    with pytest.raises(FileNotFoundError, match=f"^{http_root}/nowhere/x-0000.tar answered HTTP 404 "):
        read_dataset_info(f"{http_root}/nowhere/x-{{0000..0001}}.tar|2")
    with pytest.raises(FileNotFoundError, match="cannot read 'pipe:false'"):
        read_dataset_info("pipe:cat x-{0000..0001}.tar|2", info="pipe:false")
    # A pipe: pattern of training shards has no directory to find the validation split in.
    cfg = load_config(overrides=[f"data.source=pipe:curl -s {http_root}/fashion_mnist-train-{{0000..0007}}.tar|2000"])
    with pytest.raises(DataError, match="data.val_split='validation': .* is a command, not a directory.*; give "
                                        "data.val_source"):
        read_splits(cfg.data)


@pytest.mark.parametrize("source", ["{root}/nowhere", "{root}/nowhere/_info.json",
                                    "{root}/nowhere/x-{{0000..0001}}.tar|2"])
def test_a_missing_remote_source_is_one_line_naming_the_url_and_status(http_root, source, tmp_path, capsys):
    source = source.format(root=http_root)
    missing = source.removesuffix("/_info.json").replace("{0000..0001}.tar|2", "0000.tar")
    status = train_main(["--config", str(TINY), f"data.source={source}", f"run.dir={tmp_path / 'run'}"])
    (line,) = capsys.readouterr().err.splitlines()
    assert status == 1 and not (tmp_path / "run").exists()
    assert line.startswith(f"vitwarm: error: data.source={source!r}: {missing}") and "answered HTTP 404" in line
    assert "make_shards" not in line and "prepare" not in line  # neither applies to a URL


def test_each_remote_file_is_asked_for_once_per_process(fmnist_shards):
    with serve(fmnist_shards) as (root, requests):
        cfg = load_config(TINY, [f"data.source={root}", "data.test_split=test"])
        for _ in range(3):  # as the preflight, the image phase's check and the run each do
            splits = read_splits(cfg.data)
        firsts = sorted(f"/{os.path.basename(s.urls[0])}" for s in splits.values())
        assert sorted(requests) == sorted([("GET", "/_info.json")] + [("HEAD", f) for f in firsts])


@pytest.mark.slow
def test_killed_run_over_http_resumes_to_the_weights_of_a_local_run(tmp_path, fmnist_shards, served):
    reference = train(tmp_path / "local", fmnist_shards, *PER_STEP_LOGS)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run_dir = tmp_path / "http"
    http_root, requests = served
    requests.clear()
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
    # Each of the two processes (killed, resumed) fetched the _info.json once.
    assert requests.count(("GET", "/_info.json")) == 2


STALLED = "/fashion_mnist-train-0003.tar"


@pytest.mark.slow
def test_a_stalled_shard_transfer_ends_the_run_in_one_line_naming_the_url(tmp_path, fmnist_shards):
    with serve(fmnist_shards, stalled=STALLED) as (root, requests):
        result = train(tmp_path / "run", root, "data.stall_s=1", "data.retries=2")
    assert requests.count(("GET", STALLED)) == 3  # the first try and two more, from the byte reached
    lines = [line for line in result.stderr.splitlines() if line.startswith("vitwarm:")]
    assert result.returncode == 1 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"vitwarm: error: {root}{STALLED} stalled: no byte for 1 s after 20000 bytes, on 3 "
                               "tries (data.stall_s=1, data.retries=2)"), lines


@pytest.mark.slow
def test_sigterm_during_a_stalled_transfer_stops_the_run_at_its_last_step(tmp_path, fmnist_shards):
    run_dir = tmp_path / "run"
    with serve(fmnist_shards, stalled=STALLED) as (root, requests):
        # No stall limit that could end the run first: only the signal can.
        process = subprocess.Popen(train_command(run_dir, root, "data.stall_s=3600"), cwd=ROOT, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while ("GET", STALLED) not in requests:
            assert process.poll() is None and time.monotonic() < deadline, "the stalled shard was never asked for"
            time.sleep(0.1)
        time.sleep(2)  # the batches read before the stall are trained on: the run now waits for data
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)  # the promise: stopped within 60 s
    lines = [line for line in err.splitlines() if line.startswith("vitwarm:")]
    assert process.returncode == 75 and len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert lines[0].startswith("vitwarm: stopped on SIGTERM at image step "), lines
    assert list(run_dir.glob("checkpoints/1-image-*")), "the step reached was not saved"
