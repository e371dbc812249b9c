"""``vitwarm <verb> ...`` and ``python -m vitwarm <verb> ...``: every command of vitwarm under one name.

A verb is the command line of one module of vitwarm.cli, called with the arguments after the verb (``vitwarm
train --help`` is that command's help). The console scripts (``vitwarm-train``, ...), ``tools/*.py`` and
``accelerate launch -m vitwarm.train`` run the same modules; ``accelerate launch -m vitwarm train ...`` works
too. A new command is a module here with a ``main(argv)`` and a line in ``VERBS``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys

# verb -> (module of vitwarm.cli whose main(argv) runs it, what it does); imported only when called, so a
# quick verb does not pay for torch.
VERBS = {
    "train": ("train", "one whole run of a recipe: warm-up, transfer, image training, evaluation"),
    "warmup": ("warmup", "a recipe's warm-up alone: a warmed-up backbone in timm's hub format for another trainer"),
    "shards": ("make_shards", "write webdataset shards (Fashion-MNIST, image folders, torchvision sets), verify them"),
    "sweep": ("sweep", "a grid of runs over config overrides (local, print or Slurm launchers)"),
    "study": ("study", "a study file: its stages' runs, then its report (paired t-intervals) and its archive"),
    "report": ("report", "paired comparisons, data equivalence and plots of a sweep's finished runs"),
    "recipes": ("recipes", "the packaged recipes and accelerate configs, by name"),
    "grammars": ("grammars", "list the warm-up's grammars, show their sequences"),
}


def usage() -> str:
    width = max(map(len, VERBS))
    verbs = "\n".join(f"  {verb:{width}}  {what}" for verb, (_, what) in VERBS.items())
    return (f"usage: {called_as()} <verb> [arguments]   ({called_as()} <verb> --help for a verb's own)\n\n"
            f"Procedural warm-up of vision transformers.\n\nverbs:\n{verbs}\n")


def called_as() -> str:
    """``vitwarm`` for the console script, ``python -m vitwarm`` otherwise (as the user typed it)."""
    return "vitwarm" if os.path.basename(sys.argv[0]) == "vitwarm" else "python -m vitwarm"


def main(argv: list[str] | None = None) -> int | None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        sys.stdout.write(usage())
        return 0
    verb, rest = (argv[0], argv[1:]) if argv else (None, [])
    if verb not in VERBS:
        close = difflib.get_close_matches(verb or "", VERBS, n=1)
        problem = f"unknown verb {verb!r}{f' (did you mean {close[0]}?)' if close else ''}" if verb else "no verb given"
        sys.stderr.write(f"{usage()}\nvitwarm: error: {problem}; choose one of {', '.join(VERBS)}\n")
        return 2
    command = importlib.import_module(f"vitwarm.cli.{VERBS[verb][0]}")
    # The verb's usage line names it as called (vitwarm.errors.command_name and argparse read argv[0]).
    program, sys.argv[0] = sys.argv[0], f"{called_as()} {verb}"
    try:
        return command.main(rest)
    finally:
        sys.argv[0] = program
