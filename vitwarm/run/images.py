"""The run's image data and its evaluation, shared by every phase (and by the end of the run).

``ImageData`` opens the loaders over a run's splits once; ``evaluate`` scores a model on one of them over
all processes. Both phases see the same ``ImageData``: the warm-up reads its class count, the image phase
trains on ``train``, the loop evaluates on ``val`` (and ``test`` at the end).

**Data ranks.** The image phase's data order is laid out for the number of processes the run started
with, its *data ranks* R (``RunState.data_ranks``): data rank d reads its shards, fills its shuffle buffer,
augments its batches and draws its dropout and drop-path under seeds of d (vitwarm.data.streams,
vitwarm.seeds), and a global batch is the data ranks' micro-batches. A resume on N processes, N dividing R,
keeps that order: process p stands for the data ranks p·R/N .. (p+1)·R/N - 1, one train loader each, and
trains on their micro-batches in turn, each under its data rank's per-step seeds (vitwarm.run.engine), with
the gradient averaged over all of them as R processes would. ``data_layout`` decides R.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf

from ..data import make_train_loader, make_val_loader
from ..data.http_fetch import HttpLimits
from ..data.workers import resolve_workers
from .fsdp import lockstep


@dataclass
class ImageData:
    """The image splits of a run and the loaders over them (built once, shared by the phases)."""

    num_classes: int
    train_samples: int
    train: list  # vitwarm.data TrainLoaders, one per data rank of this process: .epoch(epoch, start_batch)
    val: object
    test: object | None
    data_ranks: list[int]  # the data ranks of ``train``'s loaders, in order (its own rank in most runs)

    @classmethod
    def open(cls, cfg: DictConfig, splits, img_size: int, micro_batch: int, rank: int, world_size: int,
             num_workers: int | None = None, device: torch.device | str = "cpu",
             data_ranks: int | None = None) -> ImageData:
        """``splits``: ``vitwarm.data.read_splits(cfg.data)``; ``micro_batch``: the image phase's (this
        process's, over all its data ranks); ``num_workers`` per data rank (None: what ``data.num_workers``
        resolves to here, vitwarm.data.workers); ``device``: the training device, where each loader's
        ``on_device`` gets its constants now (a CUDA one also pins the batches, which then reach it by
        non-blocking copies); ``data_ranks``: R of the module docstring (None: ``world_size``)."""
        data, device = cfg.data, torch.device(device)
        data_ranks = data_ranks or world_size
        per_process = data_ranks // world_size
        if num_workers is None:
            num_workers = resolve_workers(data.num_workers, len(splits["train"].urls), world_size)[0]
        common = dict(pin_memory=device.type == "cuda", num_workers=num_workers, img_size=img_size,
                      in_chans=cfg.model.in_chans, mean=data.mean, std=data.std,
                      http=HttpLimits(data.stall_s, data.retries))
        aug = OmegaConf.to_container(data.aug)
        mine = list(range(rank * per_process, (rank + 1) * per_process))
        train = [make_train_loader(splits["train"], batch_size=micro_batch // per_process, seed=cfg.seed, aug=aug,
                                   shuffle_buffer=data.shuffle_buffer, strict=data.strict, rank=d,
                                   world_size=data_ranks, **common) for d in mine]
        evaluation = dict(batch_size=cfg.eval.batch_size, crop_pct=data.crop_pct, rank=rank, world_size=world_size,
                          interpolation=data.aug.interpolation, **common)
        val = make_val_loader(splits["val"], **evaluation)
        test = make_val_loader(splits["test"], **evaluation) if "test" in splits else None
        for loader in (*train, val, test):
            if loader is not None:
                loader.on_device.to(device)
        info = splits["train"]
        return cls(num_classes=info.num_classes, train_samples=info.num_samples, train=train, val=val, test=test,
                   data_ranks=mine)


def data_layout(recorded: int, processes: int) -> tuple[int, str | None]:
    """The data ranks R the image phase is laid out for (module docstring), and a warning when a resume changes
    them: the recorded R (the run's first launch's processes) when ``processes`` divides it; else
    ``processes`` (a new run; or a resume on a number of processes that does not divide R, whose image phase
    goes on in another data order)."""
    if not recorded or recorded == processes:
        return processes, None
    if recorded % processes == 0:
        return recorded, None
    return processes, (f"vitwarm: warning: the image phase's data order is laid out for {recorded} processes and "
                       f"{processes} do not divide them: it goes on with the same schedule in another order (resume "
                       f"on a divisor of {recorded} to keep it; docs/training.md)")


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, accelerator: Accelerator) -> dict[str, float]:
    """Top-1 / top-5 (percent) and mean loss over a split; every sample counted once over all processes."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=accelerator.device)  # correct@1, correct@5, loss, n

    def idle() -> None:  # under FSDP, once this process's share of the split is spent and another's is not
        h, w = model.patch_embed.img_size
        model(torch.zeros(1, model.patch_embed.proj.in_channels, h, w, device=accelerator.device))

    for images, labels in lockstep(loader, model, accelerator, idle):
        images = loader.on_device(images.to(accelerator.device, non_blocking=True))  # uint8 -> float32 (B, C, H, W)
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
