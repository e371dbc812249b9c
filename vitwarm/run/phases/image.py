"""The image phase: classification on the webdataset shards, from where ``phase.init`` says.

- setup: an image ViT that starts from this run's warm-up export (as it is, or grown), the composed transfer of
  ``transfer.sources``, a fine-tuning source or a fresh (seeded) init; timm's optimizer and scheduler,
  Mixup/CutMix and label smoothing; micro-batches from the resume position on.
- check: the optimizer, Mixup against the per-process batch, the image transforms and, when the shards
  exist, the loaders over them, all before step 1.
- end: none; the loop evaluates and exports the final phase's model.

Every batch source starts at a micro-batch index, so a resumed phase continues with the very samples an
uninterrupted run would have used next.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import cycle

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer

from ...data import ImageTransform, make_mixup, preparation, read_splits
from ...errors import ConfigError
from ...models import compose, load_export_without_head
from ...models.registry import stock_architecture
from ..export import export_dir, export_handover
from ..fsdp import shard
from ..images import ImageData
from ..plan import Phase, Plan
from ..rundir import WARMUP_EXPORT
from .common import PhaseKind, Training, blame, check_optimizer, create_vit, make_optimizer, prepare
from .growth import grow_export_into


def compose_sources(cfg: DictConfig, image_vit: torch.nn.Module, accelerator: Accelerator) -> None:
    """Composed transfer (``transfer.sources``) into the fresh image model, checked and exported with its
    provenance before the image phase's first step."""
    sources = OmegaConf.to_container(cfg.transfer.sources, resolve=True)
    # Exports record timm's stock architecture name (vitwarm.models.export_hub).
    report, provenance = compose(image_vit, sources, architecture=stock_architecture(image_vit)[0],
                                 blocks=cfg.transfer.blocks, fraction=cfg.warmup.fraction)
    export_handover(cfg, image_vit, accelerator, sources=provenance, init=cfg.model.init,
                    transferred=report.copied)
    accelerator.print(f"vitwarm: composed transfer from {len(sources)} warm-up exports\n{report}")


def image_batches(loaders: list, start_step: int, grad_accum: int) -> Iterator:
    """Endless micro-batches over epochs from ``start_step`` on: per step, ``grad_accum`` of each data rank's
    loader in turn (vitwarm.run.images), each loader iterated once across epochs (its workers start each epoch
    while the last one's batches are in use)."""
    streams = [loader.epochs(*divmod(start_step * grad_accum, len(loader))) for loader in loaders]
    # map and cycle, not a generator: with a generator here a stopped run printed a loader worker's traceback
    # as it exited (tests/test_preemption.py)
    return map(next, cycle([stream for stream in streams for _ in range(grad_accum)]))


def setup(cfg: DictConfig, phase: Phase, accelerator: Accelerator, images: ImageData, start_step: int) -> Training:
    model = create_vit(cfg, "image-init", num_classes=images.num_classes, drop_path_rate=cfg.model.drop_path_rate)
    if start_step == 0:  # a resumed phase gets its weights from the checkpoint instead
        if phase.init == "grown":
            accelerator.print(grow_export_into(cfg, model))  # the warmed-up small model, grown
        elif phase.init == "warmup":
            load_export_without_head(model, export_dir(cfg, WARMUP_EXPORT))  # what the warm-up phase left
        elif phase.init == "sources":
            compose_sources(cfg, model, accelerator)
        elif phase.init == "finetune":
            load_export_without_head(model, cfg.model.finetune)  # fine-tuning: everything but the classifier head
    model = shard(cfg, accelerator, model)  # before the optimizer: it is built over the sharded parameters
    t = cfg.train
    optimizer, scheduler = make_optimizer(t, model, phase, opt=t.opt, sched=t.sched, device=accelerator.device)
    model, optimizer, ema = prepare(cfg, accelerator, model, optimizer, t.ema_decay)
    mixup, train_loss = make_mixup(t.mixup, t.cutmix, t.label_smoothing, images.num_classes)

    def loss(model, batch):
        x, y = (t.to(accelerator.device, non_blocking=True) for t in batch)  # (B, C, H, W) uint8, (B,)
        x = images.train[0].on_device(x)  # float32 (B, C, H, W), normalised and erased on the device (every
        # data rank's loader has the same transform; the erasing draws from the generators seeded per step)
        if mixup is not None:  # timm's Mixup/CutMix, on the device, drawing from the generators seeded per step
            x, y = mixup(x, y)
        return train_loss(model(x), y), {}

    batches = image_batches(images.train, start_step, phase.grad_accum)
    return Training(model, optimizer, scheduler, batches, loss, ema, data_ranks=images.data_ranks)


def check_transforms(data: DictConfig, in_chans: int, img_size: int) -> None:
    """The training and evaluation transforms of the config's ``data`` section."""
    with blame(f"data.aug.auto_augment={data.aug.auto_augment!r}, data.mean={data.mean}, data.std={data.std} "
               f"(training transform for model.in_chans={in_chans})"):
        ImageTransform(is_training=True, img_size=img_size, in_chans=in_chans, mean=data.mean, std=data.std,
                       **OmegaConf.to_container(data.aug))
    with blame(f"data.aug.interpolation={data.aug.interpolation!r} / data.crop_pct={data.crop_pct} "
               "(evaluation transform)"):
        ImageTransform(is_training=False, img_size=img_size, in_chans=in_chans, mean=data.mean, std=data.std,
                       crop_pct=data.crop_pct, interpolation=data.aug.interpolation)


def check(cfg: DictConfig, phase: Phase, plan: Plan, image_vit: VisionTransformer, world_size: int) -> None:
    """The optimizer, Mixup, the transforms and (when the shards exist) the loaders, before step 1."""
    t = cfg.train
    check_optimizer("train", t, image_vit, phase, opt=t.opt, sched=t.sched)
    with blame(f"train.mixup={t.mixup}, train.cutmix={t.cutmix}, train.label_smoothing={t.label_smoothing}"):
        mixup, _ = make_mixup(t.mixup, t.cutmix, t.label_smoothing, plan.num_classes)
    if mixup is not None and phase.micro_batch % 2:  # timm's Mixup pairs each sample with another
        raise ConfigError(f"train.mixup/train.cutmix need an even batch per process; train.batch_size="
                          f"{t.batch_size} over {world_size} process(es) x {t.grad_accum} accumulation "
                          f"steps is {phase.micro_batch}")
    check_transforms(cfg.data, cfg.model.in_chans, plan.img_size)
    try:
        splits = read_splits(cfg.data)  # every split found; evaluation shards apart from training's
    except FileNotFoundError:
        if preparation(cfg.data) is None:
            raise  # an evaluation source that is missing (the training one was found by preflight)
        return  # data.prepare writes the shards later; their splits were checked by preflight
    with blame(f"data (source {cfg.data.source!r}, {world_size} process(es), data.num_workers="
               f"{cfg.data.num_workers}, eval.batch_size={cfg.eval.batch_size})"):
        ImageData.open(cfg, splits, img_size=plan.img_size, micro_batch=phase.micro_batch, rank=0,
                       world_size=world_size)


KIND = PhaseKind(setup=setup, check=check)
