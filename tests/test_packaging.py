"""The wheel: built from the project files, installed into a fresh venv, used through its console scripts.

The fresh venv gets the heavy dependencies (torch, timm, ...) from the environment running the tests through
a .pth file, and the wheel with ``pip install --no-deps --no-index``: seconds, and no network. Nothing of
the source tree is importable there (no PYTHONPATH, another working directory), so what runs is the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow  # builds a wheel and installs it into a fresh venv

SOURCES = ("setup.py", "pyproject.toml", "README.md", "LICENSE", "vitwarm", "recipes")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so that the build leaves nothing in the source tree
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("vitwarm-*.whl")
    env = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=300)
    return env


def run(venv: Path, *command: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


# Each process imports torch and timm (seconds each on a loaded 2-core machine), so the checks share few.
CHECK_INSTALL = r"""
import json, sys
from importlib.metadata import distribution
import vitwarm
from vitwarm.catalog import resolve_accelerate_config
scripts = {e.name: e.load().__module__ for e in distribution("vitwarm").entry_points if e.group == "console_scripts"}
license = any(f.name == "LICENSE" for f in distribution("vitwarm").files)
print(json.dumps({"file": vitwarm.__file__, "scripts": scripts, "license": license,
                  "cpu_ddp": str(resolve_accelerate_config("cpu_ddp"))}))
"""


def test_console_scripts_and_packaged_recipes(venv, tmp_path):
    result = run(venv, "vitwarm-train", "--config", "fmnist_demo", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "fmnist_demo" in result.stdout and "imagenet/vit_base_kdyck" in result.stdout

    listing = run(venv, "vitwarm-recipes", "list", cwd=tmp_path).stdout.split()
    verb = run(venv, "vitwarm", "warmup", "--help", cwd=tmp_path)
    assert verb.returncode == 0 and verb.stdout.startswith("usage: vitwarm warmup "), verb.stderr
    assert {"fmnist_demo", "fmnist_repro", "imagenet/vit_base_kdyck", "cpu", "gpu8"} <= set(listing)

    installed = json.loads(run(venv, "python", "-c", CHECK_INSTALL, cwd=tmp_path).stdout)
    assert Path(installed["file"]).is_relative_to(venv)  # the wheel, not the checkout
    assert installed["scripts"] == {
        "vitwarm": "vitwarm.cli.main", "vitwarm-train": "vitwarm.cli.train",
        "vitwarm-shards": "vitwarm.cli.make_shards", "vitwarm-sweep": "vitwarm.cli.sweep",
        "vitwarm-report": "vitwarm.cli.report", "vitwarm-study": "vitwarm.cli.study",
        "vitwarm-recipes": "vitwarm.cli.recipes",
        "vitwarm-grammars": "vitwarm.cli.grammars"}
    assert installed["license"]
    cpu_ddp = Path(installed["cpu_ddp"])
    assert cpu_ddp.is_relative_to(venv)
    assert cpu_ddp.read_text() == (ROOT / "recipes/accelerate/cpu_ddp.yaml").read_text()

    bad = run(venv, "vitwarm-train", "--config", "fmnist_dmeo", cwd=tmp_path)
    (line,) = bad.stderr.strip().splitlines()
    assert bad.returncode != 0 and line.startswith("vitwarm: error: recipe 'fmnist_dmeo' is neither a file nor a "
                                                   "packaged name (did you mean fmnist_demo?); packaged: ")
