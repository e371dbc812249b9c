"""Data mistakes as a user makes them: each row runs the trainer's entry point on tests/tiny.yaml and expects
exit status 1, exactly one ``vitwarm: error:`` line naming the bad key, file, shard or sample, no traceback,
and either no run directory (found before the run) or no step taken (found by the first batch).

Rows found by the first batch (the loader's workers read the shards) run as a real ``python -m vitwarm.train``;
rows found before the run call its ``main(argv)`` in this process, as tests/test_mistakes.py does, because a
trainer process spends most of its seconds importing torch before it reads the first key."""

from __future__ import annotations

import functools
import io
import json
import shutil
import tarfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from helpers import ERROR, TINY, Mistake, run

pytestmark = pytest.mark.slow  # some rows start a trainer process, the others train up to the first batch

TRAIN = "fashion_mnist-train-{0000..0007}.tar"
# Fast runs: no warm-up phase; a shuffle buffer of 1 reads the first shard's samples in file order.
FAST = ("warmup.fraction=0", "data.shuffle_buffer=1")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def http_root(fmnist_shards):
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(fmnist_shards)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def copy_set(fmnist_shards: Path, dest: Path) -> Path:
    """The train and validation splits of the session set (the 40 test shards are left out)."""
    shutil.copytree(fmnist_shards, dest, ignore=shutil.ignore_patterns("*-test-*"))
    edit_info(dest, lambda info: info["splits"].pop("test"))
    return dest


def edit_info(root: Path, change) -> None:
    info = json.loads((root / "_info.json").read_text())
    change(info)
    (root / "_info.json").write_text(json.dumps(info))


def rewrite_shard(path: Path, change) -> None:
    """Rewrite a tar shard, ``change(index, name, data) -> data`` applied to every member in order."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    with tarfile.open(path, "w") as tar:
        for i, (name, data) in enumerate(members):
            data = change(i, name, data)
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def train_shards(root: Path) -> list[Path]:
    return sorted(root.glob("fashion_mnist-train-*.tar"))


# Each row: setup(tmp, shards, http_root) -> data overrides; the words the error line must hold; and whether
# the mistake is found before the run (no run directory) or by the first batch (no step).


def corrupt_first_sample(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    for shard in train_shards(root):
        rewrite_shard(shard, lambda i, name, data: b"not a png" if i == 0 else data)
    return [f"data.source={root}", "data.strict=true"]


def wrong_shard_length(tmp, shards, http):
    root = copy_set(shards, tmp / "set")  # same total, so only reading a shard shows it
    edit_info(root, lambda info: info["splits"]["train"].update(shard_lengths=[251, 249] * 4))
    # The count shows when a shard has been read to its end: a first batch of 256 reads past the first one.
    return [f"data.source={root}", "train.batch_size=256"]


def garbage_shards(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    for shard in train_shards(root):
        shard.write_bytes(b"\x89garbage" * 1000)
    return [f"data.source={root}"]


def undecodable_images(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    for shard in train_shards(root):
        rewrite_shard(shard, lambda i, name, data: b"not a png" if name.endswith(".png") else data)
    return [f"data.source={root}"]


def info_not_json(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    (root / "_info.json").write_text('{"name": "fashion_mnist", "splits": {')
    return [f"data.source={root}"]


def info_without_splits(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    edit_info(root, lambda info: info.pop("splits"))
    return [f"data.source={root}"]


def info_escaping_filename(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    edit_info(root, lambda info: info["splits"]["validation"]["filenames"].__setitem__(0, "../../etc/hostname"))
    return [f"data.source={root}"]


def info_lengths_mismatch(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    edit_info(root, lambda info: info["splits"]["train"].update(shard_lengths=[250] * 7))
    return [f"data.source={root}"]


def missing_shard(tmp, shards, http):
    root = copy_set(shards, tmp / "set")
    (root / "fashion_mnist-train-0005.tar").unlink()
    return [f"data.source={root}"]


def bare_pattern(tmp, shards, http):
    bare = tmp / "bare"
    bare.mkdir()
    for shard in train_shards(shards):
        (bare / shard.name).symlink_to(shard)
    return [f"data.source={bare}/{TRAIN}", f"data.val_source={shards}"]


def too_few_shards_for_workers(tmp, shards, http):
    return [f"data.source={shards}", "data.num_workers=9"]


ROWS = {
    # shard faults, found in a DataLoader worker and re-raised as themselves
    "corrupt sample, strict": (corrupt_first_sample, ["sample train_", "fashion_mnist-train-", "strict=True"], "step"),
    "shard length disagrees with _info.json": (
        wrong_shard_length, ["holds 250 samples but _info.json says 2", "fashion_mnist-train-"], "step"),
    "all shards garbage": (garbage_shards, ["none of the 8 shard(s)", "fashion_mnist-train-", "look broken"], "step"),
    "every image undecodable": (undecodable_images, ["1000 faulty samples in a row", "fashion_mnist-train-"], "step"),
    "remote shard missing, strict": (  # the first shard is there (asked before the run); seed 1 reads the other first
        lambda tmp, shards, http: [f"data.source={http}/fashion_mnist-train-{{0000,0008}}.tar|500", "seed=1",
                                   "data.strict=true", f"data.val_source={http}"],
        ["fashion_mnist-train-0008.tar broke off", "strict=True"], "step"),
    "fewer shards than workers": (too_few_shards_for_workers, ["8 shard(s)", "num_workers = 1 * 9"], "step"),
    # _info.json
    "_info.json is not JSON": (info_not_json, ["_info.json is not valid JSON", "line 1"], "before"),
    "_info.json without splits": (info_without_splits, ["_info.json: 'splits' must be"], "before"),
    "_info.json filename outside the root": (
        info_escaping_filename, ["splits.validation.filenames[0] = '../../etc/hostname'", "not a file inside"],
        "before"),
    "_info.json lengths of another length": (info_lengths_mismatch, ["splits.train.shard_lengths must be"], "before"),
    "data.info missing": (
        lambda tmp, shards, http: [f"data.source={shards}/{TRAIN}|2000", f"data.info={tmp}/nope/_info.json",
                                   f"data.val_source={shards}"], ["no _info.json in", "nope"], "before"),
    # sources
    "source directory missing": (
        lambda tmp, shards, http: [f"data.source={tmp}/nowhere"], ["shard directory", "nowhere does not exist"],
        "before"),
    "directory without _info.json": (
        lambda tmp, shards, http: [f"data.source={tmp}"], ["no _info.json in", "not a shard directory"], "before"),
    "a shard of the pattern missing": (
        missing_shard, ["1 of 8 shard(s)", "fashion_mnist-train-0005.tar"], "before"),
    "pattern of files that do not exist": (
        lambda tmp, shards, http: [f"data.source={tmp}/x-{{0000..0001}}.tar"], ["2 of 2 shard(s)"], "before"),
    "pattern without a count or _info.json": (
        bare_pattern, ["needs a sample count", "append '|N'"], "before"),
    "unknown URL scheme": (
        lambda tmp, shards, http: ["data.source=s3://bucket/imagenet1k-train-{0000..1023}.tar|1281167"],
        ["no opener for s3:// URLs", "pipe:aws s3 cp"], "before"),
    "remote directory without _info.json": (
        lambda tmp, shards, http: [f"data.source={http}/nothing"], ["nothing/_info.json answered HTTP 404"], "before"),
    "remote pattern of shards that are not there": (
        lambda tmp, shards, http: [f"data.source={http}/x-{{0000..0001}}.tar|2"], ["x-0000.tar answered HTTP 404"],
        "before"),
    "train split missing": (
        lambda tmp, shards, http: [f"data.source={shards}", "data.train_split=training"],
        ["split 'training' is not in", "valid: ['test', 'train', 'validation']"], "before"),
    "pattern of validation shards as training data": (
        lambda tmp, shards, http: [f"data.source={shards}/fashion_mnist-validation-{{0000..0001}}.tar"],
        ["holds shards of split validation", "not of split 'train'"], "before"),
    # evaluation never reads training data
    "pattern source, validation split not in its _info.json": (
        lambda tmp, shards, http: [f"data.source={shards}/{TRAIN}", "data.val_split=val"],
        ["data.val_split='val'", "give data.val_source"], "before"),
    "validation split = training split": (
        lambda tmp, shards, http: [f"data.source={shards}", "data.val_split=train"],
        ["data.val_split='train'", "shares 8 of its 8 shard(s)", "never read training data"], "before"),
    "test_source = training shards over HTTP": (
        lambda tmp, shards, http: [f"data.source={http}", f"data.test_source={http}", "data.test_split=train"],
        ["data.test_split='train'", "http://127.0.0.1:", "/fashion_mnist-train-"], "before"),
    "val_source missing": (
        lambda tmp, shards, http: [f"data.source={shards}", f"data.val_source={tmp}/held-out"],
        ["held-out does not exist"], "before"),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_data_mistake(tmp_path, fmnist_shards, http_root, row):
    setup, words, found = ROWS[row]
    run_dir = tmp_path / "run"
    argv = ["-m", "vitwarm.train", "--config", str(TINY), *FAST, *setup(tmp_path, fmnist_shards, http_root)]
    argv = [a.replace("{", "{{").replace("}", "}}") for a in argv]  # already filled in: keep shard braces as typed
    status, output = run(Mistake(row, argv, names=words[0], launch="subprocess" if found == "step" else
                                 "inproc"), tmp_path, fmnist_shards)
    errors = [line for line in output.splitlines() if line.startswith(ERROR)]
    assert status == 1, output[-3000:]
    assert len(errors) == 1, output[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    assert "Traceback" not in output, output[-3000:]
    if found == "before":
        assert not run_dir.exists(), "a run directory was created for a run that cannot start"
    else:
        assert not list(run_dir.glob("checkpoints/*")), "a step was taken"
        metrics = run_dir / "metrics.jsonl"
        assert not metrics.exists() or not metrics.read_text().strip(), "a step was logged"
