"""Everything a run will build, built once without data or memory before anything runs.

``preflight(cfg, world_size)`` runs before shards are prepared (vitwarm.data.prepare), before the run
directory exists and before any process group is formed. It plans the phases (vitwarm.run.plan: batch sizes
against budgets and the world size), builds the image model on the meta device, and hands each phase to its
kind's ``check`` (vitwarm.run.phases), which dry-builds it with the very functions the run uses: the
warm-up's token path and grammar on the model's token grid, the transfer selection, the optimizer and scheduler
factories, Mixup, the image transforms and, when the shards exist, the loaders over them. A mistake anywhere
is a ``ConfigError`` that names the key, so it surfaces in seconds instead of after an hours-long warm-up.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from ..data import describe_train
from ..errors import ConfigError
from .phases import KINDS
from .phases.common import blame, build_vit
from .plan import Plan, plan_phases, vit_flops_per_sample, warmup_kind
from .rundir import read_summary


def matched_flops(run_dir: str | None) -> float | None:
    """The used warm-up FLOPs of the finished run ``run_dir`` (budget.matched_to), from its summary.json."""
    if run_dir is None:
        return None
    summary = read_summary(run_dir)
    used = (summary.phases.get("warmup") or {}).get("used_flops") if summary else None
    if used is None:
        why = "no finished run (summary.json)" if summary is None else "a run whose summary records no warm-up FLOPs"
        raise ConfigError(f"budget.matched_to={run_dir!r} is {why}; name the directory of a finished warm-up run")
    return used


def preflight(cfg: DictConfig, world_size: int) -> Plan:
    """Plan the run for ``world_size`` processes and dry-build every phase; raises ConfigError naming the key."""
    with blame(f"data.source={cfg.data.source!r}"):
        train_samples, num_classes = describe_train(cfg.data)
    with torch.device("meta"):  # shapes only, no memory, no initialisation cost
        image_vit = build_vit(cfg.model, num_classes=num_classes, drop_path_rate=cfg.model.drop_path_rate)
        image_in = torch.zeros(1, cfg.model.in_chans, *image_vit.patch_embed.img_size)  # (1, C, H, W)
        with blame(f"model.name={cfg.model.name} with model.kwargs={OmegaConf.to_container(cfg.model.kwargs)}"):
            image_vit(image_in)  # (1, classes)
    phases = plan_phases(cfg, train_samples=train_samples, world_size=world_size,
                         flops_per_sample=vit_flops_per_sample(image_vit, image_vit.patch_embed.num_patches),
                         warmup_flops_per_sample=KINDS[warmup_kind(cfg)].flops_per_sample(cfg),
                         matched_flops=matched_flops(cfg.budget.matched_to))
    # fp32 weights: a checkpoint holds them, two optimizer slots each (AdamW's moments) and the EMA when on; the
    # two exports hold them once each.
    weights = 4 * sum(p.numel() for p in image_vit.parameters())
    plan = Plan(phases=phases, train_samples=train_samples, num_classes=num_classes,
                img_size=image_vit.patch_embed.img_size[0],
                save_bytes=weights * (3 + (cfg.train.ema_decay > 0) + 2))
    for phase in plan.phases:
        KINDS[phase.kind].check(cfg, phase, plan, image_vit, world_size)
    return plan
