"""Warm-up sequences shorter than the image grid (``warmup.seq_len``): where they sit, what they cost."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from vitwarm.config import load_config
from vitwarm.models import WarmupViT
from vitwarm.run.plan import vit_flops_per_sample
from vitwarm.run.preflight import preflight

from helpers import TINY


def pico(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vitwarm_pico_patch4_32", num_classes=0, **kwargs)  # 8 x 8 = 64 tokens, dim 128


def test_short_sequences_sit_on_the_grids_first_raster_positions():
    vit = pico()
    model = WarmupViT(vit, vocab_size=9, seq_len=20).eval()
    tokens = torch.randint(0, 9, (3, 20))
    with torch.no_grad():
        # By hand: class token, then the 20 symbols; the pos_embed rows of the class token and the first 20 cells.
        x = torch.cat([vit.cls_token.expand(3, -1, -1), model.symbols[tokens]], dim=1) + vit.pos_embed[:, :21]
        expected = model.head(vit.norm(vit.blocks(vit.norm_pre(x)))[:, 1:])
        assert torch.allclose(model(tokens), expected, atol=1e-6)
        full = WarmupViT(pico(), vocab_size=9).eval()  # the whole grid: as before
        assert full(torch.randint(0, 9, (2, 64))).shape == (2, 64, 9)
    with pytest.raises(ValueError, match="sequence length 64 does not match the warm-up's 20 tokens"):
        model(torch.zeros(1, 64, dtype=torch.long))
    with pytest.raises(ValueError, match="seq_len 65 must be from 1 to the 8 x 8 = 64 tokens"):
        WarmupViT(pico(), vocab_size=9, seq_len=65)


@pytest.mark.parametrize("seq_len", [16, 32, 64])
def test_flops_of_short_sequences_match_torchs_flop_counter(seq_len):
    vit = pico()
    model = WarmupViT(vit, vocab_size=9, seq_len=seq_len)
    for block in vit.blocks:  # torch's counter does not see inside the CPU's fused attention kernel: plain matmuls
        block.attn.fused_attn = False
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, seq_len, dtype=torch.long))
    head = 2 * seq_len * vit.embed_dim * 9  # the symbol head, which the image phase does not have
    assert counter.get_total_flops() - head == vit_flops_per_sample(vit, seq_len)


def test_the_plan_counts_the_warmups_flops_per_short_sequence(fmnist_shards):
    cfg = load_config(TINY, [f"data.source={fmnist_shards}", "warmup.seq_len=8"])
    warm, image = preflight(cfg, world_size=1).phases
    with torch.device("meta"):
        vit = timm.create_model(cfg.model.name, in_chans=1, num_classes=0, embed_dim=64, depth=2, num_heads=2)
    assert warm.flops == 3 * vit_flops_per_sample(vit, 8) * warm.samples
    assert image.flops == 3 * vit_flops_per_sample(vit, 16) * image.samples
