"""Every GPU question in one run; writes OUT/gpu_check.json and OUT/gpu_check.md. Start it through
benchmarks/gpu_check.sh, which finds the imports first.

Sections, in priority order (each is skipped, and says so, when the time budget would not cover it):

1. environment: torch, CUDA, device, CPU cores;
2. data: vitwarm's training pipeline on synthetic ImageNet-like JPEG shards at 224 px with the DeiT
   augmentation (RandAugment m9, random erasing 0.25, colour jitter 0.4), one worker per CPU core:
   images/s and images/s per core;
3. per model (ViT-B/16, ViT-S/16 from the ImageNet recipes, bf16, batch 256), eager then compiled:
   images/s of vitwarm's image phase (the image kind's ``setup`` + ``train_phase``) against the plain timm + torch
   loop of benchmarks/e2e.py on the same in-memory device batches, alternating; model FLOP utilisation
   from the budget module's FLOP count and the device's peak; sequences/s of the warm-up phase at the
   same batch and the ratio warm-up step / image step; peak GPU memory; and, once, that the EMA of an
   ``train.ema_decay > 0`` run lives on the GPU after real steps.

``--cpu-smoke`` runs every section on the CPU with a 32 px model in fp32, a few steps and tiny images, to
prove the paths work (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import timm
import torch
from accelerate import Accelerator

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks
from vitwarm.config import AugConfig  # noqa: E402
from vitwarm.data import make_train_loader, write_folder_shards  # noqa: E402
from vitwarm.run.checkpoints import RunState  # noqa: E402
from vitwarm.run.phases import KINDS  # noqa: E402
from vitwarm.run.plan import vit_flops_per_sample  # noqa: E402
from vitwarm.run.precision import accelerate_precision  # noqa: E402

import data as data_bench  # noqa: E402
import e2e  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's H100 and H200 datasheets; the first
# name found in torch.cuda.get_device_name() counts, so the more specific names come first.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4))
DEIT_AUG = AugConfig(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25, color_jitter=0.4)

GPU = dict(models=(("ViT-B/16", "recipes/imagenet/vit_base_kdyck.yaml"),
                   ("ViT-S/16", "recipes/imagenet/vit_small_kdyck.yaml")),
           overrides=(), batch=256, steps=20, warm_steps=3, rounds={"eager": 3, "compiled": 1},
           jpegs=2048, data_px=224, data_batch=32, data_batches=2, precision="bf16")
SMOKE = dict(models=(("pico 32px", "recipes/fmnist_demo.yaml"),),
             overrides=("model.in_chans=3",), batch=8, steps=2, warm_steps=2, rounds={"eager": 1, "compiled": 1},
             jpegs=48, data_px=64, data_batch=4, data_batches=1, precision="fp32")  # CPU bf16 compiles slowly


class Budget:
    """Wall-clock budget of the whole check; a section runs only if its estimate still fits."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def section(results: dict, key: str, budget: Budget, estimate_s: float, fn, out: Path) -> None:
    """Run ``fn() -> dict`` into ``results[key]``, or record why not; an error is recorded, not raised.

    The JSON and the table are rewritten after every section, so a check stopped from outside keeps what it
    measured so far."""
    if estimate_s > 0 and budget.left() < estimate_s:
        results[key] = {"skipped": f"needs ~{estimate_s:.0f} s, {max(budget.left(), 0):.0f} s left"}
    else:
        started = time.monotonic()
        try:
            results[key] = fn()
        except Exception as err:  # one broken section must not cost the figures of the others
            traceback.print_exc()
            results[key] = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
        results[key]["seconds"] = round(time.monotonic() - started, 1)
    print(f"gpu_check: {key}: {json.dumps(results[key])}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    (out / "gpu_check.md").write_text(markdown(results))


def environment(accelerator: Accelerator) -> dict:
    device = accelerator.device
    return {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "cpu_cores": os.cpu_count()}


def peak_tflops(device_name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


def write_shards(root: Path, jpegs: int, workers: int) -> Path:
    """Synthetic ImageNet-like JPEGs (300-500 px) in 1000 classes, as shards: at least 2 per loader worker."""
    tree = data_bench.write_jpeg_set(root / "jpeg", jpegs, num_classes=1000)
    # A few held-out images, so evaluation reads shards of its own (vitwarm refuses to evaluate on training shards).
    held = data_bench.write_jpeg_set(root / "held", 2 * workers, num_classes=1000, seed=1)
    (held / "train").rename(tree / "val")
    return write_folder_shards(tree, root / "shards", name="synthetic", shard_size=max(1, jpegs // (2 * workers)),
                               progress=False)


def data_pipeline(shards: Path, px: int, batch: int, batches_per_worker: int) -> dict:
    workers = os.cpu_count()
    loader = make_train_loader(shards, batch_size=batch, num_workers=workers, img_size=px, in_chans=3,
                               aug=asdict(DEIT_AUG))
    rate = data_bench.timed(loader.epoch(0), warmup=workers, measure=batches_per_worker * workers)
    return {"img_size": px, "workers": workers, "images_per_s": rate, "images_per_s_per_core": rate / workers}


def device_batches(bench: e2e.Bench, batch: int) -> list:
    """One in-memory batch on the device: the model's speed, not the data path's (section 2 measures that)."""
    size = bench.img_size
    images = torch.randn(batch, 3, size, size, device=bench.device)
    labels = torch.randint(0, bench.info.num_classes, (batch,), device=bench.device)
    return [(images, labels)]


def model_speed(bench: e2e.Bench, plan: dict, rounds: int, peak: float | None) -> dict:
    cuda = bench.device.type == "cuda"
    batches = device_batches(bench, plan["batch"])
    memory = []

    def ours():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        rate = bench.vitwarm("image", plan["steps"], plan["warm_steps"], batches)
        memory.append(torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
        return rate

    image = e2e.alternate(lambda: bench.plain_image(plan["steps"], plan["warm_steps"], batches), ours, rounds)
    warm = bench.vitwarm("warmup", plan["steps"], plan["warm_steps"])
    train_flops = 3 * vit_flops_per_sample(bench.probe, bench.probe.patch_embed.num_patches)  # fwd + bwd
    return {"plain_img_s": image["plain_per_s"], "vitwarm_img_s": image["vitwarm_per_s"], "ratio": image["ratio"],
            "ratio_range": [image["ratio_min"], image["ratio_max"]], "rounds": rounds,
            "mfu": image["vitwarm_per_s"] * train_flops / (peak * 1e12) if peak else None,
            "warmup_seq_s": warm, "warmup_step_over_image_step": image["vitwarm_per_s"] / warm,
            "peak_memory_gib": max(memory) if cuda else None, "batch": plan["batch"]}


def ema_on_device(bench: e2e.Bench, plan: dict) -> dict:
    """Two real image steps with ``bench``'s config, which has train.ema_decay > 0: the average must live on
    the training device and stay finite."""
    cfg = bench.cfg
    phase = replace(bench.phases["image"], steps=2)
    run = KINDS["image"].setup(cfg, phase, bench.accelerator, bench.images, start_step=0)
    run.batches = iter(device_batches(bench, plan["batch"]) * 2)
    e2e.loop_only(cfg, phase, run, RunState(phase="image", model_name=cfg.model.name), bench.accelerator, bench.images)
    devices = {p.device.type for p in run.ema.module.parameters()}  # "cuda", not "cuda:0" vs "cuda"
    finite = all(p.isfinite().all().item() for p in run.ema.module.parameters())
    if devices != {bench.device.type} or not finite:
        raise RuntimeError(f"EMA on {devices} (finite: {finite}), training on {bench.device}")
    return {"ema_device": devices.pop(), "finite": finite}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--cpu-smoke", action="store_true", help="every path on the CPU, tiny sizes, in seconds")
    parser.add_argument("--budget-s", type=float, default=400,
                        help="wall-clock budget of the sections (seconds); imports and setup come on top")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak (default: known H100/H200 figures; 1 in --cpu-smoke)")
    args = parser.parse_args()
    plan = SMOKE if args.cpu_smoke else GPU
    if not args.cpu_smoke and not torch.cuda.is_available():
        sys.exit("gpu_check: error: no CUDA device visible to torch "
                 f"{torch.__version__}; use --cpu-smoke to test the script on a CPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget_s)
    accelerator = Accelerator(cpu=args.cpu_smoke, mixed_precision=accelerate_precision(plan["precision"]))
    results = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "plan": {k: str(v) for k, v in plan.items()}}
    section(results, "environment", budget, 0, lambda: environment(accelerator), out)
    peak = peak_tflops(results["environment"].get("device", ""), args.peak_tflops or (1.0 if args.cpu_smoke else None))
    results["peak_tflops"] = peak

    with tempfile.TemporaryDirectory() as tmp:
        # Enough for one untimed and data_batches timed batches per worker, and one to spare.
        jpegs = max(plan["jpegs"], plan["data_batch"] * os.cpu_count() * (plan["data_batches"] + 2))
        shards = write_shards(Path(tmp), jpegs, os.cpu_count())
        section(results, "data", budget, 30,
                lambda: data_pipeline(shards, plan["data_px"], plan["data_batch"], plan["data_batches"]), out)
        common = [f"train.batch_size={plan['batch']}", f"warmup.batch_size={plan['batch']}", "train.grad_accum=1",
                  "warmup.grad_accum=1", f"precision={plan['precision']}",
                  "data.test_split=null", *plan["overrides"]]

        def bench(recipe: str, key: str, overrides: list[str]) -> e2e.Bench:
            run_dir = Path(tmp) / key.replace("/", "_").replace(" ", "_")
            cfg = e2e.bench_config(str(e2e.ROOT / recipe), str(shards), run_dir, [*common, *overrides])
            run_dir.mkdir()
            return e2e.Bench(cfg, accelerator)

        smallest = plan["models"][-1][1]
        section(results, "ema", budget, 20,
                lambda: ema_on_device(bench(smallest, "ema", ["train.ema_decay=0.999"]), plan), out)
        for mode, estimate in (("eager", 60), ("compiled", 150)):
            for label, recipe in plan["models"]:
                key = f"{label} {mode}"

                def measure(recipe=recipe, mode=mode, key=key):
                    result = model_speed(bench(recipe, key, [f"train.compile={mode == 'compiled'}"]), plan,
                                         plan["rounds"][mode], peak)
                    gc.collect()  # the previous model's memory, before the next one is built
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    return result

                section(results, key, budget, estimate, measure, out)
    print((out / "gpu_check.md").read_text())


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [f"{env.get('device')} · torch {env.get('torch')} · CUDA {env.get('cuda')} · Python {env.get('python')} "
             f"· {env.get('cpu_cores')} CPU cores · peak {fmt(results.get('peak_tflops'), 'g')} TFLOP/s bf16 · "
             f"mode {results['mode']}", "",
             "| model | mode | plain img/s | vitwarm img/s | ratio (range) | MFU | warm-up seq/s | warm-up step / "
             "image step | peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if not key.endswith((" eager", " compiled")):
            continue
        label, mode = key.rsplit(" ", 1)
        if "plain_img_s" not in r:
            lines.append(f"| {label} | {mode} | {r.get('skipped') or r.get('error')} |||||||")
            continue
        lo, hi = r["ratio_range"]
        lines.append(f"| {label} | {mode} | {r['plain_img_s']:.0f} | {r['vitwarm_img_s']:.0f} | {r['ratio']:.3f} "
                     f"({lo:.3f}-{hi:.3f}) | {fmt(r['mfu'] and 100 * r['mfu'], '.1f')}% | {r['warmup_seq_s']:.0f} | "
                     f"{r['warmup_step_over_image_step']:.2f} | {fmt(r['peak_memory_gib'], '.1f')} |")
    d = results.get("data", {})
    if "images_per_s" in d:
        lines += ["", f"data pipeline, {d['img_size']} px, DeiT augmentation, {d['workers']} workers: "
                      f"{d['images_per_s']:.0f} img/s = {d['images_per_s_per_core']:.1f} img/s per core"]
    else:
        lines += ["", f"data pipeline: {d.get('skipped') or d.get('error')}"]
    ema = results.get("ema", {})
    lines.append(f"EMA after real steps: on {ema.get('ema_device', '?')}, finite {ema.get('finite', '?')}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
