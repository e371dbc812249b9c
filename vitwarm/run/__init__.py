"""One run: the plan, preflight, the loop, per-step bookkeeping, checkpoints, the run directory, metrics and
trackers, exports; one module per phase kind under ``phases/``.

    plan.py         the budget in steps: ``Phase`` and ``Plan`` (the one place that makes steps)
    preflight.py    everything built on the meta device before anything runs
    phases/         one module per phase kind (setup, checks before step 1, end action), by name in KINDS
    images.py       the image loaders shared by the phases, and evaluation
    engine.py       the loop: ``train(cfg)`` runs a whole run
    step.py         one step's bookkeeping on the device, and the one host sync per log window
    checkpoints.py  checkpoints written atomically and verified by hash; where a launch starts
    rundir.py       the run directory: every file's name, config, identity, summary, records
    metrics.py      metrics.jsonl and trackers
    export.py       the run's two exports as timm hub folders

models/, data/ and procedural/ never import this package (tests/test_layout.py checks it).
"""

from .engine import train

__all__ = ["train"]
