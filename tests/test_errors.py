"""The one error path: anticipated failures are one line and status 1, bugs keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from vitwarm.errors import STOPPED, ArgumentParser, ConfigError, Stopped, VitwarmError, one_line_errors


def failing(error: BaseException):
    @one_line_errors
    def main(argv=None):
        raise error

    return main


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("vitwarm: error: ")]


@pytest.mark.parametrize("error,line", [
    (ConfigError("train.lr=-1.0 is outside the valid range (0, inf)"),
     "vitwarm: error: train.lr=-1.0 is outside the valid range (0, inf)"),
    (VitwarmError("shard x.tar: 3 samples, _info.json says 4\n  re-write it"),
     "vitwarm: error: shard x.tar: 3 samples, _info.json says 4; re-write it"),
    (FileNotFoundError(2, "No such file or directory", "/data/missing.tar"),
     "vitwarm: error: /data/missing.tar: No such file or directory"),
    (ValueError("seq_len must be even for k_dyck (got 9)"), "vitwarm: error: seq_len must be even for k_dyck (got 9)"),
])
def test_anticipated_failure_is_one_line(error, line, capsys):
    assert failing(error)() == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [line]


def test_garbled_safetensors_is_one_line(tmp_path, capsys):
    garbage = tmp_path / "model.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")

    @one_line_errors
    def main(argv=None):
        load_file(garbage)

    assert main() == 1
    err = capsys.readouterr().err
    assert len(error_lines(err)) == 1 and "Traceback" not in err


def test_a_bug_keeps_its_traceback_and_says_so(capsys):
    assert failing(KeyError("symbols"))() == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last)")
    assert error_lines(err) == ["vitwarm: error: internal error (a bug in vitwarm, please report it with the "
                                "traceback above): KeyError: 'symbols'"]


def test_config_errors_are_reported_by_the_first_process_only(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert failing(ConfigError("seed=-1 is outside the valid range"))() == 1
    assert capsys.readouterr().err == ""
    assert failing(VitwarmError("shard 3 is truncated"))() == 1
    assert error_lines(capsys.readouterr().err) == ["vitwarm: error: process 1: shard 3 is truncated"]


def test_a_peer_lost_in_a_collective_is_one_quiet_line_not_a_bug(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:4242: "
                        "Connection closed by peer")
    assert failing(gloo)() == 1
    assert capsys.readouterr().err == "vitwarm: rank 1 stopping: a peer process failed (see its message)\n"
    monkeypatch.setenv("WORLD_SIZE", "1")  # alone, the same text is no peer's doing: a bug
    assert failing(gloo)() == 1
    assert "internal error" in capsys.readouterr().err


def test_a_stopped_run_says_how_to_resume_and_exits_75(capsys):
    assert failing(Stopped("stopped on SIGTERM at image step 7, saved in r/checkpoints/1-image-00000007; "
                           "run the same command to resume"))() == STOPPED == 75
    assert capsys.readouterr().err.startswith("vitwarm: stopped on SIGTERM at image step 7")


def test_success_and_explicit_status_pass_through():
    assert one_line_errors(lambda argv=None: None)() == 0
    assert one_line_errors(lambda argv=None: 3)() == 3


def test_usage_error_is_usage_then_one_line_and_status_2(capsys):
    parser = ArgumentParser(prog="tool")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--n", "x"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("usage: tool") and err[-1] == "vitwarm: error: argument --n: invalid int value: 'x'"
    assert len(error_lines("\n".join(err))) == 1


@pytest.mark.parametrize("script,verb", [("vitwarm-train", "train"), ("vitwarm-grammars", "grammars")])
def test_console_scripts_and_verbs_name_themselves_in_their_usage(script, verb):
    # The console script the environment installed (it imports the vitwarm that PYTHONPATH selects).
    by_verb = subprocess.run([sys.executable, "-m", "vitwarm", verb, "--help"], capture_output=True, text=True)
    assert by_verb.returncode == 0, by_verb.stderr
    assert by_verb.stdout.startswith(f"usage: python -m vitwarm {verb} ")
    path = Path(sys.executable).with_name(script)
    if not path.is_file():
        pytest.skip(f"{script} is not installed beside this Python")
    by_script = subprocess.run([str(path), "--help"], capture_output=True, text=True, env=os.environ)
    assert by_script.returncode == 0, by_script.stderr
    assert by_script.stdout.startswith(f"usage: {script} ")


@pytest.mark.parametrize("rank,error,printed,told", [
    ("0", ConfigError("train.lr=-1.0 is outside (0, inf)"), ["vitwarm: error: train.lr=-1.0 is outside (0, inf)"],
     "train.lr=-1.0 is outside (0, inf)"),
    # A config error is the first process's to print; the others only tell the launcher.
    ("1", ConfigError("train.lr=-1.0 is outside (0, inf)"), [], "process 1: train.lr=-1.0 is outside (0, inf)"),
    ("1", VitwarmError("shard x.tar: corrupt sample 7"), ["vitwarm: error: process 1: shard x.tar: corrupt sample 7"],
     "process 1: shard x.tar: corrupt sample 7"),
])
def test_the_launcher_reads_the_same_line_from_its_error_file(rank, error, printed, told, tmp_path, monkeypatch,
                                                              capsys):
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    assert failing(error)() == 1
    assert capsys.readouterr().err.splitlines() == printed
    # What torch's elastic agent shows as the root cause of a failed process (its ChildFailedError report).
    assert ProcessFailure(local_rank=int(rank), pid=1, exitcode=1, error_file=str(error_file)).message == told
