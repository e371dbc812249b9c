"""Read a sweep's runs and group them: cells with their stats over seeds, and which keys are what.

Runs are grouped into *cells* by their swept keys minus ``seed``; a cell's numbers are means over its seeds.
Cell keys are of three kinds: *amounts* (how many image samples a run sees), *treatments* (the warm-up's own
settings) and the *context* (everything else); vitwarm.analysis.equivalence compares cells along them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from vitwarm.analysis.stats import spread
from vitwarm.run import rundir
from vitwarm.run.rundir import CONFIG, changed_keys, read_overrides, read_summary, run_state
from vitwarm.sweeps.grid import planned_identity, read_sweep

METRICS = ("top1", "top5", "test_top1", "test_top5")
FRACTION_KEY = "warmup.fraction"
# Keys that never define a cell: the seed is what cells average over, the rest are per-run bookkeeping.
_PER_RUN_KEYS = ("seed", "resume")
_PER_RUN_PREFIXES = ("run.",)
# Keys that set how many image samples a run sees: they are the x axis of the baseline curve.
_AMOUNT_KEYS = ("data.train_fraction",)
_AMOUNT_PREFIXES = ("budget.",)
# Keys that describe the warm-up itself (or what is taken from it); meaningless for a baseline run (fraction 0).
_TREATMENT_PREFIXES = ("warmup.", "procedural.", "transfer.")
_TREATMENT_KEYS = ("budget.regime",)


@dataclass
class RunResult:
    """One finished run: its flattened config, its summary and its evaluation records."""

    name: str
    config: dict
    summary: dict
    evals: list[dict]


@dataclass
class Cell:
    """The runs (seeds) sharing one setting of the cell keys."""

    values: dict
    runs: list[RunResult] = field(default_factory=list)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _is_per_run(key: str) -> bool:
    return key in _PER_RUN_KEYS or key.startswith(_PER_RUN_PREFIXES)


def is_amount(key: str) -> bool:
    return key in _AMOUNT_KEYS or (key.startswith(_AMOUNT_PREFIXES) and key not in _TREATMENT_KEYS)


def _is_treatment(key: str) -> bool:
    return key in _TREATMENT_KEYS or key.startswith(_TREATMENT_PREFIXES)


def hashable(value):
    return str(value) if isinstance(value, (list, dict)) else value


def _sort_key(value):
    # Numbers sort numerically and before strings; None (key absent) first.
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def read_evals(path: Path) -> tuple[list[dict], int]:
    """Evaluation records of a metrics.jsonl and the number of unreadable lines (e.g. cut by a crash)."""
    records, warnings = rundir.read_records(path)
    return [r for r in records if r.get("event") == "eval"], len(warnings)


@dataclass
class SweepResults:
    """Everything the report is built from."""

    cell_keys: list[str]
    runs: list[RunResult]
    unfinished: list[tuple[str, str]]
    notes: list[str]


_STATES = {"interrupted": "interrupted", "new": "not started", "other config": "finished under another config"}


def _read_finished(run_dir: Path, name: str, planned: dict | None, unfinished: list, notes: list) -> tuple | None:
    """(summary, eval records) of a run finished under ``planned`` (None: any identity); an unfinished run is
    added to ``unfinished`` instead, and unreadable metrics lines to ``notes``."""
    state = run_state(run_dir, planned)
    if state != "finished":
        unfinished.append((name, _STATES[state]))
        return None
    evals, bad = read_evals(run_dir / rundir.METRICS)
    if bad:
        notes.append(f"{name}: skipped {bad} unreadable line(s) of metrics.jsonl")
    return asdict(read_summary(run_dir)), evals


def load_results(sweep_dir: str | Path) -> SweepResults:
    """Read every run of a sweep: those listed in sweep.json, plus any run directory found beside them.

    A run's overrides are those its directory's overrides file records, else (sweeps of earlier versions)
    those sweep.json lists for it. Cell keys are the swept keys of sweep.json minus ``seed``; without
    sweep.json, they are the config keys whose values differ between runs (minus seed and per-run
    bookkeeping such as ``run.dir``).
    """
    sweep_dir = Path(sweep_dir)
    spec = read_sweep(sweep_dir)
    listed = [r["name"] for r in spec["runs"]] if spec else []
    found = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and run_state(p) != "new")
    names = listed + [n for n in found if n not in listed]
    overrides = {r["name"]: r["overrides"] for r in spec["runs"]} if spec else {}
    overrides |= {name: own for name in names if (own := read_overrides(sweep_dir / name)) is not None}
    runs, unfinished, notes, configs, trees = [], [], [], {}, {}
    for name in names:
        run_dir = sweep_dir / name
        # A listed run counts only when it finished under the config its sweep planned for it.
        planned = planned_identity(spec["base"], overrides[name], run_dir) if spec and name in overrides else None
        if (run_dir / CONFIG).exists():
            trees[name] = OmegaConf.to_container(OmegaConf.load(run_dir / CONFIG), resolve=True)
            configs[name] = _flatten(trees[name])
        else:
            configs[name] = {}
        if not (found := _read_finished(run_dir, name, planned, unfinished, notes)):
            continue
        summary, evals = found
        # Values typed by the trainer's config win; the sweep's override strings fill in keys it lacks. An
        # override written with an interpolation (a control's `budget.matched_to=.../..._seed=${seed}`) is one
        # setting for every seed: it keeps its written form, which its resolved value (naming the seed) is not.
        config = {**overrides.get(name, {}), **configs[name]}
        config |= {k: v for k, v in overrides.get(name, {}).items() if isinstance(v, str) and "${" in v}
        runs.append(RunResult(name=name, config=config, summary=summary, evals=evals))

    if spec:
        cell_keys = [k for k in spec["grids"] if not _is_per_run(k)]
    else:
        all_keys = sorted({k for c in configs.values() for k in c})
        cell_keys = [k for k in all_keys if not _is_per_run(k) and len({repr(c.get(k)) for c in configs.values()}) > 1]
    for run in runs:  # a swept mapping (procedural.params) of a run not in sweep.json: its resolved value
        for key in cell_keys:
            value = _select(trees.get(run.name, {}), key)
            if isinstance(value, dict) and key not in run.config:
                run.config[key] = json.dumps(value, sort_keys=True)
    return SweepResults(cell_keys=cell_keys, runs=runs, unfinished=unfinished, notes=notes)


CELL_KEY = "cell"  # a study's one cell key: the cell's name


def load_named_cells(cells: dict[str, list[tuple[Path, dict | None]]], matched: dict[str, str]) -> SweepResults:
    """The runs of a study's named cells (vitwarm.sweeps.study): each cell's run directories, each with the identity
    it was planned under (None: not checked, e.g. an archived run). A control's ``budget.matched_to`` names its
    matched run of the same seed, so it differs seed by seed: it is read as the name of the cell it is matched
    to (``matched``: control -> cell), in its config and identity. Any other override its overrides file writes
    with an interpolation (a composed transfer's ``transfer.sources`` naming ``${seed}``) is read as written."""
    runs, unfinished, notes = [], [], []
    for cell, dirs in cells.items():
        for run_dir, planned in dirs:
            name = f"{cell}/{run_dir.name}"
            if not (found := _read_finished(run_dir, name, planned, unfinished, notes)):
                continue
            summary, evals = found
            written = {k: v for k, v in (read_overrides(run_dir) or {}).items() if "${" in str(v)}
            written |= {"budget.matched_to": matched[cell]} if cell in matched else {}
            summary["identity"] = {k: v for k, v in summary["identity"].items()
                                   if not any(k == w or k.startswith(f"{w}.") for w in written)} | written
            config = {**summary["identity"], CELL_KEY: cell}
            runs.append(RunResult(name=name, config=config, summary=summary, evals=evals))
    return SweepResults(cell_keys=[CELL_KEY], runs=runs, unfinished=unfinished, notes=notes)


def _select(tree: dict, key: str):
    """The node at dotted ``key`` of a nested dict, or None."""
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def group_cells(results: SweepResults) -> list[Cell]:
    """Group finished runs by the values of the cell keys, cells sorted by those values (a study's named cells:
    in the study's order)."""
    cells: dict[tuple, Cell] = {}
    for run in results.runs:
        values = {k: hashable(run.config.get(k)) for k in results.cell_keys}
        cells.setdefault(tuple(values.values()), Cell(values=values)).runs.append(run)
    if results.cell_keys == [CELL_KEY]:
        return list(cells.values())
    return [cells[k] for k in sorted(cells, key=lambda t: tuple(_sort_key(v) for v in t))]


def _label(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "all runs"


def check_comparable(cells: list[Cell], cell_keys: list[str]) -> None:
    """Refuse, in one line, a selection whose cells hold runs that cannot be averaged as seeds of one setting.

    A cell is its cell keys' values; a run found beside a sweep's own runs (another data set, model or epoch
    count that is not a swept key) lands in the cell of its cell-key values, so within a cell every run must
    agree in every identity key but the seed and the cell keys (mappings such as ``transfer.sources``, whose
    resolved paths name the run's seed, are cell keys), and no seed may come twice (a re-run copied beside
    the run it repeats: report the two sets apart).
    """
    def comparable(run: RunResult) -> dict:
        # runs of two versions may name a key differently: both sides under today's names
        return {k: v for k, v in rundir.current_names(run.summary.get("identity", {})).items()
                if k != "seed" and not any(k == c or k.startswith(f"{c}.") for c in cell_keys)}

    for cell in cells:
        first, seeds = cell.runs[0], {}
        for run in cell.runs:
            seed = run.config.get("seed")
            if seed in seeds:
                raise ValueError(f"cell {_label(cell.values)} has two runs of seed {seed} ({seeds[seed]}, {run.name}): "
                                 "report the two sets apart")
            seeds[seed] = run.name
            changes = changed_keys(comparable(first), comparable(run))
            if changes:
                raise ValueError(f"cell {_label(cell.values)} mixes runs that differ in keys the cell keys do not "
                                 f"name ({first.name} vs {run.name}: {rundir.describe_changes(changes)}): report them "
                                 "apart, or sweep those keys")


def mean_of(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def attention_mean(summary: dict, key: str) -> float | None:
    """The mean over layers (and heads) of one attention-structure score of a run's warm-up, or None without one."""
    scores = (summary.get("attention") or {}).get(key)
    return float(np.mean(scores)) if scores else None


def cell_stats(cell: Cell, metric: str) -> dict:
    """The cell's key values, its metric over seeds, and its mean samples, masked acc and training seconds."""
    scores = [r.summary.get(metric) for r in cell.runs if r.summary.get(metric) is not None]
    return {
        **cell.values,
        "warmup_fraction": fraction_of(cell.runs[0].config),
        **spread(scores),
        "image_samples": mean_of([r.summary.get("image_samples") for r in cell.runs]),
        "warmup_samples": mean_of([r.summary.get("warmup_samples") for r in cell.runs]),
        "masked_acc": mean_of([r.summary.get("masked_acc") for r in cell.runs]),
        "probe_acc": mean_of([(r.summary.get("probe") or {}).get("last_acc") for r in cell.runs]),
        "mimetic_qk": mean_of([attention_mean(r.summary, "qk") for r in cell.runs]),
        "mimetic_vo": mean_of([attention_mean(r.summary, "vo_layer") for r in cell.runs]),
        "train_s": mean_of([r.summary.get("train_s") for r in cell.runs]),
        "runs": [r.name for r in cell.runs],
    }


def is_control(config: dict) -> bool:
    """Whether the run is a compute-matched control: no warm-up, its fraction sizes its extra image steps."""
    return config.get("budget.regime") == "compute_matched"


def fraction_of(config: dict) -> float:
    """The run's warm-up fraction; a config without the key has no warm-up, and neither has the
    compute-matched control (:func:`is_control`): it is a baseline point."""
    if is_control(config):
        return 0.0
    return float(config.get(FRACTION_KEY) or 0.0)


def split_keys(cell_keys: list[str]) -> tuple[list[str], list[str]]:
    """(context keys, treatment keys): a warm-up cell is compared with the baseline of the same context;
    treatment keys (``warmup.*``, ``procedural.*``, ``transfer.*``, ``budget.regime``) tell warm-up variants apart."""
    context = [k for k in cell_keys if not is_amount(k) and not _is_treatment(k)]
    treatment = [k for k in cell_keys if _is_treatment(k)]
    return context, treatment
