"""A run's two exports, as timm hub folders in the run directory (see docs/use_elsewhere.md):

    RUN_DIR/model/    the final image model, classifier head included (what the run evaluated)
    RUN_DIR/warmup/   the warmed-up backbone after the transfer, without a head (num_classes=0); the image
                      phase starts from it

Each holds ``config.json`` and ``model.safetensors`` (`vitwarm.models.export_hub`), with the preprocessing
the run used (channels, size, mean/std, interpolation, crop) and the data set's class names, so
``timm.create_model("local-dir:RUN_DIR/model", pretrained=True)`` needs nothing else.
"""

from __future__ import annotations

from pathlib import Path

from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer

from .. import __version__
from ..data import DatasetInfo, read_splits
from ..data.transforms import channel_stats
from ..models import export_hub
from .rundir import EXPORTS, WARMUP_EXPORT


def export_dir(cfg: DictConfig, kind: str) -> Path:
    """The folder of export ``kind`` (one of vitwarm.run.rundir.EXPORTS: its kind is its folder name)."""
    if kind not in EXPORTS:
        raise ValueError(f"export kind {kind!r} is not one of {EXPORTS}")
    return Path(cfg.run.dir) / kind


def warmup_description(cfg: DictConfig) -> dict:
    """What the warm-up was (grammar, its parameters, fraction, transfer), as recorded with both exports."""
    return {"grammar": cfg.procedural.grammar if cfg.warmup.fraction > 0 else "",
            "params": OmegaConf.to_container(cfg.procedural.params), "shuffled": cfg.procedural.shuffled,
            "fraction": cfg.warmup.fraction, "regime": cfg.budget.regime,
            "transfer": OmegaConf.to_container(cfg.transfer)}


def run_data_config(cfg: DictConfig, model: VisionTransformer, info: DatasetInfo) -> dict:
    """The run's evaluation preprocessing as timm's data config: what `vitwarm.data.make_val_loader` does."""
    mean, std = channel_stats(cfg.model.in_chans, cfg.data.mean or info.mean, cfg.data.std or info.std)
    return {"input_size": (cfg.model.in_chans, *model.patch_embed.img_size), "mean": mean, "std": std,
            "interpolation": cfg.data.aug.interpolation, "crop_pct": cfg.data.crop_pct, "crop_mode": "center"}


def export_run(cfg: DictConfig, model: VisionTransformer, kind: str, **warmup_extra) -> Path:
    """Write export ``kind`` of this run; ``warmup_extra`` adds to the warm-up description (e.g. transferred).

    Class names and statistics are those of the validation split the run evaluates on, found as the run
    finds it (``data.val_source``, the ``_info.json`` beside a pattern or given by ``data.info``).
    """
    info = read_splits(cfg.data)["val"]
    return export_hub(model, export_dir(cfg, kind), kind=kind, headless=kind == WARMUP_EXPORT,
                      data_config=run_data_config(cfg, model, info), label_names=info.classes,
                      warmup=warmup_description(cfg) | warmup_extra, version=__version__)


def export_handover(cfg: DictConfig, image_vit: VisionTransformer, accelerator: Accelerator, **description) -> None:
    """Write the image model the image phase starts from as RUN_DIR/warmup/ (main process; written aside,
    renamed into place); ``description`` adds to the recorded warm-up description."""
    if accelerator.is_main_process:
        export_run(cfg, image_vit, WARMUP_EXPORT, **description)
    accelerator.wait_for_everyone()
