"""model.init=mimetic: the intended per-head structure, measured; seeding; refusal; with a real warm-up run."""

import json
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import ParallelScalingBlock, VisionTransformer

import vitwarm  # noqa: F401  (registers vitwarm_* timm models)
from vitwarm.config import load_config
from vitwarm.errors import ConfigError
from vitwarm.models import mimetic_init_, read_metadata
from vitwarm.run.phases.common import create_vit

from helpers import ROOT, TINY

torch.set_num_threads(1)

# Two shapes: the reproduction's ViT (dim 128, 4 heads of 32) and ViT-T's width (dim 192, 3 heads of 64)
# without a class token.
SHAPES = [dict(embed_dim=128, depth=2, num_heads=4), dict(embed_dim=192, depth=2, num_heads=3, class_token=False,
                                                          global_pool="avg")]


def head_products(weights: dict[str, torch.Tensor], block: int, heads: int):
    """Per head h: (Wq_hᵀ Wk_h, Wv_hᵀ Wo_hᵀ), both (d, d), from a state dict (timm's fused qkv layout)."""
    qkv, proj = weights[f"blocks.{block}.attn.qkv.weight"], weights[f"blocks.{block}.attn.proj.weight"]
    q, k, v = qkv.chunk(3)  # (width, d) each
    hd = q.shape[0] // heads
    for h in range(heads):
        rows = slice(h * hd, (h + 1) * hd)
        yield q[rows].T @ k[rows], v[rows].T @ proj[:, rows].T


def diagonal_score(product: torch.Tensor) -> float:
    """Mean diagonal entry in units of the off-diagonal entries' RMS: about 0 for unstructured weights."""
    off = ~torch.eye(len(product), dtype=torch.bool)
    return (product.diagonal().mean() / product[off].pow(2).mean().sqrt()).item()


def scores(model, heads: int) -> tuple[list[float], list[float]]:
    weights = {n: p.detach() for n, p in model.state_dict().items()}
    qk, vo = [], []
    for block in range(len(model.blocks)):
        for a, b in head_products(weights, block, heads):
            qk.append(diagonal_score(a))
            vo.append(diagonal_score(b))
    return qk, vo


@pytest.mark.parametrize("shape", SHAPES, ids=["dim128_heads4", "dim192_heads3"])
def test_every_head_gets_the_mimetic_structure(shape):
    torch.manual_seed(0)
    default = timm.create_model("vitwarm_pico_patch4_32", **shape)
    torch.manual_seed(0)
    mimetic = timm.create_model("vitwarm_pico_patch4_32", **shape)
    mimetic_init_(mimetic, seed=1)
    heads = shape["num_heads"]
    qk, vo = scores(mimetic, heads)
    # Measured: W_q W_kᵀ +5.2..+5.3 (dim 128) and +7.6..+7.7 (dim 192) in every head; W_v W_o, one SVD of
    # the layer sliced over heads, -3.4..-5.3 and -5.2..-7.6 per head, -11.3 and -13.8 for the whole layer.
    assert len(qk) == 2 * heads and all(s > 3 for s in qk), qk
    assert all(s < -2 for s in vo), vo
    for block in mimetic.blocks:
        values = block.attn.qkv.weight.detach().chunk(3)[2]  # (width, d)
        assert diagonal_score(values.T @ block.attn.proj.weight.detach().T) < -8
    qk0, vo0 = scores(default, heads)  # timm's init: no diagonal structure at all
    assert all(abs(s) < 1 for s in qk0 + vo0), (qk0, vo0)
    # Only the attention's q, k, v and output weights change.
    changed = {n for n, p in mimetic.state_dict().items() if not torch.equal(p, default.state_dict()[n])}
    assert changed == {f"blocks.{i}.attn.{w}.weight" for i in range(2) for w in ("qkv", "proj")}


def test_targets_scale_with_alpha_and_beta():
    """beta = 0 removes the diagonal; alpha near 0 leaves beta I: per head its rank-32 part (trace share 32/128)."""
    torch.manual_seed(0)
    model = timm.create_model("vitwarm_pico_patch4_32", **SHAPES[0])
    mimetic_init_(model, seed=0, alpha1=0.7, beta1=0.0, alpha2=0.4, beta2=0.0)
    qk, vo = scores(model, 4)
    assert all(abs(s) < 1 for s in qk + vo), (qk, vo)
    mimetic_init_(model, seed=0, alpha1=1e-3, beta1=0.7, alpha2=1e-3, beta2=0.4)
    weights = {n: p.detach() for n, p in model.state_dict().items()}
    for a, b in head_products(weights, 0, heads=4):
        assert a.diagonal().mean().item() == pytest.approx(0.7 * 32 / 128, rel=0.02)
        assert b.diagonal().mean().item() == pytest.approx(-0.4 * 32 / 128, rel=0.02)
    # Values and output are full rank over the layer: their product is -beta2 I itself.
    values = weights["blocks.0.attn.qkv.weight"].chunk(3)[2]
    torch.testing.assert_close(values.T @ weights["blocks.0.attn.proj.weight"].T, -0.4 * torch.eye(128),
                               atol=5e-3, rtol=0)


def test_weights_do_not_depend_on_the_svds_sign_choice(monkeypatch):
    """An SVD that returns the other valid signs (as another LAPACK build may) gives the same weights."""
    torch.manual_seed(0)
    model = timm.create_model("vitwarm_pico_patch4_32", **SHAPES[0])
    mimetic_init_(model, seed=3)
    expected = {n: p.detach().clone() for n, p in model.state_dict().items()}

    svd = torch.linalg.svd
    flips = torch.Generator().manual_seed(0)

    def svd_with_other_signs(a):  # U D, S, D Vh with D a random diagonal of +-1: an SVD of the same a
        U, S, Vh = svd(a)
        d = torch.randint(0, 2, (len(S),), generator=flips) * 2.0 - 1
        assert (d < 0).sum() > len(S) // 4  # many pairs really are flipped
        return U * d, S, d[:, None] * Vh

    monkeypatch.setattr(torch.linalg, "svd", svd_with_other_signs)
    mimetic_init_(model, seed=3)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)


def test_config_seeds_it_per_purpose_and_default_is_timms():
    cfg = load_config(TINY, ["model.init=mimetic"])
    a, b = create_vit(cfg, "image-init"), create_vit(cfg, "image-init")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = create_vit(cfg, "warmup-init")
    assert not torch.equal(other.blocks[0].attn.qkv.weight, a.blocks[0].attn.qkv.weight)
    plain = create_vit(load_config(TINY, []), "image-init")
    assert torch.equal(plain.blocks[0].mlp.fc1.weight, a.blocks[0].mlp.fc1.weight)  # same seed elsewhere
    assert not torch.equal(plain.blocks[0].attn.qkv.weight, a.blocks[0].attn.qkv.weight)
    with pytest.raises(ConfigError, match=r"model.init='orthogonal' is not valid; choose one of \['default', "
                                          r"'mimetic'\]"):
        load_config(TINY, ["model.init=orthogonal"])
    with pytest.raises(ConfigError, match=r"model.mimetic.beta2=-0.4 is outside the valid range"):
        load_config(TINY, ["model.mimetic.beta2=-0.4"])


def test_attention_without_fused_qkv_is_refused():
    vit = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                            block_fn=ParallelScalingBlock)
    with pytest.raises(ValueError, match="block 0 of this model has NoneType: use model.init=default"):
        mimetic_init_(vit, seed=0)


@pytest.mark.slow
def test_warmup_blocks_into_a_mimetic_image_model(tmp_path, fmnist_shards):
    """A real run, mimetic then warm-up, MLPs transferred: the export's attention is the mimetic image init."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "vitwarm.train", "--config", str(TINY), f"data.source={fmnist_shards}",
         f"run.dir={run_dir}", "model.init=mimetic", "transfer.parts=[mlp]", "budget.epochs=2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    export = run_dir / "warmup" / "model.safetensors"
    metadata = read_metadata(export)["warmup"]
    assert metadata["init"] == "mimetic" and metadata["transferred"]
    assert all(".mlp." in name for name in metadata["transferred"])
    weights = load_file(export)
    fresh = create_vit(load_config(run_dir / "config.yaml"), "image-init", num_classes=10)
    for name, value in fresh.state_dict().items():
        if ".attn." in name:  # not transferred: exactly the mimetic image model's
            assert torch.equal(weights[name], value), name
        if ".mlp." in name:  # transferred: trained by the warm-up, which itself started from a mimetic init
            assert not torch.equal(weights[name], value), name
    qk, vo = scores(fresh, heads=2)
    assert all(s > 3 for s in qk) and all(s < -3 for s in vo)
    assert json.loads((run_dir / "summary.json").read_text())["top1"] > 20  # chance is 10%
