"""Resume gives the uninterrupted run's weights and logs; the control file steers a live run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import store
from store import control, runs
from trainer import checkpoint, run

N_TRAIN, BATCH = 48, 16  # 3 batches per epoch


def tiny(runs_dir: Path, name: str, epochs: int, *extra: str) -> int:
    return run.main(["--preset", "quick", "--strategy", "dynamic", "--name", name, "--runs-dir", str(runs_dir),
                     "--epochs", str(epochs), "--n-train", str(N_TRAIN), "--batch-size", str(BATCH),
                     "--heldout", "16", "--heldout-pgd-steps", "1", "--steps", "3", "--trajectory-examples", "4",
                     "--no-eval-at-end", "--quiet", *extra])


def resume(runs_dir: Path, name: str, *extra: str) -> int:
    return run.main(["--resume", name, "--runs-dir", str(runs_dir), "--quiet", *extra])


class BatchHook:
    """A stand-in progress bar that calls ``actions[(epoch, batches_done)]`` as batches complete."""

    def __init__(self, actions: dict):
        self.actions = actions

    def __call__(self, n_batches: int, epoch: int):
        actions = self.actions

        class Bar:
            done = 0

            def update(self, k):
                self.done += k
                if (epoch, self.done) in actions:
                    actions.pop((epoch, self.done))()

            def set_postfix(self, **_):
                pass

            def close(self):
                pass
        return Bar()


def hooked(monkeypatch, actions: dict) -> None:
    monkeypatch.setattr(run, "_progress", lambda quiet: BatchHook(actions))


def query(runs_dir: Path, sql: str, params=None):
    with store.open(runs_dir) as con:
        return con.query_df(sql, params)


def logs(runs_dir: Path, name: str):
    ex = query(runs_dir, "SELECT epoch, batch, idx, fosc, loss, steps, correct, c_t FROM examples WHERE run = ? "
                         "ORDER BY epoch, idx", [name])
    st = query(runs_dir, "SELECT epoch, batch, idx, step, fosc, loss, active FROM steps WHERE run = ? "
                         "ORDER BY epoch, idx, step", [name])
    ep = query(runs_dir, "SELECT epoch, lr, c_t, c_max, fosc_mean, steps_mean, loss_mean, train_adv_acc, "
                         "heldout_clean_acc, heldout_pgd_acc FROM epochs WHERE run = ? ORDER BY epoch", [name])
    return ex, st, ep


def weights(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.path(run_dir))["model"]


def assert_same_run(runs_dir: Path, a: str, b: str) -> None:
    wa, wb = weights(runs_dir / a), weights(runs_dir / b)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), "final weights differ"
    for ta, tb in zip(logs(runs_dir, a), logs(runs_dir, b)):
        assert len(ta) > 0 and ta.equals(tb)


@pytest.mark.slow
def test_killed_or_stopped_and_resumed_runs_equal_the_uninterrupted_run(tmp_path, monkeypatch):
    assert tiny(tmp_path, "whole", 3) == 0
    # Ended after epoch 0, then resumed with more epochs.
    assert tiny(tmp_path, "cut", 1) == 0
    assert resume(tmp_path, "cut", "--epochs", "3") == 0
    # Stopped through the control file in the middle of epoch 1, then resumed.
    stop_dir = tmp_path / "stopped"
    hooked(monkeypatch, {(1, 1): lambda: control.write(stop_dir, stop=True)})
    assert tiny(tmp_path, "stopped", 3) == 0
    status = runs.read_status(stop_dir)
    assert status["state"] == "stopped" and status["epoch"] == 1
    assert checkpoint.load(checkpoint.path(stop_dir))["epoch"] == 0
    assert query(tmp_path, "SELECT count(*) n FROM examples WHERE run = 'stopped' AND epoch = 1")["n"][0] > 0
    assert resume(tmp_path, "stopped") == 0  # the stale stop:true must not stop the resumed run
    assert runs.read_status(stop_dir)["state"] == "finished"
    assert_same_run(tmp_path, "whole", "cut")
    assert_same_run(tmp_path, "whole", "stopped")
    kinds = query(tmp_path, "SELECT kind FROM events WHERE run = 'stopped' ORDER BY time")["kind"].tolist()
    assert kinds[:2] == ["start", "stop"] and "resume" in kinds and kinds[-1] == "finish"


def test_control_file_changes_a_live_run_and_bad_files_are_reported(tmp_path, monkeypatch):
    rd = tmp_path / "live"
    hooked(monkeypatch, {
        (0, 1): lambda: control.write(rd, c_max=0.2, t_prime=2, lr=0.005),
        (1, 1): lambda: (rd / runs.CONTROL).write_text("{not json"),
    })
    assert tiny(tmp_path, "live", 2) == 0
    assert runs.read_status(rd)["state"] == "finished"  # a malformed control file never stops training
    ev = query(tmp_path, "SELECT kind, epoch, batch, detail FROM events WHERE run = 'live' "
                         "AND (kind LIKE 'set_%' OR kind LIKE 'control_%') ORDER BY kind")
    assert ev["kind"].tolist() == ["control_error", "set_c_max", "set_lr", "set_t_prime"]
    got = {k: (e, b) for k, e, b in zip(ev["kind"], ev["epoch"], ev["batch"])}
    assert got == {"control_error": (1, 1), "set_c_max": (0, 1), "set_lr": (0, 1), "set_t_prime": (0, 1)}
    assert ev.set_index("kind")["detail"]["set_c_max"] == "0.5 -> 0.2"
    ex = query(tmp_path, "SELECT epoch, batch, min(c_t) lo, max(c_t) hi FROM examples WHERE run = 'live' "
                         "GROUP BY epoch, batch ORDER BY epoch, batch")
    # c_t = max(c_max - t c_max / T', 0): 0.5 before the change, 0.2 after it in epoch 0, 0.1 in epoch 1.
    assert ex["lo"].tolist() == pytest.approx([0.5, 0.2, 0.2, 0.1, 0.1, 0.1])
    assert (ex["lo"] == ex["hi"]).all()
    ep = query(tmp_path, "SELECT epoch, lr, c_max, t_prime, c_t FROM epochs WHERE run = 'live' ORDER BY epoch")
    assert ep["lr"].tolist() == pytest.approx([0.005, 0.005])
    assert ep["c_max"].tolist() == pytest.approx([0.2, 0.2]) and ep["t_prime"].tolist() == pytest.approx([2.0, 2.0])
    assert ep["c_t"][1] == pytest.approx(0.1)


def test_control_value_out_of_bounds_is_refused_and_never_reapplied(tmp_path, monkeypatch):
    """lr 1e308 in control.json (written by hand: store.control.write refuses it) would turn every
    weight into inf. The trainer refuses it with the config's bound, logs why, and keeps training;
    a resume reads the same file and still does not apply it."""
    rd = tmp_path / "huge"
    hooked(monkeypatch, {(0, 1): lambda: (rd / runs.CONTROL).write_text('{"lr": 1e308}')})
    assert tiny(tmp_path, "huge", 1) == 0
    assert resume(tmp_path, "huge", "--epochs", "2") == 0
    assert runs.read_status(rd)["state"] == "finished"
    ev = query(tmp_path, "SELECT kind, detail FROM events WHERE run = 'huge' AND (kind LIKE 'set_%' OR "
                         "kind LIKE 'control_%') ORDER BY time")
    assert ev["kind"].tolist() == ["control_error", "control_error"]  # once per process, never applied
    assert all("lr must be a number > 0 and <= 10, got 1e+308" in d for d in ev["detail"])
    ep = query(tmp_path, "SELECT lr, loss_mean FROM epochs WHERE run = 'huge' ORDER BY epoch")
    assert ep["lr"].tolist() == pytest.approx([0.01, 0.01])  # the quick preset's lr, both epochs
    assert ep["loss_mean"].map(lambda v: v == v and abs(v) < 1e3).all()
    w = weights(rd)
    assert all(torch.isfinite(t).all() for t in w.values() if t.is_floating_point())
