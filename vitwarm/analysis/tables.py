"""The report's tables as markdown: the cells, data equivalence, the paired comparisons, the gain against the
warm-up's share and the lines by data size (vitwarm.analysis.report writes them into report.md)."""

from __future__ import annotations

from vitwarm.analysis.paired import seed_list
from vitwarm.analysis.stats import ci_text, interval_text

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
