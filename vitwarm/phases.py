"""What each phase trains on: ``PHASE_SETUP[phase.trains_on]`` builds a ``PhaseRun`` for the generic loop in
train.py, and ``PHASE_END[phase.end]`` runs once the phase has finished (the keys are ``vitwarm.budget.Phase``'s).

- ``tokens`` (the warm-up): a ``WarmupViT`` around a fresh timm ViT, masked-token prediction on the
  procedural stream. Its end, ``transfer``, moves the selected weights into a fresh image ViT, which is
  exported headless as a timm hub folder (``RUN_DIR/warmup/``, see vitwarm.export): the hand-over to the
  image phase and the user's artefact.
- ``images``: an image ViT that starts where ``phase.init`` says (that export, composed sources, a
  fine-tuning source or a fresh init), classification on the webdataset shards.

Every batch source starts at a micro-batch index, so a resumed phase continues with the very samples an
uninterrupted run would have used next.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer
from timm.optim import create_optimizer_v2, get_optimizer_class
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torch.utils.data import DataLoader

from .budget import Phase
from .config import ConfigError
from .data import make_mixup, make_train_loader, make_val_loader
from .export import export_dir, export_run
from .models import WarmupViT, compose, load_export_without_head, masked_token_loss, mimetic_init_, transfer
from .models.registry import stock_architecture
from .procedural import ProceduralTask, TokenStream
from .seeds import derive_seed


def build_vit(model: DictConfig, **kwargs) -> VisionTransformer:
    """The timm ViT of the config's ``model`` section; ``kwargs`` (num_classes, ...) add to model.kwargs."""
    model_kwargs = OmegaConf.to_container(model.kwargs) | kwargs
    try:
        vit = timm.create_model(model.name, pretrained=False, in_chans=model.in_chans, **model_kwargs)
    except TypeError as err:  # an argument the model class does not take, or no ViT at all
        with torch.device("meta"):
            _check_is_vit(timm.create_model(model.name, pretrained=False), model.name)
        valid = sorted(set(inspect.signature(VisionTransformer.__init__).parameters) - {"self", "kwargs"})
        raise ConfigError(f"model.kwargs={OmegaConf.to_container(model.kwargs)} cannot build {model.name}: {err}; "
                          f"valid arguments of timm's VisionTransformer: {', '.join(valid)}") from None
    except (ValueError, AssertionError, RuntimeError) as err:  # values the model cannot be built with
        raise ConfigError(f"model.name={model.name} with model.kwargs={OmegaConf.to_container(model.kwargs)} "
                          f"cannot be built: {type(err).__name__}: {err}") from None
    _check_is_vit(vit, model.name)
    return vit


def _check_is_vit(model: torch.nn.Module, name: str) -> None:
    if not isinstance(model, VisionTransformer):
        examples = ", ".join(timm.list_models("vitwarm_*")[:3] + ["vit_small_patch16_224", "deit_tiny_patch16_224"])
        raise ConfigError(f"model.name={name} is a {type(model).__name__}, not a timm VisionTransformer; "
                          f"supported are timm's VisionTransformer models and their subclasses, e.g. {examples}")


def create_vit(cfg: DictConfig, purpose: str, **kwargs) -> VisionTransformer:
    """The configured timm ViT with a seeded initialisation (``model.init``), so a restarted run rebuilds it."""
    torch.manual_seed(derive_seed(cfg.seed, purpose))
    vit = build_vit(cfg.model, **kwargs)
    if cfg.model.init == "mimetic":
        mimetic_init_(vit, seed=derive_seed(cfg.seed, purpose, "mimetic"), **cfg.model.mimetic)
    return vit


@dataclass
class ImageData:
    """The image splits of a run and the loaders over them (built once, shared by the phases)."""

    num_classes: int
    train_samples: int
    train: object  # vitwarm.data TrainLoader: len() batches per epoch, .epoch(epoch, start_batch)
    val: object
    test: object | None

    @classmethod
    def open(cls, cfg: DictConfig, splits, img_size: int, micro_batch: int, rank: int, world_size: int,
             pin_memory: bool = False) -> ImageData:
        """``splits``: ``vitwarm.data.read_splits(cfg.data)``; ``micro_batch``: the image phase's; ``pin_memory``
        when the training device is CUDA (batches then reach it by non-blocking copies from pinned memory)."""
        data = cfg.data
        common = dict(rank=rank, world_size=world_size, pin_memory=pin_memory,
                      num_workers=data.num_workers, img_size=img_size, in_chans=cfg.model.in_chans,
                      mean=data.mean, std=data.std)
        aug = OmegaConf.to_container(data.aug)
        train = make_train_loader(splits["train"], batch_size=micro_batch, seed=cfg.seed,
                                  aug=aug, shuffle_buffer=data.shuffle_buffer, strict=data.strict, **common)
        evaluation = dict(batch_size=cfg.eval.batch_size, crop_pct=data.crop_pct,
                          interpolation=data.aug.interpolation, **common)
        val = make_val_loader(splits["val"], **evaluation)
        test = make_val_loader(splits["test"], **evaluation) if "test" in splits else None
        info = splits["train"]
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


def optimizer_implementation(opt: str, device: torch.device | None) -> dict:
    """Keyword arguments picking torch's fastest Adam(W) kernel for ``device``; {} for other optimizers.

    Fused (one kernel over all parameters) exists for CUDA and CPU (torch >= 2.4); on a 2-core CPU it steps
    a 0.8M-parameter ViT in 1.5 ms against 4.7 ms for the default per-tensor loop. Elsewhere foreach.
    ``device`` None (the dry build on the meta device): torch's default.
    """
    if device is None:
        return {}
    if get_optimizer_class(opt.split("_")[-1], bind_defaults=False) not in (torch.optim.AdamW, torch.optim.Adam):
        return {}  # timm's own optimizers choose their implementation themselves
    return {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}


def make_optimizer(cfg_opt: DictConfig, model: torch.nn.Module, phase: Phase, opt: str, sched: str,
                   device: torch.device | None = None):
    optimizer = create_optimizer_v2(model, opt=opt, lr=cfg_opt.lr, weight_decay=cfg_opt.weight_decay,
                                    **optimizer_implementation(opt, device))
    # One scheduler "epoch" = one optimizer step, so all lengths below are steps.
    scheduler, _ = create_scheduler_v2(optimizer, sched=sched, num_epochs=phase.steps, min_lr=cfg_opt.min_lr,
                                       warmup_epochs=phase.lr_warmup_steps, warmup_lr=cfg_opt.min_lr,
                                       step_on_epochs=False, updates_per_epoch=1)
    return optimizer, scheduler


def warmup_task(procedural: DictConfig, vit: VisionTransformer) -> ProceduralTask:
    """The masked-token task of the config's ``procedural`` section on ``vit``'s token grid."""
    return ProceduralTask(procedural.grammar, seq_len=vit.patch_embed.num_patches,
                          params=OmegaConf.to_container(procedural.params), mask_ratio=procedural.mask_ratio,
                          shuffled=procedural.shuffled)


def _prepare(cfg: DictConfig, accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             ema_decay: float = 0.0) -> tuple[torch.nn.Module, torch.optim.Optimizer, ModelEmaV3 | None]:
    """Accelerate's device placement and wrapping, then the EMA copy and torch.compile, in that order.

    The EMA is copied from the prepared model, so it lives on the training device and its updates never
    mix devices; it is copied before compiling, so evaluating it runs eagerly and compiles nothing.
    """
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = ModelEmaV3(accelerator.unwrap_model(model), decay=ema_decay) if ema_decay > 0 else None
    if cfg.train.compile:
        # Every compiled module shares the cache of nn.Module._call_impl and its recompile limit (8 by
        # default): drop the previous phase's graphs so that this phase's train/eval shapes fit in it.
        torch._dynamo.reset()
        model.compile()  # in place: state-dict keys, unwrap_model and checkpoints stay as without compile
    return model, optimizer, ema


def setup_warmup(cfg: DictConfig, phase: Phase, accelerator: Accelerator, images: ImageData,
                 start_step: int) -> PhaseRun:
    vit = create_vit(cfg, "warmup-init", num_classes=0)
    task = warmup_task(cfg.procedural, vit)
    model = WarmupViT(vit, task.vocab_size, pos_embed=cfg.warmup.pos_embed, trainable=cfg.warmup.trainable,
                      seed=derive_seed(cfg.seed, "symbols"))
    optimizer, scheduler = make_optimizer(cfg.warmup, model, phase, opt="adamw", sched="cosine",
                                          device=accelerator.device)
    model, optimizer, _ = _prepare(cfg, accelerator, model, optimizer)
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
    export_handover(cfg, image_vit, accelerator, init=cfg.model.init, transferred=report.copied)
    return str(report)


def export_handover(cfg: DictConfig, image_vit: torch.nn.Module, accelerator: Accelerator, **description) -> None:
    """Write the image model the image phase starts from as RUN_DIR/warmup/ (main process; written aside,
    renamed into place); ``description`` adds to the recorded warm-up description."""
    if accelerator.is_main_process:
        export_run(cfg, image_vit, "warmup", **description)
    accelerator.wait_for_everyone()


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
    if start_step == 0:  # a resumed phase gets its weights from the checkpoint instead
        if phase.init == "warmup":
            load_export_without_head(model, export_dir(cfg, "warmup"))  # what the warm-up phase left
        elif phase.init == "sources":
            compose_sources(cfg, model, accelerator)
        elif phase.init == "finetune":
            load_export_without_head(model, cfg.model.finetune)  # fine-tuning: everything but the classifier head
    optimizer, scheduler = make_optimizer(cfg.train, model, phase, opt=cfg.train.opt, sched=cfg.train.sched,
                                          device=accelerator.device)
    model, optimizer, ema = _prepare(cfg, accelerator, model, optimizer, cfg.train.ema_decay)
    t = cfg.train
    mixup, train_loss = make_mixup(t.mixup, t.cutmix, t.label_smoothing, images.num_classes)

    def loss(model, batch):
        x, y = (t.to(accelerator.device, non_blocking=True) for t in batch)  # (B, C, H, W) uint8, (B,)
        x = images.train.normalize(x)  # float32 (B, C, H, W), on the device
        if mixup is not None:
            x, y = mixup(x, y)
        return train_loss(model(x), y), {}

    batches = image_batches(images.train, start_step * phase.grad_accum)
    return PhaseRun(model, optimizer, scheduler, batches, loss, ema)


# By what a phase trains on (Phase.trains_on): its model, optimizer, batches and loss.
PHASE_SETUP = {"tokens": setup_warmup, "images": setup_image}
# By Phase.end: what happens once a phase has finished, before its phase-end checkpoint; returns a line for the log.
PHASE_END = {"transfer": finish_warmup}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, accelerator: Accelerator) -> dict[str, float]:
    """Top-1 / top-5 (percent) and mean loss over a split; every sample counted once over all processes."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # correct@1, correct@5, loss, n
    for images, labels in loader:
        images = loader.normalize(images.to(accelerator.device, non_blocking=True))  # uint8 -> float32 (B, C, H, W)
        labels = labels.to(accelerator.device, non_blocking=True)
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
