"""Growth of a small timm ViT into a wider, deeper one (vitwarm.models.grow): exact function preservation
before the symmetry-breaking noise, the noise at its stated scale, refusals in one line, shared blocks."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_model, save_file
from timm.models.vision_transformer import VisionTransformer

import vitwarm  # noqa: F401  (registers the vitwarm_* models)
from vitwarm.models import check_growth, export_hub, grow, share_middle_blocks, unique_state_dict, unshared
from vitwarm.models.grow_check import depth_map

PICO = "vitwarm_pico_patch4_32"  # dim 128, 4 heads of 32, MLP 256, depth 6


def randomized(vit: VisionTransformer, seed: int = 0) -> VisionTransformer:
    """Every parameter random (norm weights around 1, biases and layer scales nonzero), so that no rule can
    pass by an accident of the init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in vit.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            p.copy_(1 + 0.2 * noise if name.endswith("norm1.weight") or name.endswith("norm.weight") else 0.1 * noise)
    return vit.eval()


def pico(**kwargs) -> VisionTransformer:
    return timm.create_model(PICO, num_classes=0, **kwargs).eval()


def tile(x: torch.Tensor, k: int) -> torch.Tensor:
    return x.repeat(*[1] * (x.dim() - 1), k)  # (..., d) -> (..., k·d): [x, x, ...]


def assert_grown(small: VisionTransformer, big: VisionTransformer, order: list[int], tokens: int = 20) -> None:
    """Block by block, on a tiled input, the big model's block i computes the tiled output of small block
    order[i]; the final norm as well."""
    k = big.embed_dim // small.embed_dim
    x = torch.randn(2, tokens, small.embed_dim, generator=torch.Generator().manual_seed(1))  # (B, L, d)
    with torch.no_grad():
        h_small, h_big = small.norm_pre(x), big.norm_pre(tile(x, k))
        assert torch.allclose(h_big, tile(h_small, k), atol=1e-5)
        for i, j in enumerate(order):
            h_small, h_big = small.blocks[j](h_small), big.blocks[i](h_big)
            assert torch.allclose(h_big, tile(h_small, k), atol=1e-4), f"block {i} <- {j}"
        for norm in ("norm", "fc_norm"):
            out_small, out_big = getattr(small, norm)(h_small), getattr(big, norm)(h_big)
            assert torch.allclose(out_big, tile(out_small, k), atol=1e-4), norm


@pytest.mark.parametrize("k", [2, 4])
def test_width_tiling_preserves_the_function_of_the_registered_pico_model(k):
    small = randomized(pico(embed_dim=128 // k, num_heads=4 // k))  # head dim 32 like the big one
    big = pico()
    report = grow(small, big)
    assert (report.width, report.hidden, report.map) == (k, k, list(range(6)))
    assert_grown(small, big, report.map)
    assert report.n_params == sum(p.numel() for n, p in big.named_parameters()
                                  if n.startswith(("blocks.", "norm.")))


@pytest.mark.parametrize("k", [2, 4])
def test_width_tiling_with_every_block_option(k):
    """qk_norm, attention/MLP scale norms, layer scale, registers, avg pooling with fc_norm, pre-norm."""
    options = dict(img_size=16, patch_size=4, depth=2, qk_norm=True, scale_attn_norm=True, scale_mlp_norm=True,
                   init_values=1e-5, reg_tokens=2, global_pool="avg", fc_norm=True, pre_norm=True, num_classes=0)
    small = randomized(VisionTransformer(embed_dim=16, num_heads=1, mlp_ratio=3, **options))
    big = VisionTransformer(embed_dim=16 * k, num_heads=k, mlp_ratio=6, **options).eval()  # hidden x 2k
    report = grow(small, big, keep_cls_token=True, keep_pos_embed=True)
    assert report.hidden == 2 * k
    assert_grown(small, big, report.map)
    assert torch.equal(big.reg_token, tile(small.reg_token, k)) and torch.equal(big.pos_embed, tile(small.pos_embed, k))


@pytest.mark.parametrize("depth", ["stretch", "core"])
def test_depth_unrolling_applies_the_small_blocks_in_the_maps_order(depth):
    small = randomized(pico(embed_dim=64, num_heads=2, depth=3))
    share_middle_blocks(small)  # depth 3: a single middle block either way
    big = pico()
    report = grow(small, big, depth=depth)
    assert report.map == {"stretch": [0, 0, 1, 1, 2, 2], "core": [0, 1, 1, 1, 1, 2]}[depth]
    assert_grown(small, big, report.map)


def test_depth_maps():
    assert depth_map(2, 5, "stretch") == [0, 0, 0, 1, 1]
    assert depth_map(4, 12, "core") == [0] + [1] * 5 + [2] * 5 + [3]  # two middle blocks over ten
    assert depth_map(6, 6, "core") == depth_map(6, 6, "stretch") == list(range(6))


def test_a_shared_core_unrolls_its_one_middle_block():
    small = share_middle_blocks(randomized(pico(embed_dim=64, num_heads=2, depth=5)))
    assert small.blocks[1] is small.blocks[2] is small.blocks[3]
    big = pico(depth=12)
    report = grow(small, big, depth="core")
    assert report.map[0] == 0 and report.map[-1] == 4
    assert {id(small.blocks[j]) for j in report.map[1:-1]} == {id(small.blocks[1])}  # one block, ten times
    assert_grown(small, big, report.map)


def test_noise_is_of_the_stated_scale_and_breaks_the_function():
    small = randomized(pico(embed_dim=64, num_heads=2))
    exact, noisy = pico(), pico()
    grow(small, exact)
    report = grow(small, noisy, noise=0.05, seed=3)
    exact_params, noisy_params = dict(exact.named_parameters()), dict(noisy.named_parameters())
    for name in report.copied:
        want, got = exact_params[name], noisy_params[name]
        ratio = ((got - want).pow(2).mean().sqrt() / want.pow(2).mean().sqrt()).item()
        if want.numel() >= 4096:  # a big tensor: its sample RMS is within a few percent of the stated scale
            assert ratio == pytest.approx(0.05, rel=0.1), name
        assert 0 < ratio < 0.2, name
    x = torch.randn(1, 8, 128)
    with torch.no_grad():
        assert not torch.allclose(noisy.blocks(x), exact.blocks(x), atol=1e-4)
    again = pico()
    grow(small, again, noise=0.05, seed=3)
    again_params = dict(again.named_parameters())
    assert all(torch.equal(again_params[n], noisy_params[n]) for n in report.copied)  # seeded


def test_parts_and_block_ranges_leave_the_rest_fresh():
    small = randomized(pico(embed_dim=64, num_heads=2))
    big = pico()
    before = {n: p.clone() for n, p in big.named_parameters()}
    report = grow(small, big, parts=["mlp"], blocks="-2:")
    assert report.copied and all(n.startswith(("blocks.4.mlp", "blocks.5.mlp")) for n in report.copied)
    changed = {n for n, p in big.named_parameters() if not torch.equal(p, before[n])}
    assert changed == set(report.copied)


@pytest.mark.parametrize(("small_args", "big_args", "grow_args", "says"), [
    (dict(embed_dim=64, num_heads=2), dict(embed_dim=96, num_heads=3), {},
     "the width 64 -> 96 is not an integer factor; use a big width that is a multiple of 64"),
    (dict(embed_dim=64, num_heads=2), dict(embed_dim=128, num_heads=2), {},
     "head dims differ (64/2 = 32 vs 128/2 = 64); width x2 tiles the heads: use 4 heads in the big model"),
    (dict(embed_dim=64, num_heads=2, mlp_ratio=3.0), dict(), {},
     "the MLP hidden size 192 -> 256 is not an integer factor"),
    (dict(embed_dim=64, num_heads=2), dict(depth=4), {}, "depth 6 -> 4 would drop blocks"),
    (dict(embed_dim=64, num_heads=2, depth=2), dict(), dict(depth="core"), "a depth-2 model has none"),
    (dict(embed_dim=64, num_heads=2, qk_norm=True), dict(), {}, "only the small one has ['attn.k_norm.bias'"),
    (dict(embed_dim=64, num_heads=2, reg_tokens=4), dict(), dict(keep_cls_token=True),
     "its class/register tokens {'cls_token': (1, 1), 'reg_token': (1, 4)} have no place in the big model's "
     "{'cls_token': (1, 1)}"),
    (dict(embed_dim=64, num_heads=2, img_size=16), dict(), dict(keep_pos_embed=True),
     "its position embedding (1, tokens) = (1, 17) does not fit the big model's (1, 65)"),
    (dict(embed_dim=64, num_heads=2, global_pool="avg"), dict(), {}, "the norms outside the blocks differ"),
])
def test_impossible_pairs_are_refused_in_one_line_on_the_meta_device(small_args, big_args, grow_args, says):
    with torch.device("meta"):
        small, big = pico(**small_args), pico(**big_args)
    with pytest.raises(ValueError) as err:
        check_growth(small, big, **grow_args)
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot grow the small ViT (dim ")
    assert says in message, message


def test_shared_blocks_survive_checkpoints_and_export_as_the_stock_architecture(tmp_path):
    small = share_middle_blocks(randomized(pico(embed_dim=64, num_heads=2, depth=4)))
    state = unique_state_dict(small)
    assert "blocks.1.mlp.fc1.weight" in state and "blocks.2.mlp.fc1.weight" not in state
    save_file(state, tmp_path / "shared.safetensors")  # refused for tensors that share memory
    loaded = share_middle_blocks(pico(embed_dim=64, num_heads=2, depth=4))
    missing, unexpected = load_model(loaded, tmp_path / "shared.safetensors", strict=False)
    assert not missing and not unexpected
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), small.state_dict().values()))

    copy = unshared(small)
    assert copy.blocks[1] is not copy.blocks[2] and small.blocks[1] is small.blocks[2]
    folder = export_hub(copy, tmp_path / "warmup", kind="warmup", headless=True)
    stock = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # the stock 4-block architecture
    assert (stock.embed_dim, len(stock.blocks)) == (64, 4)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(stock.forward_features(x), small.forward_features(x))
