"""How "mimetic" a ViT's attention is: the structure scores that mimetic initialisation builds in directly.

Mimetic init (vitwarm.models.mimetic) makes each head's query-key product W_q W_kᵀ close to +β₁ I and each
layer's value-output product W_v W_o close to −β₂ I. The score of a (d, d) product M against the identity
is the cosine between them,

    s(M) = tr(M) / (√d · ‖M‖_F)      in [-1, 1],

scale-free: 1 for a positive multiple of I, -1 for a negative one, near 0 for an unstructured matrix (a
random M with i.i.d. entries: of the order of 1/d). A mimetic init with α = β has s = 0.71 for W_v W_o; a rank-hd
head product Wq_hᵀ Wk_h is at most √(hd/d). The query-key score counts positive diagonals, the value-output
score negative ones (its sign is flipped), so both rise as a model grows more mimetic.

The products are read off timm's fused ``Attention`` exactly as mimetic.py sets them (its docstring gives
the slices).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from .mimetic import attention_layers


def identity_cosine(m: torch.Tensor) -> float:
    """s(M) = tr(M) / (√d ‖M‖_F) of a square (d, d) matrix (0 for a zero matrix)."""
    norm = float(torch.linalg.matrix_norm(m.double()))
    return float(torch.trace(m.double())) / (m.shape[0] ** 0.5 * norm) if norm else 0.0


@torch.no_grad()
def attention_scores(vit: VisionTransformer) -> dict[str, list]:
    """Per layer and head: ``qk`` s(Wq_hᵀ Wk_h) and ``vo`` -s(Wv_hᵀ Wo_hᵀ) (lists of lists, layer x head);
    per layer: ``vo_layer`` -s(Wvᵀ Woᵀ), the whole layer's value-output map (mimetic init's per-layer target)."""
    qk, vo, vo_layer = [], [], []
    for attn in attention_layers(vit):
        hd, width = attn.head_dim, attn.attn_dim
        qkv, proj = attn.qkv.weight.detach().float(), attn.proj.weight.detach().float()  # (3 width, d), (d, width)
        wq, wk, wv = qkv[:width], qkv[width:2 * width], qkv[2 * width:]  # (width, d) each
        heads = [slice(h * hd, (h + 1) * hd) for h in range(attn.num_heads)]
        qk.append([identity_cosine(wq[rows].T @ wk[rows]) for rows in heads])
        vo.append([-identity_cosine(wv[rows].T @ proj[:, rows].T) for rows in heads])
        vo_layer.append(-identity_cosine(wv.T @ proj.T))
    return {"qk": qk, "vo": vo, "vo_layer": vo_layer}
