"""transfer: exactly the selected tensors are copied, shuffling permutes them, mismatches are refused."""

import pytest
import timm
import torch

import vitwarm  # noqa: F401  (registers vitwarm_* timm models)
from vitwarm.models import TransferReport, WarmupViT, transfer

torch.set_num_threads(1)

SMALL = dict(img_size=16, depth=4, embed_dim=32, num_heads=2, mlp_ratio=2.0, init_values=0.1)


def make(**overrides) -> torch.nn.Module:
    return timm.create_model("vitwarm_pico_patch4_32", **{**SMALL, **overrides})


@pytest.fixture
def pair():
    """A source ViT with parameters unlike any fresh init, and a fresh image ViT (1 channel, 10 classes)."""
    torch.manual_seed(0)
    src = make()
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    torch.manual_seed(1)
    dst = make(in_chans=1, num_classes=10)
    original = {n: p.detach().clone() for n, p in dst.named_parameters()}
    return src, dst, original


def check_copied_exactly(src, dst, original, expected: set[str]) -> None:
    src_params = dict(src.named_parameters())
    for name, param in dst.named_parameters():
        if name in expected:
            assert torch.equal(param, src_params[name]), f"{name} should come from src"
        else:
            assert torch.equal(param, original[name]), f"{name} should keep dst's init"


def test_default_copies_blocks_and_norms_only(pair):
    src, dst, original = pair
    report = transfer(src, dst)
    expected = {n for n, _ in dst.named_parameters() if n.startswith("blocks.")}
    expected |= {"norm.weight", "norm.bias"}
    assert set(report.copied) == expected
    assert report.n_params == sum(p.numel() for n, p in dst.named_parameters() if n in expected)
    assert report.shuffled == []
    check_copied_exactly(src, dst, original, expected)
    text = str(report)
    assert f"transferred {len(expected)} tensors" in text and "blocks 0-3" in text


def test_parts_block_ranges_and_kept_embeddings(pair):
    src, dst, original = pair
    report = transfer(src, dst, parts=("attn",), blocks="-2:", keep_pos_embed=True, keep_cls_token=True)
    expected = {
        n for n, _ in dst.named_parameters()
        if n.startswith(("blocks.2.attn.", "blocks.3.attn.", "blocks.2.ls1.", "blocks.3.ls1."))
    } | {"pos_embed", "cls_token"}
    assert set(report.copied) == expected
    check_copied_exactly(src, dst, original, expected)


def test_final_norm_travels_with_the_last_block(pair):
    src, dst, original = pair
    transfer(src, dst, parts=("norm",), blocks=":2")
    expected = {f"blocks.{i}.norm{j}.{w}" for i in (0, 1) for j in (1, 2) for w in ("weight", "bias")}
    check_copied_exactly(src, dst, original, expected)


def test_shuffle_permutes_entries_and_keeps_their_values(pair):
    src, dst, original = pair
    report = transfer(src, dst, shuffle="attn", seed=3)
    src_params, dst_params = dict(src.named_parameters()), dict(dst.named_parameters())
    assert report.shuffled and all(".attn." in n or ".ls1." in n for n in report.shuffled)
    for name in report.copied:
        got, want = dst_params[name], src_params[name]
        if name in report.shuffled:
            assert torch.equal(got.flatten().sort().values, want.flatten().sort().values), name
            assert not torch.equal(got, want), f"{name} should be permuted"
        else:
            assert torch.equal(got, want), f"{name} should be copied as is"

    again = make(in_chans=1, num_classes=10)  # the same seed gives the same permutation
    transfer(src, again, shuffle="attn", seed=3)
    for name in report.shuffled:
        assert torch.equal(dict(again.named_parameters())[name], dst_params[name])


def test_architecture_mismatch_lists_names_and_shapes(pair):
    src, _, _ = pair
    listed = r"4 vs 3 blocks(.|\n)*blocks\.3\.attn\.qkv\.weight: src \(96, 32\) vs dst missing"
    with pytest.raises(ValueError, match=listed):
        transfer(src, make(depth=3))
    with pytest.raises(ValueError, match=r"blocks\.0\.mlp\.fc1\.weight: src \(64, 32\) vs dst \(128, 32\)"):
        transfer(src, make(mlp_ratio=4.0))


def test_bad_arguments_are_refused(pair):
    src, dst, _ = pair
    with pytest.raises(ValueError, match="valid parts: attn, mlp, norm"):
        transfer(src, dst, parts=("attn", "patch_embed"))
    with pytest.raises(ValueError, match="selects no block"):
        transfer(src, dst, blocks="8:12")
    with pytest.raises(ValueError, match="slice"):
        transfer(src, dst, blocks="first")
    with pytest.raises(ValueError, match="not among the transferred parts"):
        transfer(src, dst, parts=("attn",), shuffle="mlp")


def test_from_a_warmed_up_model():
    """The intended flow: warm up through WarmupViT, then transfer from ``warm.vit`` into an image ViT."""
    torch.manual_seed(0)
    warm = WarmupViT(make(num_classes=0), vocab_size=9)  # headless, as the warm-up builds it
    tokens = torch.randint(0, 9, (4, 16))
    opt = torch.optim.AdamW([p for p in warm.parameters() if p.requires_grad], lr=1e-2)
    warm(tokens).logsumexp(-1).mean().backward()
    opt.step()
    dst = make(in_chans=1, num_classes=10)
    report = transfer(warm.vit, dst)
    assert isinstance(report, TransferReport)
    assert torch.equal(dst.blocks[0].attn.qkv.weight, warm.vit.blocks[0].attn.qkv.weight)
    assert dst(torch.randn(2, 1, 16, 16)).shape == (2, 10)
