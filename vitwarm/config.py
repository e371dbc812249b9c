"""The typed config tree of a vitwarm run.

One dataclass tree, read through OmegaConf structured configs: the schema below, then a recipe YAML, then
``key=value`` overrides from the command line. Unknown keys and wrong types fail with a message naming the
key and what would be valid. ``load_config`` is the only entry point; ``save_config`` writes the resolved
tree into the run directory.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from .catalog import resolve_recipe


@dataclass
class ModelConfig:
    name: str = "vitwarm_pico_patch4_32"
    """timm model name (any VisionTransformer); the warm-up and the image phase use the same architecture."""
    in_chans: int = 3
    """Image channels the model takes (grayscale data is repeated to 3 channels when this is 3)."""
    drop_path_rate: float = 0.0
    """Stochastic depth rate in the image phase (the warm-up runs without it)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for timm.create_model (e.g. img_size, class_token, reg_tokens)."""
    init: str | None = None
    """Fine-tuning: an export folder (e.g. an ImageNet run's RUN_DIR/model) the image phase starts from, head
    excluded (always fresh); needs warmup.fraction=0. None starts from scratch (or from the warm-up)."""


@dataclass
class ProceduralConfig:
    grammar: str = "k_dyck"
    """Grammar name or weighted mixture such as 'k_dyck:3+ww:1' (see `python -m vitwarm.procedural list`)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Grammar parameters such as k, p_open, rule; empty means each grammar's defaults."""
    mask_ratio: float = 0.5
    """Fraction of each sequence's target positions replaced by MASK and predicted."""
    shuffled: bool = False
    """Control condition: permute tokens inside each sequence (same statistics, no structure)."""


@dataclass
class WarmupConfig:
    fraction: float = 0.01
    """Warm-up samples as a fraction of the image budget (0 disables the warm-up)."""
    batch_size: int = 256
    """Global batch of sequences per optimizer step (all processes, all accumulation steps)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 2e-3
    """Peak learning rate of AdamW."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine decay."""
    weight_decay: float = 0.05
    """AdamW weight decay (not applied to norms and biases)."""
    lr_warmup: float = 1 / 15
    """Linear LR warm-up as a fraction of the warm-up phase's steps (1k of 15k in the paper's setting)."""
    grad_clip: float = 1.0
    """Gradient norm clip (0 disables)."""
    pos_embed: str = "frozen"
    """Positions during warm-up: 'frozen' (the ViT's own, frozen), 'random' (separate frozen), 'learned'."""
    trainable: list[str] = field(default_factory=lambda: ["blocks", "norm", "head"])
    """What trains during warm-up; the symbol table is always frozen."""
    num_workers: int = 1
    """DataLoader workers generating token batches per process."""


@dataclass
class TransferConfig:
    parts: list[str] = field(default_factory=lambda: ["attn", "mlp", "norm"])
    """Parts of each block copied into the image model ('attn', 'mlp', 'norm')."""
    blocks: str = "all"
    """Block range copied, as a Python slice over block indices ('all', '8:12', '-4:')."""
    keep_pos_embed: bool = False
    """Carry the warm-up's position embedding into the image model instead of a fresh one."""
    keep_cls_token: bool = False
    """Carry the class token into the image model instead of a fresh one."""
    shuffle: str | None = None
    """Ablation: permute the transferred weights ('all', 'attn', 'mlp'); None copies them as they are."""


@dataclass
class AugConfig:
    auto_augment: str | None = None
    """timm auto-augment string such as 'rand-m9-mstd0.5-inc1' (DeiT); None disables."""
    re_prob: float = 0.0
    """Random-erasing probability."""
    re_mode: str = "pixel"
    """Random-erasing fill: 'const', 'rand' or 'pixel'."""
    color_jitter: float | None = None
    """Colour-jitter strength (timm ignores it while auto_augment is set); None disables."""
    interpolation: str = "bicubic"
    """Resize interpolation: 'bilinear', 'bicubic' or 'random'."""
    hflip: float = 0.5
    """Horizontal-flip probability."""
    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    """RandomResizedCrop area range."""
    ratio: list[float] = field(default_factory=lambda: [3 / 4, 4 / 3])
    """RandomResizedCrop aspect-ratio range."""


@dataclass
class DataConfig:
    source: str = "data/fashion_mnist"
    """Shard root holding _info.json, or a brace pattern such as '.../imagenet1k-train-{0000..1023}.tar'."""
    prepare: str | None = None
    """'fmnist': write Fashion-MNIST shards (Debian dataset-fashion-mnist) to `source` if they are missing."""
    train_fraction: float = 1.0
    """Class-balanced fraction of the train split written by `prepare` (data-efficiency studies)."""
    train_split: str = "train"
    """Split the image phase trains on."""
    val_split: str = "validation"
    """Split evaluated during and at the end of training (model selection looks only here)."""
    test_split: str | None = None
    """Split evaluated once at the end and reported beside the validation numbers; None skips it."""
    num_workers: int = 2
    """Image-decoding DataLoader workers per process."""
    shuffle_buffer: int = 2000
    """Samples in each worker's shuffle buffer."""
    mean: list[float] | None = None
    """Normalisation mean per channel; None uses the data set's or ImageNet's."""
    std: list[float] | None = None
    """Normalisation std per channel; None uses the data set's or ImageNet's."""
    strict: bool = False
    """Fail on a corrupt sample instead of skipping and counting it."""
    crop_pct: float = 0.875
    """Centre-crop fraction at evaluation."""
    aug: AugConfig = field(default_factory=AugConfig)
    """Training augmentation of the image phase."""


@dataclass
class TrainConfig:
    batch_size: int = 128
    """Global batch of images per optimizer step (all processes, all accumulation steps)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimizer step."""
    opt: str = "adamw"
    """timm optimizer name."""
    lr: float = 1e-3
    """Peak learning rate (DeiT: 5e-4 x global batch / 512)."""
    min_lr: float = 1e-5
    """Learning rate at the end of the cosine decay."""
    weight_decay: float = 0.05
    """Weight decay (timm skips norms and biases)."""
    sched: str = "cosine"
    """timm scheduler name."""
    warmup_epochs: float = 0.5
    """Linear LR warm-up length in image epochs."""
    grad_clip: float = 0.0
    """Gradient norm clip (0 disables)."""
    ema_decay: float = 0.0
    """Decay of an exponential moving average of the weights, evaluated at the end (0 disables)."""
    mixup: float = 0.0
    """Mixup alpha (0 disables)."""
    cutmix: float = 0.0
    """CutMix alpha (0 disables)."""
    label_smoothing: float = 0.0
    """Label smoothing of the image-phase loss."""


@dataclass
class BudgetConfig:
    epochs: float = 4.0
    """The budget B, in epochs of the train split (B = epochs x train samples)."""
    regime: str = "substitutive"
    """'substitutive': warm-up replaces fraction x B of the images; 'additive': it comes on top of B."""


@dataclass
class EvalConfig:
    every_epochs: float = 1.0
    """Evaluate on the validation split every this many image epochs (and always at the end)."""
    batch_size: int = 256
    """Evaluation batch per process."""


@dataclass
class CheckpointConfig:
    every_steps: int = 200
    """Save a checkpoint every this many optimizer steps of a phase (and at each phase end)."""
    keep: int = 2
    """Newest checkpoints kept on disk."""


@dataclass
class LogConfig:
    every_steps: int = 20
    """Log training metrics every this many optimizer steps."""
    trackers: list[str] = field(default_factory=list)
    """Accelerate trackers to log to besides metrics.jsonl: tensorboard, wandb, mlflow, aim, comet_ml, ..."""
    project: str = "vitwarm"
    """Tracker project name (W&B project, MLflow experiment); TensorBoard writes to RUN_DIR/<project>."""


@dataclass
class RunConfig:
    dir: str = "runs/default"
    """Run directory: config.yaml, metrics.jsonl, checkpoints, exported weights, summary.json."""


@dataclass
class Config:
    seed: int = 0
    """Seed of everything: model inits, token streams, data order, augmentation."""
    resume: str = "auto"
    """'auto' continues from the newest checkpoint in run.dir, 'never' refuses to reuse one, or a path."""
    precision: str = "fp32"
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


# Keys whose values come from a fixed set; checked after merging, because OmegaConf types them as str.
CHOICES = {
    "resume": None,  # 'auto', 'never' or a path: checked in validate()
    "precision": ("fp32", "bf16", "fp16"),
    "budget.regime": ("substitutive", "additive"),
    "warmup.pos_embed": ("frozen", "random", "learned"),
    "transfer.shuffle": (None, "all", "attn", "mlp"),
    "data.prepare": (None, "fmnist"),
}


class ConfigError(ValueError):
    """A config that cannot run: the message names the key and what would be valid."""


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
    if isinstance(err, (ConfigKeyError, ConfigAttributeError)):
        free_form = ("model.kwargs.", "procedural.params.")
        valid = [k for k in _valid_keys(schema, "") if not k.startswith(free_form)]
        close = difflib.get_close_matches(key, valid, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        return ConfigError(f"unknown config key '{key}'.{hint} Valid keys: {', '.join(valid)}")
    return ConfigError(f"bad value for config key '{key}': {str(err.msg).splitlines()[0]}")


def read_recipe(path: str | Path) -> list[DictConfig]:
    """A recipe YAML (a path or a packaged name such as 'fmnist_demo', see vitwarm.catalog) and, first, the
    recipes it names as ``base:`` (a path relative to it), recursively."""
    try:
        path = resolve_recipe(str(path))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    recipe = OmegaConf.load(path)
    base = recipe.pop("base", None)
    return (read_recipe(path.parent / base) if base else []) + [recipe]


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
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise _explain(err, schema) from None
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def validate(cfg: DictConfig) -> None:
    """Checks that types alone cannot express: choices and ranges."""
    for key, choices in CHOICES.items():
        value = _select(cfg, key)
        if choices is not None and value not in choices:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of {list(choices)}")
    if cfg.resume not in ("auto", "never") and not Path(cfg.resume).exists():
        raise ConfigError(f"resume={cfg.resume!r}: expected 'auto', 'never' or an existing checkpoint path")
    ranges = {
        "warmup.fraction": (0.0, 1.0),
        "procedural.mask_ratio": (0.0, 1.0),
        "data.train_fraction": (0.0, 1.0),
        "warmup.lr_warmup": (0.0, 1.0),
    }
    for key, (low, high) in ranges.items():
        value = _select(cfg, key)
        if not low <= value <= high:
            raise ConfigError(f"{key}={value} is outside the valid range [{low}, {high}]")
    if cfg.model.init is not None and cfg.warmup.fraction > 0:
        raise ConfigError(f"model.init={cfg.model.init!r} starts the image phase from other weights: it needs "
                          f"warmup.fraction=0 (got {cfg.warmup.fraction})")
    if cfg.warmup.fraction >= 1.0 and cfg.budget.regime == "substitutive":
        raise ConfigError("warmup.fraction must be < 1 in the substitutive regime (no images would be left)")
    for key in ("budget.epochs", "warmup.batch_size", "train.batch_size", "warmup.grad_accum",
                "train.grad_accum", "checkpoint.every_steps", "checkpoint.keep", "log.every_steps",
                "eval.batch_size"):
        if _select(cfg, key) <= 0:
            raise ConfigError(f"{key}={_select(cfg, key)} must be positive")


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (what the run actually used)."""
    Path(path).write_text(OmegaConf.to_yaml(cfg, resolve=True))


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
