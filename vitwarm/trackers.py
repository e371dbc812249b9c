"""Experiment trackers of a run (``log.trackers``), handed to Accelerate by name.

Accelerate drops a tracker whose package is missing with only a warning; here that is an error, raised
before the run starts, naming the package to install. metrics.jsonl is written whatever the trackers.
"""

from __future__ import annotations

from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

from .config import ConfigError

# Tracker name -> its pip package, where the two differ.
PACKAGES = {"comet_ml": "comet-ml"}


def check_trackers(names: list[str]) -> list[str]:
    """``names`` if Accelerate knows each tracker and its package is installed; else ConfigError naming it."""
    valid = sorted(LOGGER_TYPE_TO_CLASS)
    available = {str(t) for t in get_available_trackers()}
    for name in names:
        if name not in LOGGER_TYPE_TO_CLASS:
            raise ConfigError(f"log.trackers: unknown tracker {name!r}; choose from {valid}")
        if name not in available:
            package = PACKAGES.get(name, name)
            raise ConfigError(f"log.trackers: tracker {name!r} needs the package {package!r}, which is not "
                              f"installed (pip install {package}), or remove it from log.trackers")
    return list(names)
