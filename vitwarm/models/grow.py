"""Grow a small warmed-up timm ViT into a wider and deeper one that first computes the same function.

Width (Net2Net / bert2BERT-style tiling by integer factors). The small model has width d, h heads of
head_dim c (d = h·c) and MLP hidden size m; the big one width D = k·d, k·h heads of the same c, and
hidden size M = j·m. A *tiled* vector is the small one repeated k times: tile(x) = [x, x, ..., x] (D,).
Every grown tensor keeps this invariant, block by block:

    LayerNorm, input tile(x) (D,):   mean and variance of tile(x) are those of x (the same entries k times),
                                     so LN_big(tile(x)) = tile(LN_small(x)) with weight and bias tiled (D,)
    Linear d -> d', W (d', d):       W_big = tile W k' x k times, each block W / k           (k'·d', k·d)
                                     W_big @ tile(x) = tile(sum of k copies of W x / k) = tile(W x)
                                     bias tiled (k'·d',); fan-in weights are divided by their input factor
    qkv (3d, d) = [q; k; v] rows:    each of q, k, v tiled k times along its rows, columns / k  (3D, D)
                                     big head number a·h + i is a copy of small head i (head_dim c unchanged,
                                     so the softmax scale 1/sqrt(c) and every attention map are the same)
    attention output (D,):           the heads' outputs concatenated: tile(small output)
    proj (d, d) -> (D, D), / k;  fc1 (m, d) -> (M, D), / k;  fc2 (d, m) -> (D, M), / j
    GELU, residual sums, layer scale (tiled gamma):  elementwise, so they keep tiles

So, on input tile(x), every block and the final norm of the big model output the tiled output of the small
one (``tests/test_grow.py`` checks it to float tolerance). A per-head LayerNorm (``qk_norm``, over c) is
copied as it is.

Depth: the big block ``i`` takes small block ``depth_map(...)[i]``:

    "stretch":  i · s // L                     each small block repeated in order (s=3, L=6: 0 0 1 1 2 2)
    "core":     0, then the middle blocks 1 .. s-2 stretched over the big middle 1 .. L-2, then s-1
                (s=3, L=6: 0 1 1 1 1 2): with a shared middle block (``share_middle_blocks``), the small
                model's one recurrent block unrolled over the big model's middle

A big model unrolled this way computes what the small blocks compute applied in the map's order (for the
core: the shared block applied L-2 times instead of s-2).

Symmetry breaking: tiled copies get identical gradients, so ``noise`` > 0 adds to every grown tensor W
independent Gaussian noise of standard deviation ``noise · rms(W)`` (rms: the root mean square of W's
entries), seeded by ``seed``; ``noise=0`` gives the exact function-preserving copy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer

from .grow_check import block_tensor_kind, check_growth, depth_map
from .transfer import PARTS, PREFIX_TOKENS, _block_index, _ranges, param_part, permute_entries, select_blocks

GROW_DEPTHS = ("stretch", "core")


def tiled(value: torch.Tensor, kinds: tuple[str, ...], fan_in: str | None, factors: dict[str, int]) -> torch.Tensor:
    """``value`` grown axis by axis: an axis of kind ``"D"`` (width) or ``"H"`` (MLP hidden) is repeated whole
    that many times (``tensor.repeat``: [x, x, ...]), ``"3D"`` (the qkv rows, always axis 0) repeats each of
    q, k and v; ``"-"`` stays. Then divided by the fan-in axis's factor."""
    for axis, kind in enumerate(kinds):
        if kind == "3D":  # (3d, ...) -> (3, d, ...) -> (3, k·d, ...) -> (3·k·d, ...)
            reps = [1, factors["D"]] + [1] * (value.dim() - 1)
            value = value.unflatten(0, (3, -1)).repeat(*reps).flatten(0, 1)
        elif kind != "-":
            reps = [1] * value.dim()
            reps[axis] = factors[kind]
            value = value.repeat(*reps)
    return value / factors[fan_in] if fan_in else value


@dataclass
class GrowthReport:
    """What `grow` did: the big model's grown tensors, the width factors, the depth map and the noise."""

    copied: list[str] = field(default_factory=list)
    n_params: int = 0
    width: int = 1
    """Factor of the embedding width (= of the head count)."""
    hidden: int = 1
    """Factor of the MLP hidden size."""
    depth: str = "stretch"
    map: list[int] = field(default_factory=list)
    """Big block i <- small block map[i]."""
    noise: float = 0.0
    shuffled: list[str] = field(default_factory=list)
    parts: tuple[str, ...] = ()
    blocks: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join([
            f"grew {len(self.copied)} tensors ({self.n_params:,} values): parts {', '.join(self.parts) or 'none'} "
            f"of blocks {_ranges(self.blocks)}",
            f"  width x{self.width} (heads x{self.width}), MLP hidden x{self.hidden}; depth {self.depth}: "
            f"big block <- small block {self.map}",
            f"  symmetry-breaking noise: {self.noise} x rms per tensor" + (
                f"; shuffled: {len(self.shuffled)} tensors" if self.shuffled else ""),
            "  fresh: patch_embed, classifier head, and everything not listed above",
        ])


def _kinds(name: str) -> tuple[tuple[str, ...], str | None]:
    """Axis kinds and fan-in kind of a non-block parameter (norms, pos_embed, prefix tokens): width last."""
    top = name.split(".")[0]
    if top in ("norm_pre", "norm", "fc_norm"):
        return ("D",), None
    return ("-", "-", "D"), None  # pos_embed (1, L, D), cls/dist/reg tokens (1, n, D): added, no fan-in


@torch.no_grad()
def grow(
    small: VisionTransformer,
    big: VisionTransformer,
    depth: str = "stretch",
    noise: float = 0.0,
    seed: int = 0,
    parts: tuple[str, ...] | list[str] = PARTS,
    blocks: str = "all",
    keep_pos_embed: bool = False,
    keep_cls_token: bool = False,
    shuffle: str | None = None,
) -> GrowthReport:
    """Grow ``small`` into ``big`` in place (see the module docstring); returns what was grown.

    ``parts``, ``blocks`` (a slice over the *big* model's blocks), ``keep_pos_embed``, ``keep_cls_token`` and
    ``shuffle`` select as in `vitwarm.models.transfer`; the rest of ``big`` keeps its own init. ``noise``:
    relative scale of the symmetry-breaking noise; ``seed`` seeds it and the shuffle. Impossible shapes raise
    a one-line ValueError (`check_growth`) before anything is written.
    """
    parts = tuple(parts)
    factors = check_growth(small, big, depth=depth, parts=parts, blocks=blocks, keep_pos_embed=keep_pos_embed,
                           keep_cls_token=keep_cls_token, shuffle=shuffle)
    L, s = len(big.blocks), len(small.blocks)
    order = depth_map(s, L, depth)
    selected = select_blocks(blocks, L)
    report = GrowthReport(width=factors["D"], hidden=factors["H"], depth=depth, map=order, noise=noise,
                          parts=parts, blocks=selected)
    generator = torch.Generator().manual_seed(seed)
    small_params = dict(small.named_parameters(remove_duplicate=False))
    for name, target in big.named_parameters():
        top = name.split(".")[0]
        index = _block_index(name, L)
        if param_part(name) in parts and index in selected:
            if top == "blocks":  # blocks.i.<rest> <- blocks.order[i].<rest>
                rest = name.split(".", 2)[2]
                source = small_params[f"blocks.{order[index]}.{rest}"]
                kinds, fan_in = block_tensor_kind(rest)
            else:
                source, (kinds, fan_in) = small_params[name], _kinds(name)
        elif (keep_pos_embed and top == "pos_embed") or (keep_cls_token and top in PREFIX_TOKENS):
            source, (kinds, fan_in) = small_params[name], _kinds(name)
        else:
            continue
        value = tiled(source.detach().float(), kinds, fan_in, factors)
        if noise > 0:
            rms = value.pow(2).mean().sqrt()
            value = value + noise * rms * torch.randn(value.shape, generator=generator).to(value.device)
        if shuffle == "all" or (shuffle is not None and param_part(name) == shuffle):
            value = permute_entries(value, generator)
            report.shuffled.append(name)
        target.copy_(value)
        report.copied.append(name)
        report.n_params += value.numel()
    return report


def share_middle_blocks(vit: VisionTransformer) -> VisionTransformer:
    """Make blocks 1 .. depth-2 one block object, applied depth-2 times (the core's recurrent middle), in place.

    Blocks 2 .. depth-2 are replaced by block 1 (their own weights are dropped); ``named_parameters`` lists
    the shared weights once, so an optimizer updates them once. Needs depth >= 3.
    """
    depth = len(vit.blocks)
    if depth < 3:
        raise ValueError(f"shared middle blocks need a first, a middle and a last block: depth >= 3, got {depth}")
    for i in range(2, depth - 1):
        vit.blocks[i] = vit.blocks[1]
    return vit


def unshared(vit: VisionTransformer) -> VisionTransformer:
    """A copy of ``vit`` whose blocks are all separate modules (the same weights): the stock timm
    architecture, whose state dict safetensors and timm's hub export can write."""
    out = copy.deepcopy(vit)
    for i, block in enumerate(out.blocks):
        out.blocks[i] = copy.deepcopy(block)
    return out


def unique_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each tensor once: a name that is another module's shared tensor again (a shared
    block applied several times) is left out, the first name kept, as ``safetensors.torch.load_model``
    expects when it loads such a file back (safetensors refuses to write tensors that share memory)."""
    seen: set[int] = set()
    out = {}
    for name, tensor in module.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            out[name] = tensor.detach()
    return out
