"""RUN_DIR/curves.png: the picture of what a run did, drawn from its metrics.jsonl.

Top row, the warm-up: its training loss (masked-token cross-entropy) and its held-out probe accuracy against
its steps, with the transition (the probe ``warmup.stop_rise`` points above its step-0 value) and the
plateau stop's decision marked. Bottom row, the image phase: its training loss and its validation top-1
against its steps. A run without a warm-up leaves the top row empty, saying so.

The main process redraws it at every evaluation and at the end, each time from the whole metrics.jsonl and
written atomically (vitwarm.atomic), so a run that is stopped or fails keeps the figure of its last
evaluation. matplotlib draws it (a dependency of vitwarm); where it is missing, the run says so once and
goes on without the figure.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write
from .plateau import transition_index
from .rundir import CURVES, METRICS, read_records

Series = list[tuple[int, float]]  # (step within the phase, value)


@dataclass
class Curves:
    """The series curves.png plots, each in the order of metrics.jsonl."""

    val_split: str
    """The split of ``val_top1`` (data.val_split)."""
    warmup_loss: Series = field(default_factory=list)
    probe_acc: Series = field(default_factory=list)
    """Probe accuracy, percent."""
    image_loss: Series = field(default_factory=list)
    val_top1: Series = field(default_factory=list)
    """Validation top-1, percent (the evaluations during the image phase and the final one)."""
    transition_step: int | None = None
    stop_step: int | None = None
    """Warm-up step at which the plateau stop decided (None: no decision; the warm-up ran its planned length)."""


def curves(records: list[dict], val_split: str, rise: float) -> Curves:
    """The plotted series of a run's metrics records; ``rise``: warmup.stop_rise, which defines the transition."""
    c = Curves(val_split)
    for r in records:
        phase, event = r.get("phase"), r.get("event")
        if event is None and "loss" in r:  # a training log record
            (c.warmup_loss if phase == "warmup" else c.image_loss).append((r["step"], r["loss"]))
        elif event == "probe":
            c.probe_acc.append((r["step"], r["probe_acc"]))
        elif event == "eval" and phase == "image" and r.get("split") == val_split:
            c.val_top1.append((r["step"], r["top1"]))
        elif event == "warmup_stop":
            c.stop_step = r["step"]
    index = transition_index([acc for _, acc in c.probe_acc], rise)
    c.transition_step = None if index is None else c.probe_acc[index][0]
    return c


@functools.cache  # once per process
def _warn_no_matplotlib() -> None:
    print("vitwarm: warning: matplotlib is not installed, so this run draws no curves.png (pip install matplotlib)",
          flush=True)


def write_curves(run_dir: str | Path, val_split: str, rise: float) -> Path | None:
    """RUN_DIR/curves.png from RUN_DIR/metrics.jsonl (``curves``, ``draw_curves``)."""
    run_dir = Path(run_dir)
    return draw_curves(curves(read_records(run_dir / METRICS)[0], val_split, rise), run_dir / CURVES)


def draw_curves(c: Curves, path: str | Path) -> Path | None:
    """Draw ``c`` into the PNG ``path``, atomically; None (after one warning per process) where matplotlib
    is not installed."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend state; PNGs print through Agg
    except ImportError:
        _warn_no_matplotlib()
        return None
    fig = Figure(figsize=(10, 7), layout="constrained")
    (w_loss, w_probe), (i_loss, i_top1) = fig.subplots(2, 2)
    _line(w_loss, c.warmup_loss, "warm-up: training loss", "loss")
    _line(w_probe, c.probe_acc, "warm-up: probe accuracy", "masked-token accuracy (%)")
    for ax in (w_loss, w_probe):
        if c.transition_step is not None:
            ax.axvline(c.transition_step, color="tab:green", linestyle="--",
                       label=f"transition (step {c.transition_step})")
        if c.stop_step is not None:
            ax.axvline(c.stop_step, color="tab:red", linestyle="--", label=f"plateau stop (step {c.stop_step})")
        if c.transition_step is not None or c.stop_step is not None:
            ax.legend(loc="best", fontsize="small")
        if not c.warmup_loss:
            ax.text(0.5, 0.5, "no warm-up", transform=ax.transAxes, ha="center", va="center")
    _line(i_loss, c.image_loss, "image phase: training loss", "loss")
    _line(i_top1, c.val_top1, f"image phase: {c.val_split} top-1", "top-1 (%)", marker="o")
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


def _line(ax, series: Series, title: str, ylabel: str, **style) -> None:
    if series:
        ax.plot([s for s, _ in series], [v for _, v in series], **style)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.grid(alpha=0.3)
