"""``data.num_workers``: 'auto' from the CPUs a process may use and the processes on its node; a warning for
a set count that oversubscribes them (vitwarm.data.workers)."""

from __future__ import annotations

import os

import pytest

from vitwarm.config import load_config
from vitwarm.data.workers import resolve_workers
from vitwarm.errors import ConfigError

from helpers import TINY


def test_auto_shares_the_allocation_among_the_nodes_processes(monkeypatch):
    cpus = len(os.sched_getaffinity(0))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_workers("auto", shards=1000, world_size=1) == (max(1, cpus - 1), None)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # the allocation caps the affinity
    assert resolve_workers("auto", shards=1000, world_size=1) == (1, None)  # always one, overlapping the step
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(cpus))
    if cpus >= 4:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert resolve_workers("auto", shards=1000, world_size=2)[0] == cpus // 2 - 1
    assert resolve_workers("auto", shards=2, world_size=2)[0] == 1  # never more than the rank's shards


def test_a_set_count_that_oversubscribes_warns_in_one_line(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert resolve_workers(1, shards=10, world_size=1) == (1, None)
    workers, warning = resolve_workers(10, shards=10, world_size=1)
    assert workers == 10 and warning.startswith("vitwarm: warning: data.num_workers=10") and "\n" not in warning
    assert "11 busy processes for 2 usable CPU(s)" in warning and "auto would use 1" in warning
    # A resumed 'auto' run keeps the count its first launch chose (the data order depends on it).
    workers, warning = resolve_workers("auto", shards=10, world_size=1, recorded=6)
    assert workers == 6 and "first launch" in warning


@pytest.mark.parametrize("value", ["-1", "some", "1.5"])
def test_bad_values_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match="data.num_workers"):
        load_config(TINY, [f"data.num_workers={value}"])
    assert load_config(TINY, ["data.num_workers=auto"]).data.num_workers == "auto"
    assert load_config(TINY, ["data.num_workers=3"]).data.num_workers == 3
