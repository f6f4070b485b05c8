"""Alarms on real tiny runs built to trigger them, written by the trainer as events; quiet on healthy runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from store import alarms, control
from tests.conftest import tiny_run
from trainer import checkpoint

ROOT = Path(__file__).resolve().parent.parent
QUICK = ["--preset", "quick", "--n-train", "384", "--batch-size", "128", "--eval-n", "128", "--heldout", "128",
         "--quiet"]

pytestmark = pytest.mark.slow


def alarm_events(runs_dir: Path, run: str) -> dict[str, int]:
    with store.open(runs_dir) as con:
        ev = con.query_df("SELECT epoch, detail FROM events WHERE run = ? AND kind = 'alarm'", [run])
    return {d.split(":", 1)[0]: int(e) for e, d in zip(ev["epoch"], ev["detail"])}


def test_a_learning_rate_jump_raises_robust_overfitting_and_masking(tmp_path):
    """Unsecured at eps 0.1 gets some PGD accuracy in 3 epochs; then the control file sets lr 3: the
    model collapses, held-out PGD accuracy falls far below its best, and its dead ReLUs give zero input
    gradients (FOSC ~ 0 because ||g||_1 ~ 0: masking, not convergence)."""
    rd = tmp_path / "jump"
    argv = [sys.executable, "-m", "trainer.run", *QUICK, "--runs-dir", str(tmp_path), "--name", "jump",
            "--strategy", "unsecured", "--epochs", "5", "--eps", "0.1", "--t-prime", "4"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    changed = False
    while proc.poll() is None:
        if not changed and _epochs_done(rd) >= 3:
            control.write(rd, lr=3.0)  # read between batches of epoch 3
            changed = True
        time.sleep(0.2)
    assert proc.returncode == 0, proc.stderr.read()[-2000:]
    found = {a.kind: a for a in alarms.check(rd)}
    robust = found["robust_overfitting"]
    best_epoch = checkpoint.load(checkpoint.path(rd, "best"))["epoch"]
    assert f"checkpoints/best.pt holds epoch {best_epoch}" in robust.evidence and robust.checkpoint == "best"
    assert "gradient_masking" in found
    events = alarm_events(tmp_path, "jump")
    assert events["robust_overfitting"] >= 3 and "gradient_masking" in events  # written by the trainer


def _epochs_done(rd: Path) -> int:
    try:
        return int(json.loads((rd / "status.json").read_text()).get("epoch", 0))
    except (OSError, ValueError):
        return 0


def test_dynamic_whose_attack_cannot_move_raises_stalled_convergence(tmp_path):
    """K = 1 and a learning rate of 1e-6: c_t falls from c_max to 0, the FOSC median does not."""
    tiny_run(tmp_path, "stuck", "dynamic", epochs=4, steps=1, lr=1e-6, t_prime=3, eval_at_end=False)
    found = {a.kind for a in alarms.check(tmp_path / "stuck")}
    assert "stalled_convergence" in found
    assert "stalled_convergence" in alarm_events(tmp_path, "stuck")


def test_healthy_runs_raise_nothing(tiny_runs, tmp_path):
    """The session's 2-epoch runs, and a 4-epoch Dynamic run with the quick preset's settings (its c_t
    falls to 0; the threshold binds only in its last two epochs, as its attack takes more steps)."""
    tiny_run(tmp_path, "dyn4", "dynamic", epochs=4, eval_at_end=False)  # the session runs are evaluated
    for runs_dir, run in [(tiny_runs, r) for r in ("tiny-dynamic", "tiny-standard", "tiny-unsecured")] + [
            (tmp_path, "dyn4")]:
        assert alarms.check(runs_dir / run) == [], run
        assert alarm_events(runs_dir, run) == {}, run


FGSM_RUN = ["--preset", "quick", "--epochs", "4", "--eps", "0.3", "--lr", "0.05", "--heldout", "256",
            "--eval-n", "128", "--no-eval-at-end", "--quiet"]


def test_fgsm_training_that_collapses_raises_catastrophic_overfitting_and_fast_stays_quiet(tmp_path):
    """FGSM (no random start, step eps) on every epoch of 4,000 real digits at eps 0.3 and lr 0.05: the
    model learns the FGSM examples (their accuracy doubles) while held-out PGD accuracy falls to ~0,
    Wong et al.'s catastrophic overfitting. The same run with their fix (fast: random start, step
    1.25 eps) wobbles but does not collapse."""
    from trainer import run

    assert run.main([*FGSM_RUN, "--strategy", "fgsm-pgd", "--fgsm-epochs", "4", "--name", "co",
                     "--runs-dir", str(tmp_path)]) == 0
    found = {a.kind: a for a in alarms.check(tmp_path / "co")}
    co = found["catastrophic_overfitting"]
    assert co.epoch >= 2 and "trained with FGSM" in co.evidence and co.checkpoint == "best"
    assert "catastrophic_overfitting" in alarm_events(tmp_path, "co")  # written by the trainer too

    assert run.main([*FGSM_RUN, "--strategy", "fast", "--name", "fast", "--runs-dir", str(tmp_path)]) == 0
    assert "catastrophic_overfitting" not in {a.kind for a in alarms.check(tmp_path / "fast")}
