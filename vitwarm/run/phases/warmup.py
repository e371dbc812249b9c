"""The warm-up phase: masked-token prediction on procedural sequences, then the transfer into an image ViT.

- setup: a ``WarmupViT`` around a fresh timm ViT (the symbol table and position handling of
  vitwarm.models.token_path), AdamW with a cosine schedule (warmup.stop=plateau: warm-up-stable-decay),
  the procedural ``TokenStream`` from the resume position on, and the probe and stop rule
  (vitwarm.run.probe.Watch).
- check: the grammar on the model's token grid, the token path, the optimizer and the transfer selection,
  all built on the meta device before step 1.
- end: the selected warmed-up weights move into a fresh image ViT, exported headless as ``RUN_DIR/warmup/``
  (vitwarm.run.export): the image phase starts from it, and it is the user's artefact.

``warmup_kind`` makes such a kind from what it trains and hands over (``WarmupModel``): this module's
``KIND`` trains the image model's own architecture and transfers into a fresh image ViT;
vitwarm.run.phases.growth's trains ``warmup.model``, a smaller ViT, and exports it for the image phase to
grow. The plan says which one a run has (``Phase.kind``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer
from torch.utils.data import DataLoader

from ...data.loaders import worker_init
from ...errors import ConfigError
from ...models import TransferReport, WarmupViT, masked_token_loss, transfer
from ...procedural import ProceduralTask, TokenStream
from ...seeds import derive_seed
from ..export import export_handover
from ..fsdp import shard, whole
from ..images import ImageData
from ..plan import Phase, Plan, vit_flops_per_sample
from ..plateau import WSD
from ..probe import Watch
from .common import PhaseKind, Training, blame, build_vit, check_optimizer, create_vit, make_optimizer, prepare

# The warm-up's optimizer and schedule (the paper's: AdamW, linear LR warm-up then cosine); its numbers are
# the config's warmup section.
OPT, SCHED = "adamw", "cosine"


def warmup_seq_len(warmup: DictConfig, vit: VisionTransformer) -> int:
    """Tokens per warm-up sequence: ``warmup.seq_len``, or (0) the whole token grid of ``vit``."""
    return warmup.seq_len or vit.patch_embed.num_patches


@dataclass(frozen=True)
class WarmupModel:
    """What a warm-up kind trains (a headless ViT) and how it hands it over to the image phase."""

    create: Callable[[DictConfig], VisionTransformer]
    """cfg -> the ViT to warm up, seeded (``warmup-init``)."""
    build: Callable[[DictConfig], VisionTransformer]
    """cfg -> the same ViT without seeding, for the dry build on the meta device."""
    check_handover: Callable[[DictConfig, VisionTransformer, VisionTransformer], None]
    """(cfg, warm ViT, image ViT), both on the meta device: the hand-over can be done; ConfigError if not."""
    hand_over: Callable[[DictConfig, VisionTransformer, Accelerator, ImageData], str]
    """(cfg, warmed-up ViT, accelerator, images) -> a log line, once the warm-up is done: RUN_DIR/warmup/ written."""


def warmup_task(cfg: DictConfig, vit: VisionTransformer) -> ProceduralTask:
    """The masked-token task of the config's ``procedural`` section, sequences of ``warmup_seq_len`` tokens."""
    procedural = cfg.procedural
    return ProceduralTask(procedural.grammar, seq_len=warmup_seq_len(cfg.warmup, vit),
                          params=OmegaConf.to_container(procedural.params), mask_ratio=procedural.mask_ratio,
                          shuffled=procedural.shuffled)


def transfer_into(cfg: DictConfig, warm_vit: VisionTransformer, image_vit: VisionTransformer,
                  seed: int = 0) -> TransferReport:
    """The config's ``transfer`` selection from the warmed-up ViT into the image ViT (``seed``: of the
    shuffled-transfer ablation)."""
    t = cfg.transfer
    return transfer(warm_vit, image_vit, parts=tuple(t.parts), blocks=t.blocks, keep_pos_embed=t.keep_pos_embed,
                    keep_cls_token=t.keep_cls_token, shuffle=t.shuffle, seed=seed)


def warmup_kind(trained: WarmupModel) -> PhaseKind:
    """The warm-up phase kind that trains and hands over ``trained`` (see the module docstring)."""

    def setup(cfg: DictConfig, phase: Phase, accelerator: Accelerator, images: ImageData, start_step: int) -> Training:
        vit = trained.create(cfg)
        task = warmup_task(cfg, vit)
        model = WarmupViT(vit, task.vocab_size, pos_embed=cfg.warmup.pos_embed, trainable=cfg.warmup.trainable,
                          seed=derive_seed(cfg.seed, "symbols"), seq_len=task.seq_len)
        model = shard(cfg, accelerator, model)  # before the optimizer: it is built over the sharded parameters
        optimizer, scheduler = make_optimizer(cfg.warmup, model, phase, opt=OPT, sched=SCHED,
                                              device=accelerator.device)
        watch = Watch(cfg, phase, task, accelerator)
        if watch.plateau:  # the cool-down starts at the stop decision: warm-up-stable-decay (vitwarm.run.plateau)
            scheduler = WSD(optimizer, lr=cfg.warmup.lr, min_lr=cfg.warmup.min_lr, warmup=phase.lr_warmup_steps,
                            cooldown=watch.cooldown, start=watch.decay_start)
        model, optimizer, _ = prepare(cfg, accelerator, model, optimizer)
        stream = TokenStream(task, phase.micro_batch, seed=derive_seed(cfg.seed, "tokens"),
                             start_sample=start_step * phase.global_batch, rank=accelerator.process_index,
                             world_size=accelerator.num_processes)
        loader = DataLoader(stream, batch_size=None, num_workers=cfg.warmup.num_workers, worker_init_fn=worker_init)

        def loss(model, batch):
            batch = {k: v.to(accelerator.device, non_blocking=True) for k, v in batch.items()}
            logits = model(batch["tokens"])  # (B, N, vocab)
            value, correct, masked = masked_token_loss(logits, batch["targets"], batch["loss_mask"])
            return value, {"correct": correct, "masked": masked}

        return Training(model, optimizer, scheduler, iter(loader), loss, watch=watch)

    def check(cfg: DictConfig, phase: Phase, plan: Plan, image_vit: VisionTransformer, world_size: int) -> None:
        """The grammar on the token grid, the token path, the optimizer and the hand-over (meta device)."""
        with torch.device("meta"):
            vit = trained.build(cfg)
        check_token_path(cfg, vit, phase, world_size)
        trained.check_handover(cfg, vit, image_vit)

    def end(cfg: DictConfig, training: Training, accelerator: Accelerator, images: ImageData) -> str:
        # the whole warmed-up ViT, gathered to the CPU under FSDP (vitwarm.run.fsdp)
        return trained.hand_over(cfg, whole(training.model, accelerator).vit, accelerator, images)

    def flops_per_sample(cfg: DictConfig) -> float:
        with torch.device("meta"):
            vit = trained.build(cfg)
        return vit_flops_per_sample(vit, warmup_seq_len(cfg.warmup, vit))

    return PhaseKind(setup=setup, check=check, end=end, flops_per_sample=flops_per_sample)


def check_token_path(cfg: DictConfig, vit: VisionTransformer, phase: Phase, world_size: int) -> None:
    """The grammar on ``vit``'s token grid, the token path, the optimizer and the probe (meta device)."""
    H, W = vit.patch_embed.grid_size
    procedural, warmup = cfg.procedural, cfg.warmup
    if warmup.seq_len > H * W:
        raise ConfigError(f"warmup.seq_len={warmup.seq_len} is longer than the {H} x {W} = {H * W} token grid of "
                          f"model {cfg.model.name}; use at most {H * W}, or 0 for the whole grid")
    grid = f"the {H} x {W} = {H * W} token grid"
    where = f"{warmup.seq_len}-token sequences (warmup.seq_len) on {grid}" if warmup.seq_len else grid
    with blame(f"procedural.grammar={procedural.grammar!r} with procedural.params="
               f"{OmegaConf.to_container(procedural.params)} on {where} of model {cfg.model.name}"):
        task = warmup_task(cfg, vit)
        task.batch(0, 1, seed=0)  # one real sample: the grammar's own checks of its parameters and length
    with blame(f"warmup.pos_embed={warmup.pos_embed!r}, warmup.trainable={list(warmup.trainable)}"):
        model = WarmupViT(vit, task.vocab_size, pos_embed=warmup.pos_embed, trainable=warmup.trainable,
                          seq_len=task.seq_len)
        model(torch.zeros(1, task.seq_len, dtype=torch.long, device="meta"))  # (1, L) -> (1, L, vocab)
    check_optimizer("warmup", warmup, vit, phase, opt=OPT, sched=SCHED)
    if 0 < warmup.probe.size < world_size:
        raise ConfigError(f"warmup.probe.size={warmup.probe.size} cannot be split over {world_size} processes; "
                          f"use at least {world_size} sequences or 0 to turn the probe off")


def check_transfer(cfg: DictConfig, vit: VisionTransformer, image_vit: VisionTransformer) -> None:
    """The transfer selection of the config from the warm-up's ViT into the image ViT (meta device)."""
    t = cfg.transfer
    with blame(f"transfer.parts={list(t.parts)}, transfer.blocks={t.blocks!r}, transfer.shuffle={t.shuffle!r} "
               f"on the {len(vit.blocks)} blocks of {cfg.model.name}"):
        transfer_into(cfg, vit, image_vit)


def transfer_and_export(cfg: DictConfig, warm_vit: VisionTransformer, accelerator: Accelerator,
                        images: ImageData) -> str:
    """Move the selected warmed-up weights into a fresh image ViT and export it; returns the transfer log."""
    image_vit = create_vit(cfg, "image-init", num_classes=images.num_classes)
    report = transfer_into(cfg, warm_vit, image_vit, seed=derive_seed(cfg.seed, "transfer-shuffle"))
    export_handover(cfg, image_vit, accelerator, init=cfg.model.init, transferred=report.copied)
    return str(report)


KIND = warmup_kind(WarmupModel(
    create=lambda cfg: create_vit(cfg, "warmup-init", num_classes=0),
    build=lambda cfg: build_vit(cfg.model, num_classes=0),
    check_handover=check_transfer,
    hand_over=transfer_and_export,
))
