"""Command-line front ends, installed as console scripts (setup.py) and run by the thin ``tools/*.py``:

| console script | module | also |
|---|---|---|
| ``vitwarm-train`` | `vitwarm.cli.train` | ``python -m vitwarm.train``, ``accelerate launch -m vitwarm.train`` |
| ``vitwarm-shards`` | `vitwarm.cli.make_shards` | ``python tools/make_shards.py`` |
| ``vitwarm-sweep`` | `vitwarm.cli.sweep` | ``python tools/sweep.py`` |
| ``vitwarm-report`` | `vitwarm.cli.report` | ``python tools/report.py`` |
| ``vitwarm-recipes`` | `vitwarm.cli.recipes` | ``python -m vitwarm.cli.recipes`` |
| ``vitwarm-grammars`` | `vitwarm.cli.grammars` | ``python -m vitwarm.procedural`` |
"""
