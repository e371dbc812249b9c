"""Mimetic initialisation of self-attention: make a fresh ViT's attention look like a trained one's.

Trockman & Kolter, "Mimetic Initialization of Self-Attention Layers", ICML 2023 (arXiv 2305.09828),
observed that in trained ViTs the query-key product W_q W_kᵀ of a head is close to a positive multiple of
the identity plus noise (tokens attend to similar tokens, e.g. to their own position) and the value-output
product W_v W_o close to a *negative* multiple of it. Their initialisation builds both directly:

    W_q W_kᵀ ≈ α₁ Z₁ + β₁ I   (per head),      W_v W_o ≈ α₂ Z₂ − β₂ I   (per layer),

with Z entries i.i.d. N(0, 1/d), d the embedding width, a fresh Z₁ per head and Z₂ per layer, and each
target factorised by SVD (M = U S Vᵀ, left factor U √S, right factor √S Vᵀ). The query and key of a
head have rank head_dim, so their product is the target's best rank-head_dim approximation; values and
output are treated as full (d, d) matrices of the whole layer, as in the paper, and each head carries a
slice of that SVD. Defaults α₁ = β₁ = 0.7, α₂ = β₂ = 0.4: the values of the paper's ViT experiments; the
paper's text itself is not among the sources this project can read, and these are the values that
three independent public re-implementations which cite it use.

In timm's fused ``Attention`` (``x`` is a row vector, ``Linear`` computes x Wᵀ), head h's slices of the
weights are Wq_h, Wk_h, Wv_h = rows h·hd:(h+1)·hd of the q, k and v thirds of ``qkv.weight`` (hd, d) and
Wo_h = columns h·hd:(h+1)·hd of ``proj.weight`` (d, hd). So the paper's (d, d) products are

    W_q W_kᵀ = Wq_hᵀ Wk_h            (the bilinear form of head h's attention scores q·k),
    W_v W_o  = Σ_h Wv_hᵀ Wo_hᵀ = Wvᵀ Woᵀ   (a token's contribution to the residual stream, all heads).

Only these weights change; biases, norms, MLPs, embeddings keep timm's initialisation.
"""

from __future__ import annotations

import torch
from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer


def attention_layers(vit: VisionTransformer) -> list[Attention]:
    """Every block's fused timm ``Attention``; a ValueError names a block whose attention has another form."""
    layers = []
    for i, block in enumerate(vit.blocks):
        attn = getattr(block, "attn", None)
        if not isinstance(attn, Attention):
            raise ValueError(f"mimetic init needs timm's fused Attention (qkv + proj) in every block; block {i} "
                             f"of this model has {type(attn).__name__}: use model.init=default for it")
        layers.append(attn)
    return layers


def _factor(target: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, R), both (d, rank), with L Rᵀ the best rank-``rank`` approximation of ``target`` (d, d).

    An SVD fixes each pair of singular vectors (u_i, v_i) only up to a common sign, and LAPACK builds pick
    it differently: on two CPUs one seed's mimetic ViT started from different weights (same products) and
    ended 1.4 points of top-1 apart after 12 epochs (docs/comparisons.md, part E). Flipping each pair so
    that the largest entry of u_i is positive makes the factors a function of the target alone.
    """
    U, S, Vh = torch.linalg.svd(target)
    U, Vh = U[:, :rank], Vh[:rank]  # (d, rank), (rank, d)
    sign = U.gather(0, U.abs().argmax(0, keepdim=True)).sign()  # (1, rank): sign of u_i's largest entry
    root = S[:rank].sqrt()
    return U * sign * root, Vh.T * sign * root


@torch.no_grad()
def mimetic_init_(vit: VisionTransformer, seed: int, alpha1: float = 0.7, beta1: float = 0.7,
                  alpha2: float = 0.4, beta2: float = 0.4) -> None:
    """Set every block's q, k, v and output weights of ``vit`` in place, per the module docstring.

    ``seed`` draws the Z matrices. A shapes-only model (on the meta device) has no values to set and is
    left as it is.
    """
    layers = attention_layers(vit)
    if any(p.is_meta for p in vit.parameters()):
        return
    generator = torch.Generator().manual_seed(seed)
    for attn in layers:
        hd, width = attn.head_dim, attn.attn_dim  # width = heads x hd: rows of one third of qkv.weight
        qkv = attn.qkv.weight  # (3 x width, d): q rows, then k rows, then v rows
        proj = attn.proj.weight  # (d, width)
        d = qkv.shape[1]
        eye = torch.eye(d)
        for h in range(attn.num_heads):
            rows = slice(h * hd, (h + 1) * hd)
            z_qk = torch.randn(d, d, generator=generator) / d**0.5  # entries of variance 1/d
            left, right = _factor(alpha1 * z_qk + beta1 * eye, hd)  # Wq_hᵀ = left, Wk_hᵀ = right
            qkv[rows].copy_(left.T)
            qkv[width:][rows].copy_(right.T)
        # Values and output as one (d, d) map of the whole layer, of rank ``width`` (= d in timm's ViTs):
        # the sum over heads of Wv_hᵀ Wo_hᵀ is Wvᵀ Woᵀ, so each head carries a slice of its SVD.
        z_vo = torch.randn(d, d, generator=generator) / d**0.5
        left, right = _factor(alpha2 * z_vo - beta2 * eye, width)  # Wvᵀ = left (d, width), Wo = right
        qkv[2 * width:].copy_(left.T)
        proj.copy_(right)
