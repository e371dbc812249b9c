"""A study file: named cells over seeds, controls matched per seed, stages and the comparisons to report.

A study is data (docs/studies.md has a worked example)::

    name: fraction               # default: the file's stem
    base: recipes/fmnist_repro.yaml   # a path (relative to the study file or the current folder) or a packaged name
    out: runs/fraction           # where the runs go, <out>/<cell>/s<seed> (default runs/<name>)
    seeds: [0, 1, 2]             # every cell's seeds, unless the cell lists its own
    set: {data.source: data/fmnist}    # overrides of every run
    launch: {entry: python -m vitwarm.train}   # or {nproc: 2, accelerate_config: cpu}
    cells:
      none: {set: {warmup.fraction: 0}}
      W: {set: {warmup.fraction: 0.05}}
      C: {extends: W, matched_to: W}   # compute-matched to W's run of the same seed
    stages:                      # default: one stage "runs" of every cell, in file order
      - {name: runs, cells: [none, W, C]}
    compare: [[W, none], [C, none], [W, C]]   # cell minus reference, paired by seed
    by_size: {reference: none, lines: {none: [none_1k, none_5k], W: [W_1k, W_5k]}}  # cells at several data sizes
    archive: results/fraction    # where `archive` copies the finished runs (default results/<name>)

A cell is its overrides (``set``), on top of those of the cell it ``extends`` and of the cell an earlier
stage's rule chose for it (``from: STAGE.LABEL``, vitwarm.sweeps.rules). ``matched_to: CELL`` makes it a
compute-matched control (``budget.regime=compute_matched``): seed s is matched to CELL's run of seed s. A
stage of kind ``transition`` runs warm-ups only (vitwarm.sweeps.transition) for at most ``max_steps``; a stage
with ``choose: {rule: NAME, ...}`` names its chosen cells for later stages. Every mistake is refused by
:func:`read_study` in one line naming the key, before any run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from vitwarm.catalog import resolve_accelerate_config, resolve_recipe
from vitwarm.errors import ConfigError
from vitwarm.sweeps.grid import MANAGED_KEYS
from vitwarm.sweeps.rules import check_rule

TOP_KEYS = ("name", "base", "out", "seeds", "set", "launch", "cells", "stages", "compare", "by_size", "archive")
CELL_KEYS = ("set", "extends", "matched_to", "seeds", "from")
STAGE_KEYS = ("name", "kind", "cells", "choose", "max_steps")
LAUNCH_KEYS = ("entry", "nproc", "accelerate_config")
KINDS = ("train", "transition")
# Keys the study sets itself: per seed, the matched run, and per run its directory.
OWN_KEYS = (*MANAGED_KEYS, "seed", "budget.matched_to")


@dataclass
class Cell:
    """A named setting: its own overrides and where it takes more from."""

    name: str
    set: dict[str, str]
    seeds: list[int]
    extends: str | None = None
    matched_to: str | None = None
    chosen_from: tuple[str, str] | None = None  # (stage, label) of an earlier stage's choice


@dataclass
class Stage:
    name: str
    kind: str
    cells: list[str]
    choose: dict | None = None
    max_steps: int | None = None


@dataclass
class Study:
    name: str
    path: Path
    base: str
    out: Path
    archive: Path
    launch: dict
    set: dict[str, str]
    cells: dict[str, Cell]
    stages: list[Stage]
    compare: list[tuple[str, str]]
    by_size: dict | None = None  # {reference: LINE, lines: {LINE: [CELL, ...]}} (vitwarm.analysis.sizes)
    stage_of: dict[str, str] = field(default_factory=dict)  # cell -> its stage

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def overrides(self, name: str, choices: dict[tuple[str, str], str]) -> dict[str, str]:
        """The cell's overrides, resolved through ``extends`` and ``from`` (``choices``: (stage, label) ->
        chosen cell); a ``from`` not chosen yet raises KeyError."""
        cell = self.cells[name]
        resolved = dict(self.set)
        if cell.extends:
            resolved |= self.overrides(cell.extends, choices)
        if cell.chosen_from:
            resolved |= self.overrides(choices[cell.chosen_from], choices)
        if cell.matched_to:
            resolved["budget.regime"] = "compute_matched"
        return resolved | cell.set


def _where(path: Path, key: str) -> str:
    return f"{path}: {key}"


def _mapping(value, path: Path, key: str, allowed: tuple[str, ...] | None = None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{_where(path, key)} must be a mapping, got {value!r}")
    if allowed is not None:
        for k in value:
            if k not in allowed:
                raise ConfigError(f"{_where(path, f'{key}.{k}')}: unknown key (valid: {', '.join(allowed)})")
    return value


def as_override(value) -> str:
    """A YAML value as the trainer's dotlist reads it: strings as written, anything else as JSON (valid YAML)."""
    return value if isinstance(value, str) else json.dumps(value)


def _overrides(value, path: Path, key: str) -> dict[str, str]:
    overrides = {str(k): as_override(v) for k, v in _mapping(value, path, key).items()}
    for k in overrides:
        if k in OWN_KEYS:
            raise ConfigError(f"{_where(path, f'{key}.{k}')}: the study sets {k} itself (use seeds, matched_to)")
    return overrides


def _seeds(value, path: Path, key: str) -> list[int]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ConfigError(f"{_where(path, key)}: {value!r} is not a list of seeds (integers >= 0, e.g. [0, 1, 2])")
    if len(set(value)) < len(value):
        raise ConfigError(f"{_where(path, key)}: {value!r} lists a seed more than once")
    return value


def _cell(name: str, spec, seeds: list[int], path: Path) -> Cell:
    spec = _mapping(spec, path, f"cells.{name}", CELL_KEYS)
    chosen_from = None
    if "from" in spec:
        stage, dot, label = str(spec["from"]).partition(".")
        if not dot or not stage or not label:
            raise ConfigError(f"{_where(path, f'cells.{name}.from')}: {spec['from']!r} is not STAGE.LABEL "
                              "(a label the stage's rule chose, e.g. pilot.1)")
        chosen_from = (stage, label)
    return Cell(name=name, set=_overrides(spec.get("set"), path, f"cells.{name}.set"),
                seeds=_seeds(spec["seeds"], path, f"cells.{name}.seeds") if "seeds" in spec else seeds,
                extends=spec.get("extends"), matched_to=spec.get("matched_to"), chosen_from=chosen_from)


def _stages(value, cells: dict[str, Cell], path: Path) -> list[Stage]:
    if value is None:
        return [Stage(name="runs", kind="train", cells=list(cells))]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{_where(path, 'stages')} must be a list of stages ({{name: ..., cells: [...]}})")
    stages = []
    for i, spec in enumerate(value):
        spec = _mapping(spec, path, f"stages[{i}]", STAGE_KEYS)
        name = spec.get("name")
        if not isinstance(name, str) or not name or "." in name or name in ("report", "archive"):
            raise ConfigError(f"{_where(path, f'stages[{i}].name')}: {name!r} is not a stage name (no dots; "
                              "not report or archive)")
        kind = spec.get("kind", "train")
        if kind not in KINDS:
            raise ConfigError(f"{_where(path, f'stages.{name}.kind')}: {kind!r} (valid: {', '.join(KINDS)})")
        max_steps = spec.get("max_steps")
        if (kind == "transition") != (max_steps is not None) or (max_steps is not None and (
                not isinstance(max_steps, int) or max_steps < 1)):
            raise ConfigError(f"{_where(path, f'stages.{name}.max_steps')}: a transition stage needs max_steps "
                              f"(an integer >= 1, the cap of each warm-up), and only it; got {max_steps!r}")
        names = spec.get("cells")
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{_where(path, f'stages.{name}.cells')} must be a list of cell names")
        choose = _mapping(spec.get("choose"), path, f"stages.{name}.choose") or None
        if choose is not None:
            check_rule(choose, kind, f"{_where(path, f'stages.{name}.choose')}")
        stages.append(Stage(name=name, kind=kind, cells=[str(c) for c in names], choose=choose, max_steps=max_steps))
    return stages


def _check_links(study: Study) -> None:
    """Every name a cell, stage or comparison gives exists, and is ready when it is needed."""
    path, cells = study.path, study.cells
    order = [s.name for s in study.stages]
    if len(set(order)) < len(order):
        raise ConfigError(f"{_where(path, 'stages')}: a stage name is used twice ({', '.join(order)})")
    for stage in study.stages:
        for name in stage.cells:
            if name not in cells:
                raise ConfigError(f"{_where(path, f'stages.{stage.name}.cells')}: unknown cell {name!r} "
                                  f"(cells: {', '.join(cells)})")
            if name in study.stage_of:
                raise ConfigError(f"{_where(path, f'stages.{stage.name}.cells')}: cell {name!r} is already in "
                                  f"stage {study.stage_of[name]}")
            study.stage_of[name] = stage.name
    for cell in cells.values():
        key = f"cells.{cell.name}"
        if cell.name not in study.stage_of:
            raise ConfigError(f"{_where(path, key)}: the cell is in no stage (stages: {', '.join(order)})")
        for ref, what in ((cell.extends, "extends"), (cell.matched_to, "matched_to")):
            if ref is not None and ref not in cells:
                raise ConfigError(f"{_where(path, f'{key}.{what}')}: unknown cell {ref!r} (cells: {', '.join(cells)})")
        chain = [cell.name]
        while cells[chain[-1]].extends:
            chain.append(cells[chain[-1]].extends)
            if chain[-1] in chain[:-1]:
                raise ConfigError(f"{_where(path, f'{key}.extends')}: a cycle ({' -> '.join(chain)})")
        here = order.index(study.stage_of[cell.name])
        if cell.matched_to:
            matched = cells[cell.matched_to]
            if study.stage(study.stage_of[cell.name]).kind != "train" or matched.matched_to:
                raise ConfigError(f"{_where(path, f'{key}.matched_to')}: a control is a train run matched to "
                                  f"a train run that is no control ({cell.matched_to})")
            if order.index(study.stage_of[matched.name]) > here:
                raise ConfigError(f"{_where(path, f'{key}.matched_to')}: {matched.name} runs in a later stage "
                                  f"({study.stage_of[matched.name]})")
            missing = sorted(set(cell.seeds) - set(matched.seeds))
            if missing:
                raise ConfigError(f"{_where(path, f'{key}.seeds')}: seed(s) {missing} have no run of "
                                  f"{matched.name} to match (its seeds: {matched.seeds})")
        if cell.chosen_from:
            stage = cell.chosen_from[0]
            if stage not in order[:here] or not study.stage(stage).choose:
                raise ConfigError(f"{_where(path, f'{key}.from')}: {stage!r} is no earlier stage with a choose rule "
                                  f"(stages before this cell's: {', '.join(order[:here]) or 'none'})")
    for label, names in (study.by_size or {}).get("lines", {}).items():
        for name in names:
            if name not in cells or study.stage(study.stage_of[name]).kind != "train":
                raise ConfigError(f"{_where(path, f'by_size.lines.{label}')}: {name!r} is no cell of a train stage "
                                  f"(cells: {', '.join(cells)})")
    for i, pair in enumerate(study.compare):
        for name in pair:
            if name not in cells:
                raise ConfigError(f"{_where(path, f'compare[{i}]')}: unknown cell {name!r} (cells: {', '.join(cells)})")


def _by_size(value, path: Path) -> dict | None:
    if value is None:
        return None
    spec = _mapping(value, path, "by_size", ("reference", "lines"))
    lines = _mapping(spec.get("lines"), path, "by_size.lines")
    if not all(isinstance(cells, list) and cells for cells in lines.values()) or spec.get("reference") not in lines:
        raise ConfigError(f"{_where(path, 'by_size')}: needs lines of cell names (one per size) and a reference that "
                          f"is one of them (lines: {', '.join(map(str, lines)) or 'none'}); got {value!r}")
    return {"reference": str(spec["reference"]), "lines": {str(k): [str(c) for c in v] for k, v in lines.items()}}


def _compare(value, path: Path) -> list[tuple[str, str]]:
    pairs = value or []
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 and p[0] != p[1] for p in pairs):
        raise ConfigError(f"{_where(path, 'compare')}: {value!r} is not a list of pairs [CELL, REFERENCE]")
    return [(str(a), str(b)) for a, b in pairs]


def _base(value, path: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{_where(path, 'base')}: the study needs a base recipe (a path or a packaged name)")
    beside = path.parent / value
    try:
        return str((beside if beside.is_file() else resolve_recipe(value)).absolute())
    except ValueError as err:
        raise ConfigError(f"{_where(path, 'base')}: {err}") from None


def _launch(value, path: Path) -> dict:
    launch = dict(_mapping(value, path, "launch", LAUNCH_KEYS))
    if launch.get("accelerate_config"):
        try:
            launch["accelerate_config"] = str(resolve_accelerate_config(str(launch["accelerate_config"])).absolute())
        except ValueError as err:
            raise ConfigError(f"{_where(path, 'launch.accelerate_config')}: {err}") from None
    return launch


def read_study(path: str | Path) -> Study:
    """Read and check a study file; any mistake is a ConfigError naming the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such study file")
    spec = OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # ${...} reach the trainer as written
    spec = _mapping(spec, path, "the file", TOP_KEYS)
    name = str(spec.get("name") or path.stem)
    seeds = _seeds(spec.get("seeds", [0]), path, "seeds")
    cells = {str(n): _cell(str(n), c, seeds, path) for n, c in _mapping(spec.get("cells"), path, "cells").items()}
    if not cells:
        raise ConfigError(f"{_where(path, 'cells')}: the study names no cell")
    study = Study(name=name, path=path, base=_base(spec.get("base"), path),
                  out=Path(spec.get("out") or f"runs/{name}").absolute(),
                  archive=Path(spec.get("archive") or f"results/{name}").absolute(),
                  launch=_launch(spec.get("launch"), path),
                  set=_overrides(spec.get("set"), path, "set"), cells=cells,
                  stages=_stages(spec.get("stages"), cells, path), compare=_compare(spec.get("compare"), path),
                  by_size=_by_size(spec.get("by_size"), path))
    _check_links(study)
    return study
