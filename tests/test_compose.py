"""transfer.sources: each declared part from its own warm-up export, exactly; incompatible sources refused."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import vitwarm  # noqa: F401  (registers vitwarm_* timm models)
from vitwarm.config import flatten, load_config
from vitwarm.errors import ConfigError
from vitwarm.models import compose, export_hub, read_metadata
from vitwarm.models.registry import stock_architecture
from vitwarm.models.transfer import param_part

from helpers import ROOT, TINY, train_in_process

torch.set_num_threads(1)
NAME = "vitwarm_pico_patch4_32"
SMALL = dict(img_size=16, depth=3, embed_dim=32, num_heads=2, mlp_ratio=2.0)


def make(**overrides):
    return timm.create_model(NAME, **{**SMALL, **overrides})


ARCH = stock_architecture(make())[0]  # what exports record and compose compares: timm's stock name
OTHER = timm.create_model("vit_small_patch16_224", **SMALL)  # another stock architecture, as small


def warm_export(path: Path, seed: int, fraction: float = 1.0, parts=("attn", "mlp", "norm"), **overrides) -> dict:
    """A warm-up export folder as finish_warmup writes it: random weights, the parts listed as transferred."""
    torch.manual_seed(seed)
    model = make(in_chans=1, **overrides)  # the image model of the source run
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    transferred = [n for n, _ in model.named_parameters() if param_part(n) in parts]
    export_hub(model, path, kind="warmup", headless=True,
               warmup={"grammar": f"g{seed}", "fraction": fraction, "transferred": transferred})
    return load_file(path / "model.safetensors")


@pytest.fixture
def dst():
    torch.manual_seed(9)
    model = make(in_chans=1, num_classes=10)
    return model, {n: p.detach().clone() for n, p in model.named_parameters()}


def test_each_part_comes_from_its_source(tmp_path, dst):
    model, original = dst
    a = warm_export(tmp_path / "a", seed=1)
    b = warm_export(tmp_path / "b", seed=2)
    report, provenance = compose(model, {"attn": tmp_path / "a", "mlp": tmp_path / "b"},
                                 architecture=ARCH, blocks="1:")
    expected = {"attn": a, "mlp": b}
    for name, param in model.named_parameters():
        part = param_part(name)
        in_blocks = name.startswith(("blocks.1.", "blocks.2."))
        if part in expected and in_blocks:
            assert torch.equal(param, expected[part][name]), f"{name} should come from the {part} source"
            assert name in report.copied
        else:  # norms, block 0, embeddings, head: dst's own init
            assert torch.equal(param, original[name]), f"{name} should keep dst's init"
    assert len(report.copied) == len({n for n in original if param_part(n) in expected and n.startswith(
        ("blocks.1.", "blocks.2."))})
    assert provenance["attn"]["warmup"]["grammar"] == "g1" and provenance["mlp"]["warmup"]["grammar"] == "g2"


@pytest.mark.parametrize(("make_source", "message"), [
    (lambda p: warm_export(p, 1, depth=2), r"transfer.sources.mlp=.*does not fit this model: missing: "
                                           r"blocks\.2"),
    (lambda p: warm_export(p, 1, mlp_ratio=4.0), r"mismatched shapes: blocks\.0\.mlp\.fc1\.bias: file \(128,\) "
                                                 r"vs model \(64,\)"),
    (lambda p: warm_export(p, 1, parts=("attn",)), r"its warm-up did not carry 'mlp' out"),
    (lambda p: warm_export(p, 1, fraction=0.25), r"warmed up with warmup.fraction=0.25, this run declares "
                                                 r"warmup.fraction=1.0"),
    (lambda p: export_hub(make(), p, kind="model"), "not a warm-up export"),
    (lambda p: export_hub(OTHER, p, kind="warmup", warmup={"transferred": ["x"]}),
     f"exported from model {stock_architecture(OTHER)[0]}"),
    (lambda p: p.write_bytes(b"garbage"), "not a readable safetensors file"),
    (lambda p: None, "no exported weights there"),
])  # fmt: skip
def test_incompatible_sources_are_refused_before_anything_is_copied(tmp_path, dst, make_source, message):
    model, original = dst
    warm_export(tmp_path / "good", seed=3)
    make_source(tmp_path / "bad")
    sources = {"attn": tmp_path / "good", "mlp": tmp_path / "bad"}
    with pytest.raises(ValueError, match=message):
        compose(model, sources, architecture=ARCH, fraction=1.0)
    assert all(torch.equal(p, original[n]) for n, p in model.named_parameters())  # the good source neither


def test_bad_declarations_are_refused(tmp_path, dst):
    model, _ = dst
    warm_export(tmp_path / "a", seed=1)
    with pytest.raises(ValueError, match="unknown part 'head'; valid parts: attn, mlp, norm"):
        compose(model, {"head": tmp_path / "a"}, architecture=ARCH)
    with pytest.raises(ValueError, match="transfer.sources is empty"):
        compose(model, {}, architecture=ARCH)
    src = "transfer.sources.attn=a.safetensors"
    with pytest.raises(ConfigError, match="transfer.sources needs warmup.fraction > 0"):
        load_config(TINY, [src, "warmup.fraction=0"])
    with pytest.raises(ConfigError, match="cannot be combined with transfer.shuffle"):
        load_config(TINY, [src, "transfer.shuffle=attn"])


def train(run_dir: Path, shards: Path, *overrides: str, processes: int = 1) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "vitwarm.train"]
    if processes > 1:  # real accelerate launch on CPU/gloo
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(ROOT / "recipes/accelerate/cpu_ddp.yaml"), "--main_process_port", str(port), "-m",
                  "vitwarm.train"]
    command = [*launch, "--config", str(TINY), f"data.source={shards}", f"run.dir={run_dir}", "budget.epochs=0.5",
               *overrides]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_composed_run_from_two_real_warmups(tmp_path, fmnist_shards):
    """Two real warm-up runs (k-Dyck, the LM shuffle variant); a third run takes attention from one and MLP
    from the other, records both in its export's metadata, and trains; an incompatible source fails in one
    line."""
    for name in ("k_dyck", "k_dyck_shuffle_lm"):
        result = train(tmp_path / f"{name}_s0", fmnist_shards, f"procedural.grammar={name}")
        assert result.returncode == 0, result.stderr[-3000:]
    # Source paths interpolated by seed, as a sweep over seeds declares them (each seed its own sources);
    # two processes, as under accelerate launch on several GPUs: both compose, the main one exports.
    composed = tmp_path / "composed"
    result = train(composed, fmnist_shards, f"transfer.sources.attn={tmp_path}/k_dyck_s${{seed}}/warmup",
                   f"transfer.sources.mlp={tmp_path}/k_dyck_shuffle_lm_s${{seed}}/warmup", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    summary = json.loads((composed / "summary.json").read_text())
    assert "warmup" not in summary["phases"] and summary["top1"] > 10

    handover = load_file(composed / "warmup" / "model.safetensors")
    sources = {"attn": load_file(tmp_path / "k_dyck_s0" / "warmup" / "model.safetensors"),
               "mlp": load_file(tmp_path / "k_dyck_shuffle_lm_s0" / "warmup" / "model.safetensors")}
    for name, value in handover.items():
        part = param_part(name)
        if part in sources:
            assert torch.equal(value, sources[part][name]), name
            assert not torch.equal(value, sources["mlp" if part == "attn" else "attn"][name]), name
        elif part == "norm":  # from neither source: the fresh image model's LayerNorms
            assert torch.equal(value, torch.ones_like(value) if name.endswith("weight") else torch.zeros_like(value))
    metadata = read_metadata(composed / "warmup")["warmup"]
    assert metadata["sources"]["attn"]["warmup"]["grammar"] == "k_dyck"
    assert metadata["sources"]["mlp"]["warmup"]["grammar"] == "k_dyck_shuffle_lm"
    assert metadata["sources"]["mlp"]["path"] == f"{tmp_path}/k_dyck_shuffle_lm_s0/warmup"

    # A source of another architecture: refused before step 1, in exactly one line.
    status, out = train_in_process(tmp_path / "refused", fmnist_shards, "model.kwargs.depth=3",
                                   f"transfer.sources.attn={tmp_path}/k_dyck_s0/warmup")
    assert status == 1
    lines = out.strip().splitlines()
    assert lines[-1].startswith("vitwarm: error: transfer.sources.attn=") and "Traceback" not in out
    assert not (tmp_path / "refused" / "metrics.jsonl").exists() or "image" not in (
        tmp_path / "refused" / "metrics.jsonl").read_text()


def test_compare_recipe_is_the_reproduction_recipe_but_for_grammar_params():
    """recipes/fmnist_repro.yaml is fmnist_compare.yaml plus k (a recipe's k cannot be removed by an override,
    and ECA takes no k, so the comparison's base has none); this keeps the two from drifting apart."""
    compare = flatten(load_config(ROOT / "recipes" / "fmnist_compare.yaml"))
    repro = flatten(load_config(ROOT / "recipes" / "fmnist_repro.yaml"))
    differ = {key for key in compare.keys() | repro.keys() if compare.get(key) != repro.get(key)}
    assert differ == {"procedural.params.k", "run.dir"}
