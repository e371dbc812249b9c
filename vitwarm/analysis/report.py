"""Write a sweep's report: report.md, report.csv, report.json and the plots (see docs/sweeps.md).

The numbers come from :mod:`vitwarm.analysis.results`, :mod:`vitwarm.analysis.equivalence`,
:mod:`vitwarm.analysis.share` and :mod:`vitwarm.analysis.sizes`, the tables from :mod:`vitwarm.analysis.tables`,
the figures from :mod:`vitwarm.analysis.plots`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vitwarm.analysis import plots
from vitwarm.analysis.equivalence import baseline_curves, data_equivalence
from vitwarm.analysis.paired import named_pairs, paired_differences, select_cell
from vitwarm.analysis.results import (
    FRACTION_KEY,
    METRICS,
    SweepResults,
    cell_stats,
    check_comparable,
    group_cells,
    load_results,
)
from vitwarm.analysis.share import gain_vs_share
from vitwarm.analysis.sizes import by_size
from vitwarm.analysis.stats import RULE
from vitwarm.analysis.tables import (
    cells_table,
    equivalence_table,
    machine_notes,
    paired_table,
    share_table,
    size_tables,
)


def write_csv(path: Path, cell_keys: list[str], stats: list[dict]) -> None:
    columns = [*cell_keys, "n", "mean", "std", "sem", "image_samples", "warmup_samples", "masked_acc", "probe_acc",
               "mimetic_qk", "mimetic_vo", "train_s"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, "runs"])
        for row in stats:
            writer.writerow([("" if row[c] is None else row[c]) for c in columns] + [";".join(row["runs"])])


def build_report(sweep_dir: str | Path, out: str | Path | None = None, metric: str = "top1", log_x: bool = False,
                 paired_to: list[str] = (), results: SweepResults | None = None, pairs: list[tuple[str, str]] = (),
                 title: str | None = None, sizes: dict | None = None) -> dict:
    """Write report.md, report.csv, report.json and the plots into ``out`` (default: the sweep directory).

    ``paired_to``: selections of reference cells (``"warmup.fraction=0,budget.epochs=4"``); for each, the
    report adds every other cell's differences from it, paired by seed (vitwarm.analysis.paired).

    Every comparison uses the seeds both sides have and names them; a pair whose runs recorded different
    environments, or none, is flagged, not refused (archived runs record none). An empty selection, or one
    whose cells mix runs that are not seeds of one setting (results.check_comparable), is refused in one
    line before anything is written.

    A study passes its named cells as ``results`` (results.load_named_cells) and its comparisons as ``pairs``
    (cell, reference): one paired table per reference, of the cells compared with it (paired.named_pairs), and
    its ``by_size`` lines as ``sizes`` (vitwarm.analysis.sizes): their tables and a figure against data size.

    Returns the report.json content, with ``markdown`` added: report.md without its title and figures.
    """
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}: choose one of {', '.join(METRICS)}")
    sweep_dir = Path(sweep_dir)
    results = results or load_results(sweep_dir)
    if not results.runs:
        states = ", ".join(f"{name} ({state})" for name, state in results.unfinished) or "no run directories"
        raise ValueError(f"{sweep_dir} has no finished runs to report: {states}")
    keys = results.cell_keys
    cells = group_cells(results)
    check_comparable(cells, keys)
    references = [(text, select_cell(text, cells, keys), cells) for text in paired_to]  # refused before any file
    pairs_found, pair_notes = named_pairs(pairs, cells)
    references += pairs_found
    out = Path(out) if out else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    stats = [cell_stats(cell, metric) for cell in cells]
    paired = [
        {"reference": ref.values, "selection": text, "rows": paired_differences(ref, compared, metric)}
        for text, ref, compared in references
    ]
    curves = baseline_curves(results, metric)
    estimates, de_notes = data_equivalence(keys, cells, stats, curves, metric, log_x)
    notes = results.notes + de_notes + pair_notes
    if any(row["n"] < len(row["runs"]) for row in stats):
        notes.append(f"some finished runs have no {metric} in summary.json and are left out of the means")

    share_rows, share_lines, share_notes = gain_vs_share(keys, cells, stats, metric)
    notes += share_notes
    figures, plot_notes = plots.make_plots(keys, cells, stats, curves, estimates, (share_rows, share_lines), metric,
                                           out, log_x)
    notes += plot_notes
    size_section = None
    if sizes:
        size_section, size_notes = by_size(sizes, cells, metric)
        notes += size_notes
        if size_figure := plots.plot_by_size(size_section, metric, out):
            figures.append(size_figure)

    text = f"{len(results.runs)} finished run(s) in {len(stats)} cell(s). The rule: {RULE}; ± is a standard " \
           "deviation (sd) over seeds, se a standard error.\n\n"
    text += f"## Cells (mean ± sd over n seeds, {metric} in %)\n\n{cells_table(keys, stats, metric)}\n"
    if estimates:
        interp = "log image samples" if log_x else "image samples"
        text += (
            f"\n## Data equivalence (baseline = {FRACTION_KEY} 0, piecewise-linear in {interp})\n\n"
            "On matched seeds: each warm-up cell's seeds that every baseline point has (column seeds); the "
            "baseline points and a_w are means over those seeds only. The interval is a 95% percentile bootstrap "
            "over those seeds (a seed's warm-up run and baseline points drawn together); with 3-5 seeds it is too "
            "narrow.\n\n"
            f"{equivalence_table(keys, estimates, metric)}\n{machine_notes(estimates)}\n"
            "saved: share of the baseline's images the warm-up run did without for the same accuracy; "
            "worth: extra images the warm-up is worth. '>' / '<': the accuracy lies outside the baseline's "
            "range, so only a bound is given.\n"
        )
    if share_rows:
        text += (
            f"\n## What the warm-up's compute buys ({metric}, points)\n\n"
            "warm-up share: the warm-up's FLOPs (what its stop used) over the image phase's; gain: paired by seed "
            "against the baseline cell with the same image samples (mean, se, 95% t-interval, p); more images at "
            "that share: the baseline cells' gain for that many more images (the compute-matched line, straight "
            "between its points; "
            "'-' beyond its last point).\n\n"
            f"{share_table(keys, share_rows)}\n"
        )
    if size_section and any(size_section["lines"].values()):  # else its notes say which cells have no run yet
        text += f"\n## By training-set size ({metric}, %)\n\n{size_tables(size_section, metric)}"
    for block in paired:
        reference = ", ".join(f"{k}={v}" for k, v in block["reference"].items())
        text += (
            f"\n## Paired by seed: each cell minus {block['selection']} ({metric}, points)\n\n"
            f"Reference cell: {reference}. Each row uses the seeds both cells have (column seeds).\n\n"
            f"{paired_table(keys, block['rows'])}\n{machine_notes(block['rows'])}"
        )
    if results.unfinished:
        text += f"\n## Unfinished runs (left out: {len(results.unfinished)})\n\n"
        text += "".join(f"- {name} ({state})\n" for name, state in results.unfinished)
    if notes:
        text += "\n## Notes\n\n" + "".join(f"- {n}\n" for n in notes)

    title = title or f"Sweep report: {sweep_dir.name}"
    body = f"# {title}\n\n{text}" + "".join(f"\n![{name}]({name})\n" for name in figures)
    (out / "report.md").write_text(body)
    write_csv(out / "report.csv", keys, stats)
    report = {
        "metric": metric,
        "rule": RULE,
        "cell_keys": keys,
        "cells": stats,
        "data_equivalence": estimates,
        "paired": paired,
        "gain_vs_share": {"rows": share_rows, "lines": share_lines},
        **({"by_size": size_section} if size_section else {}),  # a study's lines by data size, when it has them
        "unfinished": [{"name": n, "state": s} for n, s in results.unfinished],
        "notes": notes,
        "plots": figures,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return {**report, "markdown": text}
