"""Command-line front ends: one command, ``vitwarm <verb>`` (vitwarm.cli.main; also ``python -m vitwarm``),
whose verbs are the modules below; each is also a console script of its own (setup.py) and run by the thin
``tools/*.py``:

| verb | module | also |
|---|---|---|
| ``vitwarm train`` | `vitwarm.cli.train` | ``vitwarm-train``, ``[accelerate launch] -m vitwarm.train`` |
| ``vitwarm shards`` | `vitwarm.cli.make_shards` | ``vitwarm-shards``, ``python tools/make_shards.py`` |
| ``vitwarm sweep`` | `vitwarm.cli.sweep` | ``vitwarm-sweep``, ``python tools/sweep.py`` |
| ``vitwarm report`` | `vitwarm.cli.report` | ``vitwarm-report``, ``python tools/report.py`` |
| ``vitwarm recipes`` | `vitwarm.cli.recipes` | ``vitwarm-recipes`` |
| ``vitwarm grammars`` | `vitwarm.cli.grammars` | ``vitwarm-grammars`` |
"""
