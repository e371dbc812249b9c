"""``--dry-run``: everything a run does before step 1, in this interpreter, and nothing written: no run
directory, no shards prepared; the mistakes a run refuses, refused the same way (one line, no run directory)."""

from __future__ import annotations

import pytest

from helpers import Mistake, check_mistake, train_in_process


def files(root) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_dry_run_checks_everything_and_writes_nothing(tmp_path, fmnist_shards):
    shards = files(fmnist_shards)
    status, out = train_in_process(tmp_path / "run", fmnist_shards, "--dry-run")
    assert status == 0, out
    lines = out.splitlines()
    assert lines[:4] == [
        f"vitwarm: dry run (nothing written): {tmp_path / 'run'}",
        f"  train: split 'train', 2000 samples in 8 shard(s), e.g. {fmnist_shards}/fashion_mnist-train-0000.tar",
        f"  val: split 'validation', 500 samples in 2 shard(s), e.g. {fmnist_shards}/fashion_mnist-validation-0000.tar",
        f"  start at step 1 in {tmp_path / 'run'} (created then); the plan:"]
    # tests/tiny.yaml, substitutive: 0.2 x 2 epochs x 2,000 images = 800 sequences at 32, the other 3,200 images at 64.
    assert lines[4].startswith("  warmup  25 steps x 32 = 800 samples, ~")
    assert lines[5].startswith("  image   50 steps x 64 = 3200 samples, ~")
    assert f"{tmp_path / 'run'}/model/, {tmp_path / 'run'}/warmup/ (timm hub exports" in out
    assert "MB free on the file system of " in out
    # Shards that data.prepare would write are announced, not written.
    status, out = train_in_process(tmp_path / "run", fmnist_shards, "--dry-run", "data.prepare=fmnist",
                                   f"data.source={tmp_path / 'fmnist'}", "data.train_fraction=0.05")
    assert status == 0, out
    assert f"  write Fashion-MNIST shards into {tmp_path / 'fmnist'} (data.prepare=fmnist, train fraction 0.05)" in out
    assert list(tmp_path.iterdir()) == [] and files(fmnist_shards) == shards


def dry(name: str, *overrides: str, names: str) -> Mistake:
    return Mistake(name, ["-m", "vitwarm.train", "--config", "{tiny}", "--dry-run", *overrides], names)


@pytest.mark.parametrize("row", [  # one of each stage: the config, the preflight, the data, the run directory
    dry("misspelled key", "warmup.fractoin=0.1", names="Did you mean warmup.fraction"),
    dry("warm-up batch larger than its budget", "warmup.batch_size=100000", names="warmup.batch_size=100000"),
    dry("odd token grid for brackets", "model.kwargs.img_size=21", names="3 x 3 = 9 token grid"),
    dry("unknown tracker", "log.trackers=[tensorbored]", names="tensorbored"),
    dry("missing data source", "data.source={tmp}/nothing", names="data.source="),
    dry("missing validation split", "data.val_split=valid", names="data.val_split='valid'"),
    dry("matched_to an unfinished run", "budget.regime=compute_matched", "budget.matched_to={tmp}",
        names="is no finished run"),
], ids=str)
def test_dry_run_refuses_what_a_run_refuses(row, tmp_path, fmnist_shards):
    check_mistake(row, tmp_path, fmnist_shards)
