"""The typed config tree of a vitwarm run.

One dataclass tree, read through OmegaConf structured configs: the schema below, then a recipe YAML, then
``key=value`` overrides from the command line. Unknown keys and wrong types fail with a message naming the
key and what would be valid. ``load_config`` is the only entry point.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import timm
import timm.data.transforms
import timm.optim
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .catalog import resolve_recipe
from .data import SYNTHETIC, WRITTEN
from .data.workers import AUTO, check_workers
from .errors import ConfigError
from .models import GROW_DEPTHS, PARTS, POS_EMBED_MODES, SHUFFLE_MODES, TRAINABLE
from .procedural import parse_mixture

# Each field's valid values sit next to it: ``checked(default, rule)`` stores the rule in the field's metadata
# and ``validate`` applies every rule after merging (lists: to each element; None always passes, because the
# type annotation already says whether None is allowed). What needs a built model (model.kwargs, transfer.blocks,
# procedural.params on the token grid, train.sched, data.aug.auto_augment) is checked by vitwarm.run.preflight.


@dataclass(frozen=True)
class Range:
    """Numbers from ``low`` to ``high`` (None: unbounded), each end closed unless marked open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def error(self, value: Any) -> str | None:
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            low = "(" if self.low_open else "["
            high = ")" if self.high_open or self.high is None else "]"
            return (f"is outside the valid range {low}{'-inf' if self.low is None else self.low}, "
                    f"{'inf' if self.high is None else self.high}{high}")
        return None


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set: a tuple, or a function returning the set of the module that implements it."""

    choices: tuple | Callable[[], Iterable]

    def error(self, value: Any) -> str | None:
        choices = list(self.choices if isinstance(self.choices, tuple) else self.choices())
        if value in choices:
            return None
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        listing = choices if len(choices) <= 12 else f"{len(choices)} names, e.g. {choices[:8]}"
        return f"is not valid{hint}; choose one of {listing}"


@dataclass(frozen=True)
class Parses:
    """Accepted by a parser of the module that implements it (its ValueError says why not)."""

    parse: Callable[[Any], object]

    def error(self, value: Any) -> str | None:
        try:
            self.parse(value)
        except ValueError as err:
            return f"is not valid: {err}"
        return None


@dataclass(frozen=True)
class TimmModel:
    """A model timm can build (``timm.list_models``; importing vitwarm registers the vitwarm_* ones);
    ``empty_ok``: '' is valid too (it means another key's model)."""

    empty_ok: bool = False

    def error(self, value: Any) -> str | None:
        names = timm.list_models()
        if value in names or (self.empty_ok and value == ""):
            return None
        close = difflib.get_close_matches(value, names, n=3, cutoff=0.7)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"is not a timm model{hint} (list them with timm.list_models('*vit*'))"


def checked(default: Any, rule: Range | OneOf | Parses | TimmModel) -> Any:
    """A dataclass field with its valid values; a callable ``default`` is a factory (for list defaults)."""
    if callable(default):
        return field(default_factory=default, metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def timm_optimizers() -> list[str]:
    return timm.optim.list_optimizers()


def timm_interpolations() -> list[str]:
    # timm's resize modes by name, and 'random' (bilinear or bicubic per image, training only).
    return [*timm.data.transforms._str_to_pil_interpolation, "random"]


@dataclass
class MimeticConfig:
    """Mimetic init targets (Trockman & Kolter, ICML 2023; defaults: their ViT values, section 4)."""

    alpha1: float = checked(0.7, Range(0, 10))
    """Noise weight of the per-head W_q W_k^T target alpha1 Z + beta1 I (0 to 10)."""
    beta1: float = checked(0.7, Range(0, 10))
    """Identity weight of the W_q W_k^T target (0 to 10)."""
    alpha2: float = checked(0.4, Range(0, 10))
    """Noise weight of the per-head W_v W_o target alpha2 Z - beta2 I (0 to 10)."""
    beta2: float = checked(0.4, Range(0, 10))
    """Negative-identity weight of the W_v W_o target (0 to 10)."""


@dataclass
class ModelConfig:
    name: str = checked("vitwarm_pico_patch4_32", TimmModel())
    """timm model name (any VisionTransformer); the warm-up and the image phase use the same architecture."""
    in_chans: int = checked(3, OneOf((1, 3)))  # what ImageTransform produces: gray or RGB
    """Image channels the model takes (grayscale data is repeated to 3 channels when this is 3)."""
    drop_path_rate: float = checked(0.0, Range(0, 1, high_open=True))
    """Stochastic depth rate in the image phase (the warm-up runs without it)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for timm.create_model (e.g. img_size, class_token, reg_tokens); checked by building."""
    init: str = checked("default", OneOf(("default", "mimetic")))
    """Attention init of both phases' fresh ViTs: 'default' (timm's) or 'mimetic' (see model.mimetic)."""
    mimetic: MimeticConfig = field(default_factory=MimeticConfig)
    """Targets of model.init=mimetic (vitwarm/models/mimetic.py)."""
    finetune: str | None = None
    """Fine-tuning: an export folder (e.g. an ImageNet run's RUN_DIR/model) the image phase starts from, head
    excluded (always fresh); needs warmup.fraction=0. None starts from scratch (or from the warm-up)."""


@dataclass
class ProceduralConfig:
    grammar: str = checked("k_dyck", Parses(parse_mixture))
    """Grammar name or weighted mixture such as 'k_dyck:3+ww:1' (see `vitwarm grammars list`)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Grammar parameters such as k, p_open, rule; empty means defaults; checked against the token grid."""
    mask_ratio: float = checked(0.5, Range(0, 1, low_open=True))
    """Fraction of each sequence's target positions replaced by MASK and predicted."""
    shuffled: bool = False
    """Control condition: permute tokens inside each sequence (same statistics, no structure)."""


@dataclass
class ProbeConfig:
    """The warm-up's held-out probe (docs/procedural.md#the-probe)."""

    size: int = checked(512, Range(0))
    """Held-out sequences in the warm-up's probe set, split over processes (0 turns the probe off)."""
    every_steps: int = checked(20, Range(0))
    """Probe at the first log record at or after every this many warm-up steps, and at step 0 and the end (0: off)."""


@dataclass
class WarmupModelConfig:
    """A warm-up model other than the image model, grown into it at the switch (docs/models.md#growth)."""

    name: str = checked("", TimmModel(empty_ok=True))
    """timm model name of the warm-up ViT; '' (default) is model.name, with model.kwargs under these kwargs."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for timm.create_model (embed_dim, num_heads, depth, ...); checked by building and growing."""
    shared_middle: bool = False
    """One middle block applied depth-2 times (the core's recurrent block); needs depth >= 3."""


@dataclass
class WarmupConfig:
    fraction: float = checked(0.01, Range(0, 1))
    """Warm-up samples as a fraction of the image budget (0 disables the warm-up)."""
    sequences: int = checked(0, Range(0))
    """The warm-up's length in sequences instead of warmup.fraction x B, >= 0 (0: the fraction's); with
    warmup.fraction > 0, which still turns the warm-up on: a fixed warm-up whatever the image budget."""
    batch_size: int = checked(256, Range(1))
    """Global batch of sequences per optimizer step (all processes, all accumulation steps)."""
    grad_accum: int = checked(1, Range(1))
    """Micro-batches accumulated per optimizer step."""
    lr: float = checked(2e-3, Range(0, low_open=True))
    """Peak learning rate of AdamW."""
    min_lr: float = checked(1e-5, Range(0))
    """Learning rate at the end of the cosine decay."""
    weight_decay: float = checked(0.05, Range(0))
    """AdamW weight decay (not applied to norms and biases)."""
    lr_warmup_fraction: float = checked(1 / 15, Range(0, 1))
    """Linear LR warm-up as a fraction of the warm-up phase's steps, 0 to 1 (the paper's 1k of 15k steps)."""
    grad_clip: float = checked(1.0, Range(0))
    """Gradient norm clip (0 disables)."""
    pos_embed: str = checked("frozen", OneOf(POS_EMBED_MODES))
    """Positions during warm-up: 'frozen' (the ViT's own, frozen), 'random' (separate frozen), 'learned'."""
    trainable: list[str] = checked(lambda: ["blocks", "norm", "head"], OneOf(TRAINABLE))
    """What trains during warm-up; the symbol table is always frozen."""
    num_workers: int = checked(1, Range(0))
    """DataLoader workers generating token batches per process."""
    seq_len: int = checked(0, Range(0))
    """Tokens per warm-up sequence, on the grid's first positions in raster order; 0: the whole image grid."""
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    """The held-out probe of masked-token accuracy (docs/procedural.md)."""
    stop: str = checked("plateau", OneOf(("plateau", "budget")))
    """'plateau': end the warm-up once the probe has risen, then stopped gaining; 'budget': the planned length."""
    stop_rise: float = checked(20.0, Range(0, 100, low_open=True))
    """The transition: probe accuracy this many points (percent) above its step-0 level, in (0, 100]."""
    stop_min_gain: float = checked(1.0, Range(0, 100))
    """Plateau: the best of the last stop_patience probes gains less than this (points) on the best before."""
    stop_patience: int = checked(5, Range(1))
    """Probe evaluations after the transition over which the gain is measured (>= 1)."""
    cooldown: float = checked(0.1, Range(0, 1, low_open=True, high_open=True))
    """warmup.stop=plateau: LR decay to min_lr after the stop, as a fraction of the planned warm-up steps, in (0, 1)."""
    model: WarmupModelConfig = field(default_factory=WarmupModelConfig)
    """The warm-up's own smaller ViT, grown into the image model; all defaults: the image model itself."""
    alone: bool = False
    """Run the warm-up phase alone (`vitwarm warmup`): the run ends with its backbone RUN_DIR/warmup/."""


@dataclass
class TransferConfig:
    parts: list[str] = checked(lambda: ["attn", "mlp", "norm"], OneOf(PARTS))
    """Parts of each block copied into the image model ('attn', 'mlp', 'norm')."""
    blocks: str = "all"
    """Block range copied: 'all' or a Python slice over block indices ('8:12', '-4:') selecting >= 1 block."""
    keep_pos_embed: bool = False
    """Carry the warm-up's position embedding into the image model instead of a fresh one."""
    keep_cls_token: bool = False
    """Carry the class token into the image model instead of a fresh one."""
    shuffle: str | None = checked(None, OneOf((None, *SHUFFLE_MODES)))
    """Ablation: permute the transferred weights ('all', 'attn', 'mlp'); None copies them as they are."""
    sources: dict[str, str] = field(default_factory=dict)
    """Composed transfer: part ('attn'/'mlp'/'norm') -> warmup/ export folder of a finished warm-up; no own warm-up."""
    grow_depth: str = checked("stretch", OneOf(GROW_DEPTHS))
    """With warmup.model: big block <- small block map, 'stretch' (each repeated in order) or 'core' (first,
    middle unrolled, last)."""
    grow_noise: float = checked(0.01, Range(0, 1))
    """With warmup.model: symmetry-breaking noise per grown tensor, as a fraction of its RMS (0: exact copy)."""


@dataclass
class AugConfig:
    auto_augment: str | None = None
    """timm auto-augment string such as 'rand-m9-mstd0.5-inc1' (DeiT); None disables."""
    re_prob: float = checked(0.0, Range(0, 1))
    """Random-erasing probability."""
    re_mode: str = checked("pixel", OneOf(("const", "rand", "pixel")))  # timm RandomErasing's modes
    """Random-erasing fill: 'const', 'rand' or 'pixel'."""
    color_jitter: float | None = checked(None, Range(0))
    """Colour-jitter strength (timm ignores it while auto_augment is set); None disables."""
    interpolation: str = checked("bicubic", OneOf(timm_interpolations))
    """Resize interpolation: 'bilinear', 'bicubic' or 'random'."""
    hflip: float = checked(0.5, Range(0, 1))
    """Horizontal-flip probability."""
    scale: list[float] = checked(lambda: [0.08, 1.0], Range(0, 1, low_open=True))
    """RandomResizedCrop area range."""
    ratio: list[float] = checked(lambda: [3 / 4, 4 / 3], Range(0, low_open=True))
    """RandomResizedCrop aspect-ratio range."""


@dataclass
class SyntheticConfig:
    samples: int = checked(512, Range(1))
    """Training images of data.source=synthetic (one epoch of it; the budget counts such epochs), >= 1."""
    eval_samples: int = checked(128, Range(1))
    """Images of each evaluation split of data.source=synthetic, >= 1."""
    shape: list[int] = checked(lambda: [64, 64], Range(1))
    """[height, width] of each synthetic image in pixels (the transforms resize it to the model's input)."""
    channels: int = checked(3, OneOf((1, 3)))
    """Channels of each synthetic image: 1 (gray) or 3 (RGB)."""
    classes: int = checked(10, Range(2))
    """Classes of the synthetic images (labels 0 .. classes - 1, balanced), >= 2."""
    seed: int = checked(0, Range(0, 2**32 - 1))
    """Seed of the synthetic images, apart from the run's: every run of a sweep reads the same images."""


@dataclass
class DataConfig:
    source: str = "data/fashion_mnist"
    """Training shards: directory with _info.json, that file, or pattern '.../x-train-{0000..1023}.tar'; path
    or URL; or 'synthetic': generated images (data.synthetic), no data needed."""
    prepare: str | None = checked(None, OneOf((None, *WRITTEN)))
    """A data set written to `source` when its shards are missing ('fmnist': Debian's dataset-fashion-mnist)."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """The generated images of data.source=synthetic."""
    train_fraction: float = checked(1.0, Range(0, 1, low_open=True))
    """Class-balanced fraction of the train split written by `prepare`; recipes name `source` after it."""
    train_split: str = "train"
    """Split the image phase trains on."""
    val_split: str = "validation"
    """Split evaluated during and at the end of training (model selection looks only here)."""
    test_split: str | None = None
    """Split evaluated once at the end and reported beside the validation numbers; None skips it."""
    val_source: str | None = None
    """Where `val_split` is read when not from `source`: a shard directory, _info.json or pattern (path or URL)."""
    test_source: str | None = None
    """Where `test_split` is read when not from `source`: a shard directory, _info.json or pattern (path or URL)."""
    info: str | None = None
    """_info.json (path, URL or pipe: command) of pattern sources without one beside their shards; None = beside."""
    num_workers: int | str = checked(AUTO, Parses(check_workers))
    """Image-decoding DataLoader workers per process, >= 0, or 'auto': from the CPUs the process may use and the
    processes on its node (vitwarm.data.workers); a resumed run keeps the count its first launch chose."""
    shuffle_buffer: int = checked(2000, Range(1))
    """Samples in each worker's shuffle buffer."""
    mean: list[float] | None = None
    """Normalisation mean per channel; None uses the data set's or ImageNet's."""
    std: list[float] | None = checked(None, Range(0, low_open=True))
    """Normalisation std per channel; None uses the data set's or ImageNet's."""
    strict: bool = False
    """Fail on a corrupt sample instead of skipping and counting it."""
    stall_s: float = checked(60.0, Range(0, low_open=True))
    """Seconds an HTTP(S) shard transfer may go without a byte before it counts as stalled and is asked again."""
    retries: int = checked(3, Range(0))
    """Times a stalled or broken HTTP(S) shard transfer is asked again (from the byte reached) before the run fails."""
    crop_pct: float = checked(0.875, Range(0, 1, low_open=True))
    """Centre-crop fraction at evaluation."""
    aug: AugConfig = field(default_factory=AugConfig)
    """Training augmentation of the image phase."""


@dataclass
class TrainConfig:
    batch_size: int = checked(128, Range(1))
    """Global batch of images per optimizer step (all processes, all accumulation steps)."""
    grad_accum: int = checked(1, Range(1))
    """Micro-batches accumulated per optimizer step."""
    opt: str = checked("adamw", OneOf(timm_optimizers))
    """timm optimizer name (timm.optim.list_optimizers())."""
    lr: float = checked(1e-3, Range(0))  # 0 trains nothing: a frozen fine-tuning check
    """Peak learning rate (DeiT: 5e-4 x global batch / 512)."""
    min_lr: float = checked(1e-5, Range(0))
    """Learning rate at the end of the cosine decay."""
    weight_decay: float = checked(0.05, Range(0))
    """Weight decay (timm skips norms and biases)."""
    sched: str = "cosine"
    """timm scheduler name (cosine, tanh, step, multistep, poly, wsd, ...; checked by building it)."""
    lr_warmup_epochs: float = checked(0.5, Range(0))
    """Linear LR warm-up of the image phase in image epochs, >= 0 (timm's warmup_epochs; DeiT: 5)."""
    grad_clip: float = checked(0.0, Range(0))
    """Gradient norm clip (0 disables)."""
    ema_decay: float = checked(0.0, Range(0, 1, high_open=True))
    """Decay of an exponential moving average of the weights, evaluated at the end (0 disables)."""
    mixup: float = checked(0.0, Range(0))
    """Mixup alpha (0 disables)."""
    cutmix: float = checked(0.0, Range(0))
    """CutMix alpha (0 disables)."""
    label_smoothing: float = checked(0.0, Range(0, 1, high_open=True))
    """Label smoothing of the image-phase loss."""
    compile: bool = False
    """torch.compile the model in both phases (true/false); each phase's first steps pay the compilation."""


@dataclass
class BudgetConfig:
    epochs: float = checked(4.0, Range(0, low_open=True))
    """The budget B, in epochs of the train split (B = epochs x train samples)."""
    regime: str = checked("substitutive", OneOf(("substitutive", "additive", "compute_matched")))
    """'substitutive' (warm-up replaces f·B images), 'additive' (on top of B), 'compute_matched' (see budget.py)."""
    matched_to: str | None = None
    """compute_matched: a finished warm-up run's directory whose used warm-up FLOPs (its summary.json) the
    extra image steps match; None matches the additive warm-up of warmup.fraction."""


@dataclass
class EvalConfig:
    every_epochs: float = checked(1.0, Range(0, low_open=True))
    """Evaluate on the validation split every this many image epochs (and always at the end)."""
    batch_size: int = checked(256, Range(1))
    """Evaluation batch per process."""


@dataclass
class CheckpointConfig:
    every_steps: int = checked(200, Range(1))
    """Save a checkpoint every this many optimizer steps of a phase (and at each phase end)."""
    every_minutes: float = checked(0.0, Range(0))
    """Also save at the first log step after this many minutes since the last checkpoint, >= 0 (0: off)."""
    keep: int = checked(2, Range(1))
    """Newest checkpoints kept on disk."""


@dataclass
class LogConfig:
    every_steps: int = checked(20, Range(1))
    """Log training metrics every this many optimizer steps."""
    trackers: list[str] = field(default_factory=list)
    """Accelerate trackers to log to besides metrics.jsonl: tensorboard, wandb, mlflow, aim, comet_ml, ..."""
    project: str = "vitwarm"
    """Tracker project name (W&B project, MLflow experiment); TensorBoard writes to RUN_DIR/<project>."""


@dataclass
class RunConfig:
    dir: str = "runs/default"
    """Run directory: config.yaml, metrics.jsonl, checkpoints, exported weights, summary.json."""
    lock: bool = True
    """Refuse a second launch into a run directory in use (flock on RUN_DIR/.lock); turn off only on file
    systems without working flock, where nothing then stops two launches from writing one directory."""
    stop_signal: str = checked("SIGTERM", OneOf(("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2")))
    """Signal that stops the run politely: save the step reached, exit 75; the same command resumes (a
    scheduler's warning signal, e.g. SLURM's --signal). Ctrl-C (SIGINT) always stops politely as well."""
    parallel: str = checked("ddp", OneOf(("ddp", "fsdp")))
    """'ddp': every process holds the whole model; 'fsdp': torch's fully_shard per transformer block then the
    root, with sharded checkpoints (docs/training.md); an accelerate config of distributed_type FSDP sets it too."""
    grad_checkpointing: bool = False
    """Recompute each block's activations in the backward pass (timm's set_grad_checkpointing): less memory for
    about a third more compute; the weights trained are the same."""


@dataclass
class Config:
    seed: int = checked(0, Range(0, 2**32 - 1))
    """Seed of everything: model inits, token streams, data order, augmentation."""
    resume: str = "auto"
    """'auto' continues from the newest checkpoint in run.dir that verifies, 'never' refuses to reuse one, or a path."""
    resume_allow_changed: list[str] = field(default_factory=list)
    """Keys of the run's identity deliberately changed on resume (e.g. [budget.epochs]); logged as an event."""
    precision: str = checked("fp32", OneOf(("fp32", "bf16", "fp16")))
    """'fp32', or mixed precision 'bf16' / 'fp16' (not 'no': YAML reads a bare no as false)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The ViT."""
    procedural: ProceduralConfig = field(default_factory=ProceduralConfig)
    """The warm-up's token sequences."""
    warmup: WarmupConfig = field(default_factory=WarmupConfig)
    """The warm-up phase's length and optimizer."""
    transfer: TransferConfig = field(default_factory=TransferConfig)
    """What the image model takes from the warmed-up one."""
    data: DataConfig = field(default_factory=DataConfig)
    """Image data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The image phase's optimizer."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """Training budget in image samples and how the warm-up counts against it."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    log: LogConfig = field(default_factory=LogConfig)
    """Logging."""
    run: RunConfig = field(default_factory=RunConfig)
    """Output location."""


# Keys renamed since a release: old key -> (new key, how to convert a value of the old one).
RENAMED = {
    "warmup.lr_warmup": ("warmup.lr_warmup_fraction", "same value, a fraction of the warm-up phase's steps"),
    "train.warmup_epochs": ("train.lr_warmup_epochs", "same value, in image epochs"),
}

# Identity keys added since runs were first recorded, with the value an earlier version's run trained as:
# a recorded identity without the key reads as this value (vitwarm.run.rundir.current_names), so a finished
# run of an earlier version is not "other settings" for a key it could not have. Earlier warm-ups ran their
# planned length on the whole grid with the image model; the probe never changes the weights of such a run.
ADDED = {
    "warmup.stop": "budget", "warmup.seq_len": 0, "warmup.cooldown": 0.1, "warmup.stop_rise": 20.0,
    "warmup.stop_min_gain": 1.0, "warmup.stop_patience": 5, "warmup.probe.size": 512, "warmup.probe.every_steps": 20,
    "warmup.model.name": "", "warmup.model.shared_middle": False, "transfer.grow_depth": "stretch",
    "transfer.grow_noise": 0.01, "budget.matched_to": "None",  # as flatten records None
    "warmup.alone": False,
}


def _valid_keys(node: Any, prefix: str) -> list[str]:
    """Dotted names of every leaf key under a config node (for 'did you mean' messages)."""
    if not isinstance(node, DictConfig):
        return [prefix]
    keys = []
    for key in node:
        child = node._get_node(key)
        keys += _valid_keys(child, f"{prefix}.{key}" if prefix else str(key))
    return keys


def _explain(err: OmegaConfBaseException, schema: DictConfig) -> ConfigError:
    """Turn an OmegaConf error into one that names the key and lists the valid alternatives."""
    key = getattr(err, "full_key", None) or "?"
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)) and key in RENAMED:
        new, convert = RENAMED[key]
        return ConfigError(f"config key '{key}' was renamed to '{new}' ({convert}): write {new}=VALUE")
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        free_form = ("model.kwargs.", "procedural.params.", "warmup.model.kwargs.")
        valid = [k for k in _valid_keys(schema, "") if not k.startswith(free_form)]
        close = difflib.get_close_matches(key, valid, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return ConfigError(f"unknown config key '{key}'.{hint} Valid keys: {', '.join(valid)}")
    return ConfigError(f"bad value for config key '{key}': {str(err.msg).splitlines()[0]}")


def read_recipe(path: str | Path) -> list[DictConfig]:
    """A recipe YAML (a path or a packaged name such as 'fmnist_demo', see vitwarm.catalog) and, first, the
    recipe it names as ``base:`` (a path relative to it), recursively."""
    return [recipe for _, recipe in recipe_files(path)]


def recipe_files(path: str | Path, included_by: tuple[Path, ...] = ()) -> list[tuple[Path, DictConfig]]:
    """``read_recipe`` with each recipe's file; ``included_by``: the chain above ``path``."""
    if included_by:  # a base: a file relative to the recipe that names it
        if not Path(path).is_file():
            raise ConfigError(f"recipe '{included_by[-1]}' names base: {Path(path).name}, but {path} is not a file "
                              "(a base is a path relative to the recipe that names it)")
        if Path(path).resolve() in [p.resolve() for p in included_by]:
            chain = " -> ".join(str(p) for p in (*included_by, path))
            raise ConfigError(f"recipe '{included_by[-1]}' names base: {Path(path).name}, a cycle ({chain}); "
                              "a base must not name the recipes that include it")
        path = Path(path)
    else:
        try:
            path = resolve_recipe(str(path))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    try:
        recipe = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException, UnicodeDecodeError) as err:
        reason = " ".join(str(err).split())
        raise ConfigError(f"recipe '{path}' is not valid YAML: {reason}") from None
    if not isinstance(recipe, DictConfig):
        raise ConfigError(f"recipe '{path}' is a {type(recipe).__name__.removesuffix('Config').lower()}, "
                          "not a mapping of config keys such as 'warmup: {fraction: 0.01}'")
    base = recipe.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"recipe '{path}' has base: {base}; a base is one recipe file, relative to this one")
    return (recipe_files(path.parent / base, (*included_by, path)) if base else []) + [(path, recipe)]


def _is_text(key: str) -> bool:
    """Whether the schema types ``key`` as a string (annotations are text here: 'str', 'str | None')."""
    node: Any = Config
    for part in key.split("."):
        found = {f.name: f for f in fields(node)}.get(part) if is_dataclass(node) else None
        if found is None:
            return False
        node = found.default_factory if is_dataclass(found.default_factory) else found.type
    return isinstance(node, str) and {"str"} == set(node.split(" | ")) - {"None"}


def _as_typed(override: str) -> str:
    """``key=value`` with the value kept as text where the key is a string.

    YAML would read 8:12 as the sexagesimal integer 492 and no as false, so ``transfer.blocks=8:12`` and
    ``precision=no`` would arrive as '492' and 'False'.
    """
    key, _, value = override.partition("=")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return override
    if _is_text(key) and parsed is not None and not isinstance(parsed, str):
        return f"{key}={json.dumps(value)}"  # a double-quoted YAML string
    return override


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults, then the recipe YAML (after its ``base:``), then ``key=value`` overrides.

    The result is validated and read-only.
    """
    schema = OmegaConf.structured(Config)
    try:
        cfg = schema
        if recipe is not None:
            cfg = OmegaConf.merge(cfg, *read_recipe(recipe))
        if overrides:
            cfg = OmegaConf.merge(cfg, override_layer(overrides))
    except OmegaConfBaseException as err:
        raise _explain(err, schema) from None
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def override_layer(overrides: list[str]) -> DictConfig:
    """The ``key=value`` overrides of a command line as one config (merged last by ``load_config``)."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
    return OmegaConf.from_dotlist([_as_typed(o) for o in overrides])


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _rules(schema: type, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, rule) of every checked field in the dataclass tree."""
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        if "rule" in f.metadata:
            yield key, f.metadata["rule"]
        if is_dataclass(f.default_factory):  # a section: its own fields
            yield from _rules(f.default_factory, f"{key}.")


def validate(cfg: DictConfig) -> None:
    """Checks that types alone cannot express: every field's rule, then the few that span several keys."""
    for key, rule in _rules(Config):
        value = _select(cfg, key)
        for item in value if isinstance(value, list) else [value]:
            problem = None if item is None else rule.error(item)
            if problem:
                shown = f"{key}={value!r}" if item is value else f"{key}={value!r}: {item!r}"
                raise ConfigError(f"{shown} {problem}")
    if cfg.resume not in ("auto", "never") and not Path(cfg.resume).exists():
        raise ConfigError(f"resume={cfg.resume!r}: expected 'auto', 'never' or an existing checkpoint path")
    if cfg.model.finetune is not None and cfg.warmup.fraction > 0:
        raise ConfigError(f"model.finetune={cfg.model.finetune!r} starts the image phase from other weights: it "
                          f"needs warmup.fraction=0 (got {cfg.warmup.fraction})")
    if cfg.budget.regime == "compute_matched" and cfg.warmup.fraction == 0:
        raise ConfigError("budget.regime=compute_matched needs warmup.fraction > 0: the fraction of the "
                          "additive warm-up whose FLOPs the extra image steps match")
    if cfg.budget.matched_to is not None and cfg.budget.regime != "compute_matched":
        raise ConfigError(f"budget.matched_to={cfg.budget.matched_to!r} needs budget.regime=compute_matched "
                          f"(got {cfg.budget.regime})")
    if cfg.transfer.sources and grows(cfg):
        raise ConfigError(f"warmup.model={_select(cfg, 'warmup.model')} grows this run's own warm-up, and "
                          "transfer.sources has none; set one of them")
    if cfg.transfer.sources:
        # The run takes its parts from finished warm-ups; warmup.fraction states theirs, for the budget.
        if cfg.warmup.fraction == 0 or cfg.budget.regime == "compute_matched":
            raise ConfigError("transfer.sources needs warmup.fraction > 0, the fraction the source warm-ups "
                              "ran with (checked against their exports), and budget.regime additive or "
                              f"substitutive; got warmup.fraction={cfg.warmup.fraction}, "
                              f"budget.regime={cfg.budget.regime}")
        t = cfg.transfer
        if t.shuffle is not None or t.keep_pos_embed or t.keep_cls_token:
            raise ConfigError("transfer.sources copies block parts only; it cannot be combined with "
                              "transfer.shuffle, keep_pos_embed or keep_cls_token (leave them at their defaults)")
    if cfg.warmup.alone and (cfg.warmup.fraction == 0 or cfg.budget.regime == "compute_matched"
                             or cfg.transfer.sources):
        raise ConfigError(f"warmup.alone runs this run's own warm-up: it needs warmup.fraction > 0 (got "
                          f"{cfg.warmup.fraction}), budget.regime additive or substitutive (got {cfg.budget.regime}) "
                          "and no transfer.sources")
    probe = cfg.warmup.probe
    if cfg.warmup.stop == "plateau" and cfg.warmup.fraction > 0 and not (probe.size and probe.every_steps):
        raise ConfigError(f"warmup.stop=plateau decides on the probe, but it is off (warmup.probe.size={probe.size}, "
                          f"warmup.probe.every_steps={probe.every_steps}); turn it on or use warmup.stop=budget")
    if cfg.warmup.stop == "plateau" and cfg.warmup.lr_warmup_fraction + cfg.warmup.cooldown > 1:
        raise ConfigError(f"warmup.lr_warmup_fraction={cfg.warmup.lr_warmup_fraction} + warmup.cooldown="
                          f"{cfg.warmup.cooldown} exceed 1: the LR cool-down would start inside the LR warm-up")
    if cfg.warmup.fraction >= 1.0 and cfg.budget.regime == "substitutive":
        raise ConfigError("warmup.fraction must be < 1 in the substitutive regime (no images would be left)")
    if cfg.data.source == SYNTHETIC:
        set_too = [f"data.{key}={cfg.data[key]!r}" for key in ("prepare", "val_source", "test_source", "info")
                   if cfg.data[key] is not None]
        if set_too:
            raise ConfigError(f"data.source=synthetic generates every split; {', '.join(set_too)} would be "
                              "ignored: unset it, or give shards as data.source")
    if len(cfg.data.synthetic.shape) != 2:
        raise ConfigError(f"data.synthetic.shape={_select(cfg, 'data.synthetic.shape')} must be [height, width]")
    for key in ("data.aug.scale", "data.aug.ratio"):
        bounds = _select(cfg, key)
        if len(bounds) != 2 or bounds[0] > bounds[1]:
            raise ConfigError(f"{key}={bounds} must be [min, max] with min <= max")


def grows(cfg: DictConfig) -> bool:
    """Whether the warm-up runs a model of its own (``warmup.model``), grown into the image model."""
    m = cfg.warmup.model
    return bool(m.name or m.kwargs or m.shared_middle)


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Dotted keys with scalar values, as trackers such as TensorBoard's hparams want them."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else key)
        elif isinstance(node, (int, float, str, bool)):
            flat[prefix] = node
        else:  # None, lists: stringified so every tracker accepts them
            flat[prefix] = str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat
