"""The plan of a run: its phases, and the one place where fractions, epochs and samples become steps.

A run's budget B is counted in image samples: ``budget.epochs`` x the train split's size. The warm-up takes
``warmup.fraction`` f of it, counted in sequences (one sequence = one sample):

- substitutive: the warm-up gets f·B sequences and the image phase (1 - f)·B images (the total is fixed);
- additive:     the warm-up gets f·B sequences on top of the image phase's B images;
- ``warmup.sequences`` > 0 fixes the warm-up's length instead (the same warm-up whatever B; a study of
  data sizes keeps its warm-up one setting so): the regimes above use it in place of f·B;
- compute_matched: no warm-up phase; the image phase gets B images plus the extra steps whose training
  FLOPs equal those of the additive warm-up of fraction f (the control that spends the warm-up's compute
  on more image training instead); with ``warmup.model``, those of the smaller warm-up model.

A composed run (``transfer.sources``) has no warm-up phase either: its ``warmup.fraction`` is the one its
source warm-ups ran with, so the image phase is sized as for a warm-up run of that fraction.

``plan_phases`` turns that into a list of ``Phase`` descriptions: lengths, batches, cadences, the phase's
kind (its name: the module of vitwarm.run.phases that sets it up, checks it and ends it), where its model
starts and whether it is the one evaluated. ``Plan`` holds them with the facts about the data they were
planned from. The training loop only reads them and never names a phase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from omegaconf import DictConfig

from ..config import grows
from ..errors import ConfigError


@dataclass(frozen=True)
class Phase:
    """One phase of a run. Every length is in optimizer steps; every batch counts all processes."""

    name: str
    """'warmup' or 'image': the phase's name in metrics records, checkpoint names and the summary."""
    kind: str
    """What runs it: its module in vitwarm.run.phases, looked up in KINDS ('warmup', 'growing_warmup' or
    'image'); decided here, once (``warmup_kind``)."""
    init: str
    """Where the model starts: 'fresh' (seeded init), 'warmup' (this run's warm-up export), 'grown' (this
    run's warm-up export of its own smaller ViT, grown), 'sources' (the composed transfer of
    transfer.sources) or 'finetune' (model.finetune)."""
    final: bool
    """The phase the run ends with (the last one): the image phase, whose model the run evaluates, exports
    and summarises, or the warm-up when it runs alone (``warmup.alone``), whose end export is the result."""
    steps: int
    """Optimizer steps of the phase."""
    global_batch: int
    """Samples per optimizer step, summed over processes and accumulation steps."""
    micro_batch: int
    """Samples per process per forward pass."""
    grad_accum: int
    """Forward/backward passes per optimizer step."""
    lr_warmup_steps: int
    """Steps of linear learning-rate warm-up."""
    eval_every: int
    """Steps between evaluations (0: only at the end)."""
    log_every: int
    """Steps between metrics records (and at the phase's last step)."""
    save_every: int
    """Steps between checkpoints (the phase-end checkpoint comes on top)."""
    grad_clip: float
    """Gradient-norm clip (0: none)."""
    flops: float
    """Estimated training FLOPs of the whole phase (forward + backward = 3 x forward)."""

    @property
    def samples(self) -> int:
        return self.steps * self.global_batch

    @property
    def counts_images(self) -> bool:
        """Whether its samples are image samples (metrics records and summary.json count those)."""
        return self.name == "image"

    def used(self, steps: int) -> dict:
        """The phase's planned and used length when it ran ``steps`` steps (a stopped warm-up runs fewer)."""
        return {"planned_steps": self.steps, "used_steps": steps, "planned_samples": self.samples,
                "used_samples": steps * self.global_batch, "planned_flops": self.flops,
                "used_flops": self.flops * steps / self.steps}

    def as_dict(self) -> dict:
        """The phase as summary.json records it: its lengths and batches (roles and cadences follow from the
        recorded config)."""
        return {k: v for k, v in asdict(self).items() if k in _SUMMARY_KEYS} | {"samples": self.samples}


_SUMMARY_KEYS = ("name", "steps", "global_batch", "micro_batch", "grad_accum", "lr_warmup_steps", "eval_every",
                 "grad_clip", "flops")


def to_steps(*, samples: float | None = None, epochs: float | None = None, fraction: float | None = None,
             global_batch: int | None = None, epoch_samples: int | None = None,
             of_steps: int | None = None) -> int:
    """Convert exactly one of samples, epochs (of ``epoch_samples``) or a fraction (of ``of_steps``) to steps.

    Samples and epochs need ``global_batch`` (samples per step). Rounds to the nearest step, but a positive
    request never rounds to 0 steps: a warm-up fraction of 0.001 stays a (short) warm-up instead of silently
    vanishing. Zero stays zero.
    """
    given = [name for name, value in (("samples", samples), ("epochs", epochs), ("fraction", fraction))
             if value is not None]
    if len(given) != 1:
        raise ValueError(f"to_steps needs exactly one of samples, epochs, fraction; got {given or 'none'}")
    if epochs is not None:
        if epoch_samples is None:
            raise ValueError("to_steps(epochs=...) needs epoch_samples")
        samples = epochs * epoch_samples
    if fraction is not None:
        if of_steps is None:
            raise ValueError("to_steps(fraction=...) needs of_steps")
        exact = fraction * of_steps
    else:
        if global_batch is None:
            raise ValueError("to_steps(samples=... or epochs=...) needs global_batch")
        exact = samples / global_batch
    if exact < 0:
        raise ValueError(f"cannot train for a negative length ({exact} steps)")
    return max(1, round(exact)) if exact > 0 else 0


def micro_batch(global_batch: int, world_size: int, grad_accum: int, key: str) -> int:
    """Per-process batch; the global batch must split evenly so results do not depend on the world size."""
    per_step = world_size * grad_accum
    if global_batch % per_step:
        raise ConfigError(f"{key}={global_batch} does not split over {world_size} processes x {grad_accum} "
                         f"accumulation steps; use a multiple of {per_step}")
    return global_batch // per_step


def vit_flops_per_sample(vit, num_tokens: int) -> float:
    """Forward FLOPs of a timm ViT on one sample of ``num_tokens`` grid tokens (matmuls only, 2 per MAC).

    Per block, with L tokens (grid + prefix), width D and MLP hidden width H:
    qkv + projection 4·L·D², attention scores and weighted sum 2·L²·D, MLP 2·L·D·H.
    """
    tokens = num_tokens + vit.num_prefix_tokens
    dim = vit.embed_dim
    hidden = vit.blocks[0].mlp.fc1.out_features
    per_block = 4 * tokens * dim**2 + 2 * tokens**2 * dim + 2 * tokens * dim * hidden
    return 2.0 * per_block * len(vit.blocks)


def runs_warmup(cfg: DictConfig) -> bool:
    """Whether the run has a warm-up phase of its own. A compute-matched run only borrows its length; a
    composed run (``transfer.sources``) takes its parts from warm-ups run before, of that fraction."""
    return cfg.warmup.fraction > 0 and cfg.budget.regime != "compute_matched" and not cfg.transfer.sources


def warmup_kind(cfg: DictConfig) -> str:
    """The warm-up's kind (``Phase.kind``): 'growing_warmup' when it trains a smaller ViT of its own
    (``warmup.model``, vitwarm.run.phases.growth) that the image phase grows, else 'warmup'."""
    return "growing_warmup" if grows(cfg) else "warmup"


def image_init(cfg: DictConfig) -> str:
    """Where the image phase's model starts (``Phase.init``): the warm-up wins (its export as it is, or
    grown), then composed sources, then a fine-tuning source."""
    if runs_warmup(cfg):
        return "grown" if warmup_kind(cfg) == "growing_warmup" else "warmup"
    return "sources" if cfg.transfer.sources else "finetune" if cfg.model.finetune else "fresh"


def plan_phases(cfg: DictConfig, *, train_samples: int, world_size: int, flops_per_sample: float,
                warmup_flops_per_sample: float | None = None, matched_flops: float | None = None) -> list[Phase]:
    """The run's phases in order; a warm-up of 0 steps is left out. Lengths follow the module docstring.

    ``flops_per_sample`` is the forward FLOPs of one image, ``warmup_flops_per_sample`` of one warm-up
    sequence on the warm-up's model (default: the same, a sequence that fills the image model's token
    grid; less for shorter sequences, ``warmup.seq_len``, or a smaller model, ``warmup.model``). A
    compute-matched run's extra image steps carry the training FLOPs of the warm-up it matches:
    ``matched_flops`` (a finished warm-up's used FLOPs, ``budget.matched_to``) or else the additive
    warm-up of ``warmup.fraction``.
    """
    if warmup_flops_per_sample is None:
        warmup_flops_per_sample = flops_per_sample
    budget_samples = cfg.budget.epochs * train_samples
    substitutive = cfg.budget.regime == "substitutive"
    if cfg.warmup.sequences and cfg.warmup.fraction:
        warmup_samples, length = cfg.warmup.sequences, f"warmup.sequences={cfg.warmup.sequences}"
        image_samples = budget_samples - warmup_samples * substitutive
        if image_samples <= 0:
            raise ConfigError(f"{length} takes the whole budget of {budget_samples:g} samples (budget.epochs="
                              f"{cfg.budget.epochs} x {train_samples} train samples) in the substitutive regime; "
                              "lower it or use budget.regime=additive")
    else:
        warmup_samples = cfg.warmup.fraction * budget_samples
        length = (f"warmup.fraction={cfg.warmup.fraction} x budget.epochs={cfg.budget.epochs} x {train_samples} "
                  "train samples")
        image_samples = budget_samples * (1 - cfg.warmup.fraction if substitutive else 1)

    warm_batch, image_batch = cfg.warmup.batch_size, cfg.train.batch_size
    # A batch larger than its whole budget would round up to one step of that batch: a run of another size.
    if 0 < warmup_samples < warm_batch:
        raise ConfigError(f"warmup.batch_size={warm_batch} is larger than the whole warm-up budget of "
                          f"{warmup_samples:g} sequences ({length}); lower warmup.batch_size")
    if image_batch > min(train_samples, image_samples):
        raise ConfigError(f"train.batch_size={image_batch} is larger than the image budget of {image_samples:g} "
                          f"samples or the train split's {train_samples} samples; lower train.batch_size")
    warm_steps = to_steps(samples=warmup_samples, global_batch=warm_batch)
    image_steps = to_steps(samples=image_samples, global_batch=image_batch)
    if cfg.budget.regime == "compute_matched":
        # The matched warm-up's training FLOPs, as image steps of the same FLOPs.
        if matched_flops is None:
            matched_flops = 3 * warmup_flops_per_sample * warm_steps * warm_batch
        image_steps += to_steps(samples=matched_flops / (3 * flops_per_sample), global_batch=image_batch)
    if not runs_warmup(cfg):
        warm_steps = 0
    epoch_steps = to_steps(epochs=1, epoch_samples=train_samples, global_batch=image_batch)
    lr_warmup_steps = to_steps(epochs=cfg.train.lr_warmup_epochs, epoch_samples=train_samples,
                               global_batch=image_batch)
    cadences = dict(log_every=cfg.log.every_steps, save_every=cfg.checkpoint.every_steps)
    phases = [
        Phase(name="warmup", kind=warmup_kind(cfg), init="fresh", final=False,
              steps=warm_steps, global_batch=warm_batch,
              micro_batch=micro_batch(warm_batch, world_size, cfg.warmup.grad_accum, "warmup.batch_size"),
              grad_accum=cfg.warmup.grad_accum,
              lr_warmup_steps=to_steps(fraction=cfg.warmup.lr_warmup_fraction, of_steps=warm_steps),
              eval_every=0, grad_clip=cfg.warmup.grad_clip,
              flops=3 * warmup_flops_per_sample * warm_steps * warm_batch,
              **cadences),
        Phase(name="image", kind="image", init=image_init(cfg), final=True,
              steps=image_steps, global_batch=image_batch,
              micro_batch=micro_batch(image_batch, world_size, cfg.train.grad_accum, "train.batch_size"),
              grad_accum=cfg.train.grad_accum,
              lr_warmup_steps=min(image_steps, lr_warmup_steps),
              eval_every=to_steps(fraction=cfg.eval.every_epochs, of_steps=epoch_steps), grad_clip=cfg.train.grad_clip,
              flops=3 * flops_per_sample * image_steps * image_batch, **cadences),
    ]
    if cfg.warmup.alone:  # `vitwarm warmup`: the warm-up's budget, stop and export, and nothing after it
        return [replace(phases[0], final=True)]
    return [phase for phase in phases if phase.steps > 0]


@dataclass(frozen=True)
class Plan:
    """What the run will do, checked: its phases and the facts about the data they were planned from."""

    phases: list[Phase]
    train_samples: int
    num_classes: int
    img_size: int
    """Input side of the model in pixels (the image transforms resize to it)."""
    save_bytes: int = 0
    """Bytes one checkpoint and the two exports take, about (for the free-space check at the start)."""

    def after(self, used_steps: dict[str, int], regime: str) -> Plan:
        """The plan once the phases in ``used_steps`` have run that many steps (RunState.used_steps).

        In the substitutive regime a warm-up that stopped early leaves its unused sequences to the image
        phase, as image samples (rounded to whole steps of its batch): the image phase's length then follows
        the warm-up's outcome, so it is computed when the image phase starts, from the checkpointed state.
        """
        warm = next((p for p in self.phases if p.name == "warmup"), None)
        if regime != "substitutive" or warm is None or used_steps.get("warmup", warm.steps) == warm.steps:
            return self
        unused = (warm.steps - used_steps["warmup"]) * warm.global_batch
        phases = []
        for phase in self.phases:
            if phase.counts_images:
                steps = to_steps(samples=phase.samples + unused, global_batch=phase.global_batch)
                phase = replace(phase, steps=steps, flops=phase.flops * steps / phase.steps)
            phases.append(phase)
        return replace(self, phases=phases)

    def position(self, phase: Phase) -> int:
        """Where ``phase`` stands in the run (by name, however ``after`` sized it): checkpoint names count it."""
        return [p.name for p in self.phases].index(phase.name)

    def lines(self) -> list[str]:
        """One line per phase: its steps, batch, samples and estimated training FLOPs."""
        return [f"  {phase.name:7s} {phase.steps} steps x {phase.global_batch} = {phase.samples} samples, "
                f"~{phase.flops:.2e} FLOP" for phase in self.phases]

    @property
    def final(self) -> Phase:
        """The phase the run ends with (see ``Phase.final``)."""
        return next(phase for phase in self.phases if phase.final)
