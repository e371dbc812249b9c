"""Sweeps and reports: expand a grid of config overrides into runs, launch them, and aggregate the results.

- :mod:`vitwarm.sweeps.grid`: parse ``--grid``/``--set``, name runs, build their commands, sweep.json.
- :mod:`vitwarm.sweeps.launch`: the ``local``, ``print`` and ``slurm`` launchers (finished runs are skipped,
  interrupted ones resume through ``resume=auto``).
- :mod:`vitwarm.sweeps.results`: read run directories, cells over seeds, which keys are amounts or treatments.
- :mod:`vitwarm.sweeps.equivalence`: data equivalence against the baseline curve.
- :mod:`vitwarm.sweeps.report` / :mod:`vitwarm.sweeps.plots`: report.md/.csv/.json and the figures.

The report needs matplotlib (``pip install 'vitwarm[report]'``), so it is not imported here: use
``from vitwarm.sweeps.report import build_report``. The command-line front ends are ``tools/sweep.py`` and
``tools/report.py``; docs/sweeps.md explains both.
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
