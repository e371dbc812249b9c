"""The one command (vitwarm.cli.main): ``vitwarm <verb>`` / ``python -m vitwarm <verb>`` runs each command
module with the arguments after the verb, names the verb in its usage, and the older entry points still run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vitwarm.cli import grammars, recipes
from vitwarm.cli.main import VERBS, main

from helpers import ROOT, call_main


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_its_help(verb):
    status, out = call_main(main, [verb, "--help"])
    assert status == 0, out
    assert out.startswith(f"usage: python -m vitwarm {verb} ")


def test_a_verb_runs_its_module_with_the_arguments_after_it():
    assert call_main(main, ["grammars", "show", "k_dyck", "--seq-len", "16", "--param", "k=2", "-n", "2"]) == \
        call_main(grammars.main, ["show", "k_dyck", "--seq-len", "16", "--param", "k=2", "-n", "2"])
    assert call_main(main, ["recipes", "path", "fmnist_demo"]) == call_main(recipes.main, ["path", "fmnist_demo"])


def test_the_overview_lists_every_verb():
    status, out = call_main(main, ["--help"])
    assert status == 0
    assert [line.split()[0] for line in out.split("verbs:\n")[1].splitlines() if line.strip()] == list(VERBS)


@pytest.mark.slow  # two interpreters starting torch
def test_the_older_entry_points_still_run():
    for command, usage in ((["-m", "vitwarm.train"], "python -m vitwarm.train"), (["tools/sweep.py"], "sweep.py")):
        result = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {usage} ")
