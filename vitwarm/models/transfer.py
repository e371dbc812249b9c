"""Carry warmed-up parameters from one timm ViT into a fresh one of the same architecture.

After the warm-up the symbol table and the symbol head are thrown away. What is worth keeping lives in the
transformer blocks. `transfer` copies a selection of them into a freshly built image ViT (`dst`, which may
have another `num_classes` or `in_chans`):

- by part: ``attn`` (attention incl. its layer scale ``ls1``), ``mlp`` (MLP incl. ``ls2``), ``norm`` (the
  block norms, plus ``norm_pre`` with the first block and the final ``norm`` / ``fc_norm`` with the last);
- by block range, a python slice over block indices: ``"all"``, ``"8:12"``, ``"-4:"``, ``":4"``;
- optionally the positional embedding and the prefix tokens (class, distillation, register tokens).

The patch embedding and the classifier head always stay fresh. ``shuffle`` runs the paper's ablation: each
transferred tensor gets its entries randomly permuted, which keeps the tensor's value distribution (its
sorted values) and destroys the learned structure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer

PARTS = ("attn", "mlp", "norm")
SHUFFLE_MODES = ("all", "attn", "mlp")
PREFIX_TOKENS = ("cls_token", "dist_token", "reg_token")

_BLOCK_PARAM = re.compile(r"^blocks\.(\d+)\.([^.]+)\.")


def param_part(name: str) -> str | None:
    """The part ('attn', 'mlp', 'norm') a ViT parameter belongs to, or None for anything else.

    Layer-scale gammas follow the branch they scale: in timm's Block, ``ls1`` scales the attention output
    and ``ls2`` the MLP output.
    """
    match = _BLOCK_PARAM.match(name)
    if match:
        module = match.group(2)
        if module in ("attn", "ls1"):
            return "attn"
        if module in ("mlp", "ls2"):
            return "mlp"
        if module in ("norm1", "norm2"):
            return "norm"
        return None
    if name.split(".")[0] in ("norm_pre", "norm", "fc_norm"):
        return "norm"
    return None


def classifier_prefixes(model: VisionTransformer) -> list[str]:
    """Module names of the classifier head(s) (``head``, and ``head_dist`` for distilled DeiT)."""
    heads = model.get_classifier()
    heads = heads if isinstance(heads, tuple) else (heads,)
    return [name for name, module in model.named_modules() if any(module is h for h in heads)]


def _block_index(name: str, depth: int) -> int | None:
    """The block a parameter travels with: its own; norm_pre the first, the final norm the last block."""
    match = _BLOCK_PARAM.match(name)
    if match:
        return int(match.group(1))
    top = name.split(".")[0]
    if top == "norm_pre":
        return 0
    if top in ("norm", "fc_norm"):
        return depth - 1
    return None


def select_blocks(blocks: str, depth: int) -> list[int]:
    """Block indices named by ``"all"`` or a python slice string such as ``"8:12"``, ``"-4:"``, ``":4"``."""
    if blocks == "all":
        return list(range(depth))
    bounds = blocks.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"blocks must be 'all' or a slice like '8:12', '-4:', ':4'; got {blocks!r}")
    try:
        index = slice(*(int(b) if b.strip() else None for b in bounds))
    except ValueError:
        raise ValueError(f"blocks must be 'all' or a slice of integers; got {blocks!r}") from None
    selected = list(range(depth))[index]
    if not selected:
        raise ValueError(f"blocks={blocks!r} selects no block of a {depth}-block model")
    return selected


def _shapes(model: VisionTransformer, skip: list[str]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes by name, leaving out the modules named in ``skip``."""
    return {
        n: tuple(p.shape) for n, p in model.named_parameters() if not any(n.startswith(s + ".") for s in skip)
    }


def _check_same_architecture(src: VisionTransformer, dst: VisionTransformer) -> None:
    """Every parameter except patch embedding and classifier must exist in both with the same shape."""
    skip = ["patch_embed"] + classifier_prefixes(src) + classifier_prefixes(dst)
    src_shapes, dst_shapes = _shapes(src, skip), _shapes(dst, skip)
    problems = [
        f"{n}: src {src_shapes.get(n, 'missing')} vs dst {dst_shapes.get(n, 'missing')}"
        for n in sorted(src_shapes.keys() | dst_shapes.keys())
        if src_shapes.get(n) != dst_shapes.get(n)
    ]
    if problems:
        raise ValueError(
            f"src and dst are different architectures ({len(src.blocks)} vs {len(dst.blocks)} blocks); "
            "mismatched parameters:\n  " + "\n  ".join(problems)
        )


def permute_entries(value: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``value`` with its entries randomly permuted: exactly the same multiset of values, no structure."""
    order = torch.randperm(value.numel(), generator=generator).to(value.device)
    return value.flatten()[order].view_as(value)


@dataclass
class TransferReport:
    """What `transfer` did: names of copied (and shuffled) parameters and their element count."""

    copied: list[str] = field(default_factory=list)
    n_params: int = 0
    shuffled: list[str] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)
    parts: tuple[str, ...] = ()

    def __str__(self) -> str:
        extra = [n for n in self.copied if _BLOCK_PARAM.match(n) is None]
        lines = [
            f"transferred {len(self.copied)} tensors ({self.n_params:,} values): "
            f"parts {', '.join(self.parts) or 'none'} of blocks {_ranges(self.blocks)}",
            f"  outside the blocks: {', '.join(extra) or 'none'}",
            f"  shuffled: {len(self.shuffled)} tensors" if self.shuffled else "  shuffled: none",
            "  fresh: patch_embed, classifier head, and everything not listed above",
        ]
        return "\n".join(lines)


def _ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    spans: list[list[int]] = []
    for i in indices:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans) or "none"


@torch.no_grad()
def transfer(
    src: VisionTransformer,
    dst: VisionTransformer,
    parts: tuple[str, ...] | list[str] = PARTS,
    blocks: str = "all",
    keep_pos_embed: bool = False,
    keep_cls_token: bool = False,
    shuffle: str | None = None,
    seed: int = 0,
) -> TransferReport:
    """Copy the selected warmed-up parameters of ``src`` into ``dst`` in place; returns what was copied.

    ``keep_pos_embed`` / ``keep_cls_token`` copy the positional embedding / the prefix tokens (class,
    distillation and register tokens) as well; by default ``dst`` keeps its fresh initialisation of them.
    ``shuffle`` ('all', 'attn' or 'mlp') randomly permutes the entries of every transferred tensor of that
    part ('all': every transferred tensor), seeded by ``seed``.
    """
    parts = tuple(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid parts: {', '.join(PARTS)}")
    if shuffle is not None and shuffle not in SHUFFLE_MODES:
        raise ValueError(f"shuffle must be None or one of {', '.join(SHUFFLE_MODES)}; got {shuffle!r}")
    if shuffle in PARTS and shuffle not in parts:
        raise ValueError(f"shuffle={shuffle!r} but {shuffle!r} is not among the transferred parts {parts}")
    _check_same_architecture(src, dst)
    selected = select_blocks(blocks, len(dst.blocks))

    wanted = []
    for name in dict(dst.named_parameters()):
        top = name.split(".")[0]
        in_selection = param_part(name) in parts and _block_index(name, len(dst.blocks)) in selected
        kept = (keep_pos_embed and top == "pos_embed") or (keep_cls_token and top in PREFIX_TOKENS)
        if in_selection or kept:
            wanted.append(name)

    report = TransferReport(blocks=selected, parts=parts)
    generator = torch.Generator().manual_seed(seed)
    src_params, dst_params = dict(src.named_parameters()), dict(dst.named_parameters())
    for name in wanted:
        value = src_params[name].detach()
        if shuffle == "all" or (shuffle is not None and param_part(name) == shuffle):
            value = permute_entries(value, generator)
            report.shuffled.append(name)
        dst_params[name].copy_(value)
        report.copied.append(name)
        report.n_params += value.numel()
    return report
