"""Export ViTs as timm hub folders, and load exported weights back into a model.

An export is a folder in timm's hub format, written with timm's own ``save_for_hf``:

    FOLDER/config.json         architecture (a *stock* timm name), model_args, num_classes, label_names,
                               pretrained_cfg (input_size, mean, std, interpolation, crop_pct, ...),
                               and a "vitwarm" entry (version, kind, warm-up description)
    FOLDER/model.safetensors   the state dict; its metadata repeats kind, grammar, warm-up and version

Stock timm rebuilds it with no further arguments and no vitwarm import::

    model = timm.create_model("local-dir:FOLDER", pretrained=True)
    data_config = timm.data.resolve_data_config({}, model=model)

A *headless* export (the warm-up's) has no classifier head: ``num_classes`` is 0 in config.json and the file
holds no head weights, so ``timm.create_model("local-dir:FOLDER", pretrained=True, num_classes=N)`` fits a
fresh head of any size. ``save_for_hf`` writes no safetensors metadata, so its weights file is written
again with the same tensors plus the metadata. Only safetensors is read or written: no pickle.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file
from timm.models import save_for_hf
from timm.models.vision_transformer import VisionTransformer

from ..atomic import fault_point, write_safetensors, writing
from .registry import stock_architecture
from .transfer import classifier_prefixes

WEIGHTS = "model.safetensors"  # the weights file name timm's local-dir and hub loaders look for first


def _is_classifier(name: str, prefixes: list[str]) -> bool:
    return any(name.startswith(p + ".") for p in prefixes)


def _publish_dir(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, keeping an existing ``out`` until the new one is in place."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old)


def export_hub(
    model: VisionTransformer,
    out_dir: str | Path,
    *,
    kind: str,
    headless: bool = False,
    data_config: dict | None = None,
    label_names: list[str] | None = None,
    warmup: dict | None = None,
    version: str = "",
) -> Path:
    """Write ``model`` as a timm hub folder ``out_dir`` (see the module docstring); returns ``out_dir``.

    ``kind`` names what the folder holds (``"model"``, ``"warmup"``); ``headless`` drops the classifier head
    (the model itself is not changed). ``data_config``: the preprocessing the weights were trained and
    evaluated with (``input_size`` (C, H, W), ``mean``, ``std``, ``interpolation``, ``crop_pct``);
    ``label_names``: one name per class, in class-index order; ``warmup``: any JSON-serialisable description
    of the warm-up (grammar, params, ...); ``version``: the vitwarm version that wrote it. The folder is
    written beside ``out_dir`` and renamed into place, so a half-written export is never seen.
    """
    if headless:
        model = copy.deepcopy(model)
        model.reset_classifier(0)
        label_names = None  # no head, nothing to name
    architecture, arch_args = stock_architecture(model)
    recorded = getattr(model, "_model_args", {})  # what timm recorded at creation wins over the defaults
    model_args = {k: v for k, v in arch_args.items() if k not in recorded and k != "img_size"}
    warmup = warmup or {}
    head = ("none; timm.create_model(..., num_classes=N) adds a fresh one" if headless
            else f"{model.num_classes} classes, trained")
    notes = {"model": "vitwarm image model", "warmup": "vitwarm procedural warm-up backbone"}.get(kind, kind)
    model_config = {
        "pretrained_cfg": {"architecture": architecture, "tag": kind, "notes": (f"{notes}; head: {head}",)},
        "vitwarm": {"version": version, "kind": kind, "head": head, "warmup": warmup},
    }
    if label_names:
        model_config["label_names"] = list(label_names)
    metadata = {
        "format": "pt",
        "architecture": architecture,
        "vitwarm.kind": kind,
        "vitwarm.version": version,
        "vitwarm.grammar": str(warmup.get("grammar", "")),
        "vitwarm.warmup": json.dumps(warmup, sort_keys=True),
    }
    state = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))  # same file system
    try:
        fault_point(f"export:{kind}")  # nothing of the export written yet
        with writing(out_dir):  # a full disk names the export (safetensors wraps the OS error in its own)
            save_for_hf(model, str(tmp), model_config=model_config, model_args=model_args,
                        safe_serialization=True, data_config=data_config)
        # The same tensors, now with metadata, sorted so that the same weights give the same bytes.
        write_safetensors(tmp / WEIGHTS, state, metadata)
        _publish_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _weights_file(path: str | Path) -> Path:
    """An export folder's weights file, or ``path`` itself when it is a safetensors file."""
    path = Path(path)
    return path / WEIGHTS if path.is_dir() else path


def read_metadata(path: str | Path) -> dict:
    """What `export_hub` stored with the weights: ``architecture``, ``kind``, ``version``, ``grammar``, ``warmup``.

    ``path``: an export folder or its ``model.safetensors``.
    """
    with safe_open(str(_weights_file(path)), framework="pt") as f:
        metadata = f.metadata() or {}
    return {
        "architecture": metadata.get("architecture", ""),
        "kind": metadata.get("vitwarm.kind", ""),
        "version": metadata.get("vitwarm.version", ""),
        "grammar": metadata.get("vitwarm.grammar", ""),
        "warmup": json.loads(metadata.get("vitwarm.warmup", "{}")),
    }


def load_export_without_head(model: VisionTransformer, path: str | Path) -> dict:
    """Load exported weights (folder or safetensors file) into ``model`` in place; returns `read_metadata`.

    The model keeps its own classifier head. Anything else missing, unexpected or of another shape means
    the file comes from another architecture: a ValueError lists all of it and nothing is loaded.
    """
    path = _weights_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"no exported weights at {path} (expected an export folder or a safetensors file)")
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
