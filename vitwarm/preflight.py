"""Everything a run will build, built once without data or memory before anything runs.

``preflight(cfg, world_size)`` runs before shards are prepared, before the run directory exists and before
any process group is formed. It plans the phases (vitwarm.budget: batch sizes against budgets and the world
size) and dry-builds every phase on the meta device with the very functions the run uses: the model with
its kwargs (a VisionTransformer, nothing else), the warm-up's token path and its grammar with its parameters
on the model's token grid, the transfer selection, the optimizer and scheduler factories, Mixup, the image
transforms and, when the shards exist, the loaders over them. A mistake anywhere is a ``ConfigError`` that
names the key, so it surfaces in seconds instead of after an hours-long warm-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer

from .budget import Phase, plan_phases, vit_flops_per_sample
from .data import FMNIST_CLASSES, ImageTransform, make_mixup, read_dataset_info, read_splits
from .data.fmnist import fmnist_split_indices, load_fmnist
from .errors import ConfigError
from .models import WarmupViT, transfer
from .phases import ImageData, build_vit, make_optimizer, warmup_task


@dataclass(frozen=True)
class Plan:
    """What the run will do, checked: its phases and the facts about the data they were planned from."""

    phases: list[Phase]
    train_samples: int
    num_classes: int
    img_size: int
    """Input side of the model in pixels (the image transforms resize to it)."""

    @property
    def final(self) -> Phase:
        """The phase the run ends with: it trains on the image shards, and its model is evaluated and exported."""
        return next(phase for phase in self.phases if phase.final)


@contextmanager
def blame(what: str) -> Iterator[None]:
    """Turn a builder's complaint into a ConfigError that starts with the config keys it came from."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError, AssertionError, KeyError, RuntimeError) as err:
        reason = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
        raise ConfigError(f"{what}: {reason}") from None


def train_split(data: DictConfig) -> tuple[int, int]:
    """(train samples, classes) of the config's ``data`` section, read from the shards or, when ``prepare``
    will write them, from the data set they will be written from."""
    try:
        info = read_dataset_info(data.source, data.train_split, data.info)
        return info.num_samples, info.num_classes
    except FileNotFoundError as err:
        if data.prepare != "fmnist":
            raise ConfigError(f"data.source={data.source!r}: {err}; write shards with tools/make_shards.py or "
                              "set data.prepare=fmnist") from None
    fmnist = load_fmnist()
    splits = fmnist_split_indices({part: labels for part, (_, labels) in fmnist.items()}, fraction=data.train_fraction)
    for key in ("train_split", "val_split", "test_split"):
        if data[key] is not None and data[key] not in splits:
            raise ConfigError(f"data.{key}={data[key]!r} is not a split of the Fashion-MNIST shards that "
                              f"data.prepare=fmnist writes; valid: {sorted(splits)}")
    return len(splits[data.train_split][1]), len(FMNIST_CLASSES)


def check_token_path(procedural: DictConfig, warmup: DictConfig, vit: VisionTransformer, model_name: str) -> None:
    """The warm-up's grammar on the model's token grid, and the WarmupViT around the (meta) model."""
    H, W = vit.patch_embed.grid_size
    with blame(f"procedural.grammar={procedural.grammar!r} with procedural.params="
               f"{OmegaConf.to_container(procedural.params)} on the {H} x {W} = {H * W} token grid of model "
               f"{model_name}"):
        task = warmup_task(procedural, vit)
        task.batch(0, 1, seed=0)  # one real sample: the grammar's own checks of its parameters and length
    with blame(f"warmup.pos_embed={warmup.pos_embed!r}, warmup.trainable={list(warmup.trainable)}"):
        model = WarmupViT(vit, task.vocab_size, pos_embed=warmup.pos_embed, trainable=warmup.trainable)
        model(torch.zeros(1, H * W, dtype=torch.long, device="meta"))  # (1, N) -> (1, N, vocab)


def check_optimizer(section: str, opt_cfg: DictConfig, model: torch.nn.Module, phase: Phase, opt: str,
                    sched: str) -> None:
    """timm's optimizer and scheduler factories, as the phase will call them (meta parameters)."""
    with blame(f"{section}.opt={opt!r} / {section}.sched={sched!r}"):
        make_optimizer(opt_cfg, model, phase, opt=opt, sched=sched)


def check_images(data: DictConfig, in_chans: int, img_size: int) -> None:
    """The training and evaluation transforms of the config's ``data`` section."""
    with blame(f"data.aug.auto_augment={data.aug.auto_augment!r}, data.mean={data.mean}, data.std={data.std} "
               f"(training transform for model.in_chans={in_chans})"):
        ImageTransform(is_training=True, img_size=img_size, in_chans=in_chans, mean=data.mean, std=data.std,
                       **OmegaConf.to_container(data.aug))
    with blame(f"data.aug.interpolation={data.aug.interpolation!r} / data.crop_pct={data.crop_pct} "
               "(evaluation transform)"):
        ImageTransform(is_training=False, img_size=img_size, in_chans=in_chans, mean=data.mean, std=data.std,
                       crop_pct=data.crop_pct, interpolation=data.aug.interpolation)


def preflight(cfg: DictConfig, world_size: int) -> Plan:
    """Plan the run for ``world_size`` processes and dry-build every phase; raises ConfigError naming the key."""
    with blame(f"data.source={cfg.data.source!r}"):
        train_samples, num_classes = train_split(cfg.data)
    with torch.device("meta"):  # shapes only, no memory, no initialisation cost
        image_vit = build_vit(cfg.model, num_classes=num_classes, drop_path_rate=cfg.model.drop_path_rate)
        image_in = torch.zeros(1, cfg.model.in_chans, *image_vit.patch_embed.img_size)  # (1, C, H, W)
        with blame(f"model.name={cfg.model.name} with model.kwargs={OmegaConf.to_container(cfg.model.kwargs)}"):
            image_vit(image_in)  # (1, classes)
    phases = plan_phases(cfg, train_samples=train_samples, world_size=world_size,
                         flops_per_sample=vit_flops_per_sample(image_vit, image_vit.patch_embed.num_patches))
    img_size = image_vit.patch_embed.img_size[0]
    for phase in phases:
        if phase.trains_on == "tokens":
            with torch.device("meta"):
                warm_vit = build_vit(cfg.model, num_classes=0)
            check_token_path(cfg.procedural, cfg.warmup, warm_vit, cfg.model.name)
            check_optimizer("warmup", cfg.warmup, warm_vit, phase, opt="adamw", sched="cosine")
            t = cfg.transfer
            with blame(f"transfer.parts={list(t.parts)}, transfer.blocks={t.blocks!r}, transfer.shuffle={t.shuffle!r} "
                       f"on the {len(warm_vit.blocks)} blocks of {cfg.model.name}"):
                transfer(warm_vit, image_vit, parts=tuple(t.parts), blocks=t.blocks, keep_pos_embed=t.keep_pos_embed,
                         keep_cls_token=t.keep_cls_token, shuffle=t.shuffle)
        else:
            check_optimizer("train", cfg.train, image_vit, phase, opt=cfg.train.opt, sched=cfg.train.sched)
            t = cfg.train
            with blame(f"train.mixup={t.mixup}, train.cutmix={t.cutmix}, train.label_smoothing={t.label_smoothing}"):
                mixup, _ = make_mixup(t.mixup, t.cutmix, t.label_smoothing, num_classes)
            if mixup is not None and phase.micro_batch % 2:  # timm's Mixup pairs each sample with another
                raise ConfigError(f"train.mixup/train.cutmix need an even batch per process; train.batch_size="
                                  f"{t.batch_size} over {world_size} process(es) x {t.grad_accum} accumulation "
                                  f"steps is {phase.micro_batch}")
            check_images(cfg.data, cfg.model.in_chans, img_size)
            try:
                splits = read_splits(cfg.data)  # every split found; evaluation shards apart from training's
            except FileNotFoundError:
                continue  # data.prepare writes the shards later; their splits were checked above
            with blame(f"data (source {cfg.data.source!r}, {world_size} process(es), data.num_workers="
                       f"{cfg.data.num_workers}, eval.batch_size={cfg.eval.batch_size})"):
                ImageData.open(cfg, splits, img_size=img_size, micro_batch=phase.micro_batch, rank=0,
                               world_size=world_size)
    return Plan(phases=phases, train_samples=train_samples, num_classes=num_classes, img_size=img_size)
