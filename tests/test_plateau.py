"""The adaptive warm-up stop on real runs: where it ends the phase, the schedule it ends on, what the run
directory says about planned and used lengths, and SIGKILL at every window of the stop (one run, killed again
in each resume) resuming bitwise.

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
from safetensors.torch import load_file

from vitwarm.models.attention_scores import attention_scores

from helpers import TINY, train, train_records, trained

pytestmark = pytest.mark.slow

PLATEAU = ("warmup.stop=plateau", "warmup.fraction=1.0", "budget.regime=additive", "checkpoint.every_steps=2")
PLANNED, COOLDOWN = 125, 12  # 1.0 x 2 epochs x 2000 images / 32; round(0.1 x 125)


def events(run_dir: Path, name: str) -> list[dict]:
    return [r for r in train_records(run_dir) if r.get("event") == name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, fmnist_shards) -> Path:
    return trained(tmp_path_factory.mktemp("stop") / "reference", fmnist_shards, *PLATEAU)


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
