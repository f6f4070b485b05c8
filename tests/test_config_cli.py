"""RunConfig and the `python -m trainer.run` command line: flags, JSON round trip, bad input (exit 2)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trainer import checkpoint, run
from trainer.config import HELP, ConfigError, RunConfig, from_preset

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--preset", "quick", "--epochs", "1", "--n-train", "32", "--batch-size", "16", "--heldout", "16",
        "--heldout-pgd-steps", "1", "--steps", "2", "--trajectory-examples", "2", "--no-eval-at-end", "--quiet"]


def cli(*argv: str, runs_dir: Path) -> subprocess.CompletedProcess:
    """The real command, in its own process: exit code and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "trainer.run", *argv, "--runs-dir", str(runs_dir)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_line_error(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    runs_dir = tmp_path_factory.mktemp("cli-runs")
    assert run.main([*TINY, "--name", "done", "--runs-dir", str(runs_dir)]) == 0
    return runs_dir


# ---- the real process: exit code 2, one line, no traceback, nothing written ---------------------
REAL_PROCESS_CASES = [
    (["--strategy", "magic", "--name", "bad"], "magic"),
    (["--model", "resnet9000", "--name", "bad"], "model"),
    (["--dataset", "imagenet", "--name", "bad"], "dataset"),
    (["--eps", "0", "--name", "bad"], "eps"),
    (["--steps", "0", "--name", "bad"], "steps"),
    (["--dataset", "mnist", "--data-root", "/nonexistent/x.npz", "--name", "bad"], "--data-root"),
    (["--name", "done"], "already exists"),          # a run folder that exists, without --resume
    (["--resume", "nope"], "no run"),
    (["--resume", "broken", "--epochs", "3"], "corrupt"),  # would also rewrite the config's epochs
    (["--name", "../x"], "invalid run name"),
]


@pytest.mark.slow
def test_bad_input_in_a_real_process_is_one_line_exit_2_and_changes_nothing(finished_run, tmp_path):
    runs_dir = tmp_path / "runs"
    shutil.copytree(finished_run, runs_dir)
    shutil.copytree(runs_dir / "done", runs_dir / "broken")
    ck = checkpoint.path(runs_dir / "broken")
    ck.write_bytes(ck.read_bytes()[:200])  # truncated, as by a disk that filled up mid-write
    before = snapshot(runs_dir)
    with ThreadPoolExecutor(2) as pool:  # two processes at a time: each pays for importing torch
        done = list(pool.map(lambda case: cli(*case[0], runs_dir=runs_dir), REAL_PROCESS_CASES))
    for (argv, words), p in zip(REAL_PROCESS_CASES, done):
        assert p.returncode == 2, (argv, p.stderr)
        assert_one_line_error(p.stderr)
        assert words in p.stderr, (argv, p.stderr)
    assert snapshot(runs_dir) == before
    assert not (runs_dir / "bad").exists() and not (tmp_path / "x").exists()


# ---- the same rules, in process (cheaper) ------------------------------------------------------
@pytest.mark.parametrize("argv, words", [
    (["--eps", "-0.1"], "eps"),
    (["--eps", "abc"], "eps"),
    (["--norm", "l1"], "norm"),
    (["--c-max", "-1"], "c-max"),
    (["--no-such-flag"], "no-such-flag"),
    (["--strategy", "standard", "--official-code-compat"], "dynamic"),
    (["--preset", "nope"], "preset"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, argv, words):
    runs_dir = tmp_path / "runs"
    assert main_rc([*argv, "--name", "bad", "--runs-dir", str(runs_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert_one_line_error(err)
    assert words in err
    assert not (runs_dir / "bad").exists()


def main_rc(argv: list[str]) -> int:
    """run.main's exit code; argparse errors leave through SystemExit (still code 2, one line)."""
    try:
        return run.main(argv)
    except SystemExit as e:
        return e.code


def test_resume_mistakes_change_nothing(finished_run, capsys):
    before = snapshot(finished_run)
    for argv in (["--resume", "done", "--eps", "0.1"], ["--resume", "done", "--preset", "quick"],
                 ["--resume", "../x"], ["--name", "done", "--strategy", "standard"]):
        assert main_rc([*argv, "--runs-dir", str(finished_run), "--quiet"]) == 2, argv
        assert_one_line_error(capsys.readouterr().err)
    assert snapshot(finished_run) == before


# ---- flags and the config record ---------------------------------------------------------------
def test_every_field_is_a_flag_and_the_config_round_trips_through_json():
    ns = run.build_parser().parse_args(["--preset", "paper-cifar10", "--milestones", "5,9", "--c-max", "auto",
                                        "--no-random-start", "--augment", "--n-train", "100", "--alpha", "0.01",
                                        "--fat-tau-epochs", "3,6"])
    cfg = run.config_from_args(ns)
    assert (cfg.milestones, cfg.c_max, cfg.random_start, cfg.augment, cfg.n_train) == ((5, 9), "auto", False, True, 100)
    assert (cfg.model, cfg.epochs, cfg.step_size, cfg.fat_tau_epochs) == ("cnn8", 120, 0.01, (3, 6))
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert run.config_from_args(run.build_parser().parse_args([])) == RunConfig().validate()
    with pytest.raises(ConfigError, match="unknown config field"):
        RunConfig.from_dict({"strategy": "dynamic", "colour": "red"})
    with pytest.raises(ConfigError, match="milestones"):
        from_preset(None, milestones=(40, 20))
    with pytest.raises(ConfigError, match="eps"):
        from_preset(None, eps=1.5)  # larger than the pixel range for linf
    assert from_preset(None, norm="l2", eps=1.5).eps == 1.5
    assert set(HELP) == {f.name for f in dataclasses.fields(RunConfig)}  # --help explains every flag
