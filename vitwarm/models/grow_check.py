"""What `vitwarm.models.grow` can grow: the tiling rule of every block tensor, the depth maps, and
`check_growth`, which refuses an impossible pair of ViTs in one line that names the shapes and what would
work. Everything here reads shapes only, so it runs on meta-device models (the preflight's dry build)."""

from __future__ import annotations

from timm.models.vision_transformer import VisionTransformer

from .transfer import PARTS, PREFIX_TOKENS, SHUFFLE_MODES, select_blocks

# A block tensor (name after 'blocks.<i>.') -> (kind of each axis, kind of its fan-in axis or None).
# Kinds: "D" the embedding width (x k), "3D" the qkv rows [q; k; v] (each x k), "H" the MLP hidden size
# (x j), "-" unchanged (a per-head norm over head_dim). A fan-in weight is divided by its input factor.
_VECTOR_D = (("D",), None)
BLOCK_RULES: dict[str, tuple[tuple[str, ...], str | None]] = {
    "norm1.weight": _VECTOR_D, "norm1.bias": _VECTOR_D, "norm2.weight": _VECTOR_D, "norm2.bias": _VECTOR_D,
    "ls1.gamma": _VECTOR_D, "ls2.gamma": _VECTOR_D,
    "attn.qkv.weight": (("3D", "D"), "D"), "attn.qkv.bias": (("3D",), None),
    "attn.q_norm.weight": (("-",), None), "attn.q_norm.bias": (("-",), None),
    "attn.k_norm.weight": (("-",), None), "attn.k_norm.bias": (("-",), None),
    "attn.norm.weight": _VECTOR_D, "attn.norm.bias": _VECTOR_D,
    "attn.proj.weight": (("D", "D"), "D"), "attn.proj.bias": _VECTOR_D,
    "mlp.fc1.weight": (("H", "D"), "D"), "mlp.fc1.bias": (("H",), None),
    "mlp.norm.weight": (("H",), None), "mlp.norm.bias": (("H",), None),
    "mlp.fc2.weight": (("D", "H"), "H"), "mlp.fc2.bias": _VECTOR_D,
}
_TOP_NORMS = ("norm_pre", "norm", "fc_norm")


def block_tensor_kind(rest: str) -> tuple[tuple[str, ...], str | None]:
    """The tiling rule of a block tensor named ``rest`` (after 'blocks.<i>.'); see `BLOCK_RULES`."""
    return BLOCK_RULES[rest]


def depth_map(small_depth: int, big_depth: int, depth: str) -> list[int]:
    """Big block i <- small block map[i], for ``depth`` 'stretch' or 'core' (see vitwarm.models.grow)."""
    s, L = small_depth, big_depth
    if depth == "stretch":
        return [i * s // L for i in range(L)]
    if s == L:
        return list(range(L))
    return [0] + [1 + (i - 1) * (s - 2) // (L - 2) for i in range(1, L - 1)] + [s - 1]


def _fail(small: VisionTransformer, big: VisionTransformer, problem: str) -> None:
    def shape(vit: VisionTransformer) -> str:
        return (f"dim {vit.embed_dim}, {vit.blocks[0].attn.num_heads} heads, MLP {_hidden(vit)}, "
                f"depth {len(vit.blocks)}")
    raise ValueError(f"cannot grow the small ViT ({shape(small)}) into the big one ({shape(big)}): {problem}")


def _hidden(vit: VisionTransformer) -> int:
    return vit.blocks[0].mlp.fc1.out_features


def _prefix_tokens(vit: VisionTransformer) -> dict[str, tuple[int, int]]:
    """(1, count) of each class / distillation / register token tensor the ViT has."""
    return {t: tuple(getattr(vit, t).shape[:2]) for t in PREFIX_TOKENS if getattr(vit, t, None) is not None}


def _factor(small: int, big: int) -> int | None:
    return big // small if big % small == 0 and big >= small else None


def check_growth(small: VisionTransformer, big: VisionTransformer, depth: str = "stretch",
                 parts: tuple[str, ...] | list[str] = PARTS, blocks: str = "all", keep_pos_embed: bool = False,
                 keep_cls_token: bool = False, shuffle: str | None = None) -> dict[str, int]:
    """The width factors ``{"D": k, "H": j}`` of growing ``small`` into ``big``, or a one-line ValueError
    naming the shapes and what would work. Shapes only: meta-device models are fine."""
    for role, vit in (("small", small), ("big", big)):
        if not isinstance(vit, VisionTransformer):
            raise ValueError(f"the {role} model is a {type(vit).__name__}; growth needs timm VisionTransformers")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid parts: {', '.join(PARTS)}")
    if depth not in ("stretch", "core"):
        raise ValueError(f"depth must be 'stretch' or 'core'; got {depth!r}")
    if shuffle is not None and shuffle not in SHUFFLE_MODES:
        raise ValueError(f"shuffle must be None or one of {', '.join(SHUFFLE_MODES)}; got {shuffle!r}")
    d, D = small.embed_dim, big.embed_dim
    k = _factor(d, D)
    if k is None:
        _fail(small, big, f"the width {d} -> {D} is not an integer factor; use a big width that is a multiple "
                          f"of {d} ({', '.join(str(d * i) for i in (1, 2, 3, 4))}, ...)")
    heads, big_heads = small.blocks[0].attn.num_heads, big.blocks[0].attn.num_heads
    if big_heads != k * heads:
        _fail(small, big, f"head dims differ ({d}/{heads} = {d // heads} vs {D}/{big_heads} = {D // big_heads}); "
                          f"width x{k} tiles the heads: use {k * heads} heads in the big model (head dim "
                          f"{d // heads}), or a small model with {D // big_heads}-wide heads")
    m, M = _hidden(small), _hidden(big)
    j = _factor(m, M)
    if j is None:
        _fail(small, big, f"the MLP hidden size {m} -> {M} is not an integer factor; use a multiple of {m} "
                          f"(e.g. {m * k}, the same mlp_ratio)")
    s, L = len(small.blocks), len(big.blocks)
    if s > L:
        _fail(small, big, f"depth {s} -> {L} would drop blocks; the big model needs depth >= {s}")
    if depth == "core" and s != L and s < 3:
        _fail(small, big, f"depth 'core' unrolls a middle block, and a depth-{s} model has none; use a small "
                          "model of depth >= 3 or depth 'stretch'")
    small_block = {n for n, _ in small.blocks[0].named_parameters()}
    big_block = {n for n, _ in big.blocks[0].named_parameters()}
    if small_block != big_block:
        _fail(small, big, f"the blocks differ in kind: only the small one has {sorted(small_block - big_block)}, "
                          f"only the big one {sorted(big_block - small_block)}; build both with the same block "
                          "options (qkv_bias, qk_norm, init_values, ...)")
    foreign = sorted(small_block - BLOCK_RULES.keys())
    if foreign:
        _fail(small, big, f"block tensors {foreign} have no tiling rule; growth knows timm's Block with "
                          f"Attention and Mlp ({', '.join(BLOCK_RULES)})")
    small_norms = {n for n, _ in small.named_parameters() if n.split(".")[0] in _TOP_NORMS}
    big_norms = {n for n, _ in big.named_parameters() if n.split(".")[0] in _TOP_NORMS}
    if "norm" in parts and small_norms != big_norms:
        _fail(small, big, f"the norms outside the blocks differ (small {sorted(small_norms)}, big "
                          f"{sorted(big_norms)}); build both with the same global_pool / fc_norm / pre_norm, or "
                          "leave 'norm' out of the parts")
    if keep_cls_token:
        small_prefix, big_prefix = _prefix_tokens(small), _prefix_tokens(big)
        if small_prefix != big_prefix:
            _fail(small, big, f"its class/register tokens {small_prefix or 'none'} have no place in the big model's "
                              f"{big_prefix or 'none'}; give both the same class_token / reg_tokens, or do not keep "
                              "the class token")
    if keep_pos_embed:
        small_pos = None if small.pos_embed is None else tuple(small.pos_embed.shape[:2])
        big_pos = None if big.pos_embed is None else tuple(big.pos_embed.shape[:2])
        if small_pos is None or small_pos != big_pos:
            _fail(small, big, f"its position embedding (1, tokens) = {small_pos} does not fit the big model's "
                              f"{big_pos}; use the same image size, patch size and prefix tokens, or do not keep it")
    if shuffle in PARTS and shuffle not in parts:
        raise ValueError(f"shuffle={shuffle!r} but {shuffle!r} is not among the grown parts {tuple(parts)}")
    select_blocks(blocks, L)
    return {"D": k, "H": j}
