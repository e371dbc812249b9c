"""How many image-loader workers a training process runs: ``data.num_workers: auto`` and its check.

A process may use the CPUs of its affinity mask (what ``taskset``, cgroups and ``srun --cpus-per-task``
bind it to), never more than a Slurm allocation's ``SLURM_CPUS_PER_TASK``. Those CPUs are shared by the
training processes that one launcher started on the node (``LOCAL_WORLD_SIZE``, set by torchrun and
``accelerate launch``): each process gets its share, keeps one CPU for itself (the step, the host side of
the device queue) and gives the rest to its loader workers, at least one so that loading overlaps the step.
"""

from __future__ import annotations

import os

AUTO = "auto"


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by the Slurm allocation's CPUs per task."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cpus, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cpus


def local_processes() -> int:
    """Training processes on this node (``LOCAL_WORLD_SIZE``; 1 when the process was started alone)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def auto_workers(cpus: int, processes: int) -> int:
    """Workers per process for ``cpus`` CPUs shared by ``processes`` training processes (>= 1)."""
    return max(1, cpus // processes - 1)


def check_workers(value: int | str) -> None:
    """ValueError unless ``value`` is 'auto' or an integer >= 0 (the rule of config key data.num_workers)."""
    if value != AUTO and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"must be {AUTO!r} or an integer >= 0, got {value!r}")


def resolve_workers(value: int | str, shards: int, world_size: int, recorded: int = 0) -> tuple[int, str | None]:
    """``(workers per process, warning or None)`` for the config value ``value``.

    'auto' never gives a rank more workers than its share of the ``shards`` of the training split over
    ``world_size`` processes (each worker reads shards of its own). ``recorded``: the count an earlier
    launch of the same run resolved 'auto' to (0: none); the data order depends on the count
    (vitwarm.data.streams), so a resumed run keeps it, on whatever machine it resumes.
    The warning is one line, for a count whose workers and processes need more CPUs than the node gives.
    """
    check_workers(value)
    cpus, processes = usable_cpus(), local_processes()
    if value == AUTO and not recorded:
        return max(1, min(auto_workers(cpus, processes), shards // world_size)), None
    workers = recorded if value == AUTO else int(value)
    if (workers + 1) * processes <= cpus:
        return workers, None
    given = f"data.num_workers={value}" + (" (as the run's first launch resolved it)" if value == AUTO else "")
    return workers, (f"vitwarm: warning: {given} gives {workers} loader worker(s) for each of "
                     f"{processes} process(es) on this node, {(workers + 1) * processes} busy processes for "
                     f"{cpus} usable CPU(s); data.num_workers={AUTO} would use "
                     f"{auto_workers(cpus, processes)}")
