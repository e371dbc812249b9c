"""Launchers for a planned sweep: run it on this machine, print its commands, or submit it to Slurm.

All three skip finished runs (a summary.json that parses, written under the run's planned identity) and
start every other run with its planned command.
Several launchers may share one sweep directory (two terminals, a local launcher beside a Slurm array): a
run that another launcher's trainer holds (its run directory's lock, vitwarm.run.lock) or has finished
meanwhile is left to it, named with its holder and counted apart, never failed.
Each command ends in ``resume=auto``, so a run that was interrupted continues from its last checkpoint and a
new one starts from scratch: relaunching a whole sweep is always safe.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import TextIO

from vitwarm.run.lock import lock_holder
from vitwarm.run.rundir import LAUNCH_LOG, run_state
from vitwarm.sweeps.grid import Run, Sweep

LOG_FILE = LAUNCH_LOG


def say(message: str) -> None:
    """Default progress output: flushed at once, so a sweep's log file shows each run as it ends."""
    print(message, flush=True)


def pending_runs(sweep: Sweep) -> tuple[list[Run], list[Run]]:
    """Split the sweep's runs into (to launch, already finished)."""
    todo, done = [], []
    for run in sweep.runs:
        (done if sweep.state(run) == "finished" else todo).append(run)
    return todo, done


def run_command(command: list[str], log_path: Path, env: dict | None = None, preexec_fn: Callable | None = None,
                started: Callable[[subprocess.Popen], None] | None = None) -> int:
    """Run one command with stdout and stderr appended to ``log_path``; return its exit code.

    The log is appended to, not replaced, so the output of an interrupted attempt survives its resumption.
    ``started`` gets the running process. The wait polls (a second at a time), so that a signal handler of
    this process may wait for the same process meanwhile (``SlurmJob.checkpoint``).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Appended, so never through a link planted in the run directory (refused with ELOOP, naming the file).
    with open(log_path, "a", opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW, 0o644)) as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
        log.flush()
        with subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn) as proc:
            if started:
                started(proc)
            while proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
    return proc.returncode


def launch_print(sweep: Sweep, file: TextIO | None = None) -> int:
    """Print one shell command per run that is not finished yet (to stdout by default); run nothing."""
    file = file or sys.stdout
    todo, done = pending_runs(sweep)
    for run in todo:
        print(shlex.join(run.command), file=file)
    if done:
        print(f"# {len(done)} finished run(s) left out", file=sys.stderr)
    return 0


def gpu_slots(gpus: list[str], parallel: int, nproc: int) -> list[str]:
    """Split GPU ids into ``parallel`` disjoint CUDA_VISIBLE_DEVICES values of ``nproc`` GPUs each."""
    if len(gpus) < parallel * nproc:
        raise ValueError(
            f"--gpus lists {len(gpus)} GPU(s) but --parallel {parallel} x --nproc {nproc} needs {parallel * nproc}"
        )
    return [",".join(gpus[i * nproc : (i + 1) * nproc]) for i in range(parallel)]


def launch_local(
    sweep: Sweep,
    parallel: int = 1,
    slots: list[str] | None = None,
    echo: Callable[[str], None] = say,
) -> int:
    """Run the unfinished runs here, ``parallel`` at a time; return 0 only if every one of them finished.

    ``slots`` (from :func:`gpu_slots`) gives each concurrent run its own CUDA_VISIBLE_DEVICES; without it the
    environment is left alone. A run counts as finished when its command exits 0 *and* wrote summary.json.
    """
    todo, done = pending_runs(sweep)
    for run in done:
        echo(f"skip      {run.name} (finished)")
    free_slots: queue.Queue = queue.Queue()
    for slot in slots or [None] * parallel:
        free_slots.put(slot)

    def attempt(run: Run) -> tuple[int, float, str | None]:
        """(exit status, seconds, why the run is another launcher's or None) of one run."""
        taken = taken_by_another(sweep, run)
        if taken:
            return 0, 0.0, taken
        slot = free_slots.get()
        env = None if slot is None else {**os.environ, "CUDA_VISIBLE_DEVICES": slot}
        start = time.monotonic()
        try:
            code = run_command(run.command, sweep.run_dir(run) / LOG_FILE, env=env)
            # Refused because another launcher's trainer took the run first, or it finished it meanwhile.
            return code, time.monotonic() - start, taken_by_another(sweep, run) if code else None
        finally:
            free_slots.put(slot)

    failed: list[str] = []
    left: list[str] = []
    with ThreadPoolExecutor(max_workers=len(slots) if slots else parallel) as pool:
        futures = {pool.submit(attempt, run): run for run in todo}
        try:
            for i, future in enumerate(as_completed(futures), 1):
                run = futures[future]
                code, seconds, taken = future.result()
                finished = code == 0 and sweep.state(run) == "finished"
                if taken:
                    left.append(f"{run.name} ({taken})")
                    status = f"left to another launcher: {taken}"
                elif finished:
                    status = "ok"
                else:
                    failed.append(run.name)
                    reason = f"exit {code}" if code else "exit 0 without summary.json"
                    status = f"FAILED ({reason}, see {sweep.run_dir(run) / LOG_FILE})"
                echo(f"[{i}/{len(todo)}] {run.name}: {status} in {seconds:.0f} s")
        except KeyboardInterrupt:
            # Runs already started receive the same Ctrl-C; do not start the queued ones.
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    others = f", {len(left)} left to another launcher" if left else ""
    echo(
        f"sweep {sweep.out}: {len(todo) - len(failed) - len(left)} ran ok, {len(failed)} failed, "
        f"{len(done)} skipped (already finished){others}"
    )
    for name in failed:
        echo(f"  failed: {name}")
    for name in left:
        echo(f"  left to another launcher: {name}")
    return 1 if failed else 0


def taken_by_another(sweep: Sweep, run: Run) -> str | None:
    """Why ``run`` is another launcher's (held by its trainer, or finished by it), or None."""
    holder = lock_holder(sweep.run_dir(run))
    if holder:
        return f"held by {holder}"
    return "finished by another launcher" if sweep.state(run) == "finished" else None


# submitit warns a job with this signal (its sbatch ``--signal``) 90 s before preemption or the time limit; the
# trainer takes it as its polite stop (``run.stop_signal``): it saves the step it reached and exits 75.
PREEMPT_SIGNAL = signal.SIGUSR2
SAVE_WAIT_S = 80  # the longest the requeue waits for that save, within submitit's 90 s


def _ignore_preemption_signal() -> None:
    # Until the trainer's stop handler is in place (after its config checks), the warning must not kill it.
    signal.signal(PREEMPT_SIGNAL, signal.SIG_IGN)


class SlurmJob:
    """What submitit runs on the node: one training command, requeued on preemption or timeout.

    On submitit's warning the trainer stops politely (it saves the step it reached); ``checkpoint``, which
    submitit calls before it requeues the job, waits for that save. The requeued job runs the very same
    command; its ``resume=auto`` continues from that step.
    """

    def __init__(self, command: list[str], run_dir: Path, identity: dict, state: Callable[[], str] | None = None):
        self.command = command
        self.run_dir = Path(run_dir)
        self.identity = identity  # what the finished run's summary must say
        self.state = state or functools.partial(run_state, self.run_dir, identity)  # or a study transition run's own
        self.process: subprocess.Popen | None = None  # the trainer, while it runs

    def __call__(self) -> str:
        command = [*self.command, f"run.stop_signal={PREEMPT_SIGNAL.name}"]
        code = run_command(command, self.run_dir / LOG_FILE, preexec_fn=_ignore_preemption_signal,
                           started=self._started)
        holder = lock_holder(self.run_dir) if code else None
        if holder:  # another launcher's trainer took the run first: it is that launcher's to finish
            return f"{self.run_dir}: left to another launcher (held by {holder})"
        if code != 0 or self.state() != "finished":
            raise RuntimeError(f"run {self.run_dir} failed (exit {code}), see {self.run_dir / LOG_FILE}")
        return str(self.run_dir)

    def _started(self, process: subprocess.Popen) -> None:
        self.process = process

    def finish_save(self) -> int | None:
        """Pass the warning on to the trainer (Slurm may signal the job's first process only) and wait for it
        to save and exit; its exit status (75: stopped and saved), or None if it ran out of time."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(PREEMPT_SIGNAL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=SAVE_WAIT_S)
        return self.process.returncode

    def checkpoint(self):
        from submitit.helpers import DelayedSubmission

        self.finish_save()
        return DelayedSubmission(self)

    def __getstate__(self) -> dict:
        return self.__dict__ | {"process": None}  # submitit pickles the job for its requeue, not the process


def _import_submitit():
    try:
        import submitit
    except ImportError as err:
        raise ImportError(
            "the slurm launcher needs submitit: pip install 'vitwarm[slurm]' (or pip install submitit)"
        ) from err
    return submitit


def launch_slurm(
    sweep: Sweep,
    parallel: int | None = None,
    partition: str | None = None,
    gpus_per_node: int | None = None,
    cpus_per_task: int | None = None,
    mem_gb: int | None = None,
    timeout_min: int = 60 * 24,
    extra: dict[str, str] | None = None,
    cluster: str = "slurm",
    echo: Callable[[str], None] = say,
) -> list:
    """Submit the unfinished runs as one job array (one node, one task per run); return submitit's jobs.

    ``extra`` goes to sbatch verbatim (``--slurm-extra account=abc`` → ``#SBATCH --account=abc``).
    ``cluster`` is submitit's executor name; ``local`` runs the array on this machine, for a trial.
    """
    submitit = _import_submitit()
    todo, done = pending_runs(sweep)
    echo(f"{len(done)} finished run(s) skipped, submitting {len(todo)}")
    if not todo:
        return []
    executor = submitit.AutoExecutor(folder=sweep.out / "slurm" / "%j", cluster=cluster)
    params = {"name": f"vitwarm-{sweep.out.name}", "timeout_min": timeout_min, "nodes": 1, "tasks_per_node": 1}
    optional = {"gpus_per_node": gpus_per_node, "cpus_per_task": cpus_per_task, "mem_gb": mem_gb}
    params.update({k: v for k, v in optional.items() if v is not None})
    if cluster == "slurm":
        params["slurm_array_parallelism"] = parallel or len(todo)
        if partition:
            params["slurm_partition"] = partition
        if extra:
            params["slurm_additional_parameters"] = extra
    executor.update_parameters(**params)
    jobs = executor.submit_array([SlurmJob(run.command, sweep.run_dir(run), sweep.identity(run),
                                           functools.partial(sweep.state, run)) for run in todo])
    for run, job in zip(todo, jobs):
        echo(f"submitted {job.job_id}: {run.name}")
    return jobs
