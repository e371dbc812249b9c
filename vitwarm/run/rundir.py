"""The run directory: every file a run keeps, how each one is written, and how it is read back.

    RUN_DIR/
      config.yaml          the resolved config of the latest launch
      metrics.jsonl        one JSON object per logged step, evaluation or event (vitwarm.run.metrics)
      checkpoints/         <phase index>-<phase>-<step>/ folders with content hashes (vitwarm.run.checkpoints)
      warmup/              the warm-up export: a timm hub folder without a head
      model/               the final image model, head included (a timm hub folder)
      curves.png           the warm-up's and the image phase's curves, redrawn at each evaluation (vitwarm.run.curves)
      summary.json         written last: the run is finished when it parses and its identity matches
      overrides.yaml       a sweep's or study's run only: the overrides it was given, as typed (runs of
                           earlier versions have overrides.json, which is read as well)
      launch.log           a sweep's or study's run only: the output of each launch, appended (vitwarm.sweeps.launch)
      .lock                held by the launch that writes the directory, naming it (vitwarm.run.lock)
      <log.project>/       TensorBoard's output when log.trackers names it

Every file is written through ``vitwarm.atomic.atomic_write`` (a temporary file renamed into place): a
process killed at any moment leaves the old file or the new one, never a mix. None of these names is
followed as a link: a launch finding one planted there refuses (``refuse_links``), since the run would
write, append or delete through it (a shared project folder lets others plant them).

The trainer and the sweep tools both read the directory through this module only: it names every file and
folder of it (the checkpoints' inner files are vitwarm.run.checkpoints', the exports' vitwarm.models.hub's).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict, dataclass, field, fields
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from .. import __version__, provenance
from ..atomic import atomic_write_text, file_hash
from ..config import ADDED, RENAMED, flatten
from ..data.identity import data_changes
from ..errors import ConfigError, free_bytes

SCHEMA_VERSION = 1  # summary.json's fields as of this version (Summary); archives stamp it on older ones
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CURVES = "curves.png"
OVERRIDES = "overrides.yaml"
OLD_OVERRIDES = "overrides.json"  # the same mapping, as earlier versions wrote it
CHECKPOINTS = "checkpoints"
LOCK = ".lock"
WARMUP_EXPORT = "warmup"  # timm hub folders (vitwarm.run.export): the warmed-up backbone, the final model
MODEL_EXPORT = "model"
# Exports whose hashes a checkpoint records, so that a damaged one is never read back.
EXPORTS = (WARMUP_EXPORT, MODEL_EXPORT)
LAUNCH_LOG = "launch.log"
# Every name the run (or its sweep) writes in RUN_DIR, but the lock file (opened with O_NOFOLLOW itself).
WRITTEN = (CONFIG, METRICS, SUMMARY, CURVES, OVERRIDES, LAUNCH_LOG, CHECKPOINTS, *EXPORTS)


def refuse_links(run_dir: str | Path, more: tuple[str, ...] = ()) -> None:
    """A ConfigError naming the first of RUN_DIR's names (``WRITTEN`` and ``more``, e.g. the trackers' folder)
    that is a symbolic link: the run would write through it, into a file or folder that is not the run's."""
    for name in (*WRITTEN, *more):
        path = Path(run_dir) / name
        if path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link (to {os.readlink(path)}), not the run's {name}; vitwarm "
                              "follows no link in a run directory: remove it or choose another run.dir")


def hash_exports(run_dir: str | Path, known: dict | None = None) -> dict[str, str]:
    """sha256 of each file of each export folder present in the run directory, by name relative to it
    (e.g. ``warmup/model.safetensors``). ``known``: the hashes of an earlier call, by name with the file's
    (size, mtime_ns), updated here; a file unchanged since is not read again (an export is written once,
    atomically, and then only read, so each checkpoint of a run need not re-hash it)."""
    run_dir, hashes = Path(run_dir), {}
    known = {} if known is None else known
    for path in (p for name in EXPORTS if (run_dir / name).is_dir() for p in sorted((run_dir / name).rglob("*"))):
        if path.is_file():
            name, stat = path.relative_to(run_dir).as_posix(), path.stat()
            if known.get(name, (None,))[0] != (stat.st_size, stat.st_mtime_ns):
                known[name] = ((stat.st_size, stat.st_mtime_ns), file_hash(path))
            hashes[name] = known[name][1]
    return hashes


def space_warning(run_dir: str | Path, needed: int) -> str | None:
    """A warning line when RUN_DIR's file system has less free space than ``needed`` bytes (Plan.save_bytes)."""
    free = free_bytes(str(run_dir))
    if free is None or free >= needed:
        return None
    return (f"vitwarm: warning: {run_dir} has {free / 1e6:.1f} MB free, less than the {needed / 1e6:.1f} MB one "
            "checkpoint and the exports take: the run stops at the first write that does not fit (make room, "
            "then the same command resumes)")


def write_config(run_dir: str | Path, cfg: DictConfig) -> Path:
    """The resolved config, as the run uses it."""
    return atomic_write_text(Path(run_dir) / CONFIG, OmegaConf.to_yaml(cfg, resolve=True))


# Config keys that provably change neither the weights nor the training records of a run: where it lives,
# how it resumes, log and checkpoint cadence, evaluation batching, token-stream workers (the stream does not
# depend on them: test_worker_count_does_not_change_order), shard preparation of an existing set and the
# patience of HTTP transfers (a transfer asked again delivers the same bytes).
_NOT_IDENTITY = ("run.", "resume", "log.", "checkpoint.", "eval.batch_size", "warmup.num_workers", "data.prepare",
                 "data.stall_s", "data.retries")


def identity(cfg: DictConfig) -> dict[str, Any]:
    """The config keys that make a run the run it is, flattened; two configs that agree here train alike."""
    keys = {k: v for k, v in flatten(cfg).items() if not k.startswith(_NOT_IDENTITY)}
    # 0 and 1 image workers are one logical worker (test_order_depends_on_epoch_and_seed_but_not_on_worker_processes);
    # 'auto' stays itself: the count it resolved to is kept in the checkpoints (RunState.data_workers).
    if keys["data.num_workers"] != "auto":
        keys["data.num_workers"] = max(1, keys["data.num_workers"])
    return keys


def current_names(recorded: dict[str, Any]) -> dict[str, Any]:
    """A recorded identity with the keys renamed since (config.RENAMED, same values) under their new names."""
    return {RENAMED.get(k, (k,))[0]: v for k, v in recorded.items()}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list]:
    """``{key: [old, new]}`` for every identity key whose value differs (None where a key is absent).

    ``old`` may come from a run of an earlier version: keys renamed since (config.RENAMED, same values)
    are read under their new names, and keys added since that it lacks as the value it ran as (config.ADDED),
    so a finished run is not "other config" for a rename or a key it could not have.
    """
    old = {k: v for k, v in ADDED.items() if k in new} | current_names(old)
    return {k: [old.get(k), new.get(k)] for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)}


def describe_changes(changes: dict[str, list]) -> str:
    return ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


def check_identity(cfg: DictConfig, recorded: dict[str, Any], source: Path) -> dict[str, list]:
    """The identity keys ``cfg`` changes against the run recorded in ``source`` (its checkpoint or summary);
    a ConfigError unless every change is allowed deliberately (``resume_allow_changed``)."""
    changes = changed_keys(recorded, identity(cfg))
    allowed = set(cfg.resume_allow_changed)
    unknown = sorted(allowed - recorded.keys())
    if unknown:
        raise ConfigError(f"resume_allow_changed names {', '.join(unknown)}, which "
                          f"{'is' if len(unknown) == 1 else 'are'} not among the keys that identify a run")
    refused = {k: v for k, v in changes.items() if k not in allowed}
    if refused:
        raise ConfigError(f"{source} belongs to a run with other settings: {describe_changes(refused)}. Use the "
                          "same values, another run.dir, or allow the change deliberately with "
                          f"resume_allow_changed=[{','.join(refused)}]")
    return changes


# The key whose deliberate change (resume_allow_changed) also allows other data at the same data.source.
DATA_KEY = "data.source"


def check_data(cfg: DictConfig, recorded: dict, current: dict, checkpoint: Path | None) -> dict[str, list]:
    """``{"data": [what changed]}`` when the data identity ``current`` differs from the one recorded in
    ``checkpoint`` (vitwarm.data.identity); a ConfigError unless allowed deliberately
    (``resume_allow_changed=[data.source]``). A checkpoint of an earlier version records none: nothing to check."""
    if not recorded or recorded == current:
        return {}
    changes = data_changes(recorded, current)
    if DATA_KEY not in cfg.resume_allow_changed:
        raise ConfigError(f"{checkpoint} was trained on other data than {cfg.data.source} holds now: "
                          f"{'; '.join(changes)}. Use the same data, another run.dir, or allow the change "
                          f"deliberately with resume_allow_changed=[{DATA_KEY}]")
    return {"data": changes}


@dataclass
class Summary:
    """summary.json: the final numbers of a run and the identity of the config that produced them."""

    top1: float | None
    """Validation top-1 (percent) of the final model; None when the warm-up ran alone (no image phase)."""
    top5: float | None
    split: str
    test_top1: float | None
    test_top5: float | None
    ema_top1: float | None
    image_samples: int
    warmup_samples: int
    masked_acc: float | None
    train_s: float
    """Seconds in training steps, summed over phases and launches (no start-up, evaluations or saves)."""
    wall_s: float | None
    """Seconds of the launch that finished the run, from its start to this summary (None in summaries of
    earlier versions, whose ``wall_s`` counted the training steps only: read back as ``train_s``)."""
    skipped_samples: int
    """Corrupt or unreadable training samples skipped, summed over processes and restarts."""
    phases: dict[str, dict]
    identity: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    """What the run finished on (``environment()``); runs of earlier versions have none."""
    probe: dict[str, Any] = field(default_factory=dict)
    """The warm-up's probe (vitwarm.run.probe.probe_summary): start, last and best accuracy, transition, stop."""
    attention: dict[str, list] = field(default_factory=dict)
    """The warmed-up ViT's attention-structure scores per layer and head (vitwarm.models.attention_scores)."""
    synthetic_images: bool = False
    """The images were generated (data.source=synthetic): a smoke test, its accuracies those of no data set."""
    schema_version: int = 0
    """The fields of this summary: ``SCHEMA_VERSION`` for runs of this version, 0 for earlier ones (no field)."""


def environment(accelerator_device: str, num_processes: int) -> dict[str, Any]:
    """The software and hardware a run's numbers came from, for summary.json.

    Identity decides which run a run is; this says where it ran, because the same run moves by tenths of a
    point between CPUs (another kernel path, another rounding: docs/comparisons.md). ``source`` is the package
    commit (and whether the tree was modified) and ``machine`` a fingerprint of the host (vitwarm.provenance).
    A resumed run records the machine and source that finished it.
    """
    capability = torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512: the kernel path
    machine = provenance.machine(capability)
    env = {"vitwarm": __version__, "source": provenance.source(), "python": platform.python_version(),
           "torch": torch.__version__, "timm": version("timm"), "accelerate": version("accelerate"),
           "os": f"{platform.system()} {platform.machine()}", "machine": machine,
           "cpu": machine["cpu"], "cpu_count": os.cpu_count(),
           "torch_cpu_capability": capability, "torch_threads": torch.get_num_threads(),
           "device": accelerator_device, "num_processes": num_processes}
    if accelerator_device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(accelerator_device))
        env["cuda"] = torch.version.cuda
    return env


def write_summary(run_dir: str | Path, summary: Summary) -> Path:
    return atomic_write_text(Path(run_dir) / SUMMARY, json.dumps(asdict(summary), indent=1))


def read_summary(run_dir: str | Path) -> Summary | None:
    """The run's summary, or None when it is missing, unreadable or not of this shape."""
    try:
        data = json.loads((Path(run_dir) / SUMMARY).read_text())
        if isinstance(data, dict) and "train_s" not in data:  # before train_s, wall_s counted the steps only
            data |= {"train_s": data.get("wall_s"), "wall_s": None}
        return Summary(**{f.name: data[f.name] for f in fields(Summary) if f.name in data})
    except (OSError, ValueError, TypeError):
        return None


def write_overrides(run_dir: str | Path, overrides: dict[str, str]) -> Path:
    """Record the ``key: value`` overrides (as typed: strings) a sweep or study runs ``run_dir`` with."""
    text = yaml.safe_dump(dict(overrides), sort_keys=False, allow_unicode=True)  # strings stay quoted strings
    return atomic_write_text(Path(run_dir) / OVERRIDES, text)


def read_overrides(run_dir: str | Path) -> dict[str, str] | None:
    """The overrides recorded for ``run_dir``, or None when none were (or they do not parse)."""
    run_dir = Path(run_dir)
    try:
        if (run_dir / OVERRIDES).exists():
            overrides = yaml.safe_load((run_dir / OVERRIDES).read_text())
        else:
            overrides = json.loads((run_dir / OLD_OVERRIDES).read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return overrides if isinstance(overrides, dict) else None


def read_records(path: str | Path) -> tuple[list[dict], list[str]]:
    """The records of a metrics.jsonl and a warning for each line that is not one (e.g. cut off by a kill)."""
    records, warnings = [], []
    path = Path(path)
    if not path.exists():
        return records, warnings
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            records.append(record)
        except ValueError:
            warnings.append(f"vitwarm: warning: dropping unreadable line {number} of {path} "
                            f"(cut off when a process died mid-write?): {line[:60]!r}")
    return records, warnings


def eval_record(phase: str, step: int, split: str, image_samples: int, result: dict[str, float]) -> dict:
    """One evaluation record of metrics.jsonl: top1/top5 (percent), loss and samples over ``split``."""
    return {"event": "eval", "phase": phase, "step": step, "split": split, "image_samples": image_samples} | result


def run_state(run_dir: str | Path, expected: dict[str, Any] | None = None) -> str:
    """``finished``, ``other config`` (finished, but not with ``expected``'s identity), ``interrupted`` or ``new``."""
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    if summary is not None:
        return "finished" if expected is None or not changed_keys(summary.identity, expected) else "other config"
    return "interrupted" if (run_dir / CONFIG).exists() else "new"
