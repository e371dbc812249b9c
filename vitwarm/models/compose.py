"""Composed transfer: each part of the image model's blocks from a different warm-up export.

The companion LM work found that different procedural rules put structure into different parts of the
model and that the parts compose (attention from one rule, MLP from another). ``compose`` builds such a
model from finished warm-ups: ``sources`` maps a part (``attn``, ``mlp``, ``norm``, as in `transfer`) to
the ``warmup/`` folder a warm-up run exported. Every source is checked before anything is copied:

- the file is a vitwarm warm-up export of the same timm architecture (name and every parameter shape);
- its warm-up carried that part out (the export's ``transferred`` list holds every tensor of the part in
  the selected blocks), so a part is never taken from a file in which it is still a fresh initialisation;
- optionally its warm-up ``fraction`` equals the one the caller expects (the budget counts it).

Parts not named in ``sources`` keep ``dst``'s own initialisation.
"""

from __future__ import annotations

import copy
from pathlib import Path

from safetensors import SafetensorError
from timm.models.vision_transformer import VisionTransformer

from .hub import WEIGHTS, load_export_without_head, read_metadata
from .transfer import PARTS, TransferReport, _block_index, param_part, select_blocks, transfer


def _source_error(part: str, path: Path, problem: str) -> ValueError:
    return ValueError(f"transfer.sources.{part}={str(path)!r}: {problem}")


def check_source(dst: VisionTransformer, part: str, path: str | Path, architecture: str, blocks: str,
                 fraction: float | None = None) -> tuple[VisionTransformer, dict]:
    """The source model for ``part`` (a copy of ``dst`` with the export loaded) and the export's metadata;
    a ValueError naming the part, the file and what is wrong otherwise."""
    path = Path(path)
    if part not in PARTS:
        raise ValueError(f"transfer.sources: unknown part {part!r}; valid parts: {', '.join(PARTS)}")
    if not (path / WEIGHTS if path.is_dir() else path).is_file():
        raise _source_error(part, path, "no exported weights there; it must be the warmup/ folder of a finished "
                                        "warm-up run (run the source warm-ups first)")
    try:
        metadata = read_metadata(path)
    except (SafetensorError, OSError, ValueError) as err:  # a truncated or garbled file
        raise _source_error(part, path, f"not a readable safetensors file ({err})") from None
    warmup = metadata["warmup"]
    if metadata["architecture"] != architecture:
        raise _source_error(part, path, f"exported from model {metadata['architecture'] or 'unknown'}, "
                                        f"this run is {architecture}")
    if not warmup.get("transferred"):
        raise _source_error(part, path, "not a warm-up export (no warm-up metadata); use a run's "
                                        "warmup/ folder, not its final model/")
    source = copy.deepcopy(dst)
    try:
        load_export_without_head(source, path)
    except ValueError as err:  # its message lists what does not fit, one item per line: keep one line
        first, *items = str(err).splitlines()
        raise _source_error(part, path, f"{first} {'; '.join(item.strip() for item in items)}") from None
    depth = len(dst.blocks)
    selected = set(select_blocks(blocks, depth))
    needed = {n for n, _ in dst.named_parameters() if param_part(n) == part and _block_index(n, depth) in selected}
    missing = sorted(needed - set(warmup["transferred"]))
    if missing:
        raise _source_error(part, path, f"its warm-up did not carry {part!r} out (not transferred: "
                                        f"{', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})")
    if fraction is not None and warmup.get("fraction") != fraction:
        raise _source_error(part, path, f"warmed up with warmup.fraction={warmup.get('fraction')}, this run "
                                        f"declares warmup.fraction={fraction}; they must agree")
    return source, metadata


def compose(dst: VisionTransformer, sources: dict[str, str | Path], architecture: str, blocks: str = "all",
            fraction: float | None = None) -> tuple[TransferReport, dict]:
    """Copy each part of ``dst``'s blocks ``blocks`` from its source export, in place, after checking all.

    Returns the combined transfer report and the provenance ``{part: {"path", "warmup"}}`` (the source
    export's warm-up description) for the composed model's own metadata.
    """
    if not sources:
        raise ValueError(f"transfer.sources is empty; name at least one of {', '.join(PARTS)}")
    checked = {part: check_source(dst, part, path, architecture, blocks, fraction) for part, path in sources.items()}
    report = TransferReport(blocks=select_blocks(blocks, len(dst.blocks)), parts=tuple(sources))
    provenance = {}
    for part, (source, metadata) in checked.items():
        copied = transfer(source, dst, parts=(part,), blocks=blocks)
        report.copied += copied.copied
        report.n_params += copied.n_params
        provenance[part] = {"path": str(sources[part]), "warmup": metadata["warmup"]}
    return report, provenance
