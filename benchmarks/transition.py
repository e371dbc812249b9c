"""Steps and FLOPs to the warm-up's learning transition and to its plateau, over a small grid of settings.

Each cell runs a warm-up only (no image phase), built by the trainer's own warm-up kind (model, optimizer,
warm-up-stable-decay schedule, token stream, probe and stop rule: vitwarm.run.phases.warmup), for at most
``--max-steps`` steps, with the probe every ``warmup.probe.every_steps``. It stops at the plateau decision.
Per cell it reports the step (and training FLOPs, 3 x forward) at which the probe first rose
``warmup.stop_rise`` points above its step-0 level (the transition) and at which ``warmup.stop=plateau``
decided to stop (the plateau), with the probe accuracy there. Output: a markdown table and a JSON file
of every cell with its probe curve, and a plot of the curves against FLOPs.

    python benchmarks/transition.py --config recipes/fmnist_repro.yaml --batch 8 16 32 --seq-len 16 32 64 \\
        --seeds 0 1 --out runs/transition

Each row records the machine it ran on (summary.json's ``environment``). ``--collect DIR`` runs nothing: it
gathers the rows of every ``transition.json`` under DIR (cells run as separate processes, side by side) into
one table, JSON and plot in ``--out``; with ``--cheapest N`` it also prints the N settings with the fewest
FLOPs to the plateau (mean over seeds) whose every seed reached a plateau, one per line as
``batch seq_len lr k model``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from vitwarm.atomic import atomic_write_text
from vitwarm.config import load_config
from vitwarm.run.checkpoints import RunState
from vitwarm.run.phases import KINDS
from vitwarm.run.plan import Phase, to_steps, vit_flops_per_sample
from vitwarm.run.plateau import transition_index
from vitwarm.run.rundir import environment
from vitwarm.seeds import seed_step


def warmup_phase(cfg, max_steps: int) -> Phase:
    """A warm-up of ``max_steps`` steps of the config's batch, one process, probed at its own cadence."""
    batch = cfg.warmup.batch_size
    return Phase(name="warmup", kind="warmup", init="fresh", final=False, steps=max_steps, global_batch=batch,
                 micro_batch=batch, grad_accum=1,
                 lr_warmup_steps=to_steps(fraction=cfg.warmup.lr_warmup_fraction, of_steps=max_steps), eval_every=0,
                 log_every=1, save_every=max_steps, grad_clip=cfg.warmup.grad_clip, flops=0.0)


def run_cell(cfg, max_steps: int, accelerator: Accelerator) -> dict:
    """One warm-up until the plateau decision or ``max_steps``; its transition, plateau and probe curve."""
    phase = warmup_phase(cfg, max_steps)
    training = KINDS["warmup"].setup(cfg, phase, accelerator, None, 0)
    model, watch, state = training.model, training.watch, RunState(phase="warmup")
    seq_len = watch.batches[0]["tokens"].shape[1]
    seq_flops = 3 * vit_flops_per_sample(model.vit, seq_len)  # per training sequence
    watch.begin(model, state)
    started = time.perf_counter()
    while state.step < max_steps and state.stop_step is None:
        batch = next(training.batches)
        seed_step(cfg.seed, phase.name, state.step, 0)
        training.scheduler.step_update(state.step)
        loss, _ = training.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), phase.grad_clip)
        training.optimizer.step()
        training.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        if watch.due(state.step, 1, done=state.step == max_steps):
            watch.probe(model, state)
    accs = [acc for _, acc in state.probe]
    rise = transition_index(accs, cfg.warmup.stop_rise)
    transition = None if rise is None else state.probe[rise][0]
    flops_per_step = seq_flops * phase.global_batch
    return {"seq_len": seq_len, "transition_step": transition, "plateau_step": state.stop_step,
            "transition_flops": None if transition is None else transition * flops_per_step,
            "plateau_flops": None if state.stop_step is None else state.stop_step * flops_per_step,
            "start_acc": accs[0], "plateau_acc": accs[-1] if state.stop_step is not None else None,
            "last_acc": accs[-1], "steps_run": state.step, "wall_s": time.perf_counter() - started,
            "curve": state.probe, "flops_per_step": flops_per_step}


def setting(row: dict) -> tuple:
    """The warm-up setting of a row, without its seed."""
    return row["batch"], row["seq_len"], row["lr"], row["k"], row.get("model", "")


def cheapest(rows: list[dict], n: int) -> list[tuple]:
    """The ``n`` settings with the fewest FLOPs to the plateau, mean over their seeds, among those whose every
    seed reached a plateau (so crossed the transition): the study's choice of a warm-up (docs/study2.md)."""
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault(setting(row), []).append(row)
    learned = {key: sum(r["plateau_flops"] for r in runs) / len(runs) for key, runs in cells.items()
               if all(r["plateau_step"] is not None for r in runs)}
    return sorted(learned, key=learned.get)[:n]


def collect(folder: Path) -> list[dict]:
    """The rows of every transition.json under ``folder``, by setting and seed; folders whose name starts with
    a dot (a scratch collection kept beside the cells) are not cells."""
    paths = [p for p in sorted(folder.rglob("transition.json"))
             if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    rows = [row for path in paths for row in json.loads(path.read_text())]
    return sorted(rows, key=lambda r: (setting(r)[-1], *setting(r)[:-1], r["seed"]))


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    header = ["batch", "seq_len", "lr", "k", "model", "seed", "probe start %", "transition step", "transition FLOPs",
              "plateau step", "plateau FLOPs", "probe at plateau %", "wall s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            str(r["batch"]), str(r["seq_len"]), f"{r['lr']:g}", str(r["k"]), r.get("model") or "image model",
            str(r["seed"]), fmt(r["start_acc"], ".1f"),
            fmt(r["transition_step"], "d"), fmt(r["transition_flops"], ".2e"),
            fmt(r["plateau_step"], "d") if r["plateau_step"] is not None else f">{r['steps_run']}",
            fmt(r["plateau_flops"], ".2e"), fmt(r["plateau_acc"], ".1f"), f"{r['wall_s']:.0f}"]) + " |")
    machines = {json.dumps(r.get("environment"), sort_keys=True) for r in rows}
    note = "" if len(machines) == 1 else f" The rows come from {len(machines)} different machines or versions."
    return "\n".join(lines) + f"\n\n'>N': no plateau within the cap of N steps; '-': not reached.{note}\n"


def plot(rows: list[dict], path: Path) -> None:
    """Probe curves against FLOPs: one colour per setting, seed 0 solid and the other seeds dashed."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from vitwarm.sweeps.plots import line_colours

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    palette = line_colours()
    colours = {key: palette[i % len(palette)] for i, key in enumerate(dict.fromkeys(setting(r) for r in rows))}
    for r in rows:
        steps, accs = zip(*r["curve"])
        label = f"b{r['batch']} L{r['seq_len']} lr{r['lr']:g} k{r['k']} {r.get('model') or ''} s{r['seed']}"
        ax.plot([s * r["flops_per_step"] for s in steps], accs, lw=1, color=colours[setting(r)],
                ls="-" if r["seed"] == 0 else "--", label=label)
    ax.set_xscale("symlog", linthresh=1e9)
    ax.set_xlabel("warm-up training FLOPs")
    ax.set_ylabel("probe masked-token accuracy (%)")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", default="recipes/fmnist_repro.yaml", help="recipe whose model and warm-up to use")
    parser.add_argument("--batch", type=int, nargs="+", default=[32], help="warm-up batch sizes")
    parser.add_argument("--seq-len", type=int, nargs="+", default=[0], help="warm-up sequence lengths (0: the grid)")
    parser.add_argument("--lr", type=float, nargs="+", default=[None], help="peak learning rates (default: recipe's)")
    parser.add_argument("--k", type=int, nargs="+", default=[None], help="bracket types k (default: recipe's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-steps", type=int, default=1500, help="the cap of each warm-up")
    parser.add_argument("--out", type=Path, default=Path("runs/transition"), help="folder of the table, JSON, plot")
    parser.add_argument("--collect", type=Path, metavar="DIR",
                        help="run nothing: one table of every transition.json under DIR, written to --out")
    parser.add_argument("--cheapest", type=int, default=0, metavar="N",
                        help="with --collect: print the N cheapest settings that reached a plateau in every seed")
    parser.add_argument("overrides", nargs="*", help="further key=value config overrides")
    args = parser.parse_args(argv)
    if args.cheapest and not args.collect:
        parser.error("--cheapest N reads collected rows: give --collect DIR too")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.collect:
        return write_outputs(collect(args.collect), args.out, cheapest_n=args.cheapest)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    rows = []
    for batch, seq_len, lr, k, seed in itertools.product(args.batch, args.seq_len, args.lr, args.k, args.seeds):
        overrides = [f"warmup.batch_size={batch}", f"warmup.seq_len={seq_len}", f"seed={seed}", "warmup.stop=plateau"]
        overrides += [f"warmup.lr={lr}"] if lr is not None else []
        overrides += [f"procedural.params.k={k}"] if k is not None else []
        cfg = load_config(args.config, overrides + ["warmup.num_workers=0", *args.overrides])
        row = {"batch": batch, "lr": cfg.warmup.lr, "k": cfg.procedural.params.get("k"),
               "model": core_name(cfg), "seed": seed} | run_cell(cfg, args.max_steps, accelerator)
        row["environment"] = environment(str(accelerator.device), 1)
        rows.append(row)
        print(f"batch {batch} seq_len {row['seq_len']} lr {row['lr']:g} k {row['k']} seed {seed}: transition at "
              f"{row['transition_step']}, plateau at {row['plateau_step']} ({row['wall_s']:.0f} s)", flush=True)
        atomic_write_text(args.out / "transition.json", json.dumps(rows, indent=1))  # whole, or absent: a finished cell
    return write_outputs(rows, args.out)


def core_name(cfg) -> str:
    """'' for a warm-up of the image model itself, else the warm-up model's kwargs (a grown core)."""
    w = cfg.warmup.model
    if not w.name and not w.kwargs:
        return ""
    kwargs = ",".join(f"{k}={v}" for k, v in sorted(w.kwargs.items()))
    return f"{w.name or cfg.model.name}({kwargs}{',shared_middle' if w.shared_middle else ''})"


def write_outputs(rows: list[dict], out: Path, cheapest_n: int = 0) -> int:
    atomic_write_text(out / "transition.json", json.dumps(rows, indent=1))
    (out / "transition.md").write_text(table(rows))
    plot(rows, out / "transition.png")
    print(table(rows))
    for batch, seq_len, lr, k, model in cheapest(rows, cheapest_n):
        print(batch, seq_len, lr, k, model or "-")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
