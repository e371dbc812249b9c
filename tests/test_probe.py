"""The warm-up's probe and its stop rule, in this process: the probe's numbers against a count by hand, the
plateau rule on hand-built curves, and the warm-up-stable-decay schedule it ends."""

from __future__ import annotations

import pytest
import timm
import torch
from accelerate import Accelerator

from vitwarm.config import load_config
from vitwarm.models import WarmupViT
from vitwarm.procedural import ProceduralTask
from vitwarm.procedural.probe import probe_share
from vitwarm.run.checkpoints import RunState
from vitwarm.run.plan import Phase
from vitwarm.run.plateau import WSD, decay_start, plateau_decision
from vitwarm.run.probe import Watch
from vitwarm.seeds import derive_seed

from helpers import TINY

GRAMMAR = "k_dyck:3+ww:1"


def tiny_model(task: ProceduralTask) -> WarmupViT:
    torch.manual_seed(0)
    vit = timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=0, embed_dim=64, depth=2, num_heads=2)
    return WarmupViT(vit, task.vocab_size, seed=1).eval()


def phase(steps: int = 100, micro_batch: int = 7) -> Phase:
    return Phase(name="warmup", kind="warmup", init="fresh", final=False, steps=steps, global_batch=micro_batch,
                 micro_batch=micro_batch, grad_accum=1, lr_warmup_steps=5, eval_every=0, log_every=2, save_every=4,
                 grad_clip=1.0, flops=1.0)


def test_probe_accuracy_and_loss_equal_a_count_by_hand():
    cfg = load_config(TINY, [f"procedural.grammar={GRAMMAR}", "warmup.probe.size=50"])
    task = ProceduralTask(GRAMMAR, seq_len=16, params={"k": 4})
    model = tiny_model(task)
    state = RunState()
    # micro-batch 7: the 50 sequences are scored in unequal pieces, whose counts must add up exactly.
    records = Watch(cfg, phase(), task, Accelerator(cpu=True)).probe(model, state)
    got = records[0]

    # By hand: every sequence of the probe set on its own, every masked position counted in Python.
    probe = task.batch(0, 50, derive_seed(cfg.seed, "probe"), grammar=True)
    right, masked, nll = {0: 0, 1: 0}, {0: 0, 1: 0}, {0: 0.0, 1: 0.0}
    with torch.no_grad():
        for i in range(50):
            logits = model(torch.from_numpy(probe["tokens"][i:i + 1]))[0]  # (N, vocab)
            g = int(probe["grammar"][i])
            for pos in range(16):
                if probe["loss_mask"][i, pos]:
                    target = int(probe["targets"][i, pos])
                    masked[g] += 1
                    right[g] += int(int(logits[pos].argmax()) == target)
                    nll[g] -= float(torch.log_softmax(logits[pos].double(), 0)[target])
    assert set(probe["grammar"]) == {0, 1}, "both grammars of the mixture are in the probe set"
    assert got["probe_acc"] == pytest.approx(100 * sum(right.values()) / sum(masked.values()), abs=1e-9)
    assert got["probe_loss"] == pytest.approx(sum(nll.values()) / sum(masked.values()), rel=1e-5)
    for g, name in enumerate(("k_dyck", "ww")):
        assert got[f"probe_acc/{name}"] == pytest.approx(100 * right[g] / masked[g], abs=1e-9)
        assert got[f"probe_loss/{name}"] == pytest.approx(nll[g] / masked[g], rel=1e-5)
    assert state.probe == [[0, got["probe_acc"]]] and got["step"] == 0 and got["event"] == "probe"


def test_probe_shares_split_the_set_and_stay_apart_from_the_training_stream():
    task = ProceduralTask("k_dyck", seq_len=16, params={"k": 4})
    seed = derive_seed(0, "probe")
    whole = task.batch(0, 50, seed, grammar=True)
    shares = [probe_share(task, 50, seed, rank, 3) for rank in range(3)]
    for key in whole:
        assert (torch.from_numpy(whole[key]) == torch.cat([torch.from_numpy(s[key]) for s in shares])).all()
    training = task.batch(0, 50, derive_seed(0, "tokens"))
    assert seed != derive_seed(0, "tokens") and not (training["targets"] == whole["targets"]).all(axis=1).any()
    with pytest.raises(ValueError, match="cannot be split over 4 processes"):
        probe_share(task, 3, seed, 0, 4)


def test_probe_cadence_follows_the_log_records():
    cfg = load_config(TINY, ["warmup.probe.every_steps=5"])
    task = ProceduralTask("k_dyck", seq_len=16, params={"k": 4})
    watch = Watch(cfg, phase(), task, Accelerator(cpu=True))
    # Log records every 2 steps: the probe follows the first record at or after each multiple of 5.
    assert [s for s in range(2, 31, 2) if watch.due(s, 2, done=False)] == [6, 10, 16, 20, 26, 30]
    assert watch.due(31, 2, done=True)  # and the phase's last step


RISE, GAIN, PATIENCE = 20.0, 1.0, 3


@pytest.mark.parametrize("curve, fires_at", [
    # Flat at chance, a jump, then a slow climb that stalls: fires once 3 probes gain < 1 on the best before.
    ([10, 10.5, 11, 10, 35, 60, 70, 74, 74.5, 74.8, 74.9], 10),
    # Flat forever: never (a flat curve has no gain, but the transition never came).
    ([10, 10.2, 10.1, 10.3, 10.2, 10.1, 10.2, 10.3, 10.2], None),
    # A rise of 19.9 points is not the transition, however flat afterwards.
    ([10, 29.9, 29.9, 29.9, 29.9, 29.9, 29.9], None),
    # Transition at index 1, flat at once: the window of `patience` probes after it decides.
    ([10, 40, 40.5, 40.2, 40.9], 4),
    # Still gaining a point per probe: never.
    ([10, 40, 41, 42, 43, 44, 45, 46], None),
    # Noise after the transition: a dip does not count as a gain, nor does a rise back to the old best.
    ([10, 50, 45, 49, 50.5], 4),
])
def test_plateau_rule_on_hand_built_curves(curve, fires_at):
    assert plateau_decision(curve, rise=RISE, min_gain=GAIN, patience=PATIENCE) == fires_at
    if fires_at is not None:  # never before the transition, and not one probe earlier
        assert plateau_decision(curve[:fires_at], rise=RISE, min_gain=GAIN, patience=PATIENCE) is None


def test_wsd_schedule_ends_at_its_minimum_wherever_it_stops():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    cap, cooldown, lr, min_lr = 100, 10, 2e-3, 1e-5
    for decision in (None, 40, 95):
        start = decay_start(cap, cooldown, decision)
        schedule = WSD(optimizer, lr=lr, min_lr=min_lr, warmup=5, cooldown=cooldown, start=lambda s=start: s)
        lrs = []
        for step in range(start + cooldown):
            schedule.step_update(step)
            lrs.append(optimizer.param_groups[0]["lr"])
        assert lrs[0] == min_lr and lrs[4] < lr == lrs[5] == lrs[start - 1]  # linear warm-up, then constant
        assert lrs[-1] == pytest.approx(min_lr, abs=1e-12), decision  # the last step trains at the minimum
        assert all(a > b for a, b in zip(lrs[start - 1:], lrs[start:])), "the cool-down decays every step"
        assert start + cooldown == (cap if decision is None or decision > cap - cooldown else decision + cooldown)


def test_plateau_watch_ends_the_phase_after_its_cooldown():
    cfg = load_config(TINY, ["warmup.stop=plateau", "warmup.cooldown=0.1", "warmup.probe.size=8"])
    task = ProceduralTask("k_dyck", seq_len=16, params={"k": 4})
    watch = Watch(cfg, phase(steps=100), task, Accelerator(cpu=True))
    assert (watch.cooldown, watch.end(), watch.decay_start()) == (10, 100, 90)  # no decision: the cap's cool-down
    state = RunState(step=40, probe=[[0, 10.0], [20, 60.0], [40, 60.5]], stop_step=40)  # a resumed run's decision
    assert watch.begin(tiny_model(task), state) == []  # taken up; no step-0 probe after step 0
    assert (watch.end(), watch.decay_start()) == (50, 40)
