"""Sweeps: expand a grid of config overrides into runs, name them and launch them.

- :mod:`vitwarm.sweeps.grid`: parse ``--grid``/``--set``, name runs, build their commands, sweep.json.
- :mod:`vitwarm.sweeps.launch`: the ``local``, ``print`` and ``slurm`` launchers (finished runs are skipped,
  interrupted ones resume through ``resume=auto``).

What the finished runs say is vitwarm.analysis's (cells, paired comparisons, reports). The command-line
front ends are ``tools/sweep.py`` and ``tools/report.py``; docs/sweeps.md explains both.
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
