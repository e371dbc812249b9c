"""The attention-structure scores: exact on hand-built weights, high after mimetic init, near 0 at timm's."""

from __future__ import annotations

import pytest
import timm
import torch

from vitwarm.models import mimetic_init_
from vitwarm.models.attention_scores import attention_scores, identity_cosine


def pico() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vitwarm_pico_patch4_32", num_classes=0)  # dim 128, 6 blocks


def test_identity_cosine_by_hand():
    assert identity_cosine(3 * torch.eye(5)) == pytest.approx(1.0)
    assert identity_cosine(-torch.eye(5)) == pytest.approx(-1.0)
    assert identity_cosine(torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0]))) == pytest.approx(2 / (2 * 2**0.5))
    assert identity_cosine(torch.tensor([[0.0, 1.0], [1.0, 0.0]])) == 0.0
    assert identity_cosine(torch.zeros(3, 3)) == 0.0


@torch.no_grad()
def test_scores_of_hand_set_heads():
    vit = pico()
    attn = vit.blocks[0].attn
    d, hd, width = 128, attn.head_dim, attn.attn_dim
    eye = torch.eye(d)
    attn.qkv.weight[:width] = eye[:width]  # Wq_h = rows of I: Wq_hᵀ Wk_h = projection onto hd coordinates
    attn.qkv.weight[width:2 * width] = eye[:width]
    attn.qkv.weight[2 * width:] = eye[:width]  # Wv = I, Wo = -2 I: the value-output map is -2 I
    attn.proj.weight[:] = -2 * eye[:, :width]
    scores = attention_scores(vit)
    assert len(scores["qk"]) == 6 and len(scores["qk"][0]) == attn.num_heads
    assert scores["qk"][0] == pytest.approx([(hd / d) ** 0.5] * attn.num_heads)  # the rank-hd maximum
    assert scores["vo"][0] == pytest.approx([(hd / d) ** 0.5] * attn.num_heads)
    assert scores["vo_layer"][0] == pytest.approx(1.0)


def test_mimetic_init_scores_high_and_timms_init_near_zero():
    default = attention_scores(pico())
    vit = pico()
    mimetic_init_(vit, seed=0)
    mimetic = attention_scores(vit)
    assert all(abs(s) < 0.1 for s in default["vo_layer"]) and all(abs(s) < 0.1 for row in default["qk"] for s in row)
    assert all(s == pytest.approx(0.4 / (0.4**2 + 0.4**2) ** 0.5, abs=0.05) for s in mimetic["vo_layer"])
    assert all(s > 0.3 for row in mimetic["qk"] for s in row)
