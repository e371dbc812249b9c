"""The lines a finished run prints last, read from its summary.json (vitwarm.run.rundir.Summary): the accuracy,
what the warm-up cost and why it ended, whether it learned, and where the exports are with the one line that
loads the model in stock timm."""

from __future__ import annotations

from pathlib import Path

from .rundir import CURVES, MODEL_EXPORT, SUMMARY, WARMUP_EXPORT, Summary


def headline(summary: Summary) -> str:
    """What the run gave, in a few words: its accuracies, or (a warm-up alone) its steps and export."""
    if summary.top1 is None:
        used = summary.phases["warmup"]
        probe = f", probe {summary.probe['last_acc']:.1f}%" if summary.probe else ""
        return (f"warm-up alone: {used['used_steps']} of {used['planned_steps']} steps{probe}, "
                f"~{used['used_flops']:.2e} FLOP; backbone in {WARMUP_EXPORT}/")
    test = f"; {summary.identity.get('data.test_split', 'test')} top-1 {summary.test_top1:.2f}%" \
        if summary.test_top1 is not None else ""
    ema = f"; EMA {summary.ema_top1:.2f}%" if summary.ema_top1 is not None else ""
    return f"{summary.split} top-1 {summary.top1:.2f}% (top-5 {summary.top5:.2f}%){test}{ema}"


def outcome_lines(summary: Summary, run_dir: str | Path) -> list[str]:
    """The headline, then what the warm-up cost, whether it learned, and where the exports are."""
    run_dir = Path(run_dir)
    warm = summary.phases.get("warmup")
    alone = summary.top1 is None  # `vitwarm warmup`: the backbone is the result
    exports = [] if alone else [f"{run_dir / MODEL_EXPORT}/ (the final model)"]
    if warm:
        exports.append(f"{run_dir / WARMUP_EXPORT}/ (the warmed-up backbone, no head)")
    load = (f'timm.create_model("local-dir:{run_dir / WARMUP_EXPORT}", pretrained=True, num_classes=N)' if alone
            else f'timm.create_model("local-dir:{run_dir / MODEL_EXPORT}", pretrained=True)')
    return [f"vitwarm: done. {headline(summary)}",
            f"  warm-up: {warmup_cost(summary)}",
            *([f"  {learned(summary)}"] if warm else []),
            f"  exports: {', '.join(exports)}; curves {run_dir / CURVES}; numbers {run_dir / SUMMARY}",
            f"  in stock timm: {load}"]


def warmup_cost(summary: Summary) -> str:
    """The warm-up's used and planned FLOPs, its share of the image phase's, and why it ended."""
    warm, image = summary.phases.get("warmup"), summary.phases.get("image")
    if not warm:
        return "none in this run"
    share = f" = {100 * warm['used_flops'] / image['used_flops']:.1f}% of the image phase's " \
        f"{image['used_flops']:.2e}" if image else ""
    cost = f"{warm['used_flops']:.2e} FLOPs used of {warm['planned_flops']:.2e} planned{share}"
    stop_step, used, planned = summary.probe.get("stop_step"), warm["used_steps"], warm["planned_steps"]
    if stop_step is not None:
        return f"{cost}; stopped at its plateau at step {stop_step}, ended at step {used} after the LR cool-down"
    if summary.probe.get("stop") == "plateau":
        return f"{cost}; no plateau before the cap: ran its planned {planned} steps (budget)"
    return f"{cost}; ran its planned {planned} steps (budget)"


def learned(summary: Summary) -> str:
    """Whether the warm-up learned its task: the probe's start and best, and the transition step."""
    p = summary.probe
    if not p:
        return "learned: not known (the probe was off: warmup.probe.size=0)"
    curve = f"probe {p['start_acc']:.1f}% -> {p['best_acc']:.1f}% (best, at step {p['best_step']})"
    if p["transition_step"] is None:
        rise = summary.identity.get("warmup.stop_rise")
        return f"did not learn: {curve}; no transition (never {rise} points above its start)"
    return f"learned: {curve}; transition at step {p['transition_step']}"
