"""What a warm-up's compute buys: its gain against its FLOPs as a share of the image phase, beside the line of
what the same share spent on more images buys.

For each warm-up cell (warm-up fraction > 0):

- share: the warm-up phase's FLOPs (``phases.warmup.used_flops``: what an adaptive stop used, not what was
  planned) over the image phase's FLOPs, mean over the cell's runs;
- gain: its metric minus the baseline cell (no warm-up) of its context with the same image samples, paired by
  seed on the seeds both have (mean, se, 95% t-interval), as in the report's paired tables.

The compute-matched line from that baseline cell (S image samples): every baseline cell of the context with
more images (a compute-matched control, a longer baseline) sits at share ``S'/S - 1`` (one model at one
resolution costs the same FLOPs per image, so extra images are extra FLOPs in proportion; S' is the cell's
mean, as a control's images follow each seed's warm-up) with its gain over S paired by seed; the line is
straight between those points, as the data-equivalence curve is. A warm-up above the line bought more than
images would have for its compute.
"""

from __future__ import annotations

import numpy as np

from vitwarm.analysis.paired import runs_by_seed, seed_differences
from vitwarm.analysis.results import Cell, mean_of, split_keys


def warmup_share(summary: dict) -> float | None:
    """Warm-up FLOPs / image-phase FLOPs of one run's summary; None when it records no phases' FLOPs."""
    phases = summary.get("phases") or {}
    image = phases.get("image") or {}
    image_flops = image.get("used_flops") or image.get("flops")
    if not image_flops:
        return None
    # The growth phase between the two copies weights and records no FLOPs; runs of versions before the
    # adaptive stop record only the planned ``flops``, which they all used.
    warmup = phases.get("warmup") or {}
    return float(warmup.get("used_flops") or warmup.get("flops") or 0.0) / float(image_flops)


def images_line(baselines: list[tuple[Cell, dict]], base: tuple[Cell, dict], metric: str) -> list[dict]:
    """The compute-matched line from baseline cell ``base``: (share 0, gain 0), then every baseline cell of its
    context with more images at share ``S'/S - 1`` (mean image samples) with its gain over ``base``."""
    base_cell, base_row = base
    line = [{"share": 0.0, "mean": 0.0, "sem": None, "ci": None, "seeds": sorted(runs_by_seed(base_cell.runs, metric))}]
    for cell, row in baselines:
        if row["image_samples"] > base_row["image_samples"] and (gain := seed_differences(cell, base_cell, metric)):
            line.append({"share": row["image_samples"] / base_row["image_samples"] - 1.0, **gain})
    return sorted(line, key=lambda p: p["share"])


def line_at(line: list[dict], share: float) -> float | None:
    """The line's gain at ``share``, straight between its points; None beyond its last point (no extrapolation)."""
    if len(line) < 2 or share > line[-1]["share"]:
        return None
    return float(np.interp(share, [p["share"] for p in line], [p["mean"] for p in line]))


def gain_vs_share(
    cell_keys: list[str], cells: list[Cell], stats: list[dict], metric: str
) -> tuple[list[dict], list[dict], list[str]]:
    """Rows (one per warm-up cell: its keys, ``share``, the paired ``gain`` stats, ``images_gain``: the line at its
    share), lines (one per baseline cell that rows are measured from: its context keys, image samples and
    points) and notes
    on the warm-up cells left out. ``stats`` are the cells' rows (vitwarm.analysis.results.cell_stats)."""
    context_keys, _ = split_keys(cell_keys)
    rows, lines, notes = [], {}, []
    for cell, row in zip(cells, stats):
        if row["mean"] is None or row["warmup_fraction"] == 0:
            continue
        label = ", ".join(f"{k}={row[k]}" for k in cell_keys)
        share = mean_of([warmup_share(r.summary) for r in cell.runs])
        baselines = [(c, r) for c, r in zip(cells, stats) if r["warmup_fraction"] == 0 and r["mean"] is not None
                     and all(r[k] == row[k] for k in context_keys)]
        bases = [(c, r) for c, r in baselines if r["image_samples"] == row["image_samples"]]
        if share is None or len(bases) != 1:
            why = "its runs record no phase FLOPs" if share is None else (
                f"{len(bases)} baseline cells have its {row['image_samples']:,.0f} image samples (needs one)")
            notes.append(f"{label}: not in the gain-vs-share figure, {why}")
            continue
        gain = seed_differences(cell, bases[0][0], metric)
        if gain is None:
            notes.append(f"{label}: not in the gain-vs-share figure, no seed of it is in its baseline cell")
            continue
        # One line per baseline cell, however many warm-ups share it; two contexts may have the same image count.
        base = tuple(row[k] for k in context_keys) + (row["image_samples"],)
        if base not in lines:
            lines[base] = images_line(baselines, bases[0], metric)
        line = lines[base]
        rows.append({**{k: row[k] for k in cell_keys}, "share": share, "image_samples": row["image_samples"],
                     "gain": gain, "images_gain": line_at(line, share)})
    return rows, [{**dict(zip(context_keys, base)), "image_samples": base[-1], "points": line}
                  for base, line in lines.items()], notes
