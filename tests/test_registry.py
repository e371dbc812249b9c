"""timm registry entries, and exported checkpoints that stock timm loads by name."""

import pytest
import timm
import torch
from safetensors.torch import load_file

import vitwarm  # noqa: F401  (registers vitwarm_* timm models)
from vitwarm.models import export_timm_checkpoint, load_checkpoint, read_metadata

torch.set_num_threads(1)

TOKENS = {
    "vitwarm_tiny_patch16_224": 196,
    "vitwarm_small_patch16_224": 196,
    "vitwarm_base_patch16_224": 196,
    "vitwarm_pico_patch4_32": 64,
    "vitwarm_pico_patch7_28": 16,
}


def test_importing_vitwarm_registers_the_models():
    assert sorted(timm.list_models("vitwarm_*")) == sorted(TOKENS)
    for name in TOKENS:
        cfg = timm.models.get_pretrained_cfg(f"{name}.kdyck")
        assert not cfg.url and not cfg.hf_hub_id and cfg.num_classes == 0


@pytest.mark.parametrize("name", sorted(TOKENS))
def test_architectures_and_token_counts(name):
    model = timm.create_model(name, depth=1)  # one block is enough to check the token grid
    assert model.patch_embed.num_patches == TOKENS[name]
    assert model.num_classes == 1000


def test_pico_models_take_grayscale_images():
    model = timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=10)
    assert model.embed_dim == 128 and len(model.blocks) == 6 and model.blocks[0].attn.num_heads == 4
    assert model.blocks[0].mlp.fc1.out_features == 256  # MLP ratio 2
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_export_loads_into_stock_timm_by_name(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=10)
    path = export_timm_checkpoint(model, tmp_path / "warm.safetensors", warmup={"grammar": "k_dyck", "k": 4})
    exported = load_file(str(path))
    assert read_metadata(path) == {"architecture": "vitwarm_pico_patch7_28",
                                   "warmup": {"grammar": "k_dyck", "k": 4}}
    assert all(t.is_contiguous() for t in exported.values())

    for num_classes in (10, 1000):  # 1000 is also the default cfg's: the headless file fits both
        loaded = timm.create_model(
            "vitwarm_pico_patch7_28.kdyck", pretrained=True, in_chans=1, num_classes=num_classes,
            pretrained_cfg_overlay=dict(file=str(path)),
        )
        state = loaded.state_dict()
        assert set(state) - set(exported) == {"head.weight", "head.bias"}  # nothing else missing
        assert set(exported) <= set(state)  # nothing unexpected
        for name, value in exported.items():
            assert torch.equal(state[name], value), name

    # A stock timm name works too, with the cfg told that the file has no head.
    stock_kwargs = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3)
    stock = timm.create_model("vit_tiny_patch16_224", **stock_kwargs)
    path = export_timm_checkpoint(stock, tmp_path / "stock.safetensors")
    loaded = timm.create_model("vit_tiny_patch16_224", pretrained=True, **stock_kwargs,
                               pretrained_cfg_overlay=dict(file=str(path), num_classes=0))
    assert torch.equal(loaded.blocks[1].mlp.fc2.weight, stock.blocks[1].mlp.fc2.weight)


def test_load_checkpoint_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vitwarm_pico_patch4_32", depth=2, num_classes=10)
    path = export_timm_checkpoint(source, tmp_path / "warm.safetensors")

    target = timm.create_model("vitwarm_pico_patch4_32", depth=2, num_classes=3)
    head = target.head.weight.detach().clone()
    assert load_checkpoint(target, path)["architecture"] == "vitwarm_pico_patch4_32"
    assert torch.equal(target.blocks[1].attn.proj.weight, source.blocks[1].attn.proj.weight)
    assert torch.equal(target.head.weight, head)  # the head is the model's own

    other = timm.create_model("vitwarm_pico_patch7_28", depth=3)
    before = other.blocks[0].attn.qkv.weight.detach().clone()
    with pytest.raises(ValueError) as error:
        load_checkpoint(other, path)
    message = str(error.value)
    assert "missing: blocks.2.attn.proj.bias" in message
    assert "pos_embed: file (1, 65, 128) vs model (1, 17, 128)" in message
    assert "patch_embed.proj.weight: file (128, 3, 4, 4) vs model (128, 3, 7, 7)" in message
    assert torch.equal(other.blocks[0].attn.qkv.weight, before)  # nothing was loaded
