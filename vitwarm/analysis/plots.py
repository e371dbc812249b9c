"""The report's figures, drawn on matplotlib ``Figure`` objects (no pyplot, so no global backend state).

(a) final metric vs warm-up fraction, (b) evaluation curves vs image samples seen, (c) metric vs image samples
for the baseline and the warm-up cells with the data-equivalence construction drawn in, (d) the gain of each
warm-up against its share of the compute, beside the compute-matched line (vitwarm.analysis.share), (e) a
study's lines against training-set size (vitwarm.analysis.sizes).
"""

from __future__ import annotations

from pathlib import Path

try:
    from matplotlib import colormaps
    from matplotlib.figure import Figure
except ImportError as err:
    raise ImportError("the sweep report draws its plots with matplotlib: pip install 'vitwarm[report]'") from err

from vitwarm.analysis.results import FRACTION_KEY, Cell, split_keys
from vitwarm.sweeps.names import short_value


def line_colours() -> list[tuple]:
    """20 line colours: tab10's (matplotlib's default cycle, which repeats after 10 and gave a study's 11th
    cell the 1st one's colour), then their light shades (tab20's odd entries)."""
    tab20 = colormaps["tab20"].colors
    return [*tab20[0::2], *tab20[1::2]]


def line_axes(fig: Figure):
    """The figure's one axes, cycling through ``line_colours()``."""
    ax = fig.subplots()
    ax.set_prop_cycle(color=line_colours())
    return ax


def _mean_std(ax, rows: list[dict], x_key: str, **style) -> None:
    """One line of cell means against ``x_key`` with ± sd error bars (sd 0 for single-seed cells)."""
    ax.errorbar([r[x_key] for r in rows], [r["mean"] for r in rows], yerr=[r["std"] or 0.0 for r in rows],
                capsize=3, **style)


def _label(values: dict, keys: list[str]) -> str:
    # The last part of a dotted key is enough in a legend: "grammar=ww", not "procedural.grammar=ww". Long
    # values (file paths) are shortened as in run names, an empty one shows as '' (not a bare "name=");
    # '$' would start matplotlib's math mode.
    text = ", ".join(f"{k.rsplit('.', 1)[-1]}={short_value(str(values[k])) or repr('')}" for k in keys) or "all runs"
    return text.replace("$", r"\$")


def _finish(fig: Figure, ax, out: Path, name: str, *, xlabel: str, ylabel: str, title: str) -> str:
    """Labels, grid, the legend under the axes (long cell labels never cover the curves); saves the PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=1, frameon=False)
    fig.savefig(out / name, dpi=120, bbox_inches="tight")  # "tight" grows the canvas to hold the legend
    return name


def plot_vs_fraction(cell_keys: list[str], stats: list[dict], metric: str, out: Path) -> str:
    """Final metric vs warm-up fraction, one line per setting of the other cell keys; bars = sd over seeds.

    The x axis is symlog, linear below the smallest non-zero fraction, so fraction 0 (the baseline) sits on
    the axis next to fractions spread over decades.
    """
    other = [k for k in cell_keys if k != FRACTION_KEY]
    lines: dict[tuple, list[dict]] = {}
    for row in stats:
        if row["mean"] is not None:
            lines.setdefault(tuple(row[k] for k in other), []).append(row)
    fig = Figure(figsize=(7, 4.5))
    ax = line_axes(fig)
    fractions = sorted({row["warmup_fraction"] for row in stats})
    for rows in lines.values():
        rows = sorted(rows, key=lambda r: r["warmup_fraction"])
        _mean_std(ax, rows, "warmup_fraction", marker="o", label=_label(rows[0], other))
    positive = [f for f in fractions if f > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1e-3)
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    return _finish(fig, ax, out, f"{metric}_vs_warmup_fraction.png", xlabel=f"{FRACTION_KEY} (symlog)",
                   ylabel=f"final {metric} (%)", title=f"final {metric} vs warm-up fraction (mean ± sd over seeds)")


def _curve(cell: Cell, metric: str) -> tuple[list[float], list[float]]:
    """Mean over the cell's seeds of the evaluation metric at each image-sample count, in order."""
    field = metric.removeprefix("test_")
    by_x: dict[int, list[float]] = {}
    for run in cell.runs:
        # The splits the final numbers were measured on: summary.json names the validation split, the
        # config the test split.
        if metric.startswith("test_"):
            split = run.config.get("data.test_split") or "test"
        else:
            split = run.summary.get("split", "validation")
        # A resumed run may evaluate the same point twice; its last record is the one that counts.
        points = {r["image_samples"]: r[field] for r in run.evals if r.get("split") == split and field in r}
        for x, y in points.items():
            by_x.setdefault(x, []).append(y)
    xs = sorted(by_x)
    return xs, [sum(by_x[x]) / len(by_x[x]) for x in xs]


def plot_curves(cell_keys: list[str], cells: list[Cell], stats: list[dict], metric: str, out: Path) -> str | None:
    """Evaluation metric vs image samples seen, one curve per cell from its first evaluation on.

    Curves are drawn raw (no smoothing, a marker per evaluation) because warmed-up models can trail the
    baseline early and overtake it later; baselines are dashed.
    """
    fig = Figure(figsize=(7, 4.5))
    ax = line_axes(fig)
    drawn = False
    for cell, row in zip(cells, stats):
        xs, ys = _curve(cell, metric)
        if xs:
            style = "--" if row["warmup_fraction"] == 0 else "-"
            ax.plot(xs, ys, style, marker=".", label=_label(row, cell_keys))
            drawn = True
    if not drawn:
        return None
    name = f"{'test' if metric.startswith('test_') else 'evaluation'} {metric.removeprefix('test_')}"
    return _finish(fig, ax, out, f"{metric}_curves.png", xlabel="image samples seen", ylabel=f"{name} (%)",
                   title=f"{name} during image training (mean over seeds)")


def plot_equivalence(
    cell_keys: list[str],
    stats: list[dict],
    curves: dict[tuple, list[dict]],
    estimates: list[dict],
    metric: str,
    out: Path,
    log_x: bool,
) -> str | None:
    """Metric vs image samples: the baseline curve of each context, the warm-up cells, and for every
    data-equivalence estimate a dotted segment from the warm-up cell to the baseline images S* it matches."""
    context_keys, treatment_keys = split_keys(cell_keys)
    if not curves:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = line_axes(fig)
    for context, points in curves.items():
        label = _label(dict(zip(context_keys, context)), context_keys)
        _mean_std(ax, points, "image_samples", marker="o", linestyle="--",
                  label=f"baseline ({label})" if context_keys else "baseline")
    lines: dict[tuple, list[dict]] = {}
    for row in stats:
        if row["warmup_fraction"] != 0 and row["mean"] is not None:
            lines.setdefault(tuple(row[k] for k in context_keys + treatment_keys), []).append(row)
    for rows in lines.values():
        rows = sorted(rows, key=lambda r: r["image_samples"])
        _mean_std(ax, rows, "image_samples", marker="s", label=_label(rows[0], context_keys + treatment_keys))
    for e in estimates:
        if e["point"]["relation"] == "=":
            ax.plot([e["image_samples"], e["point"]["s_star"]], [e["metric"]] * 2, ":", color="gray")
    if log_x:
        ax.set_xscale("log")
    return _finish(fig, ax, out, f"{metric}_vs_image_samples.png", xlabel="image samples seen",
                   ylabel=f"final {metric} (%)",
                   title="data equivalence (dotted: baseline images S* reaching the same accuracy)")


def _interval_bars(rows: list[dict]) -> list[list[float]]:
    """Error bars (below, above) from each row's 95% interval ``ci``; none for a row without one."""
    below = [r["mean"] - r["ci"][0] if r.get("ci") else 0.0 for r in rows]
    above = [r["ci"][1] - r["mean"] if r.get("ci") else 0.0 for r in rows]
    return [below, above]


def plot_gain_vs_share(
    cell_keys: list[str], rows: list[dict], lines: list[dict], metric: str, out: Path
) -> str | None:
    """Each warm-up cell's paired gain (with its 95% interval) against its warm-up FLOPs as a share of the image
    phase, and per baseline point the compute-matched line: the gain of spending that share on more images instead
    (vitwarm.analysis.share). Log x: the shares a user chooses between span decades (0.3% to 300%); the line's
    segments are drawn straight on that axis, while the report's table reads it linearly in the share."""
    if not rows:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = line_axes(fig)
    for line in lines:
        points = [p for p in line["points"] if p["share"] > 0]  # share 0 has no place on a log axis
        ax.errorbar([p["share"] for p in points], [p["mean"] for p in points], yerr=_interval_bars(points),
                    linestyle="--", marker="o", capsize=3,
                    label=f"more images instead (compute-matched line from {line['image_samples']:,.0f} images)")
    # In the legend, the keys that tell the warm-ups apart (all their keys when they are one cell)
    shown = [k for k in cell_keys if len({str(r[k]) for r in rows}) > 1] or split_keys(cell_keys)[1]
    for row in rows:
        gain = row["gain"]
        ax.errorbar([row["share"]], [gain["mean"]], yerr=_interval_bars([gain]), marker="s", capsize=3,
                    linestyle="none", label=f"{_label(row, shown)} ({row['image_samples']:,.0f} images)")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xscale("log")
    return _finish(fig, ax, out, f"{metric}_gain_vs_warmup_share.png",
                   xlabel="warm-up FLOPs / image-phase FLOPs (log)", ylabel=f"{metric} gain over no warm-up (points)",
                   title="what a warm-up buys for its compute (paired by seed, 95% t-intervals)")


def plot_by_size(section: dict, metric: str, out: Path) -> str | None:
    """Final metric against training-set size (log x), one line per ``by_size`` line, with 95% t-intervals over
    each cell's seeds (vitwarm.analysis.sizes)."""
    lines = {label: [r for r in rows if r["mean"] is not None] for label, rows in section["lines"].items()}
    if not any(lines.values()):
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = line_axes(fig)
    for label, rows in lines.items():
        if rows:
            ax.errorbar([r["images"] for r in rows], [r["mean"] for r in rows], yerr=_interval_bars(rows),
                        marker="o", capsize=3, label=label.replace("$", r"\$"))
    ax.set_xscale("log")
    sizes = sorted({r["images"] for rows in lines.values() for r in rows})
    ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
    ax.minorticks_off()
    return _finish(fig, ax, out, f"{metric}_by_size.png", xlabel="training images (log)", ylabel=f"final {metric} (%)",
                   title="final accuracy against data size (mean over seeds, 95% t-intervals)")


def make_plots(
    cell_keys: list[str],
    cells: list[Cell],
    stats: list[dict],
    curves: dict[tuple, list[dict]],
    estimates: list[dict],
    shares: tuple[list[dict], list[dict]],
    metric: str,
    out: Path,
    log_x: bool = False,
) -> tuple[list[str], list[str]]:
    """Draw every plot the sweep has data for; return the file names and notes on the plots left out."""
    names, notes = [], []
    if FRACTION_KEY in cell_keys and stats:
        names.append(plot_vs_fraction(cell_keys, stats, metric, out))
    else:
        notes.append(f"no {metric}-vs-fraction plot: {FRACTION_KEY} is not swept")
    curve_plot = plot_curves(cell_keys, cells, stats, metric, out)
    if curve_plot:
        names.append(curve_plot)
    else:
        notes.append("no curve plot: no evaluation records in metrics.jsonl")
    equivalence = plot_equivalence(cell_keys, stats, curves, estimates, metric, out, log_x)
    if equivalence:
        names.append(equivalence)
    else:
        notes.append(f"no data-equivalence plot: no finished baseline runs ({FRACTION_KEY} = 0)")
    share_plot = plot_gain_vs_share(cell_keys, *shares, metric, out)
    if share_plot:
        names.append(share_plot)
    else:
        notes.append("no gain-vs-share plot: no warm-up cell has a baseline point with its image samples")
    return names, notes
