"""The lines a finished run prints last, read from its summary.json (vitwarm.run.rundir.Summary): the accuracy,
what the warm-up cost and why it ended, whether it learned, and where the exports are with the one line that
loads the model in stock timm."""

from __future__ import annotations

from pathlib import Path

from .rundir import CURVES, MODEL_EXPORT, SUMMARY, WARMUP_EXPORT, Summary


def outcome_lines(summary: Summary, run_dir: str | Path) -> list[str]:
    run_dir = Path(run_dir)
    test = f"; {summary.identity.get('data.test_split', 'test')} top-1 {summary.test_top1:.2f}%" \
        if summary.test_top1 is not None else ""
    ema = f"; EMA {summary.ema_top1:.2f}%" if summary.ema_top1 is not None else ""
    warm = summary.phases.get("warmup")
    exports = f"{run_dir / MODEL_EXPORT}/ (the final model)"
    if warm:
        exports += f", {run_dir / WARMUP_EXPORT}/ (the warmed-up backbone, no head)"
    return [f"vitwarm: done. {summary.split} top-1 {summary.top1:.2f}% (top-5 {summary.top5:.2f}%){test}{ema}",
            f"  warm-up: {warmup_cost(summary)}",
            *([f"  {learned(summary)}"] if warm else []),
            f"  exports: {exports}; curves {run_dir / CURVES}; numbers {run_dir / SUMMARY}",
            f'  in stock timm: timm.create_model("local-dir:{run_dir / MODEL_EXPORT}", pretrained=True)']


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
