"""Write a sweep's report: report.md, report.csv, report.json and the plots (see docs/sweeps.md).

The numbers come from :mod:`vitwarm.analysis.results` and :mod:`vitwarm.analysis.equivalence`, the figures from
:mod:`vitwarm.analysis.plots`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vitwarm.analysis import plots
from vitwarm.analysis.equivalence import baseline_curves, data_equivalence
from vitwarm.analysis.paired import named_pairs, paired_differences, seed_list, select_cell
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
from vitwarm.analysis.stats import RULE, ci_text, interval_text

DIFFER, UNKNOWN = "†", "‡"
MACHINE_NOTES = {
    DIFFER: f"{DIFFER} the two runs of these seeds recorded different environments (summary.json's `environment`; "
    "the keys that differ are listed: `source` is the package commit, `machine` the host's fingerprint): the "
    "same run moves by tenths of a point on another CPU or kernel path, and a difference across them carries "
    "that too.",
    UNKNOWN: f"{UNKNOWN} not recorded (the fields listed): a run of a version before summary.json had them, or "
    "of a modified source tree. The pair is not known to come from one commit and one machine.",
}


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _fmt_count(value) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _pct(estimate: dict, key: str) -> str:
    relation = "" if estimate["relation"] == "=" else estimate["relation"]
    return f"{relation}{100 * estimate[key]:.1f}%"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cells_table(cell_keys: list[str], stats: list[dict], metric: str) -> str:
    header = [*cell_keys, "n", f"{metric} mean ± sd", "image samples", "warm-up samples", "masked acc", "probe acc",
              "qk / vo score", "train s"]
    rows = [
        [
            *(str(row[k]) for k in cell_keys),
            str(row["n"]),
            f"{_fmt(row['mean'])} ± {_fmt(row['std'])}",
            _fmt_count(row["image_samples"]),
            _fmt_count(row["warmup_samples"]),
            _fmt(row["masked_acc"], 3),
            _fmt(row["probe_acc"], 3),
            f"{_fmt(row['mimetic_qk'], 2)} / {_fmt(row['mimetic_vo'], 2)}",
            _fmt(row["train_s"], 0),
        ]
        for row in stats
    ]
    return markdown_table(header, rows)


def machines_cell(machines: dict) -> str:
    """``same``, or which seeds ran on different or unrecorded machines, with the footnote markers."""
    if machines["same"]:
        return "same"
    parts = []
    if machines["differ_seeds"]:
        keys = ", ".join(machines["differ_keys"])
        parts.append(f"differ{DIFFER} (seeds {seed_list(machines['differ_seeds'])}: {keys})")
    if machines["unknown_seeds"]:
        keys = ", ".join(machines["unknown_keys"])
        parts.append(f"not recorded{UNKNOWN} (seeds {seed_list(machines['unknown_seeds'])}: {keys})")
    return "; ".join(parts)


def machine_notes(rows: list[dict]) -> str:
    """The footnotes for the markers a table's rows use (empty when every pair ran alike)."""
    used = "".join(machines_cell(r["machines"]) for r in rows)
    return "".join(f"\n{note}\n" for marker, note in MACHINE_NOTES.items() if marker in used)


def equivalence_table(cell_keys: list[str], estimates: list[dict], metric: str) -> str:
    header = [
        *cell_keys,
        "seeds",
        f"{metric} (a_w)",
        "images S_w",
        "baseline images S*",
        "saved 1 - S_w/S*",
        "saved, 95% bootstrap",
        "worth S*/S_w - 1",
        "machines",
    ]
    rows = []
    for e in estimates:
        p = e["point"]
        rows.append(
            [
                *(str(e[k]) for k in cell_keys),
                seed_list(e["seeds"]),
                _fmt(e["metric"]),
                _fmt_count(e["image_samples"]),
                ("" if p["relation"] == "=" else p["relation"]) + _fmt_count(p["s_star"]),
                _pct(p, "saved"),
                f"[{_pct(e['low'], 'saved')}, {_pct(e['high'], 'saved')}]",
                _pct(p, "worth"),
                machines_cell(e["machines"]),
            ]
        )
    return markdown_table(header, rows)


def _interval(row: dict) -> str:
    return "-" if row["ci"] is None else ci_text(row["ci"])


def _p(row: dict) -> str:
    return "-" if row["p"] is None else f"{row['p']:.3f}"


def paired_table(cell_keys: list[str], rows: list[dict]) -> str:
    header = [*cell_keys, "n", "seeds", "mean difference", "se", "95% interval", "p", "shown", "per seed",
              "machines"]
    body = [
        [
            *(str(row[k]) for k in cell_keys),
            str(row["n"]),
            seed_list(row["seeds"]),
            f"{row['mean']:+.2f}",
            _fmt(row["sem"]),
            _interval(row),
            _p(row),
            "yes" if row["shown"] else "no",
            " / ".join(f"{d:+.2f}" for d in row["differences"]),
            machines_cell(row["machines"]),
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def share_table(cell_keys: list[str], rows: list[dict]) -> str:
    header = [*cell_keys, "image samples", "warm-up share", "n", "seeds", "gain mean", "se", "95% interval", "p",
              "shown", "more images at that share"]
    body = [
        [
            *(str(row[k]) for k in cell_keys),
            _fmt_count(row["image_samples"]),
            f"{100 * row['share']:.2f}%",
            str(row["gain"]["n"]),
            seed_list(row["gain"]["seeds"]),
            f"{row['gain']['mean']:+.2f}",
            _fmt(row["gain"]["sem"]),
            _interval(row["gain"]),
            _p(row["gain"]),
            "yes" if row["gain"]["shown"] else "no",
            "-" if row["images_gain"] is None else f"{row['images_gain']:+.2f}",
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def _worth(worth: dict | None) -> list[str]:
    if worth is None:
        return ["-", "-", "-"]
    point = worth["point"]
    n_star = ("" if point["relation"] == "=" else point["relation"]) + _fmt_count(point["n_star"])
    return [n_star, _pct(point, "worth"), f"[{_pct(worth['low'], 'worth')}, {_pct(worth['high'], 'worth')}]"]


def size_tables(section: dict, metric: str) -> str:
    """The ``by_size`` section (vitwarm.analysis.sizes) as markdown: each cell's metric, then each line's gain
    over the reference and its worth in images, then the change in gain with size."""
    reference = section["reference"]
    cells = markdown_table(
        ["line", "cell", "images", "n", f"{metric} mean", "sd", "95% interval"],
        [[label, r["cell"], f"{r['images']:,}", str(r["n"]), _fmt(r["mean"]), _fmt(r["std"]),
          "-" if r["ci"] is None else f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"]
         for label, rows in section["lines"].items() for r in rows])
    gain_rows = [[label, f"{r['images']:,}", str(g["n"]), seed_list(g["seeds"]), interval_text(g), _fmt(g["sem"]),
                  _p(g), "yes" if g["shown"] else "no", *_worth(r.get("worth"))]
                 for label, rows in section["lines"].items() for r in rows if (g := r.get("gain"))]
    if not gain_rows:  # no line has a cell beside a reference cell yet
        return f"{cells}\n"
    gains = markdown_table(["line", "images", "n", "seeds", f"gain over {reference}", "se", "p", "shown", "n*",
                            "worth n*/N - 1", "worth, 95% bootstrap"], gain_rows)
    trends = "".join(
        f"- {label}: gain at {t['small']:,} images minus gain at {t['large']:,}: "
        f"{t['mean']:+.2f} {'[no interval]' if t['ci'] is None else ci_text(t['ci'])} (Welch, df "
        f"{_fmt(t['df'], 1)}, p {_p(t)}): "
        f"{'shown' if t['shown'] else 'not shown'}\n"
        for label, t in section["trends"].items())
    return (f"{cells}\n\nPaired by seed against the {reference} cell of the same size; worth: the size n* at which "
            f"the {reference} line (piecewise linear in log size, means over the matched seeds) reaches the cell's "
            f"mean, n*/N - 1 ('<' / '>': beyond the line's range, a bound); its 95% percentile bootstrap over the "
            f"matched seeds is too narrow at 3-5 seeds.\n\n{gains}\n\n{trends}")


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
        "by_size": size_section,
        "unfinished": [{"name": n, "state": s} for n, s in results.unfinished],
        "notes": notes,
        "plots": figures,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return {**report, "markdown": text}
