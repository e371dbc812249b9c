"""Export and load warmed-up ViTs as plain timm state dicts in safetensors.

The exported file is what stock timm loads by name::

    timm.create_model("vitwarm_pico_patch4_32.kdyck", pretrained=True,
                      pretrained_cfg_overlay=dict(file=PATH), num_classes=10)

The classifier head is left out of the file: it is never warmed up, and without it timm's loader fits
any ``num_classes`` (it drops the head when ``num_classes`` differs from the cfg's, and the ``.kdyck``
cfgs say 0). For other names (e.g. timm's own ``vit_tiny_patch16_224``, or the untagged vitwarm names)
add ``num_classes=0`` to the overlay so that the cfg agrees with the headless file:
``pretrained_cfg_overlay=dict(file=PATH, num_classes=0)``. Everything else in the model (patch embedding,
pos_embed, prefix tokens, blocks, norms) is in the file. Only safetensors is read or written: no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

from ..rundir import write_safetensors
from .transfer import classifier_prefixes


def _is_classifier(name: str, prefixes: list[str]) -> bool:
    return any(name.startswith(p + ".") for p in prefixes)


def export_timm_checkpoint(
    model: VisionTransformer,
    path: str | Path,
    architecture: str | None = None,
    warmup: dict | None = None,
) -> Path:
    """Write ``model``'s state dict without its classifier head to ``path`` (safetensors).

    ``architecture`` (the timm model name, by default read from ``model.pretrained_cfg``) and ``warmup``
    (any JSON-serialisable description of the warm-up, e.g. grammar, steps and what was transferred) go
    into the file's metadata; `read_metadata` returns them.
    """
    architecture = architecture or getattr(model, "pretrained_cfg", {}).get("architecture")
    if not architecture:
        raise ValueError("cannot tell the model's timm architecture name; pass architecture=...")
    heads = classifier_prefixes(model)
    state = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in model.state_dict().items()
        if not _is_classifier(name, heads)
    }
    metadata = {
        "format": "pt",
        "architecture": architecture,
        "vitwarm.warmup": json.dumps(warmup or {}, sort_keys=True),
    }
    return write_safetensors(path, state, metadata)  # atomic, and the same bytes for the same weights


def read_metadata(path: str | Path) -> dict:
    """The metadata stored by `export_timm_checkpoint`: ``architecture`` and ``warmup`` (a dict)."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return {
        "architecture": metadata.get("architecture", ""),
        "warmup": json.loads(metadata.get("vitwarm.warmup", "{}")),
    }


def load_checkpoint(model: VisionTransformer, path: str | Path) -> dict:
    """Load an exported checkpoint into ``model`` in place; returns its metadata (see `read_metadata`).

    The model keeps its own classifier head. Anything else missing, unexpected or of another shape means
    the file comes from another architecture: a ValueError lists all of it and nothing is loaded.
    """
    heads = classifier_prefixes(model)
    state = {n: t for n, t in load_file(str(path), device="cpu").items() if not _is_classifier(n, heads)}
    expected = {n: t.shape for n, t in model.state_dict().items() if not _is_classifier(n, heads)}
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = [
        f"{n}: file {tuple(state[n].shape)} vs model {tuple(expected[n])}"
        for n in sorted(expected.keys() & state.keys())
        if state[n].shape != expected[n]
    ]
    if missing or unexpected or mismatched:
        metadata = read_metadata(path)
        raise ValueError(
            f"{path} (architecture {metadata['architecture'] or 'unknown'}) does not fit this model:\n"
            f"  missing: {', '.join(missing) or 'none'}\n"
            f"  unexpected: {', '.join(unexpected) or 'none'}\n"
            f"  mismatched shapes: {'; '.join(mismatched) or 'none'}"
        )
    model.load_state_dict(state, strict=False)
    return read_metadata(path)
