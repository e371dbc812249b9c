"""What each phase trains on: ``PHASE_SETUP[name]`` builds a ``PhaseRun`` for the generic loop in train.py.

- ``warmup``: a ``WarmupViT`` around a fresh timm ViT, masked-token prediction on the procedural stream.
  At its end the selected weights move into a fresh image ViT, which is exported headless as a timm hub
  folder (``RUN_DIR/warmup/``, see vitwarm.export): the hand-over to the image phase and the user's artefact.
- ``image``: that image ViT (or a fresh one without warm-up), classification on the webdataset shards.

Every batch source starts at a micro-batch index, so a resumed phase continues with the very samples an
uninterrupted run would have used next.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import timm
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from .budget import Phase
from .config import ConfigError
from .data import make_mixup, make_train_loader, make_val_loader
from .export import export_dir, export_run
from .models import WarmupViT, load_checkpoint, masked_token_loss, transfer
from .procedural import ProceduralTask, TokenStream


def derive_seed(seed: int, *tags: str | int) -> int:
    """A 32-bit seed for one purpose (model init, one training step, ...) derived from the run's seed."""
    words = [seed] + [zlib.crc32(t.encode()) if isinstance(t, str) else t for t in tags]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


def create_vit(cfg: DictConfig, purpose: str, **kwargs) -> torch.nn.Module:
    """The configured timm ViT with a seeded initialisation, so a restarted run rebuilds the same one."""
    torch.manual_seed(derive_seed(cfg.seed, purpose))
    model_kwargs = OmegaConf.to_container(cfg.model.kwargs) | kwargs
    return timm.create_model(cfg.model.name, pretrained=False, in_chans=cfg.model.in_chans, **model_kwargs)


@dataclass
class ImageData:
    """The image splits of a run and the loaders over them (built once, shared by the phases)."""

    num_classes: int
    train_samples: int
    train: object  # vitwarm.data TrainLoader: len() batches per epoch, .epoch(epoch, start_batch)
    val: object
    test: object | None

    @classmethod
    def open(cls, cfg: DictConfig, accelerator: Accelerator, info, img_size: int, micro_batch: int) -> ImageData:
        """``info``: the train split's ``read_dataset_info``; ``micro_batch``: the image phase's."""
        data = cfg.data
        common = dict(rank=accelerator.process_index, world_size=accelerator.num_processes,
                      num_workers=data.num_workers, img_size=img_size, in_chans=cfg.model.in_chans,
                      mean=data.mean, std=data.std)
        aug = OmegaConf.to_container(data.aug)
        train = make_train_loader(data.source, data.train_split, batch_size=micro_batch, seed=cfg.seed,
                                  aug=aug, shuffle_buffer=data.shuffle_buffer, strict=data.strict, **common)
        evaluation = dict(batch_size=cfg.eval.batch_size, crop_pct=data.crop_pct,
                          interpolation=data.aug.interpolation, **common)
        val = make_val_loader(data.source, data.val_split, **evaluation)
        test = make_val_loader(data.source, data.test_split, **evaluation) if data.test_split else None
        return cls(num_classes=info.num_classes, train_samples=info.num_samples, train=train, val=val, test=test)


@dataclass
class PhaseRun:
    """Everything the training loop needs for one phase."""

    model: torch.nn.Module  # prepared by Accelerate (DDP-wrapped when distributed)
    optimizer: torch.optim.Optimizer
    scheduler: object  # timm scheduler: step_update(num_updates) sets the LR of a step
    batches: Iterator  # this process's micro-batches, from the resume position on
    loss: Callable  # (model, batch) -> (loss, {name: count tensor to all-reduce})
    ema: ModelEmaV3 | None = None


def _optimize(cfg_opt: DictConfig, model: torch.nn.Module, phase: Phase, opt: str, sched: str):
    optimizer = create_optimizer_v2(model, opt=opt, lr=cfg_opt.lr, weight_decay=cfg_opt.weight_decay)
    # One scheduler "epoch" = one optimizer step, so all lengths below are steps.
    scheduler, _ = create_scheduler_v2(optimizer, sched=sched, num_epochs=phase.steps, min_lr=cfg_opt.min_lr,
                                       warmup_epochs=phase.lr_warmup_steps, warmup_lr=cfg_opt.min_lr,
                                       step_on_epochs=False, updates_per_epoch=1)
    return optimizer, scheduler


def setup_warmup(cfg: DictConfig, phase: Phase, accelerator: Accelerator, images: ImageData,
                 start_step: int) -> PhaseRun:
    vit = create_vit(cfg, "warmup-init", num_classes=0)
    try:  # fail here, naming the model's grid, rather than inside a DataLoader worker
        task = ProceduralTask(cfg.procedural.grammar, seq_len=vit.patch_embed.num_patches,
                              params=OmegaConf.to_container(cfg.procedural.params),
                              mask_ratio=cfg.procedural.mask_ratio, shuffled=cfg.procedural.shuffled)
        task.batch(0, 1, seed=0)
    except ValueError as err:
        H, W = vit.patch_embed.grid_size
        raise ConfigError(f"procedural.grammar={cfg.procedural.grammar!r} on the {H} x {W} = {H * W} token grid "
                          f"of model {cfg.model.name}: {err}") from None
    model = WarmupViT(vit, task.vocab_size, pos_embed=cfg.warmup.pos_embed, trainable=cfg.warmup.trainable,
                      seed=derive_seed(cfg.seed, "symbols"))
    optimizer, scheduler = _optimize(cfg.warmup, model, phase, opt="adamw", sched="cosine")
    model, optimizer = accelerator.prepare(model, optimizer)
    stream = TokenStream(task, phase.micro_batch, seed=derive_seed(cfg.seed, "tokens"),
                         start_sample=start_step * phase.global_batch, rank=accelerator.process_index,
                         world_size=accelerator.num_processes)
    loader = DataLoader(stream, batch_size=None, num_workers=cfg.warmup.num_workers)

    def loss(model, batch):
        batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
        logits = model(batch["tokens"])  # (B, N, vocab)
        value, correct, masked = masked_token_loss(logits, batch["targets"], batch["loss_mask"])
        return value, {"correct": correct, "masked": masked}

    return PhaseRun(model, optimizer, scheduler, iter(loader), loss)


def finish_warmup(cfg: DictConfig, run: PhaseRun, accelerator: Accelerator, images: ImageData,
                  run_dir: Path) -> str:
    """Move the selected warmed-up weights into a fresh image ViT and export it; returns the transfer log."""
    warm_vit = accelerator.unwrap_model(run.model).vit
    image_vit = create_vit(cfg, "image-init", num_classes=images.num_classes)
    t = cfg.transfer
    report = transfer(warm_vit, image_vit, parts=tuple(t.parts), blocks=t.blocks,
                      keep_pos_embed=t.keep_pos_embed, keep_cls_token=t.keep_cls_token, shuffle=t.shuffle,
                      seed=derive_seed(cfg.seed, "transfer-shuffle"))
    if accelerator.is_main_process:
        export_run(cfg, image_vit, "warmup", transferred=report.copied)  # written aside, renamed into place
    accelerator.wait_for_everyone()
    return str(report)


def image_batches(loader, start_micro: int) -> Iterator:
    """Endless micro-batches over epochs, starting at micro-batch ``start_micro`` of the phase."""
    epoch, skip = divmod(start_micro, len(loader))
    while True:
        yield from loader.epoch(epoch, start_batch=skip)
        epoch, skip = epoch + 1, 0


def setup_image(cfg: DictConfig, phase: Phase, accelerator: Accelerator, images: ImageData,
                start_step: int) -> PhaseRun:
    model = create_vit(cfg, "image-init", num_classes=images.num_classes,
                       drop_path_rate=cfg.model.drop_path_rate)
    if cfg.warmup.fraction > 0 and start_step == 0:  # a resumed phase gets its weights from the checkpoint
        load_checkpoint(model, export_dir(cfg, "warmup"))  # what the warm-up phase left
    elif cfg.model.init and start_step == 0:
        load_checkpoint(model, cfg.model.init)  # fine-tuning: everything but the classifier head
    ema = ModelEmaV3(model, decay=cfg.train.ema_decay) if cfg.train.ema_decay > 0 else None
    optimizer, scheduler = _optimize(cfg.train, model, phase, opt=cfg.train.opt, sched=cfg.train.sched)
    model, optimizer = accelerator.prepare(model, optimizer)
    t = cfg.train
    mixup, train_loss = make_mixup(t.mixup, t.cutmix, t.label_smoothing, images.num_classes)

    def loss(model, batch):
        x, y = (t.to(accelerator.device, non_blocking=True) for t in batch)  # (B, C, H, W), (B,)
        if mixup is not None:
            x, y = mixup(x, y)
        return train_loss(model(x), y), {}

    batches = image_batches(images.train, start_step * phase.grad_accum)
    return PhaseRun(model, optimizer, scheduler, batches, loss, ema)


PHASE_SETUP = {"warmup": setup_warmup, "image": setup_image}
# What happens once a phase has finished, before its phase-end checkpoint; returns a line for the log.
PHASE_END = {"warmup": finish_warmup}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, accelerator: Accelerator) -> dict[str, float]:
    """Top-1 / top-5 (percent) and mean loss over a split; every sample counted once over all processes."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # correct@1, correct@5, loss, n
    for images, labels in loader:
        images, labels = images.to(accelerator.device), labels.to(accelerator.device)
        with accelerator.autocast():
            logits = model(images).float()  # (B, classes)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices  # (B, 5)
        hits = top5 == labels[:, None]
        sums += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(),
                             torch.nn.functional.cross_entropy(logits, labels, reduction="sum"),
                             torch.tensor(len(labels), device=labels.device)]).double()
    model.train()
    correct1, correct5, loss, n = accelerator.reduce(sums, reduction="sum").tolist()
    return {"top1": 100 * correct1 / n, "top5": 100 * correct5 / n, "loss": loss / n, "samples": int(n)}
