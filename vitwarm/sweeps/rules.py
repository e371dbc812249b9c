"""Named rules that choose a stage's cells from an earlier stage's results (a study's ``choose:``).

A rule gets the stage's cells, each as its overrides and its runs' results (a transition stage's rows,
vitwarm.sweeps.transition; a train stage's summary.json contents), and returns ``{label: cell name}``;
a later cell takes the chosen cell's overrides with ``from: STAGE.LABEL``. A rule is registered by name
with :func:`rule`, for the stage kind whose results it reads; its keyword parameters are the ``choose:``
mapping's other keys, checked when the study file is read.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from vitwarm.errors import ConfigError


@dataclass
class CellResults:
    """One cell of a finished stage: its resolved overrides and one result per seed."""

    overrides: dict[str, str]
    results: list[dict]


RULES: dict[str, tuple[str, Callable[..., dict[str, str]]]] = {}  # name -> (stage kind, rule)


def rule(name: str, kind: str):
    """Register a rule under ``name`` for stages of ``kind``."""
    def register(function):
        RULES[name] = (kind, function)
        return function
    return register


def check_rule(choose: dict, kind: str, where: str) -> None:
    """Refuse, in one line, an unknown rule, one for another stage kind, or parameters it does not take."""
    name = choose.get("rule")
    if name not in RULES:
        raise ConfigError(f"{where}.rule: {name!r} is no rule (rules: {', '.join(sorted(RULES))})")
    rule_kind, function = RULES[name]
    if rule_kind != kind:
        raise ConfigError(f"{where}.rule: {name} reads the results of a {rule_kind} stage, this stage is {kind}")
    params = {k: v for k, v in choose.items() if k != "rule"}
    try:
        inspect.signature(function).bind({}, **params)
    except TypeError as err:
        raise ConfigError(f"{where}: {err} (rule {name}: {inspect.signature(function)})") from None


def apply_rule(choose: dict, cells: dict[str, CellResults]) -> dict[str, str]:
    """The labels a stage's ``choose:`` gives its finished cells."""
    _, function = RULES[choose["rule"]]
    return function(cells, **{k: v for k, v in choose.items() if k != "rule"})


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@rule("cheapest_plateau", kind="transition")
def cheapest_plateau(cells: dict[str, CellResults], n: int = 1) -> dict[str, str]:
    """Labels 1..n: the n cells with the fewest warm-up FLOPs to the plateau (mean over seeds) among those
    whose every seed reached its plateau within the cap (so crossed the transition)."""
    learned = {name: _mean([r["plateau_flops"] for r in cell.results]) for name, cell in cells.items()
               if cell.results and all(r["plateau_step"] is not None for r in cell.results)}
    return {str(i): name for i, name in enumerate(sorted(learned, key=learned.get)[:n], 1)}


@rule("converged", kind="train")
def converged(cells: dict[str, CellResults], budget: str = "budget.epochs", group: str | None = None,
              gain: float = 0.5, metric: str = "top1") -> dict[str, str]:
    """Per value of the ``group`` key (label: that value; ``all`` without one): the cell of the smallest
    ``budget`` after which doubling it gains less than ``gain`` points of ``metric`` (mean over seeds); the
    largest budget when no doubling stays below. A group without a doubled budget in the grid is left out."""
    groups: dict[str, dict[float, str]] = {}
    for name, cell in cells.items():
        if budget not in cell.overrides:
            raise ConfigError(f"choose converged: cell {name} sets no {budget}")
        label = cell.overrides.get(group, "") if group else "all"
        groups.setdefault(label, {})[float(cell.overrides[budget])] = name
    chosen = {}
    for label, by_budget in groups.items():
        score = {b: _mean([r[metric] for r in cells[n].results]) for b, n in by_budget.items()}
        doubled = [b for b in sorted(score) if 2 * b in score]
        if doubled:
            enough = [b for b in doubled if score[2 * b] - score[b] < gain]
            chosen[label] = by_budget[enough[0] if enough else max(score)]
    return chosen
