"""Sweep expansion, the print/local/slurm launchers, and skip/resume on prepared run directories.

The launcher is tested with a small stand-in trainer script (written below) that records which runs it was
started for and writes summary.json; what is under test is which commands the launcher executes.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
import types
from pathlib import Path

import pytest

from vitwarm.run.rundir import read_overrides
from vitwarm.sweeps import launch
from vitwarm.sweeps.grid import parse_grid, parse_spec, plan_sweep, planned_identity, read_sweep, write_sweep
from vitwarm.sweeps.names import run_name

from helpers import write_finished

REPO = Path(__file__).resolve().parents[1]


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text("seed: 0\n")
    return path


# The stand-in trainer: records its run.dir (and CUDA_VISIBLE_DEVICES), fails for seed=13, else finishes
# with a summary.json written the trainer's way, under the identity of its command line.
FAKE_TRAINER = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, os.environ["TESTS_DIR"])
from helpers import write_finished
from vitwarm.config import load_config
from vitwarm.run.rundir import identity
args = sys.argv[1:]
run_dir = Path(next(a for a in args if a.startswith("run.dir=")).split("=", 1)[1])
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps({"name": run_dir.name, "args": args, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\\n")
print("training", run_dir.name)
if "seed=13" in args:
    sys.exit(3)
run_dir.mkdir(parents=True, exist_ok=True)
(run_dir / "config.yaml").write_text("seed: 0\\n")
base, overrides = args[args.index("--config") + 1], [a for a in args if "=" in a]
write_finished(run_dir, identity(load_config(base, overrides)))
"""


@pytest.fixture
def trainer(tmp_path: Path, monkeypatch) -> tuple[list[str], Path]:
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("RECORD", str(record))
    monkeypatch.setenv("TESTS_DIR", str(Path(__file__).parent))
    return [sys.executable, str(script)], record


def executed(record: Path) -> list[dict]:
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_parse_grid_keeps_values_as_strings():
    assert parse_grid("warmup.fraction=0,0.001,0.01") == ("warmup.fraction", ["0", "0.001", "0.01"])
    assert parse_grid("procedural.grammar=k_dyck:3+ww:1") == ("procedural.grammar", ["k_dyck:3+ww:1"])


@pytest.mark.parametrize(
    "grids, sets, bad",
    [
        (["warmup.fraction"], [], "warmup.fraction"),
        (["seed="], [], "seed="),
        (["seed=0,,1"], [], "seed=0,,1"),
        (["seed=0,1,0"], [], "seed=0,1,0"),
        (["seed=0,1", "seed=2,3"], [], "seed=2,3"),
        (["=0,1"], [], "=0,1"),
        (["run.dir=a,b"], [], "run.dir=a,b"),
        (["seed=0,1"], ["seed=3"], "seed=3"),
        ([], ["budget.epochs"], "budget.epochs"),
    ],
)
def test_bad_specs_name_the_bad_value(grids, sets, bad):
    with pytest.raises(ValueError) as err:
        parse_spec(grids, sets)
    assert repr(bad) in str(err.value)


def test_plan_expands_product_in_order_with_commands(tmp_path, recipe):
    grids, sets = parse_spec(["warmup.fraction=0,0.01", "seed=0,1,2"], ["budget.epochs=2"])
    sweep = plan_sweep(str(recipe), grids, sets, tmp_path / "sw", nproc=2, accelerate_config=str(recipe))
    names = [r.name for r in sweep.runs]
    assert names == [f"fraction={f}__seed={s}" for f in ("0", "0.01") for s in ("0", "1", "2")]
    run = sweep.runs[4]  # fraction 0.01, seed 1
    assert run.overrides == {"budget.epochs": "2", "warmup.fraction": "0.01", "seed": "1"}
    out = (tmp_path / "sw").absolute()
    assert run.command == [
        "accelerate", "launch", "--num_processes", "2", "--main_process_port", "29504",
        "--config_file", str(recipe.absolute()), "-m", "vitwarm.train",
        "--config", str(recipe.absolute()), "budget.epochs=2", "warmup.fraction=0.01", "seed=1",
        f"run.dir={out / 'fraction=0.01__seed=1'}", "resume=auto",
    ]  # fmt: skip
    ports = [r.command[r.command.index("--main_process_port") + 1] for r in sweep.runs]
    assert len(set(ports)) == len(ports)


def test_names_are_short_and_safe():
    assert run_name({"procedural.grammar": "k_dyck:3+ww:1", "procedural.params": "{k: 32}",
                     "transfer.parts": "[attn, mlp]", "transfer.sources": "{}"}) == \
        "grammar=k_dyck-3+ww-1__params=k-32__parts=attn+mlp__sources=none"
    # Keys that end alike keep as much of themselves as tells them apart.
    assert run_name({"warmup.fraction": "0.05", "budget.fraction": "1", "seed": "1"}) == \
        "warmup.fraction=0.05__budget.fraction=1__seed=1"
    assert run_name({}) == "run"


def test_runs_are_named_by_the_keys_that_vary_and_numbered_when_a_name_would_be_long(tmp_path, recipe):
    # docs/study2.md's thirteen keys, one value each: the keys that vary name the runs, here only the seed.
    grids = {"budget.epochs": ["4"], "budget.regime": ["compute_matched"], "model.init": ["default"],
             "warmup.fraction": ["1.0"], "warmup.batch_size": ["8"], "warmup.seq_len": ["16"], "warmup.lr": ["0.001"],
             "procedural.params": ["{k: 32}"], "warmup.model.name": ["''"], "warmup.model.shared_middle": ["false"],
             "transfer.grow_depth": ["stretch"], "budget.matched_to": ["${run.dir}/../w1_seed=${seed}"],
             "seed": ["0", "1"]}
    assert [r.name for r in plan_sweep(str(recipe), grids, {}, tmp_path / "a").runs] == ["seed=0", "seed=1"]
    # Names that would be long number the sweep's runs; each run's overrides file says what it is.
    long = {f"warmup.a_rather_long_key_{i}": ["1", "2"] for i in range(3)}
    sweep = plan_sweep(str(recipe), long, {}, tmp_path / "b")
    assert [r.name for r in sweep.runs] == [f"run{i}" for i in range(1, 9)]
    write_sweep(sweep)
    assert read_overrides(tmp_path / "b" / "run8") == {k: "2" for k in long}
    # Planned again with a value more, every run already planned keeps its directory.
    long["warmup.a_rather_long_key_0"] = ["3", "1", "2"]
    again = {r.overrides["warmup.a_rather_long_key_0"] + r.name for r in plan_sweep(str(recipe), long, {},
                                                                                      tmp_path / "b").runs}
    assert {f"{r.overrides['warmup.a_rather_long_key_0']}{r.name}" for r in sweep.runs} < again


def test_names_that_come_out_alike_are_told_apart_by_their_directories(tmp_path, recipe):
    grids = {"data.source": ["a:b", "a/b", "a b"]}
    sweep = plan_sweep(str(recipe), grids, {"seed": "1"}, tmp_path)
    assert [r.name for r in sweep.runs] == ["source=a-b", "source=a-b-2", "source=ab"]
    write_sweep(sweep)
    assert read_overrides(tmp_path / "source=a-b-2") == {"seed": "1", "data.source": "a/b"}
    # Planned again in another order, each run finds the directory its overrides file names.
    again = plan_sweep(str(recipe), {"data.source": ["a/b", "a:b", "a b"]}, {"seed": "1"}, tmp_path)
    assert {r.name: r.overrides["data.source"] for r in again.runs} == {
        "source=a-b": "a:b", "source=a-b-2": "a/b", "source=ab": "a b"}
    # A directory holding a run of other overrides is never taken over.
    (tmp_path / "name=other").mkdir()
    (tmp_path / "name=other" / "config.yaml").write_text("seed: 2\n")
    names = [r.name for r in plan_sweep(str(recipe), {"run.name": ["other", "x"]}, {}, tmp_path).runs]
    assert names == ["name=other-2", "name=x"]


def test_entry_replaces_accelerate(tmp_path, recipe):
    sweep = plan_sweep(str(recipe), {"seed": ["0"]}, {}, tmp_path, entry=["python", "-m", "vitwarm.train"])
    assert sweep.runs[0].command[:5] == ["python", "-m", "vitwarm.train", "--config", str(recipe.absolute())]


def test_sweep_dir_refuses_a_different_base_or_set(tmp_path, recipe):
    write_sweep(plan_sweep(str(recipe), {"seed": ["0", "1"]}, {"budget.epochs": "2"}, tmp_path))
    # Extending the grid is fine; changing a fixed override is not.
    write_sweep(plan_sweep(str(recipe), {"seed": ["0", "1", "2"]}, {"budget.epochs": "2"}, tmp_path))
    assert len(read_sweep(tmp_path)["runs"]) == 3
    with pytest.raises(ValueError, match="Use a new --out"):
        write_sweep(plan_sweep(str(recipe), {"seed": ["0"]}, {"budget.epochs": "3"}, tmp_path))


def test_print_launcher_prints_unfinished_commands_and_writes_sweep_json(tmp_path, recipe, capsys):
    out = tmp_path / "sw"
    overrides = {"model.name": "vit_tiny_patch16_224", "seed": "1"}
    write_finished(out / "seed=1", planned_identity(str(recipe), overrides, out / "seed=1"))
    tool = load_tool("sweep")
    argv = ["--base", str(recipe), "--grid", "seed=0,1,2", "--set", "model.name=vit_tiny_patch16_224"]
    assert tool.main([*argv, "--out", str(out), "--launcher", "print"]) == 0
    lines = capsys.readouterr().out.splitlines()
    spec = read_sweep(out)
    expected = [r["command"] for r in spec["runs"] if r["name"] != "seed=1"]
    assert [shlex.split(line) for line in lines] == expected
    assert [r["name"] for r in spec["runs"]] == ["seed=0", "seed=1", "seed=2"]
    assert spec["grids"] == {"seed": ["0", "1", "2"]}
    assert spec["sets"] == {"model.name": "vit_tiny_patch16_224"}
    assert all("model.name=vit_tiny_patch16_224" in cmd for cmd in expected)


def test_dry_run_writes_nothing(tmp_path, recipe, capsys):
    tool = load_tool("sweep")
    out = tmp_path / "sw"
    argv = ["--base", str(recipe), "--grid", "seed=0,1", "--out", str(out), "--launcher", "local", "--dry-run"]
    assert tool.main(argv) == 0
    assert not out.exists()
    assert capsys.readouterr().out.count("new ") == 2


def test_base_and_accelerate_config_by_packaged_name(tmp_path, capsys):
    argv = ["--base", "fmnist_demo", "--accelerate-config", "cpu_ddp", "--grid", "seed=0,1", "--out",
            str(tmp_path / "sw"), "--launcher", "local", "--dry-run"]
    assert load_tool("sweep").main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(str(REPO / "recipes/fmnist_demo.yaml") in line for line in lines)
    assert all(str(REPO / "recipes/accelerate/cpu_ddp.yaml") in line for line in lines)


def test_cli_rejects_bad_grid_and_missing_base(tmp_path, recipe, capsys):
    tool = load_tool("sweep")
    with pytest.raises(SystemExit):
        tool.main(["--base", str(recipe), "--grid", "seed=0,,1", "--out", str(tmp_path), "--launcher", "print"])
    assert "'seed=0,,1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--base", str(tmp_path / "nope.yaml"), "--out", str(tmp_path), "--launcher", "print"])
    assert "nope.yaml" in capsys.readouterr().err


@pytest.mark.parametrize("name, offers", [
    ("sweep", ["--base", "--grid", "--set", "--out", "{local,print,slurm}"]),
    ("report", ["--out", "--metric", "{top1,top5,test_top1,test_top5}", "{linear,log}"]),
])
def test_tools_offer_their_options_in_their_help(name, offers, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_tool(name).main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: ")
    assert [option for option in offers if option not in shown] == []


@pytest.mark.slow
def test_local_launcher_skips_finished_and_resumes_interrupted(tmp_path, recipe, trainer):
    entry, record = trainer
    sweep = plan_sweep(str(recipe), {"seed": ["0", "1", "2"]}, {}, tmp_path / "sw", entry=entry)
    finished, interrupted, new = (sweep.run_dir(r) for r in sweep.runs)
    finished.mkdir(parents=True)
    (finished / "config.yaml").write_text("seed: 0\n")
    write_finished(finished, sweep.identity(sweep.runs[0]))
    interrupted.mkdir()
    (interrupted / "config.yaml").write_text("seed: 1\n")
    assert [sweep.state(r) for r in sweep.runs] == ["finished", "interrupted", "new"]

    messages: list[str] = []
    assert launch.launch_local(sweep, parallel=2, echo=messages.append) == 0
    calls = executed(record)
    assert sorted(c["name"] for c in calls) == ["seed=1", "seed=2"]
    assert all(c["args"][-1] == "resume=auto" for c in calls)
    assert all(sweep.state(r) == "finished" for r in sweep.runs)
    assert "training seed=1" in (interrupted / launch.LOG_FILE).read_text()
    assert sum(": ok in" in m for m in messages) == 2
    assert "2 ran ok, 0 failed, 1 skipped" in messages[-1]

    # Everything is finished now: a second launch runs nothing.
    assert launch.launch_local(sweep, echo=messages.append) == 0
    assert len(executed(record)) == 2


@pytest.mark.slow
def test_local_launcher_reports_failures_and_shares_out_gpus(tmp_path, recipe, trainer):
    entry, record = trainer
    sweep = plan_sweep(str(recipe), {"seed": ["0", "13", "2", "3"]}, {}, tmp_path / "sw", entry=entry)
    slots = launch.gpu_slots(["0", "1", "2", "3"], parallel=2, nproc=2)
    assert slots == ["0,1", "2,3"]
    messages: list[str] = []
    assert launch.launch_local(sweep, slots=slots, echo=messages.append) == 1
    assert {c["gpus"] for c in executed(record)} <= set(slots)
    assert any("seed=13: FAILED (exit 3" in m for m in messages)
    assert messages[-2:] == [
        f"sweep {sweep.out}: 3 ran ok, 1 failed, 0 skipped (already finished)",
        "  failed: seed=13",
    ]
    with pytest.raises(ValueError, match="needs 6"):
        launch.gpu_slots(["0", "1"], parallel=3, nproc=2)


def test_slurm_without_submitit_says_how_to_install(tmp_path, recipe, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    sweep = plan_sweep(str(recipe), {"seed": ["0"]}, {}, tmp_path)
    with pytest.raises(ImportError, match=r"pip install 'vitwarm\[slurm\]'"):
        launch.launch_slurm(sweep)


def fake_submitit(submitted: dict) -> types.ModuleType:
    """A stand-in for the parts of submitit the launcher uses (the real one is an optional dependency)."""

    class DelayedSubmission:
        def __init__(self, function, *args, **kwargs):
            self.function, self.args, self.kwargs = function, args, kwargs

    class AutoExecutor:
        def __init__(self, folder, cluster=None):
            submitted.update(folder=folder, cluster=cluster)

        def update_parameters(self, **params):
            submitted["params"] = params

        def submit_array(self, fns):
            submitted["fns"] = fns
            return [types.SimpleNamespace(job_id=f"7_{i}") for i in range(len(fns))]

    module = types.ModuleType("submitit")
    module.AutoExecutor = AutoExecutor
    module.helpers = types.ModuleType("submitit.helpers")
    module.helpers.DelayedSubmission = DelayedSubmission
    return module


@pytest.mark.slow
def test_slurm_submits_unfinished_runs_as_checkpointable_array(tmp_path, recipe, trainer, monkeypatch):
    entry, record = trainer
    submitted: dict = {}
    module = fake_submitit(submitted)
    monkeypatch.setitem(sys.modules, "submitit", module)
    monkeypatch.setitem(sys.modules, "submitit.helpers", module.helpers)
    sweep = plan_sweep(str(recipe), {"seed": ["0", "1", "13"]}, {}, tmp_path / "sw", entry=entry)
    done = sweep.run_dir(sweep.runs[0])
    done.mkdir(parents=True)
    write_finished(done, sweep.identity(sweep.runs[0]))

    jobs = launch.launch_slurm(
        sweep, partition="gpu", gpus_per_node=4, timeout_min=90, extra={"account": "abc"}, echo=lambda m: None
    )
    assert len(jobs) == 2
    assert submitted["params"] == {
        "name": "vitwarm-sw",
        "timeout_min": 90,
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": 4,
        "slurm_array_parallelism": 2,
        "slurm_partition": "gpu",
        "slurm_additional_parameters": {"account": "abc"},
    }
    job, failing = submitted["fns"]
    assert job.command == sweep.runs[1].command
    # Preemption requeues the very same command (resume=auto continues it).
    delayed = job.checkpoint()
    assert delayed.function is job and delayed.args == () and delayed.kwargs == {}
    assert job() == str(sweep.run_dir(sweep.runs[1]))
    with pytest.raises(RuntimeError, match="exit 3"):
        failing()
    assert [c["name"] for c in executed(record)] == ["seed=1", "seed=13"]


def test_planned_identity_resolves_run_dir_as_the_run_did(tmp_path):
    # A composed transfer's sources written with ${run.dir} (as in docs/comparisons.md): the planned identity
    # must resolve them against the run's own directory, as the run's command did, or a finished run of the
    # sweep reads as "finished under another config".
    from vitwarm.config import load_config
    from vitwarm.run.rundir import changed_keys, identity

    base = str(REPO / "tests" / "tiny.yaml")
    overrides = {"transfer.sources": '{attn: "${run.dir}/../source/warmup"}'}
    run_dir = tmp_path / "sweep" / "composed"
    trained = identity(load_config(base, [f"transfer.sources={overrides['transfer.sources']}", f"run.dir={run_dir}"]))
    assert not changed_keys(trained, planned_identity(base, overrides, run_dir))
    assert changed_keys(trained, planned_identity(base, overrides, tmp_path / "elsewhere" / "composed"))
    sweep = plan_sweep(base, {"seed": ["0"]}, {}, tmp_path / "s2")
    (run,) = sweep.runs
    assert sweep.identity(run) == planned_identity(base, run.overrides, sweep.run_dir(run))
