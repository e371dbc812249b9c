"""timm registry entries, and exported checkpoints that stock timm loads by name."""

import pytest
import timm
import torch
from safetensors.torch import load_file

import vitwarm  # noqa: F401  (registers vitwarm_* timm models)
from vitwarm.models import export_hub, load_export_without_head, read_metadata

torch.set_num_threads(1)

TOKENS = {
    "vitwarm_tiny_patch16_224": 196,
    "vitwarm_small_patch16_224": 196,
    "vitwarm_base_patch16_224": 196,
    "vitwarm_pico_patch4_32": 64,
    "vitwarm_pico_patch7_28": 16,
    "vitwarm_pico_core_patch4_32": 64,
}


def test_importing_vitwarm_registers_the_models():
    assert sorted(timm.list_models("vitwarm_*")) == sorted(TOKENS)
    for name in TOKENS:
        cfg = timm.models.get_pretrained_cfg(f"{name}.warmup")
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


GRAY_28 = dict(input_size=(1, 28, 28), mean=(0.286,), std=(0.353,), interpolation="bicubic", crop_pct=0.875)


def test_hub_export_rebuilds_in_stock_timm_with_no_arguments(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=3, embed_dim=64).eval()
    folder = export_hub(model, tmp_path / "model", kind="model", data_config=GRAY_28, label_names=["a", "b", "c"],
                        warmup={"grammar": "k_dyck", "params": {"k": 4}}, version="9.9")
    assert read_metadata(folder) == {"architecture": "vit_tiny_patch16_224", "kind": "model", "version": "9.9",
                                     "grammar": "k_dyck", "warmup": {"grammar": "k_dyck", "params": {"k": 4}}}
    # A stock name, so the load below goes through timm's own vit_tiny_patch16_224 entry point.
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    assert loaded.pretrained_cfg["architecture"] == "vit_tiny_patch16_224"
    assert loaded.pretrained_cfg["label_names"] == ["a", "b", "c"]
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded(x), model(x))  # head included: same logits
    config = timm.data.resolve_data_config({}, model=loaded)
    assert config["input_size"] == (1, 28, 28) and tuple(config["mean"]) == (0.286,)
    assert config["crop_pct"] == 0.875 and config["interpolation"] == "bicubic"

    # Exporting again replaces the folder; the source model keeps its head when the export is headless.
    warm = export_hub(model, tmp_path / "model", kind="warmup", headless=True, data_config=GRAY_28)
    assert model.num_classes == 3 and "head.weight" not in load_file(warm / "model.safetensors")
    for num_classes in (0, 10):
        backbone = timm.create_model(f"local-dir:{warm}", pretrained=True, num_classes=num_classes)
        assert backbone.num_classes == num_classes
        assert torch.equal(backbone.blocks[5].mlp.fc2.weight, model.blocks[5].mlp.fc2.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left behind


def test_warmup_tag_loads_the_exported_file_by_name(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vitwarm_pico_patch7_28", in_chans=1, num_classes=10)
    folder = export_hub(model, tmp_path / "warmup", kind="warmup", headless=True, data_config=GRAY_28)
    loaded = timm.create_model("vitwarm_pico_patch7_28.warmup", pretrained=True, in_chans=1, num_classes=5,
                               pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")))
    assert torch.equal(loaded.pos_embed, model.pos_embed) and loaded.head.out_features == 5


def test_load_export_without_head_round_trip_and_mismatch(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("vitwarm_pico_patch4_32", depth=2, num_classes=10)
    path = export_hub(source, tmp_path / "warm", kind="warmup", headless=True)

    target = timm.create_model("vitwarm_pico_patch4_32", depth=2, num_classes=3)
    head = target.head.weight.detach().clone()
    assert load_export_without_head(target, path)["architecture"] == "vit_tiny_patch16_224"
    assert torch.equal(target.blocks[1].attn.proj.weight, source.blocks[1].attn.proj.weight)
    assert torch.equal(target.head.weight, head)  # the head is the model's own

    other = timm.create_model("vitwarm_pico_patch7_28", depth=3)
    before = other.blocks[0].attn.qkv.weight.detach().clone()
    with pytest.raises(ValueError) as error:
        load_export_without_head(other, path)
    message = str(error.value)
    assert "missing: blocks.2.attn.proj.bias" in message
    assert "pos_embed: file (1, 65, 128) vs model (1, 17, 128)" in message
    assert "patch_embed.proj.weight: file (128, 3, 4, 4) vs model (128, 3, 7, 7)" in message
    assert torch.equal(other.blocks[0].attn.qkv.weight, before)  # nothing was loaded
