"""Summarise a sweep: mean ± std over seeds per cell, data equivalence, plots (see docs/sweeps.md).

    python tools/report.py runs/sweep1 [--out DIR] [--metric top1] [--paired-to warmup.fraction=0 ...]

Writes report.md, report.csv, report.json and PNG plots to DIR (default: the sweep directory) and prints
the tables. Unfinished runs are left out and listed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vitwarm.analysis.report import build_report
from vitwarm.analysis.results import METRICS
from vitwarm.errors import ArgumentParser, one_line_errors


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a sweep directory (with sweep.json, or run directories inside)")
    parser.add_argument("--out", help="where to write the report (default: SWEEP_DIR)")
    parser.add_argument(
        "--metric", default="top1", choices=METRICS, help="summary.json metric to report (default top1)"
    )
    parser.add_argument(
        "--interp",
        default="linear",
        choices=["linear", "log"],
        help="data equivalence: interpolate the baseline linearly in image samples (default) or in their log",
    )
    parser.add_argument(
        "--paired-to",
        action="append",
        default=[],
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="a reference cell, by its cell-key values; adds every other cell's differences from it, paired by "
        "seed (repeatable)",
    )
    args = parser.parse_args(argv)
    if not Path(args.sweep_dir).is_dir():
        parser.error(f"{args.sweep_dir}: not a directory")
    try:
        report = build_report(
            args.sweep_dir, args.out, args.metric, log_x=args.interp == "log", paired_to=args.paired_to
        )
    except ValueError as err:  # no finished runs, or a run directory whose files do not parse
        sys.exit(f"vitwarm: error: {err}")
    print(report["markdown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
