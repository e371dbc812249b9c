"""Sweeps: expand a grid of config overrides into runs, name them and launch them.

- :mod:`vitwarm.sweeps.grid`: parse ``--grid``/``--set``, name runs, build their commands, sweep.json.
- :mod:`vitwarm.sweeps.launch`: the ``local``, ``print`` and ``slurm`` launchers (finished runs are skipped,
  interrupted ones resume through ``resume=auto``).
- Studies (docs/studies.md): :mod:`vitwarm.sweeps.study` reads and checks a study file, :mod:`vitwarm.sweeps.stages`
  turns its stages into runs ``<out>/<cell>/s<seed>`` for the same launchers, :mod:`vitwarm.sweeps.rules` holds the
  rules that choose cells from an earlier stage, :mod:`vitwarm.sweeps.transition` is the warm-up-only measurement
  and :mod:`vitwarm.sweeps.archive` the archive.

What the finished runs say is vitwarm.analysis's (cells, paired comparisons, reports). The command-line
front ends are ``tools/sweep.py``, ``tools/report.py`` and ``vitwarm-study``; docs/sweeps.md and
docs/studies.md explain them.
"""

from vitwarm.sweeps.grid import Run, Sweep, parse_spec, plan_sweep, read_sweep, write_sweep
from vitwarm.sweeps.launch import launch_local, launch_print, launch_slurm

__all__ = [
    "Run",
    "Sweep",
    "launch_local",
    "launch_print",
    "launch_slurm",
    "parse_spec",
    "plan_sweep",
    "read_sweep",
    "write_sweep",
]
