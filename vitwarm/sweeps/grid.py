"""Expand a sweep specification into runs: names, overrides and launch commands.

A sweep is a base recipe, fixed ``--set`` overrides and grids ``KEY=V1,V2,...``; its runs are the cartesian
product of the grids (first grid outermost). Each run lives in ``SWEEP_DIR/NAME``, where NAME is made of the
run's varying grid values (``fraction=0.01__seed=1``, vitwarm.sweeps.names) and ``NAME/overrides.yaml`` holds its full
overrides. The plan is written to ``SWEEP_DIR/sweep.json`` so that launchers and ``tools/report.py`` agree on
the run list.

Values are kept as the strings the user typed: OmegaConf parses their types when the trainer reads the
dotlist, so ``0.010`` and ``0.01`` are different runs here exactly as they are different names.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from vitwarm.atomic import atomic_write_text
from vitwarm.config import load_config
from vitwarm.run.rundir import identity, run_state, write_overrides
from vitwarm.sweeps.names import assign_names

SWEEP_FILE = "sweep.json"
# The sweep owns these keys: every run gets its own directory and always resumes.
MANAGED_KEYS = ("run.dir", "resume")
DEFAULT_PORT_BASE = 29500

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Run:
    """One run of a sweep: its directory name, its dotlist overrides and the command that trains it."""

    name: str
    overrides: dict[str, str]
    command: list[str]


def _check_key(key: str, text: str) -> None:
    if not _KEY_RE.match(key):
        raise ValueError(f"bad key {key!r} in {text!r}: expected a dotted config key such as warmup.fraction")
    if key in MANAGED_KEYS:
        raise ValueError(f"{text!r}: the sweep sets {key} itself (each run gets SWEEP_DIR/NAME, resume=auto)")


def parse_assignment(text: str, option: str = "--set") -> tuple[str, str]:
    """Parse ``KEY=VALUE`` (a fixed override, or ``option``'s value in error messages); VALUE may be empty."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"bad {option} {text!r}: expected KEY=VALUE")
    _check_key(key, text)
    return key, value


def parse_grid(text: str) -> tuple[str, list[str]]:
    """Parse ``KEY=V1,V2,...`` into the key and its list of values; reject empty or repeated values."""
    key, sep, values_text = text.partition("=")
    if not sep:
        raise ValueError(f"bad --grid {text!r}: expected KEY=V1,V2,... (no '=' found)")
    _check_key(key, text)
    values = split_values(values_text)
    if any(not v.strip() for v in values):
        raise ValueError(f"bad --grid {text!r}: empty value (expected KEY=V1,V2,... with non-empty values)")
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"bad --grid {text!r}: value(s) {', '.join(repeated)} listed more than once")
    return key, values


def split_values(text: str) -> list[str]:
    """Split at the commas outside brackets, so a value may be a YAML list or mapping: ``[attn,mlp],[mlp]``."""
    values, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            values.append(text[start:i])
            start = i + 1
    return values + [text[start:]]


def parse_spec(grid_texts: list[str], set_texts: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Parse all ``--grid`` and ``--set`` arguments; a key may appear only once across both."""
    grids: dict[str, list[str]] = {}
    sets: dict[str, str] = {}
    for text in grid_texts:
        key, values = parse_grid(text)
        if key in grids:
            raise ValueError(f"bad --grid {text!r}: key {key} already has a grid")
        grids[key] = values
    for text in set_texts:
        key, value = parse_assignment(text)
        if key in grids or key in sets:
            raise ValueError(f"bad --set {text!r}: key {key} is already set or swept")
        sets[key] = value
    return grids, sets


def accelerate_prefix(nproc: int, port: int, accelerate_config: str | None = None) -> list[str]:
    """``accelerate launch ... -m vitwarm.train``: the default way a run is started."""
    prefix = ["accelerate", "launch", "--num_processes", str(nproc), "--main_process_port", str(port)]
    if accelerate_config:
        prefix += ["--config_file", accelerate_config]
    return prefix + ["-m", "vitwarm.train"]


@dataclass(frozen=True)
class Sweep:
    """A planned sweep: where it lives, what it was expanded from, and its runs."""

    out: Path
    base: str
    grids: dict[str, list[str]]
    sets: dict[str, str]
    runs: list[Run]

    def run_dir(self, run: Run) -> Path:
        return self.out / run.name

    def identity(self, run: Run) -> dict:
        """The identity (vitwarm.run.rundir.identity) the run's planned command trains under."""
        return planned_identity(self.base, run.overrides, self.run_dir(run))

    def state(self, run: Run) -> str:
        """``finished`` only when the run's summary parses and was written under its planned identity."""
        return run_state(self.run_dir(run), self.identity(run))


def _run_dir_override(run_dir: str | Path) -> str:
    # Absolute, as in the run's command, so that ${run.dir} resolves the same wherever it is read.
    return f"run.dir={Path(run_dir).absolute()}"


def planned_identity(base: str, overrides: dict[str, str], run_dir: str | Path) -> dict:
    """The identity a run of ``base`` with ``overrides`` in ``run_dir`` would have (bad overrides raise ConfigError).

    ``run_dir`` is the ``run.dir`` the run's command sets, so that values written with ``${run.dir}`` (a
    composed transfer's sources beside the run) resolve as they did in the run.
    """
    return identity(load_config(base, [*(f"{k}={v}" for k, v in overrides.items()), _run_dir_override(run_dir)]))


def train_command(prefix: list[str], base: str, overrides: dict[str, str], run_dir: Path) -> list[str]:
    """The command that trains ``base`` with ``overrides`` in ``run_dir``, resuming whatever it finds there."""
    return [*prefix, "--config", base, *(f"{k}={v}" for k, v in overrides.items()), _run_dir_override(run_dir),
            "resume=auto"]


def plan_sweep(
    base: str,
    grids: dict[str, list[str]],
    sets: dict[str, str],
    out: str | Path,
    nproc: int = 1,
    accelerate_config: str | None = None,
    port_base: int = DEFAULT_PORT_BASE,
    entry: list[str] | None = None,
) -> Sweep:
    """Expand grids into runs with their commands.

    ``entry`` replaces ``accelerate launch ... -m vitwarm.train`` (e.g. ``["python", "-m", "vitwarm.train"]``
    for a single process); the trainer arguments after it are the same. Run i gets main_process_port
    ``port_base + i`` so runs launched side by side on one machine never share a rendezvous port.
    Paths are made absolute so the commands work from any working directory (e.g. on a cluster node).
    """
    out = Path(out).absolute()
    base = str(Path(base).absolute())
    if accelerate_config:
        accelerate_config = str(Path(accelerate_config).absolute())
    keys = list(grids)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grids[k] for k in keys))]
    names = assign_names(out, points, [{**sets, **p} for p in points])
    runs: list[Run] = []
    for i, (name, grid_values) in enumerate(zip(names, points)):
        port = port_base + i
        if port > 65535:
            raise ValueError(f"--port-base {port_base} leaves no free port for run {i}: lower it")
        overrides = {**sets, **grid_values}
        prefix = entry if entry is not None else accelerate_prefix(nproc, port, accelerate_config)
        command = train_command(prefix, base, overrides, out / name)
        runs.append(Run(name=name, overrides=overrides, command=command))
    return Sweep(out=out, base=base, grids=grids, sets=sets, runs=runs)


def write_sweep(sweep: Sweep) -> Path:
    """Write ``sweep.json`` and each run's ``overrides.yaml``, refusing to reuse a sweep directory planned with
    another base or ``--set``.

    Grids may change between invocations (adding seeds or fractions extends a sweep); the base and the fixed
    overrides may not, since the existing run directories would then hold runs of a different config.
    """
    path = sweep.out / SWEEP_FILE
    old = read_sweep(sweep.out)
    if old is not None and (old.get("base") != sweep.base or old.get("sets") != sweep.sets):
        raise ValueError(
            f"{path} was written for base {old.get('base')} with --set {old.get('sets')}; this sweep has "
            f"base {sweep.base} with --set {sweep.sets}. Use a new --out or the same base and --set."
        )
    sweep.out.mkdir(parents=True, exist_ok=True)
    spec = {
        "base": sweep.base,
        "grids": sweep.grids,
        "sets": sweep.sets,
        "runs": [asdict(r) for r in sweep.runs],
    }
    atomic_write_text(path, json.dumps(spec, indent=2) + "\n")  # another launcher may read it meanwhile
    for run in sweep.runs:  # the run's directory now belongs to these overrides (vitwarm.sweeps.names)
        write_overrides(sweep.run_dir(run), run.overrides)
    return path


def read_sweep(sweep_dir: str | Path) -> dict | None:
    """The parsed ``sweep.json`` of a sweep directory, or None when there is none."""
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text()) if path.exists() else None
