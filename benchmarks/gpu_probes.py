"""What benchmarks/gpu_check.py measures beside speed: TorchDynamo's recompiles and graph breaks, a profiler
trace of 10 image steps, and the CUDA host-sync test. ``bench`` is a ``benchmarks/e2e.py`` ``Bench``."""

from __future__ import annotations

import logging
import subprocess
from collections import Counter
from pathlib import Path

import torch


class DynamoEvents(logging.Handler):
    """Counts the recompiles and graph breaks TorchDynamo logs (its ``recompiles``/``graph_breaks`` artifacts)."""

    def __init__(self):
        super().__init__()
        self.counts = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        for kind in ("recompiles", "graph_breaks"):
            if record.name.endswith(f"__{kind}"):
                self.counts[kind] += 1


def compiled_speed(bench, plan: dict, peak: float | None, mfu) -> dict:
    """vitwarm's images/s with ``train.compile=true`` (``mfu(bench, images/s, peak)``), and TorchDynamo's
    recompiles and graph breaks meanwhile."""
    events = DynamoEvents()
    torch._logging.set_logs(recompiles=True, graph_breaks=True)
    logging.getLogger("torch._dynamo").addHandler(events)
    try:
        rate = bench.vitwarm("image", plan["steps"], plan["warm_steps"])
    finally:
        logging.getLogger("torch._dynamo").removeHandler(events)
    return {"vitwarm_img_s": rate, "mfu": mfu(bench, rate, peak), "recompiles": events.counts["recompiles"],
            "graph_breaks": events.counts["graph_breaks"]}


def profile(bench, out: Path) -> dict:
    """10 image steps under torch.profiler: OUT/trace.json and the operations that took the most time."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if bench.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        bench.vitwarm("image", 10, 1)
    prof.export_chrome_trace(str(out / "trace.json"))
    key = "self_cuda_time_total" if bench.device.type == "cuda" else "self_cpu_time_total"
    top = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0), reverse=True)[:8]
    return {"trace": "trace.json", "top": [[e.key, round(getattr(e, key, 0) / 1e3, 1)] for e in top]}


def host_syncs(python: str) -> dict:
    """The CUDA host-sync test in a process of its own (it needs pytest)."""
    test = "tests/test_host_syncs.py::test_no_cuda_syncs_between_log_records"
    result = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], capture_output=True,
                            text=True, timeout=300)
    lines = (result.stdout + result.stderr).strip().splitlines()
    return {"test": test, "returncode": result.returncode, "summary": lines[-1] if lines else ""}
