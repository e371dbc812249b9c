"""Every GPU question in one run, in at most 8 minutes; writes OUT/gpu_check.json and OUT/gpu_check.md (and
OUT/trace.json). Start it through benchmarks/gpu_check.sh, which finds the imports first.

Sections, in priority order (each is skipped, and says so, when the time budget would not cover it):

1. environment: torch, CUDA, device, CPU cores, and ``nvidia-smi``'s facts (driver, memory, power limit,
   clocks, PCIe link);
2. data: vitwarm's training loader alone on synthetic ImageNet-sized JPEGs (500 x 375, about 110 KB) at
   224 px with the DeiT augmentation, with the recipe's workers (``data.num_workers=auto``): images/s and
   images/s per worker;
3. ViT-B/16 eager (recipes/imagenet/vit_base_kdyck.yaml, bf16, the recipe's per-GPU batch of 128): images/s
   of vitwarm's image phase fed by its real loader (uint8 batches, pinned, erased and mixed on the device)
   against the plain timm loop fed by the textbook webdataset + timm pipeline over the same shards with the
   same workers, alternating; model FLOP utilisation; the warm-up phase's sequences/s at the recipe's
   per-GPU warm-up batch (32) and peak GPU memory;
4. the CUDA host-sync test (tests/test_host_syncs.py, when pytest is importable);
5. a 10-step profiler trace of the image phase (OUT/trace.json, the top operations in the report);
6. that the EMA of a ``train.ema_decay > 0`` run lives on the GPU after real steps;
7. sharding: ViT-L/16 in bf16 under FSDP (``run.parallel=fsdp``) and under DDP over every GPU, activation
   checkpointing off and on: images/s and peak GPU memory per process (benchmarks/fsdp_memory.py, one
   ``accelerate launch`` per case). With one GPU FSDP shards nothing (vitwarm.run.fsdp), so only DDP runs and
   the report says so;
8. ViT-B/16 compiled (``train.compile=true``): vitwarm's images/s, and the recompiles and graph breaks
   TorchDynamo logs (``TORCH_LOGS=recompiles,graph_breaks``); last, because compiling costs the most.

``--cpu-smoke`` runs every section on the CPU with a 32 px model in fp32, a few steps and small images, to
prove the paths work (its figures mean nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
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
import fsdp_memory  # noqa: E402
from gpu_probes import compiled_speed, host_syncs, profile  # noqa: E402

from vitwarm.config import AugConfig  # noqa: E402
from vitwarm.data import make_train_loader, write_folder_shards  # noqa: E402
from vitwarm.data.workers import resolve_workers  # noqa: E402
from vitwarm.run.checkpoints import RunState  # noqa: E402
from vitwarm.run.phases import KINDS  # noqa: E402
from vitwarm.run.plan import vit_flops_per_sample  # noqa: E402
from vitwarm.run.precision import accelerate_precision  # noqa: E402

import data as data_bench  # noqa: E402
import e2e  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s from NVIDIA's H100 and H200 datasheets; the first
# name found in torch.cuda.get_device_name() counts, so the more specific names come first.
PEAK_BF16_TFLOPS = (("H200", 989.4), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.4))
DEIT_AUG = AugConfig(auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
SMI = "name,driver_version,memory.total,power.limit,clocks.max.sm,pcie.link.gen.current,pcie.link.width.current"

# The recipe's per-GPU batches on 8 GPUs: image 1024 / 8, warm-up 256 / 8.
GPU = dict(label="ViT-B/16", recipe="recipes/imagenet/vit_base_kdyck.yaml", overrides=(), batch=128,
           warmup_batch=32, steps=12, warm_steps=3, rounds=2, jpegs=1536, jpeg_size=(500, 375), data_px=224,
           precision="bf16")
SMOKE = dict(label="pico 32px", recipe="recipes/fmnist_demo.yaml", overrides=("model.in_chans=3",), batch=8,
             warmup_batch=8, steps=2, warm_steps=2, rounds=1, jpegs=64, jpeg_size=(96, 72), data_px=64,
             precision="fp32")  # CPU bf16 compiles slowly
# The sharding case: ViT-L/16 at 64 images per GPU and step (about 12 GiB of bf16 activations without
# checkpointing); the smoke run's pico model on 2 CPU processes, checkpointing on only (the same code path).
SHARDING = dict(model="vit_large_patch16_224", batch=64, steps=5, precision="bf16", device="cuda",
                checkpointing=(False, True))
SHARDING_SMOKE = dict(model="vitwarm_pico_patch4_32", batch=4, steps=2, precision="fp32", device="cpu",
                      checkpointing=(True,))


class Budget:
    """Wall-clock budget of the whole check; a section runs only if its estimate still fits."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def error_line(err: Exception) -> str:
    """One line for a section's error: its first line and, where the message goes on (a launch's stderr), its
    last line, which holds the root cause."""
    lines = [line for line in f"{type(err).__name__}: {err}".splitlines() if line.strip()]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1].strip()}"


def section(results: dict, key: str, budget: Budget, estimate_s: float, fn, out: Path) -> None:
    """Run ``fn() -> dict`` into ``results[key]``, or record why not; an error is recorded, not raised.

    The JSON and the report are rewritten after every section, so a check stopped from outside keeps what
    it measured so far."""
    if estimate_s > 0 and budget.left() < estimate_s:
        results[key] = {"skipped": f"needs ~{estimate_s:.0f} s, {max(budget.left(), 0):.0f} s left"}
    else:
        started = time.monotonic()
        try:
            results[key] = fn()
        except Exception as err:  # one broken section must not cost the figures of the others
            traceback.print_exc()
            results[key] = {"error": error_line(err)}
        results[key]["seconds"] = round(time.monotonic() - started, 1)
    print(f"gpu_check: {key}: {json.dumps(results[key])}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))
    (out / "gpu_check.md").write_text(markdown(results))


def environment(accelerator: Accelerator) -> dict:
    device = accelerator.device
    smi = shutil.which("nvidia-smi")
    facts = (subprocess.run([smi, f"--query-gpu={SMI}", "--format=csv,noheader"], capture_output=True, text=True,
                            timeout=30).stdout.strip() if smi else "nvidia-smi not found")
    return {"torch": torch.__version__, "timm": timm.__version__, "python": platform.python_version(),
            "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "cpu_cores": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "nvidia_smi": dict(zip(SMI.split(","), (v.strip() for v in facts.split(",")))) if smi else facts}


def peak_tflops(device_name: str, given: float | None) -> float | None:
    if given:
        return given
    return next((peak for name, peak in PEAK_BF16_TFLOPS if name in device_name), None)


def write_shards(root: Path, plan: dict, workers: int) -> Path:
    """Synthetic JPEGs of ImageNet's typical size in 1000 classes, as shards: at least 2 per loader worker."""
    size, jpegs = plan["jpeg_size"], plan["jpegs"]
    tree = data_bench.write_jpeg_set(root / "jpeg", jpegs, num_classes=1000, size=size, noise=25)
    # A few held-out images, so evaluation reads shards of its own (vitwarm refuses to evaluate on training shards).
    held = data_bench.write_jpeg_set(root / "held", 2 * workers, num_classes=1000, seed=1, size=size, noise=25)
    (held / "train").rename(tree / "val")
    return write_folder_shards(tree, root / "shards", name="synthetic", shard_size=max(1, jpegs // (2 * workers)),
                               progress=False)


def data_pipeline(shards: Path, plan: dict, workers: int) -> dict:
    loader = make_train_loader(shards, batch_size=plan["batch"], num_workers=workers, img_size=plan["data_px"],
                               in_chans=3, aug=asdict(DEIT_AUG))
    rate = data_bench.timed(loader.epochs(0), warmup=workers, measure=2 * workers)
    return {"img_size": plan["data_px"], "workers": workers, "images_per_s": rate,
            "images_per_s_per_worker": rate / workers}


def model_speed(bench: e2e.Bench, plan: dict, peak: float | None) -> dict:
    """Both sides fed by their real loaders over the same shards, with the same workers."""
    cuda = bench.device.type == "cuda"
    memory = []

    def ours():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        rate = bench.vitwarm("image", plan["steps"], plan["warm_steps"])
        memory.append(torch.cuda.max_memory_allocated() / 2**30 if cuda else None)
        return rate

    image = e2e.alternate(lambda: bench.plain_image(plan["steps"], plan["warm_steps"]), ours, plan["rounds"])
    warm = bench.vitwarm("warmup", plan["steps"], plan["warm_steps"])
    return {"plain_img_s": image["plain_per_s"], "vitwarm_img_s": image["vitwarm_per_s"], "ratio": image["ratio"],
            "ratio_range": [image["ratio_min"], image["ratio_max"]], "rounds": plan["rounds"],
            "mfu": mfu(bench, image["vitwarm_per_s"], peak), "warmup_seq_s": warm,
            "warmup_batch": bench.phases["warmup"].micro_batch, "batch": plan["batch"],
            "workers": bench.images.train[0].num_workers, "peak_memory_gib": max(memory) if cuda else None}


def mfu(bench: e2e.Bench, images_per_s: float, peak: float | None) -> float | None:
    train_flops = 3 * vit_flops_per_sample(bench.probe, bench.probe.patch_embed.num_patches)  # fwd + bwd
    return images_per_s * train_flops / (peak * 1e12) if peak else None


def ema_on_device(bench: e2e.Bench, plan: dict) -> dict:
    """Two real image steps with ``bench``'s config, which has train.ema_decay > 0: the average must live on
    the training device and stay finite."""
    cfg = bench.cfg
    phase = replace(bench.phases["image"], steps=2)
    run = KINDS["image"].setup(cfg, phase, bench.accelerator, bench.images, start_step=0)
    e2e.loop_only(cfg, phase, run, RunState(phase="image", model_name=cfg.model.name), bench.accelerator, bench.images)
    devices = {p.device.type for p in run.ema.module.parameters()}  # "cuda", not "cuda:0" vs "cuda"
    finite = all(p.isfinite().all().item() for p in run.ema.module.parameters())
    if devices != {bench.device.type} or not finite:
        raise RuntimeError(f"EMA on {devices} (finite: {finite}), training on {bench.device}")
    return {"ema_device": devices.pop(), "finite": finite}


def sharding(case: dict) -> dict:
    """DDP and FSDP (FSDP only over 2 or more processes), each with activation checkpointing off and on:
    fsdp_memory.compare's figures per case (bytes, seconds, images/s over all processes)."""
    processes = torch.cuda.device_count() if case["device"] == "cuda" else 2
    modes = ("ddp", "fsdp") if processes > 1 else ("ddp",)
    found = {"model": case["model"], "batch_per_process": case["batch"], "processes": processes,
             "precision": case["precision"]}
    for checkpointing in case["checkpointing"]:
        args = argparse.Namespace(model=case["model"], batch=case["batch"], steps=case["steps"],
                                  grad_checkpointing=checkpointing, device=case["device"], precision=case["precision"])
        found[f"checkpointing {'on' if checkpointing else 'off'}"] = fsdp_memory.compare(args, modes)
    if len(modes) == 1:
        found["fsdp"] = "not run: one GPU, and FSDP over one process shards nothing"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and trace.json")
    parser.add_argument("--cpu-smoke", action="store_true", help="every path on the CPU, tiny sizes, in seconds")
    parser.add_argument("--budget-s", type=float, default=370,
                        help="wall-clock budget of writing the JPEGs and the sections (seconds); imports come on top")
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
    workers = resolve_workers("auto", shards=10**6, world_size=1)[0]  # the recipe's data.num_workers on one GPU
    label = plan["label"]

    with tempfile.TemporaryDirectory() as tmp:
        shards = write_shards(Path(tmp), plan, workers)
        section(results, "data", budget, 30, lambda: data_pipeline(shards, plan, workers), out)
        common = [f"train.batch_size={plan['batch']}", f"warmup.batch_size={plan['warmup_batch']}",
                  "train.grad_accum=1", "warmup.grad_accum=1", f"precision={plan['precision']}",
                  "data.test_split=null", *plan["overrides"]]

        def bench(key: str, *overrides: str) -> e2e.Bench:
            run_dir = Path(tmp) / key.replace("/", "_").replace(" ", "_")
            cfg = e2e.bench_config(str(e2e.ROOT / plan["recipe"]), str(shards), run_dir, [*common, *overrides])
            run_dir.mkdir()
            return e2e.Bench(cfg, accelerator)

        def fresh(measure):
            result = measure()
            gc.collect()  # the previous model's memory, before the next one is built
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return result

        section(results, f"{label} eager", budget, 90, lambda: fresh(lambda: model_speed(bench("eager"), plan, peak)),
                out)
        section(results, "host_syncs", budget, 40 if not args.cpu_smoke else 0,
                lambda: {"skipped": "CUDA only"} if args.cpu_smoke else host_syncs(sys.executable), out)
        section(results, "profile", budget, 30, lambda: fresh(lambda: profile(bench("profile"), out)), out)
        section(results, "ema", budget, 20, lambda: fresh(lambda: ema_on_device(bench("ema", "train.ema_decay=0.999"),
                                                                                plan)), out)
        section(results, "sharding", budget, 150, lambda: sharding(SHARDING_SMOKE if args.cpu_smoke else SHARDING),
                out)
        section(results, f"{label} compiled", budget, 100,
                lambda: fresh(lambda: compiled_speed(bench("compiled", "train.compile=true"), plan, peak, mfu)), out)
    print((out / "gpu_check.md").read_text())


def fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    env, plan = results["environment"], results["plan"]
    lines = ["# GPU check", "", f"{env.get('device')} · torch {env.get('torch')} · CUDA {env.get('cuda')} · Python "
             f"{env.get('python')} · {env.get('cpu_cores')} CPU cores ({env.get('usable_cpus')} usable) · peak "
             f"{fmt(results.get('peak_tflops'), 'g')} TFLOP/s bf16 · mode {results['mode']}", "",
             f"nvidia-smi: {env.get('nvidia_smi')}", "",
             "| model | mode | fed by | plain img/s | vitwarm img/s | ratio (range) | MFU | warm-up seq/s (batch) | "
             "peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        if not key.endswith((" eager", " compiled")):
            continue
        label, mode = key.rsplit(" ", 1)
        if "vitwarm_img_s" not in r:
            lines.append(f"| {label} | {mode} | {r.get('skipped') or r.get('error')} |||||||")
        elif mode == "eager":
            lo, hi = r["ratio_range"]
            lines.append(f"| {label} | eager | real loaders, {r['workers']} workers, batch {r['batch']} | "
                         f"{r['plain_img_s']:.0f} | {r['vitwarm_img_s']:.0f} | {r['ratio']:.3f} ({lo:.3f}-{hi:.3f}) | "
                         f"{fmt(r['mfu'] and 100 * r['mfu'], '.1f')}% | {r['warmup_seq_s']:.0f} "
                         f"({r['warmup_batch']}) | {fmt(r['peak_memory_gib'], '.1f')} |")
        else:
            lines.append(f"| {label} | compiled | vitwarm's loader | – | {r['vitwarm_img_s']:.0f} | – | "
                         f"{fmt(r['mfu'] and 100 * r['mfu'], '.1f')}% | – | – |")
            lines += ["", f"TorchDynamo, compiled image phase: {r['recompiles']} recompiles, "
                      f"{r['graph_breaks']} graph breaks"]
    d = results.get("data", {})
    lines += ["", f"data pipeline alone, {plan['jpeg_size']} JPEGs, "
                  + (f"{d['img_size']} px, DeiT augmentation, {d['workers']} workers (data.num_workers=auto): "
                     f"{d['images_per_s']:.0f} img/s = {d['images_per_s_per_worker']:.1f} img/s per worker"
                     if "images_per_s" in d else str(d.get("skipped") or d.get("error")))]
    syncs, prof, ema = results.get("host_syncs", {}), results.get("profile", {}), results.get("ema", {})
    lines.append(f"host-sync test: {syncs.get('summary') or syncs.get('skipped') or syncs.get('error')}")
    if "top" in prof:
        lines += ["", "10-step profile (trace.json), top operations by self time (ms):", ""]
        lines += [f"- {name}: {ms}" for name, ms in prof["top"]]
    else:
        lines.append(f"profile: {prof.get('skipped') or prof.get('error')}")
    lines.append(f"EMA after real steps: on {ema.get('ema_device', '?')}, finite {ema.get('finite', '?')}")
    lines += sharding_lines(results.get("sharding", {}))
    return "\n".join(lines) + "\n"


def sharding_lines(found: dict) -> list[str]:
    if "processes" not in found:
        return ["", f"sharding: {found.get('skipped') or found.get('error')}"]
    gib = 2 ** 30
    lines = ["", f"sharding, {found['model']}, {found['batch_per_process']} images per process, "
                 f"{found['processes']} process(es), {found['precision']}:", "",
             "| mode | activation checkpointing | img/s (all processes) | step (s) | peak GiB per process |",
             "|---|---|---|---|---|"]
    for key, modes in found.items():
        if key.startswith("checkpointing "):
            for mode in ("ddp", "fsdp"):
                if mode in modes:
                    r = modes[mode]
                    lines.append(f"| {mode} | {key.split()[1]} | {r['images_per_s']:.1f} | {r['step_s']:.3f} | "
                                 f"{r['training'] / gib:.2f} |")
    if isinstance(found.get("fsdp"), str):
        lines += ["", f"FSDP {found['fsdp']}"]
    return lines


if __name__ == "__main__":
    main()
