"""Budget arithmetic: both regimes, tiny fractions, accumulation and world sizes, all through plan_phases."""

import pytest

from vitwarm.config import load_config
from vitwarm.errors import ConfigError
from vitwarm.run.phases import KINDS, warmup
from vitwarm.run.plan import Plan, micro_batch, plan_phases, to_steps


def plan(overrides, train_samples=50_000, world_size=1):
    cfg = load_config(None, overrides)
    return {p.name: p for p in plan_phases(cfg, train_samples=train_samples, world_size=world_size,
                                           flops_per_sample=1.0)}


def test_substitutive_splits_the_budget():
    # B = 4 epochs x 50k = 200k samples; f = 0.05 -> 10k sequences, 190k images.
    phases = plan(["budget.epochs=4", "warmup.fraction=0.05", "budget.regime=substitutive",
                   "warmup.batch_size=100", "train.batch_size=100"])
    assert phases["warmup"].steps == 100 and phases["warmup"].samples == 10_000
    assert phases["image"].steps == 1900 and phases["image"].samples == 190_000


def test_additive_puts_the_warmup_on_top():
    phases = plan(["budget.epochs=4", "warmup.fraction=0.05", "budget.regime=additive",
                   "warmup.batch_size=100", "train.batch_size=100"])
    assert phases["warmup"].samples == 10_000
    assert phases["image"].samples == 200_000


def test_zero_fraction_has_no_warmup_phase():
    phases = plan(["warmup.fraction=0"])
    assert list(phases) == ["image"]


def test_tiny_fraction_keeps_at_least_one_step():
    # 0.001 x 4 x 50k = 200 sequences = 1.56 steps of 128 -> 2 steps.
    phases = plan(["budget.epochs=4", "warmup.fraction=0.001", "warmup.batch_size=128"])
    assert phases["warmup"].steps == 2
    # 0.001 x 300 x 1,281,167 = 384,350 sequences = 1501.4 steps of 256 -> 1501.
    imagenet = plan(["budget.epochs=300", "warmup.fraction=0.001", "warmup.batch_size=256"],
                    train_samples=1_281_167)
    assert imagenet["warmup"].steps == 1501


@pytest.mark.parametrize("overrides,message", [
    # 200 sequences cannot fill one batch of 256: refused rather than run as one step of 256.
    (["warmup.fraction=0.001", "warmup.batch_size=256"], "warmup.batch_size=256 is larger than the whole "
                                                         "warm-up budget of 200 sequences"),
    (["budget.epochs=0.001", "warmup.fraction=0", "train.batch_size=128"],
     "train.batch_size=128 is larger than the image budget of 50 samples"),
    (["train.batch_size=60000"], "train.batch_size=60000 is larger than the image budget"),
])
def test_batch_larger_than_its_budget_is_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        plan(["budget.epochs=4", *overrides])


def test_paper_budget_is_15k_steps():
    # 1% of 300 ImageNet epochs at batch 256 is the paper's ~15k warm-up steps.
    phases = plan(["budget.epochs=300", "warmup.fraction=0.01", "warmup.batch_size=256",
                   "train.batch_size=1024"], train_samples=1_281_167)
    assert phases["warmup"].steps == 15_014  # 3,843,501 sequences / 256 = 15013.7
    assert phases["warmup"].lr_warmup_steps == 1001  # 1/15 of the steps, the paper's 1k
    assert phases["image"].steps == round(0.99 * 300 * 1_281_167 / 1024)


@pytest.mark.parametrize("world_size,accum", [(1, 1), (2, 1), (4, 2), (8, 4)])
def test_steps_do_not_depend_on_world_size(world_size, accum):
    phases = plan(["train.batch_size=256", f"train.grad_accum={accum}", "warmup.batch_size=256",
                   f"warmup.grad_accum={accum}"], world_size=world_size)
    reference = plan(["train.batch_size=256", "warmup.batch_size=256"])
    for name in ("warmup", "image"):
        assert phases[name].steps == reference[name].steps
        assert phases[name].micro_batch * world_size * accum == 256


def test_uneven_global_batch_is_refused():
    with pytest.raises(ValueError, match="train.batch_size=100 does not split over 3 processes"):
        micro_batch(100, 3, 1, "train.batch_size")


def test_eval_and_lr_warmup_in_epochs():
    # 50k samples / 100 per step = 500 steps per epoch.
    phases = plan(["train.batch_size=100", "train.lr_warmup_epochs=0.5", "eval.every_epochs=2"])
    assert phases["image"].lr_warmup_steps == 250
    assert phases["image"].eval_every == 1000


def test_to_steps_needs_exactly_one_unit():
    with pytest.raises(ValueError, match="exactly one"):
        to_steps(samples=10, epochs=1, global_batch=1)
    assert to_steps(fraction=0.0, of_steps=100) == 0
    assert to_steps(epochs=2, epoch_samples=1000, global_batch=64) == 31  # 31.25


# ---- compute-matched control ------------------------------------------------------------------------

@pytest.mark.parametrize("fraction,warm_batch,image_batch,extra_steps", [
    # Hand-computed on the reproduction's 5,504-image train split, B = 4 x 5,504 = 22,016 images:
    (1.0, 32, 64, 344),     # 22,016 / 32 = 688 warm-up steps = 22,016 sequences = 344 image steps of 64
    (0.25, 32, 100, 55),    # 5,504 / 32 = 172 steps = 5,504 sequences = 55.04 -> 55 image steps of 100
    (0.05, 32, 64, 17),     # 1,100.8 / 32 = 34.4 -> 34 steps = 1,088 sequences = 17 image steps of 64
])  # fmt: skip
def test_compute_matched_adds_the_warmups_flops_as_image_steps(fraction, warm_batch, image_batch, extra_steps):
    common = ["budget.epochs=4", f"warmup.fraction={fraction}", f"warmup.batch_size={warm_batch}",
              f"train.batch_size={image_batch}"]
    additive = plan(common + ["budget.regime=additive"], train_samples=5504)
    matched = plan(common + ["budget.regime=compute_matched"], train_samples=5504)
    assert list(matched) == ["image"]
    assert matched["image"].steps == round(22_016 / image_batch) + extra_steps
    # flops_per_sample=1: the plan's FLOPs are 3 x samples, so total compute matches up to one step's rounding.
    total_additive = additive["warmup"].flops + additive["image"].flops
    assert abs(matched["image"].flops - total_additive) <= 3 * image_batch / 2


def test_compute_matched_keeps_the_image_schedule_in_epochs():
    matched = plan(["budget.epochs=4", "warmup.batch_size=32", "train.batch_size=64", "warmup.fraction=1.0",
                    "budget.regime=compute_matched", "train.lr_warmup_epochs=0.3", "eval.every_epochs=1"],
                   train_samples=5504)
    assert matched["image"].lr_warmup_steps == 26  # 0.3 x 86 steps per epoch = 25.8
    assert matched["image"].eval_every == 86


def test_compute_matched_needs_the_matched_fraction():
    with pytest.raises(ConfigError, match="compute_matched needs warmup.fraction > 0"):
        load_config(None, ["budget.regime=compute_matched", "warmup.fraction=0"])
    with pytest.raises(ConfigError, match="choose one of .*compute_matched"):
        load_config(None, ["budget.regime=compute-matched"])


# ---- roles: what the training loop reads instead of phase names ---------------------------------------

@pytest.mark.parametrize("overrides,image_init", [
    (["warmup.fraction=0.05"], "warmup"),
    (["warmup.fraction=0"], "fresh"),
    (["warmup.fraction=0.05", "budget.regime=compute_matched"], "fresh"),
    (["warmup.fraction=0.05", "transfer.sources={a: runs/a/warmup}", "transfer.parts=[attn]"], "sources"),
    (["warmup.fraction=0", "model.finetune=runs/in1k/model"], "finetune"),
], ids=["warm-up", "none", "compute-matched", "composed", "fine-tuning"])
def test_each_phase_carries_its_role(overrides, image_init):
    phases = plan(["budget.epochs=4", "log.every_steps=7", "checkpoint.every_steps=11", *overrides])
    image = phases["image"]
    assert (image.kind, image.init, image.final, image.counts_images) == ("image", image_init, True, True)
    assert KINDS[image.kind].end is None
    assert (image.log_every, image.save_every) == (7, 11)
    if "warmup" in phases:
        warm = phases["warmup"]
        assert (warm.kind, warm.init, warm.final, warm.counts_images) == ("warmup", "fresh", False, False)
        assert KINDS[warm.kind] is warmup.KIND  # its end: the transfer and the export
        assert (warm.log_every, warm.save_every) == (7, 11)
    # The roles stay out of summary.json's per-phase records, which keep their lengths and batches.
    assert set(image.as_dict()) == {"name", "steps", "global_batch", "micro_batch", "grad_accum", "lr_warmup_steps",
                                    "eval_every", "grad_clip", "flops", "samples"}


# ---- the budget follows what the warm-up used ------------------------------------------------------

@pytest.mark.parametrize("used", [100, 37, 0])
def test_substitutive_image_phase_gets_exactly_the_unused_warmup_samples(used):
    phases = plan(["warmup.fraction=0.1", "warmup.batch_size=64", "train.batch_size=64"])
    planned = Plan(list(phases.values()), train_samples=50_000, num_classes=10, img_size=32)
    after = {p.name: p for p in planned.after({"warmup": used}, "substitutive").phases}
    unused = (phases["warmup"].steps - used) * 64
    assert after["warmup"] == phases["warmup"]  # the plan of a phase that ran is not rewritten
    assert after["image"].samples == phases["image"].samples + unused  # batches alike: exact
    assert after["image"].flops == pytest.approx(3 * after["image"].samples)
    assert after["image"].lr_warmup_steps == phases["image"].lr_warmup_steps  # the schedule stays in epochs
    # Another batch rounds the unused samples to the nearest whole image step.
    wide = Plan(list(plan(["warmup.fraction=0.1", "warmup.batch_size=64", "train.batch_size=100"]).values()),
                train_samples=50_000, num_classes=10, img_size=32)
    image = wide.after({"warmup": used}, "substitutive").final
    assert abs(image.samples - (wide.final.samples + unused)) <= 50


def test_additive_and_unstopped_warmups_leave_the_image_phase_alone():
    phases = plan(["warmup.fraction=0.1"])
    planned = Plan(list(phases.values()), train_samples=50_000, num_classes=10, img_size=32)
    assert planned.after({"warmup": 3}, "additive") is planned
    assert planned.after({"warmup": phases["warmup"].steps}, "substitutive") is planned
    assert planned.after({}, "substitutive") is planned


def test_compute_matched_to_a_finished_runs_flops():
    cfg = load_config(None, ["budget.epochs=4", "warmup.fraction=1.0", "train.batch_size=64",
                             "budget.regime=compute_matched"])
    image = plan_phases(cfg, train_samples=5504, world_size=1, flops_per_sample=2.0, matched_flops=3 * 2.0 * 6400)[0]
    assert image.steps == round(22_016 / 64) + 100  # 6,400 images' FLOPs = 100 steps of 64
    # Shorter warm-up sequences cost less per sequence: the matched steps follow the FLOPs, not the samples.
    short = plan_phases(cfg, train_samples=5504, world_size=1, flops_per_sample=2.0, warmup_flops_per_sample=0.5)[0]
    assert short.steps == round(22_016 / 64) + round(22_016 / 4 / 64)


# ---- a warm-up of fixed length (warmup.sequences) ---------------------------------------------------

@pytest.mark.parametrize("epochs", [4, 40])
def test_sequences_fix_the_warmups_length_whatever_the_image_budget(epochs):
    phases = plan([f"budget.epochs={epochs}", "warmup.fraction=1.0", "warmup.sequences=22000",
                   "budget.regime=additive", "warmup.batch_size=8", "train.batch_size=100"], train_samples=550)
    assert phases["warmup"].samples == 22_000 and phases["warmup"].steps == 2750
    assert phases["image"].samples == epochs * 550


def test_sequences_leave_a_substitutive_image_phase_the_rest():
    phases = plan(["budget.epochs=4", "warmup.fraction=0.5", "warmup.sequences=10000",
                   "budget.regime=substitutive", "warmup.batch_size=100", "train.batch_size=100"])
    assert phases["warmup"].samples == 10_000 and phases["image"].samples == 190_000
    with pytest.raises(ConfigError, match=r"warmup.sequences=200000 takes the whole budget of 200000 samples"):
        plan(["budget.epochs=4", "warmup.sequences=200000", "budget.regime=substitutive"])


def test_sequences_without_a_fraction_run_no_warmup():
    # warmup.fraction=0 is every sweep's "no warm-up" cell; a fixed length does not turn it back on.
    assert list(plan(["warmup.fraction=0", "warmup.sequences=22000"])) == ["image"]
