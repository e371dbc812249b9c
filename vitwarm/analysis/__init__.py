"""Analysis of finished runs: what a study's numbers say and how sure they are.

- :mod:`vitwarm.analysis.results`: read run directories, cells over seeds, which keys are amounts or treatments.
- :mod:`vitwarm.analysis.stats`: the one statistical rule (paired t-intervals, p-values, bootstrap over seeds).
- :mod:`vitwarm.analysis.paired`: differences paired by seed, and whether each pair ran on one commit and machine.
- :mod:`vitwarm.analysis.equivalence`: data equivalence against the baseline curve.
- :mod:`vitwarm.analysis.share`: the warm-up's gain against its share of the compute.
- :mod:`vitwarm.analysis.report` / :mod:`vitwarm.analysis.plots`: report.md/.csv/.json and the figures.

This room reads what vitwarm.sweeps and vitwarm.run write; nothing below it imports it. The report needs
matplotlib (``pip install 'vitwarm[report]'``), so nothing is imported here: use
``from vitwarm.analysis.report import build_report``.
"""
