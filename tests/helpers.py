"""Helpers shared by the test files (the one module tests import besides vitwarm; no test imports another).

- ``ROOT``, ``TINY``: the repository and the tiny test recipe; ``ENV``: the environment of every trainer
  subprocess (one thread per process: identical arithmetic in every run, so resume checks are bitwise).
- ``train``, ``train_command``, ``train_records``, ``kill_once``, ``trained``: real ``python -m vitwarm.train``
  runs; ``kill_group``: SIGKILL a launcher's process group and wait until all of it has stopped;
  ``assert_same_weights_and_records``: the check of a resumed run against its reference;
  ``train_in_process``: the same entry point called in the test's process, for runs refused before step 1;
  ``launch_command``: the same run under ``accelerate launch`` with one of recipes/accelerate/;
  ``STOCK_EVAL``: an export evaluated by stock timm alone, in a fresh interpreter.
- ``SYNTHETIC``, ``train_here``: the tiny recipe on generated images (no data needed) and a whole run of it in
  the test's process (``vitwarm.run.engine.train``), for the fast lane.
- ``free_port``: a free TCP port on 127.0.0.1 for a process group's rendezvous.
- ``write_finished``: a summary.json exactly as the trainer writes it, for run directories not trained.
- ``Mistake``, ``check_mistake``: mistake tables (below).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_file

from vitwarm.run.rundir import Summary, write_summary

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "tiny.yaml"
# One thread per process: identical arithmetic in every run (bitwise resume checks) and no oversubscription.
ENV = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# A record per step, so that records of a resumed run average over the same steps as the reference's.
PER_STEP_LOGS = ("log.every_steps=1",)
# tests/tiny.yaml on generated images at its own 28 px gray shape: 256 training images, 64 per
# evaluation split; read in the training process (no loader workers to start), the run takes seconds.
SYNTHETIC = ("data.source=synthetic", "data.synthetic.samples=256", "data.synthetic.eval_samples=64",
             "data.synthetic.shape=[28,28]", "data.synthetic.channels=1", "data.num_workers=0")


def train_command(run_dir: Path, shards: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "vitwarm.train", "--config", str(TINY), f"data.source={shards}",
            f"run.dir={run_dir}", *overrides]


def launch_command(accelerate_config: str, run_dir: Path, shards: Path, *overrides: str) -> list[str]:
    """``train_command``'s run under ``accelerate launch`` with recipes/accelerate/``accelerate_config``."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "recipes" / "accelerate" / accelerate_config), "--main_process_port", str(free_port()),
            *train_command(run_dir, shards, *overrides)[1:]]


# tests/tiny.yaml with a 6-block image model grown from a 4-block warm-up model of half the width, its middle
# blocks shared (tests/test_grow_run.py; under FSDP in tests/test_fsdp.py).
GROWN = ("model.kwargs={embed_dim: 64, depth: 6, num_heads: 2}",
         "warmup.model.kwargs={embed_dim: 32, num_heads: 1, depth: 4}", "warmup.model.shared_middle=true",
         "transfer.grow_depth=core")


def train(run_dir: Path, shards: Path, *overrides: str, kill_at: str | None = None,
          signals: str | None = None, launch: str | None = None) -> subprocess.CompletedProcess:
    """A run; ``kill_at``: the fault point (vitwarm.atomic.fault_point, ``name@N``) at which it SIGKILLs itself,
    or sends itself ``signals`` (``SIGINT,SIGINT``); ``launch``: under ``accelerate launch`` with this config of
    recipes/accelerate/ (else one process)."""
    env = ENV | ({"VITWARM_KILL_AT": kill_at} if kill_at else {})
    env |= {"VITWARM_FAULT_SIGNALS": signals} if signals else {}
    command = launch_command(launch, run_dir, shards, *overrides) if launch else \
        train_command(run_dir, shards, *overrides)
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def trained(run_dir: Path, shards: Path, *overrides: str) -> Path:
    """A finished run (a module's reference), or the test fails with the run's last output."""
    result = train(run_dir, shards, *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def assert_same_weights_and_records(run_dir: Path, reference: Path) -> None:
    """The final model and the metrics records (timing fields aside) of two runs are the same."""
    expected, got = load_file(reference / "model/model.safetensors"), load_file(run_dir / "model/model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert (expected[name] == got[name]).all(), name
    assert train_records(run_dir) == train_records(reference)


# Evaluates an export the way a user without vitwarm would, with the helpers timm's own scripts use: the model
# and its preprocessing come from the folder alone (no in_chans, size or mean/std given), the validation split
# through timm's webdataset reader, which finds the split in _info.json.
STOCK_EVAL = r"""
import json, sys
import timm, torch
from timm.data import create_dataset, create_transform
from timm.data.model_config import resolve_input_data_config
from timm.models import resolve_model_input_args

export, shards = sys.argv[1], sys.argv[2]
model = timm.create_model(**resolve_model_input_args(f"local-dir:{export}", {}, pretrained=True)).eval()
config = resolve_input_data_config(model, {})
mode = "RGB" if config["input_size"][0] == 3 else "L"  # what timm's train.py picks for --input-img-mode
dataset = create_dataset("wds/fashion_mnist", root=shards, split="validation", is_training=False,
                         input_img_mode=mode, transform=create_transform(**config))
correct = total = 0
with torch.no_grad():
    for images, labels in torch.utils.data.DataLoader(dataset, batch_size=250):
        correct += (model(images).argmax(1) == labels).sum().item()
        total += len(labels)
headless = timm.create_model(f"local-dir:{export.replace('model', 'warmup')}", pretrained=True, num_classes=7)
print(json.dumps({"top1": 100 * correct / total, "samples": total, "config": config,
                  "vitwarm_imported": any(m.split(".")[0] == "vitwarm" for m in sys.modules),
                  "headless_classes": headless.num_classes, "label_names": model.pretrained_cfg["label_names"]}))
"""



def train_in_process(run_dir: Path, shards: Path, *overrides: str) -> tuple[int, str]:
    """(exit status, stdout + stderr) of the trainer's ``main(argv)`` called in this process, for runs that are
    refused before step 1: a trainer process spends most of its seconds importing torch before it reads a key."""
    from vitwarm.train import main

    return call_main(main, ["--config", str(TINY), f"data.source={shards}", f"run.dir={run_dir}", *overrides])


def train_here(run_dir: Path, *overrides: str) -> dict:
    """A whole run of the tiny recipe on ``SYNTHETIC`` images in this process, on one thread (the same
    arithmetic in every run, as ``ENV`` gives subprocesses); returns its summary."""
    import torch
    from accelerate.state import AcceleratorState

    from vitwarm.config import load_config
    from vitwarm.run.engine import train as run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(load_config(TINY, [*SYNTHETIC, f"run.dir={run_dir}", *overrides]))
    finally:
        torch.set_num_threads(threads)
        AcceleratorState._reset_state(reset_partial_state=True)  # the next run may ask for other settings


def call_main(main, args: list[str]) -> tuple[int, str]:
    """(exit status, stdout + stderr) of an entry point's ``main(args)`` called in this process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = main(args)
        except SystemExit as exit_:  # argparse: --help, usage errors
            status = exit_.code
    return status, out.getvalue()


def train_records(run_dir: Path) -> list[dict]:
    """Training and eval records without the timing fields, which differ between any two runs."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "samples_per_s"} for line in lines]


def kill_once(run_dir: Path, shards: Path, ready, *overrides: str) -> None:
    """Start a run, SIGKILL its process group as soon as ``ready()`` holds, and check that it had not finished."""
    process = subprocess.Popen(train_command(run_dir, shards, *overrides), cwd=ROOT, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None:
        assert time.monotonic() < deadline, f"the run never reached the point to kill it at ({run_dir})"
        time.sleep(0.01)
    kill_group(process)
    assert not (run_dir / "summary.json").exists(), "the run ended before it could be killed"


def kill_group(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGKILL the process group that ``process`` leads and return once none of its processes runs any more.

    ``process.wait()`` alone reaps the leader only: a child of the same group (a study's trainer) dies a moment
    later, and a write it was inside (a rename is one system call) still completes. A test that looks at the run
    directories before then sees a run unfinished that is finished by the time the re-launch looks.
    """
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + timeout_s
    while group_running(process.pid):
        assert time.monotonic() < deadline, f"process group {process.pid} still runs {timeout_s:.0f} s after SIGKILL"
        time.sleep(0.01)


def group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (Linux /proc; a zombie has stopped for good)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # the process ended while the listing was read
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(group) == pgid and state != "Z":
                return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FINISHED_DEFAULTS = dict(top1=50.0, top5=90.0, split="validation", test_top1=None, test_top5=None, ema_top1=None,
                         image_samples=1000, warmup_samples=0, masked_acc=None, train_s=1.0, wall_s=2.0,
                         skipped_samples=0, phases={})


def write_finished(run_dir: Path, identity: dict, **numbers) -> None:
    """Mark ``run_dir`` finished under ``identity`` (vitwarm.run.rundir.identity), with ``numbers`` in its summary."""
    write_summary(run_dir, Summary(**(FINISHED_DEFAULTS | numbers), identity=identity))


# Mistake tables: Mistake tables: one row per mistake a user can make, and the one check every row must pass.
#
# A row is ``Mistake(name, argv, names, status=1, launch="inproc", files={})``:
#
# - ``argv``: the command after ``python``: ``["-m", "vitwarm.train", ...]``, ``["-m", "vitwarm", "grammars", ...]``
#   or ``["tools/<tool>.py", ...]``. Placeholders: ``{tiny}`` tests/tiny.yaml, ``{shards}`` the session's
#   Fashion-MNIST shard set, ``{tmp}`` an empty directory of the row. ``vitwarm.train`` rows get
#   ``data.source={shards}`` and ``run.dir={tmp}/run`` appended (a row's own ``data.source=`` comes later and wins).
# - ``names``: text the error line must contain (the bad key, value, file, shard or sample).
# - ``status``: the exit status: 1 for an error, 2 for a usage error.
# - ``files``: ``{relative path: text}`` written into ``{tmp}`` first (recipes and the like).
# - ``launch``: ``"inproc"`` calls the entry point's ``main(argv)`` in this interpreter (what its
#   ``if __name__ == "__main__"`` line does, in a fraction of a second); ``"subprocess"`` runs a real ``python``;
#   ``"accelerate2"`` runs ``accelerate launch`` with 2 CPU processes (gloo).
#
# ``check_mistake(row, tmp, shards)`` runs a row and asserts: the exit status; exactly one line ``vitwarm: error: ...``
# naming ``names``; no traceback (under ``accelerate2``: none from vitwarm; the launcher adds its own report of
# the failed processes, whose root cause must be that same error, not a link); and no run directory created,
# so no step was taken.
ERROR = "vitwarm: error: "


@dataclass(frozen=True)
class Mistake:
    name: str
    argv: list[str] = field(hash=False)
    names: str
    status: int = 1
    launch: str = "inproc"
    files: dict[str, str] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return self.name


def _argv(row: Mistake, tmp: Path, shards: Path) -> list[str]:
    argv = [a.format(tiny=TINY, shards=shards, tmp=tmp) for a in row.argv]
    if argv[:2] == ["-m", "vitwarm.train"]:
        argv = argv[:2] + [f"data.source={shards}", f"run.dir={tmp / 'run'}"] + argv[2:]
    return argv


def _main(argv: list[str]):
    """The entry point of a command: ``-m module`` or ``tools/<tool>.py``, and the arguments it gets."""
    if argv[0] == "-m":
        module = importlib.import_module(argv[1] if argv[1] != "vitwarm" else "vitwarm.__main__")
        return module.main, argv[2:]
    spec = importlib.util.spec_from_file_location(Path(argv[0]).stem, ROOT / argv[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main, argv[1:]


def run(row: Mistake, tmp: Path, shards: Path) -> tuple[int, str]:
    """(exit status, stdout + stderr) of the row's command."""
    for path, text in row.files.items():
        (tmp / path).write_text(text.replace("{tmp}", str(tmp)))
    argv = _argv(row, tmp, shards)
    if row.launch == "inproc":
        return call_main(*_main(argv))
    if row.launch == "accelerate2":
        argv = ["-m", "accelerate.commands.launch", "--config_file", str(ROOT / "recipes/accelerate/cpu_ddp.yaml"),
                "--main_process_port", str(free_port()), *argv]
    result = subprocess.run([sys.executable, *argv], cwd=ROOT, env=ENV | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                            text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


def check_mistake(row: Mistake, tmp: Path, shards: Path) -> None:
    status, output = run(row, tmp, shards)
    errors = [line for line in output.splitlines() if line.startswith(ERROR)]
    assert status == row.status, f"exit status {status}, expected {row.status}:\n{output[-3000:]}"
    assert len(errors) == 1, f"expected exactly one error line, got {len(errors)}:\n{output[-3000:]}"
    assert row.names in errors[0], f"the error line does not name {row.names!r}: {errors[0]}"
    if row.launch == "accelerate2":
        frames = [line for line in output.splitlines() if line.strip().startswith("File ")]
        assert not [f for f in frames if f"{os.sep}vitwarm{os.sep}" in f], output[-3000:]
        # torch elastic's ChildFailedError report (printed by the launcher, beyond vitwarm's reach) takes each
        # failed process's message from its error file; without one it shows a link instead.
        cause = output.split("Root Cause", 1)[-1]
        assert row.names in cause and "To enable traceback see" not in output, output[-3000:]
    else:
        assert "Traceback" not in output, output[-3000:]
    assert not (tmp / "run").exists(), "a run directory was created"
