"""The growing warm-up phase kind: a warm-up model that is not the image model (``warmup.model``), and its
growth into the image model.

When ``warmup.model`` is set, the plan gives the warm-up this kind (``Phase.kind == "growing_warmup"``) and
the image phase ``init == "grown"`` (vitwarm.run.plan). The warm-up trains that smaller ViT (optionally
with one shared middle block) and exports *it*, headless, as ``RUN_DIR/warmup/``: a stock timm hub folder
of the small architecture. The image phase then grows it into its fresh image ViT
(vitwarm.models.grow: width tiling, ``transfer.grow_depth``, ``transfer.grow_noise``) instead of loading
the export as it is; the rest of the ``transfer`` section (parts, blocks, keep_*, shuffle) selects what is
grown. Preflight checks the pair on the meta device (``check_pair``), so an impossible one fails before step 1.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer

from ...models import GrowthReport, check_growth, grow, load_export_without_head, share_middle_blocks, unshared
from ...seeds import derive_seed
from ..export import export_dir, export_handover
from ..images import ImageData
from ..rundir import WARMUP_EXPORT
from .common import blame, build_vit, create_vit
from .warmup import WarmupModel, warmup_kind

SECTION = "warmup.model"


def warmup_model(cfg: DictConfig) -> DictConfig:
    """The model section the warm-up builds: ``cfg.model``, with warmup.model's name and kwargs.

    An empty ``warmup.model.name`` keeps ``model.name`` and ``model.kwargs``, which ``warmup.model.kwargs``
    then overrides key by key (e.g. a narrower, shallower copy of the image model).
    """
    m = cfg.warmup.model
    kwargs = OmegaConf.to_container(m.kwargs)
    if not m.name:
        kwargs = OmegaConf.to_container(cfg.model.kwargs) | kwargs
    return OmegaConf.create(OmegaConf.to_container(cfg.model) | {"name": m.name or cfg.model.name, "kwargs": kwargs})


def _shared(cfg: DictConfig, vit: VisionTransformer) -> VisionTransformer:
    if cfg.warmup.model.shared_middle:
        with blame(f"{SECTION}.shared_middle=true on the {len(vit.blocks)}-block {SECTION}"):
            share_middle_blocks(vit)
    return vit


def create_warmup_vit(cfg: DictConfig) -> VisionTransformer:
    """The warm-up's ViT, seeded (``warmup-init``), headless, its middle blocks shared if configured."""
    return _shared(cfg, create_vit(cfg, "warmup-init", warmup_model(cfg), SECTION, num_classes=0))


def build_warmup_vit(cfg: DictConfig) -> VisionTransformer:
    """The warm-up's ViT without seeding (for the dry build on the meta device)."""
    return _shared(cfg, build_vit(warmup_model(cfg), SECTION, num_classes=0))


def _grow(cfg: DictConfig, small: VisionTransformer, big: VisionTransformer, seed: int = 0) -> GrowthReport:
    t = cfg.transfer
    return grow(small, big, depth=t.grow_depth, noise=t.grow_noise, seed=seed, parts=tuple(t.parts),
                blocks=t.blocks, keep_pos_embed=t.keep_pos_embed, keep_cls_token=t.keep_cls_token, shuffle=t.shuffle)


def check_pair(cfg: DictConfig, small: VisionTransformer, image_vit: VisionTransformer) -> None:
    """The pair can grow with the config's transfer selection (shapes only: meta-device models)."""
    t = cfg.transfer
    with blame(f"{SECTION}={OmegaConf.to_container(cfg.warmup.model)} into model.name={cfg.model.name} with "
               f"transfer.grow_depth={t.grow_depth!r}, transfer.parts={list(t.parts)}, transfer.blocks={t.blocks!r}"):
        check_growth(small, image_vit, depth=t.grow_depth, parts=tuple(t.parts), blocks=t.blocks,
                     keep_pos_embed=t.keep_pos_embed, keep_cls_token=t.keep_cls_token, shuffle=t.shuffle)


def export_small(cfg: DictConfig, warm_vit: VisionTransformer, accelerator: Accelerator, images: ImageData) -> str:
    """The warmed-up small ViT as RUN_DIR/warmup/ (every block its own copy: the stock architecture)."""
    export_handover(cfg, unshared(warm_vit), accelerator, init=cfg.model.init, grown_into=cfg.model.name)
    return (f"vitwarm: exported the warmed-up {SECTION} (dim {warm_vit.embed_dim}, depth {len(warm_vit.blocks)}) "
            f"as {export_dir(cfg, WARMUP_EXPORT)}; the image phase grows it into {cfg.model.name}")


def grow_export_into(cfg: DictConfig, image_vit: VisionTransformer) -> GrowthReport:
    """Grow the warm-up's export (RUN_DIR/warmup/) into the fresh image ViT, in place.

    The small ViT is built on the meta device and filled from the export, so building it draws nothing from
    the global generators: the image phase's randomness is the same whether it starts here or resumes.
    """
    with torch.device("meta"):
        small = build_vit(warmup_model(cfg), SECTION, num_classes=0)
    small = _shared(cfg, small.to_empty(device="cpu"))
    load_export_without_head(small, export_dir(cfg, WARMUP_EXPORT))
    return _grow(cfg, small, image_vit, seed=derive_seed(cfg.seed, "grow"))


KIND = warmup_kind(WarmupModel(create=create_warmup_vit, build=build_warmup_vit, check_handover=check_pair,
                               hand_over=export_small))
