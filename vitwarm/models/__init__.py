"""Models: the token path around a timm ViT, transfer into an image ViT, growth of a small ViT into
a big one, export/load, timm registry entries.

Importing this package registers the ``vitwarm_*`` timm models (see `registry`).
"""

from . import registry  # noqa: F401  (registers vitwarm_* timm models)
from .compose import compose
from .grow import GROW_DEPTHS, GrowthReport, grow, share_middle_blocks, unique_state_dict, unshared
from .grow_check import check_growth
from .hub import export_hub, load_export_without_head, read_metadata
from .mimetic import mimetic_init_
from .token_path import POS_EMBED_MODES, TRAINABLE, WarmupViT, masked_token_loss
from .transfer import PARTS, SHUFFLE_MODES, TransferReport, transfer

__all__ = [
    "GROW_DEPTHS",
    "PARTS",
    "POS_EMBED_MODES",
    "SHUFFLE_MODES",
    "TRAINABLE",
    "GrowthReport",
    "TransferReport",
    "WarmupViT",
    "check_growth",
    "compose",
    "export_hub",
    "grow",
    "load_export_without_head",
    "masked_token_loss",
    "mimetic_init_",
    "read_metadata",
    "share_middle_blocks",
    "transfer",
    "unique_state_dict",
    "unshared",
]
