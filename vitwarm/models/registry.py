"""timm registry entries for vitwarm's ViTs (``timm.list_models("vitwarm_*")`` after ``import vitwarm``).

All entries are plain timm ``VisionTransformer`` architectures. The ``vitwarm_`` prefix keeps them apart
from timm's own ``vit_*`` names (registering one of those again would silently replace timm's model).

| name | image | patch | tokens (H x W) | dim | depth | heads | MLP ratio |
|---|---|---|---|---|---|---|---|
| vitwarm_tiny_patch16_224 | 224 | 16 | 196 (14 x 14) | 192 | 12 | 3 | 4 |
| vitwarm_small_patch16_224 | 224 | 16 | 196 (14 x 14) | 384 | 12 | 6 | 4 |
| vitwarm_base_patch16_224 | 224 | 16 | 196 (14 x 14) | 768 | 12 | 12 | 4 |
| vitwarm_pico_patch4_32 | 32 | 4 | 64 (8 x 8) | 128 | 6 | 4 | 2 |
| vitwarm_pico_patch7_28 | 28 | 7 | 16 (4 x 4) | 128 | 6 | 4 | 2 |
| vitwarm_pico_core_patch4_32 | 32 | 4 | 64 (8 x 8) | 64 | 3 | 2 | 2 |

``vitwarm_pico_core_patch4_32`` is the pico model's core, half its width and depth 3, for a warm-up that is
grown into the pico model (``warmup.model.name``; docs/models.md#growth).

Each name has two pretrained tags. The untagged default is the plain architecture (1000 classes, nothing
to load). ``.warmup`` holds procedural warm-up weights of any grammar: a headless backbone
(``num_classes=0``) with no download URL. Its weights come from a warm-up export
(``RUN_DIR/warmup/model.safetensors``, see `vitwarm.models.export_hub`)::

    timm.create_model("vitwarm_pico_patch4_32.warmup", pretrained=True,
                      pretrained_cfg_overlay=dict(file="RUN_DIR/warmup/model.safetensors"), num_classes=10)

Because the tag's cfg says ``num_classes=0``, any ``num_classes`` asked for gets a fresh head and the
load stays complete. Exports need neither: they are hub folders whose ``config.json`` names a *stock* timm
architecture (`ARCHITECTURES` maps each vitwarm name to one), so ``timm.create_model("local-dir:FOLDER")``
rebuilds them without importing vitwarm.
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from timm.models.vision_transformer import _cfg as vit_cfg

WARMUP_TAG = "warmup"
# vitwarm name -> (the stock timm entry point it is exported as, the arguments that make that entry point
# build exactly this architecture). Stock timm builds every one of them with no vitwarm import.
ARCHITECTURES = {
    "vitwarm_tiny_patch16_224": ("vit_tiny_patch16_224", dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)),
    "vitwarm_small_patch16_224": ("vit_small_patch16_224", dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)),
    "vitwarm_base_patch16_224": ("vit_base_patch16_224", dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)),
    "vitwarm_pico_patch4_32": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4, embed_dim=128, depth=6,
                                                            num_heads=4, mlp_ratio=2.0)),
    "vitwarm_pico_patch7_28": ("vit_tiny_patch16_224", dict(img_size=28, patch_size=7, embed_dim=128, depth=6,
                                                            num_heads=4, mlp_ratio=2.0)),
    "vitwarm_pico_core_patch4_32": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=4, embed_dim=64, depth=3,
                                                                 num_heads=2, mlp_ratio=2.0)),
}


def _cfgs(name: str, **kwargs) -> dict[str, dict]:
    """The default (plain) cfg and the warm-up cfg of one architecture, in that order."""
    return {
        name: vit_cfg(**kwargs),
        f"{name}.{WARMUP_TAG}": vit_cfg(
            num_classes=0, notes=("procedural warm-up backbone, no classifier head; load from a local file",),
            **kwargs,
        ),
    }


default_cfgs = generate_default_cfgs({
    **_cfgs("vitwarm_tiny_patch16_224"),
    **_cfgs("vitwarm_small_patch16_224"),
    **_cfgs("vitwarm_base_patch16_224"),
    **_cfgs("vitwarm_pico_patch4_32", input_size=(3, 32, 32), crop_pct=1.0),
    **_cfgs("vitwarm_pico_patch7_28", input_size=(3, 28, 28), crop_pct=1.0),
    **_cfgs("vitwarm_pico_core_patch4_32", input_size=(3, 32, 32), crop_pct=1.0),
})


def _create(variant: str, pretrained: bool = False, **kwargs) -> VisionTransformer:
    """Build ``variant`` from its `ARCHITECTURES` arguments; ``kwargs`` override them."""
    out_indices = kwargs.pop("out_indices", 3)
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **dict(ARCHITECTURES[variant][1], **kwargs),
    )


@register_model
def vitwarm_tiny_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-Ti/16, 224 px (196 tokens)."""
    return _create("vitwarm_tiny_patch16_224", pretrained, **kwargs)


@register_model
def vitwarm_small_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-S/16, 224 px (196 tokens)."""
    return _create("vitwarm_small_patch16_224", pretrained, **kwargs)


@register_model
def vitwarm_base_patch16_224(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """ViT-B/16, 224 px (196 tokens)."""
    return _create("vitwarm_base_patch16_224", pretrained, **kwargs)


@register_model
def vitwarm_pico_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A CPU-sized ViT for 32 px images (28 px Fashion-MNIST padded), patch 4: 64 tokens."""
    return _create("vitwarm_pico_patch4_32", pretrained, **kwargs)


@register_model
def vitwarm_pico_patch7_28(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A CPU-sized ViT for 28 px images (Fashion-MNIST as is), patch 7: 16 tokens."""
    return _create("vitwarm_pico_patch7_28", pretrained, **kwargs)


@register_model
def vitwarm_pico_core_patch4_32(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """The pico model's core (half width, 3 blocks), patch 4 on 32 px: 64 tokens; grown into the pico model."""
    return _create("vitwarm_pico_core_patch4_32", pretrained, **kwargs)


def stock_architecture(model: VisionTransformer) -> tuple[str, dict]:
    """The stock timm name and the extra arguments that rebuild ``model`` without importing vitwarm.

    A vitwarm name maps to its `ARCHITECTURES` entry; any other name is already timm's own (no extra
    arguments). The arguments timm records at creation (``in_chans``, ``num_classes``, ``model.kwargs``...)
    come on top of these when exporting (see `vitwarm.models.export_hub`).
    """
    name = model.pretrained_cfg["architecture"]
    stock, args = ARCHITECTURES.get(name, (name, {}))
    return stock, dict(args)
