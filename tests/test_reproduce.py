"""``python -m trainer.reproduce``: the tables' settings, resumability, and the CPU table in miniature."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from store import runs
from trainer import reproduce
from trainer import run as trainer_run

ROOT = Path(__file__).resolve().parent.parent


def _config(argv: list[str]):
    return trainer_run.config_from_args(trainer_run.build_parser().parse_args(argv))


@pytest.mark.parametrize("table, expect", [
    ("mnist", dict(dataset="mnist", model="cnn4", eps=0.3, epochs=50, milestones=(20, 40), t_prime=40.0, c_max=0.5)),
    ("cifar10", dict(dataset="cifar10", model="cnn8", eps=8 / 255, epochs=120, milestones=(60, 100), t_prime=100.0,
                     c_max=0.5)),
    ("mnist-cpu", dict(dataset="mnist", model="cnn4", eps=0.3, epochs=10, milestones=(4, 8), t_prime=8.0, c_max=0.5,
                       n_train=10000, eval_n=2000, eval_at_end=False)),
])
def test_tables_train_with_the_papers_settings(tmp_path, table, expect):
    spec = reproduce.TABLES[table]
    argv = reproduce.train_argv(spec, "dynamic", "x", tmp_path, None, None)
    cfg = _config(argv)
    assert {k: getattr(cfg, k) for k in expect} == expect
    assert (cfg.steps, cfg.step_size, cfg.lr, cfg.strategy) == (10, cfg.eps / 4, 0.01, "dynamic")


def test_training_step_starts_skips_or_resumes(tmp_path):
    spec = reproduce.TABLES["mnist-cpu"]
    rd = tmp_path / "r"
    assert reproduce.training_step(spec, "standard", "r", tmp_path, None, "cpu")[:2] == ["--preset", "paper-mnist"]
    rd.mkdir()
    runs.write_json(rd / runs.CONFIG, {"strategy": "standard"})
    for state, pid in (("finished", None), ("stopped", None), ("running", 2 ** 22 + 12345)):  # a dead pid: killed
        runs.write_json(rd / runs.STATUS, {"state": state, "pid": pid})
        step = reproduce.training_step(spec, "standard", "r", tmp_path, None, "cpu")
        assert step == (None if state == "finished" else ["--resume", "r", "--runs-dir", str(tmp_path), "--quiet",
                                                          "--device", "cpu"])
    runs.write_json(rd / runs.STATUS, {"state": "running", "pid": os.getpid()})  # alive: leave it alone
    with pytest.raises(runs.StoreError, match="still running"):
        reproduce.training_step(spec, "standard", "r", tmp_path, None, "cpu")


@pytest.mark.parametrize("argv, message", [
    (["--table", "imagenet"], "invalid choice"),
    (["--table", "mnist", "--strategies", "standard,fancy"], "unknown strategy 'fancy'"),
    (["--table", "mnist", "--parallel", "0"], "--parallel must be >= 1"),
    (["--table", "mnist", "--data-root", "/no/such/file.npz"], "does not exist"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, argv, message):
    try:
        rc = reproduce.main([*argv, "--runs-dir", str(tmp_path / "runs")])
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def _table_csv(out: Path) -> dict[tuple[str, str], dict]:
    with open(out / "table.csv") as f:
        return {(r["strategy"], r["checkpoint"]): r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_cpu_table_in_miniature_survives_a_kill_and_resumes(tmp_path, mnist_npz):
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    argv = ["--table", "mnist-tiny", "--runs-dir", str(runs_dir), "--data-root", str(mnist_npz), "--out", str(out),
            "--device", "cpu"]
    # Kill the whole reproduce process group once Standard (trained first) has its first checkpoint.
    proc = subprocess.Popen([sys.executable, "-m", "trainer.reproduce", *argv], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = runs_dir / "mnist-tiny-standard" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pid = runs.read_status(runs_dir / "mnist-tiny-standard").get("pid")
    while runs.pid_alive(pid) and time.time() < deadline:  # the trainer child dies a moment after its parent
        time.sleep(0.1)
    assert runs.effective_state(runs_dir / "mnist-tiny-standard") not in ("finished", "running")

    assert reproduce.main(argv) == 0
    con = store.open(runs_dir)
    resumed = con.query_df("SELECT run FROM events WHERE kind = 'resume'")["run"].tolist()
    assert resumed == ["mnist-tiny-standard"]
    epochs = con.query_df("SELECT run, count(*) n, count(DISTINCT epoch) e FROM epochs GROUP BY run ORDER BY run")
    assert epochs["n"].tolist() == [2, 2] and epochs["e"].tolist() == [2, 2]
    rows = _table_csv(out)
    assert set(rows) == {(s, c) for s in ("unsecured", "standard") for c in ("last", "best")}
    assert all(r["n_pgd20"] == "200" for r in rows.values())
    # The expected shape of the CPU table: the unsecured model falls under PGD-20, the trained one less so.
    assert float(rows[("unsecured", "last")]["pgd20"]) < float(rows[("standard", "last")]["pgd20"])
    for name in ("table.md", "fosc_density.png", "fosc_vs_accuracy.png"):
        assert (out / name).stat().st_size > 500
    assert "| standard | last (1) |" in (out / "table.md").read_text()

    # Re-running a finished table trains and evaluates nothing again.
    evals = sorted((runs_dir / "mnist-tiny-standard" / "evals").iterdir())
    stamps = [p.stat().st_mtime_ns for p in evals]
    assert reproduce.main(argv) == 0
    assert [p.stat().st_mtime_ns for p in evals] == stamps


@pytest.mark.parametrize("table", ["mnist", "cifar10", "mnist-cpu"])
def test_gpu_and_cpu_tables_evaluate_with_the_registry_columns(tmp_path, table):
    """Dry check of the evaluation the GPU tables run: every request is a valid ``trainer.evaluate``
    command of registry attacks; AutoAttack (reference budget) on its stratified sample, last checkpoint."""
    from store import evals
    from trainer import evaluate

    spec = reproduce.TABLES[table]
    rd = tmp_path / reproduce.run_name(table, "standard")
    rd.mkdir()
    reqs = reproduce.eval_requests(spec, rd)
    assert reqs == [("both", ("clean", "fgsm", "pgd10", "pgd20", "cw"), spec.eval_n), ("last", ("autoattack",), 1000)]
    for which, attacks, n in reqs:
        argv = reproduce.eval_argv(rd.name, tmp_path, which, attacks, n, None, "cuda")
        ns = evaluate.build_parser().parse_args(argv[1:])
        assert argv[0] == "trainer.evaluate" and ns.device == "cuda" and ns.n == n
        assert all(a in evals.ATTACKS for a in ns.attacks.split(","))
    assert evals.ATTACKS["autoattack"].value.startswith("autoattack-standard")
    assert (spec.eval_n, spec.aa_n) == ({"mnist-cpu": 2000}.get(table), 1000)
