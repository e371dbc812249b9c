"""The kinds of phase a run is made of, by ``Phase.kind`` (the plan decides it): each one module (its setup,
its checks before step 1, its end action), looked up here by the loop (vitwarm.run.engine) and by preflight.

A new kind: a module beside these with ``setup``, ``check`` and optionally ``end`` gathered in a
``PhaseKind`` (see common.py), an entry below, and a ``Phase`` of that kind in vitwarm.run.plan.
"""

from . import growth, image, warmup
from .common import PhaseKind, Training

KINDS: dict[str, PhaseKind] = {"warmup": warmup.KIND, "growing_warmup": growth.KIND, "image": image.KIND}

__all__ = ["KINDS", "PhaseKind", "Training"]
