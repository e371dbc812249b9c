"""The adaptive warm-up stop on real runs: where it ends the phase, the schedule it ends on, what the run
directory says about planned and used lengths, the lines the run ends with and its figure, and SIGKILL at
every window of the stop (one run, killed again in each resume) resuming bitwise.

The runs are tests/tiny.yaml with ``warmup.stop=plateau`` and a warm-up long enough to learn (125 planned
steps of k-Dyck, a probe every 4 steps, a checkpoint every 2). Kills land on purpose, inside the write of a
chosen checkpoint (``VITWARM_KILL_AT=checkpoint:files@N``), counted from the reference run's decision step.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import timm
from PIL import Image
from safetensors.torch import load_file

from vitwarm.models.attention_scores import attention_scores
from vitwarm.run.curves import curves, draw_curves

from helpers import TINY, train, train_records

pytestmark = pytest.mark.slow

PLATEAU = ("warmup.stop=plateau", "warmup.fraction=1.0", "budget.regime=additive", "checkpoint.every_steps=2")
PLANNED, COOLDOWN = 125, 12  # 1.0 x 2 epochs x 2000 images / 32; round(0.1 x 125)


def events(run_dir: Path, name: str) -> list[dict]:
    return [r for r in train_records(run_dir) if r.get("event") == name]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, fmnist_shards) -> tuple[Path, str]:
    """The reference run: its directory and what it printed."""
    run_dir = tmp_path_factory.mktemp("stop") / "reference"
    result = train(run_dir, fmnist_shards, *PLATEAU)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir, result.stdout


@pytest.fixture(scope="module")
def reference(finished) -> Path:
    return finished[0]


def decision(run_dir: Path) -> tuple[int, int]:
    """(step of the stop decision, step the warm-up ended at)."""
    (stop,) = events(run_dir, "warmup_stop")
    return stop["step"], stop["end_step"]


def test_plateau_stops_after_the_transition_and_ends_at_the_minimum_lr(reference):
    stop_step, end = decision(reference)
    (stop,) = events(reference, "warmup_stop")
    probes = [r for r in events(reference, "probe") if r["phase"] == "warmup"]
    assert 0 < stop["transition_step"] < stop_step and end == stop_step + COOLDOWN < PLANNED
    start = probes[0]["probe_acc"]
    assert probes[0]["step"] == 0
    assert all(r["probe_acc"] < start + 20 for r in probes if r["step"] < stop["transition_step"])
    warm = [r for r in train_records(reference) if r["phase"] == "warmup" and "loss" in r]
    assert warm[-1]["step"] == end and warm[-1]["lr"] == pytest.approx(1e-5, abs=1e-12)  # the cool-down's last step
    assert max(r["lr"] for r in warm) == pytest.approx(2e-3)

    summary = json.loads((reference / "summary.json").read_text())
    phase = summary["phases"]["warmup"]
    (phase_end,) = [r for r in events(reference, "phase_end") if r["phase"] == "warmup"]
    assert (phase["steps"], phase["used_steps"], phase["used_samples"]) == (PLANNED, end, end * 32)
    assert phase["used_flops"] == pytest.approx(phase["flops"] * end / PLANNED)
    assert phase_end["used_steps"] == end and phase_end["planned_steps"] == PLANNED
    assert summary["warmup_samples"] == end * 32
    # What the warm-up instilled: the scores of the exported (transferred) attention weights.
    vit = timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=0, embed_dim=64, depth=2, num_heads=2)
    vit.load_state_dict(load_file(reference / "warmup/model.safetensors"), strict=False)
    assert summary["attention"] == attention_scores(vit)
    accs = [r["probe_acc"] for r in probes]
    assert summary["probe"] == {"start_acc": accs[0], "last_acc": accs[-1], "best_acc": max(accs),
                                "best_step": probes[accs.index(max(accs))]["step"],
                                "transition_step": stop["transition_step"], "stop": "plateau", "stop_step": stop_step}


def test_the_run_ends_with_its_outcome_and_leaves_its_curves(finished, tmp_path):
    run_dir, stdout = finished
    summary = json.loads((run_dir / "summary.json").read_text())
    warm, image, probe = summary["phases"]["warmup"], summary["phases"]["image"], summary["probe"]
    lines = stdout.splitlines()
    done = next(i for i, line in enumerate(lines) if line.startswith("vitwarm: done."))
    assert lines[done:] == [
        f"vitwarm: done. validation top-1 {summary['top1']:.2f}% (top-5 {summary['top5']:.2f}%)",
        f"  warm-up: {warm['used_flops']:.2e} FLOPs used of {warm['planned_flops']:.2e} planned = "
        f"{100 * warm['used_flops'] / image['used_flops']:.1f}% of the image phase's {image['used_flops']:.2e}; "
        f"stopped at its plateau at step {probe['stop_step']}, ended at step {warm['used_steps']} "
        "after the LR cool-down",
        f"  learned: probe {probe['start_acc']:.1f}% -> {probe['best_acc']:.1f}% (best, at step {probe['best_step']}); "
        f"transition at step {probe['transition_step']}",
        f"  exports: {run_dir}/model/ (the final model), {run_dir}/warmup/ (the warmed-up backbone, no head); "
        f"curves {run_dir}/curves.png; numbers {run_dir}/summary.json",
        f'  in stock timm: timm.create_model("local-dir:{run_dir}/model", pretrained=True)']

    # The figure's series are metrics.jsonl's, and curves.png is their drawing.
    records = train_records(run_dir)
    drawn = curves(records, "validation", rise=20.0)
    steps = {phase: [(r["step"], r["loss"]) for r in records if r["phase"] == phase and "event" not in r]
             for phase in ("warmup", "image")}
    assert (drawn.warmup_loss, drawn.image_loss) == (steps["warmup"], steps["image"]) and drawn.image_loss
    assert drawn.probe_acc == [(r["step"], r["probe_acc"]) for r in events(run_dir, "probe")]
    assert drawn.val_top1 == [(r["step"], r["top1"]) for r in events(run_dir, "eval") if r["split"] == "validation"]
    assert len(drawn.val_top1) > 2 and drawn.val_top1[-1] == (image["used_steps"], pytest.approx(summary["top1"]))
    assert (drawn.transition_step, drawn.stop_step) == (probe["transition_step"], probe["stop_step"])
    with Image.open(run_dir / "curves.png") as png:
        assert (png.format, png.size) == ("PNG", (1000, 700))
        png.verify()
    assert draw_curves(drawn, tmp_path / "again.png").read_bytes() == (run_dir / "curves.png").read_bytes()


def test_kills_around_the_stop_resume_bitwise(tmp_path, fmnist_shards, reference):
    # One run killed in every window of the stop in turn, each resume killed at the next window (a job preempted
    # again and again), then resumed to the end: the same weights, records and summary as the reference.
    stop_step, end = decision(reference)
    # Warm-up save number n is step 2n; after the last one the phase-end save (step `end`), then the image's.
    # window: (save number counted from the run's start, the newest checkpoint's step after the kill, whether
    # that checkpoint holds the decision)
    windows = {"while saving the decision": (stop_step // 2, stop_step - 2, False),
               "just after the decision": (stop_step // 2 + 1, stop_step, True),
               "inside the cool-down": (stop_step // 2 + 3, stop_step + 4, True),
               "at the phase switch": (end // 2 + 1, end, True)}
    run_dir, resumed_at = tmp_path / "run", 0
    for window, (save, newest_step, decided) in windows.items():
        # A resumed process counts its saves from 1, starting after the checkpoint it resumed from.
        killed = train(run_dir, fmnist_shards, *PLATEAU, kill_at=f"checkpoint:files@{save - resumed_at // 2}")
        assert killed.returncode == -signal.SIGKILL, (window, killed.stderr[-2000:])
        newest = sorted(p for p in (run_dir / "checkpoints").iterdir() if not p.name.startswith("."))[-1]
        state = json.loads((newest / "state.json").read_text())
        assert (newest.name, state["stop_step"]) == (f"0-warmup-{newest_step:08d}", stop_step if decided else None), \
            window
        resumed_at = newest_step

    result = train(run_dir, fmnist_shards, *PLATEAU)
    assert result.returncode == 0 and "resuming from" in result.stdout, result.stderr[-3000:]
    for name in ("warmup/model.safetensors", "model/model.safetensors"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name
    assert train_records(run_dir) == train_records(reference)
    summary, expected = (json.loads((d / "summary.json").read_text()) for d in (run_dir, reference))
    assert summary["probe"] == expected["probe"] and summary["phases"] == {
        name: phase | {"train_s": summary["phases"][name]["train_s"]} for name, phase in expected["phases"].items()}


def test_substitutive_stop_gives_the_image_phase_the_unused_samples_and_a_matched_run_its_flops(
        tmp_path, fmnist_shards):
    from vitwarm.config import load_config
    from vitwarm.run.preflight import preflight

    # 0.95 of the 4,000-sample budget: 119 warm-up steps of 32, 200 images (3 steps of 64 = 192) unless it stops.
    overrides = ["warmup.stop=plateau", "warmup.fraction=0.95", "checkpoint.every_steps=50"]
    run_dir = tmp_path / "substitutive"
    result = train(run_dir, fmnist_shards, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    warm, image = summary["phases"]["warmup"], summary["phases"]["image"]
    unused = (warm["steps"] - warm["used_steps"]) * 32
    assert warm["steps"] == 119 and unused > 0, "the warm-up did not stop early"
    # Exactly the unused samples, rounded to whole image steps (half a batch of 64 at most).
    assert abs(image["samples"] - (192 + unused)) <= 32 and image["used_samples"] == image["samples"]
    assert summary["image_samples"] == image["samples"] and "now" in result.stdout

    # The compute-matched control of that run: its extra image steps carry the run's used warm-up FLOPs.
    cfg = load_config(TINY, [f"data.source={fmnist_shards}", f"run.dir={tmp_path / 'matched'}",
                             "warmup.fraction=0.95", "budget.regime=compute_matched", f"budget.matched_to={run_dir}"])
    (matched,) = preflight(cfg, world_size=1).phases
    baseline = preflight(load_config(TINY, [f"data.source={fmnist_shards}", "warmup.fraction=0"]), 1).final
    extra_flops = matched.flops - baseline.flops
    assert abs(extra_flops - warm["used_flops"]) <= baseline.flops / baseline.steps / 2  # to half an image step
