"""Alarms (store.alarms) on scripted sequences: each fires on the pattern it names and stays quiet on
near misses."""
from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq

from store import alarms, files
from store import runs as store_runs
from store.schema import TABLES
from store.writer import to_arrow, write_parquet_atomic

NAN = math.nan


def rows(**cols) -> list[dict]:
    n = len(next(iter(cols.values())))
    return [{"epoch": e, **{k: v[e] for k, v in cols.items()}} for e in range(n)]


def test_robust_overfitting_fires_past_the_margin_and_names_the_best_epoch():
    seq = rows(heldout_pgd_acc=[0.30, 0.45, 0.52, 0.50, 0.44])
    a = alarms.robust_overfitting(seq)
    assert a is not None and a.kind == "robust_overfitting" and a.epoch == 4 and a.checkpoint == "best"
    assert "epoch 2" in a.evidence and "0.520" in a.evidence
    assert alarms.robust_overfitting(seq[:4]) is None               # 0.02 below: within the margin
    assert alarms.robust_overfitting(rows(heldout_pgd_acc=[0.5, NAN, NAN])) is None  # no held-out set
    tie = alarms.robust_overfitting(rows(heldout_pgd_acc=[0.5, 0.5, 0.3]))
    assert "epoch 0" in tie.evidence                               # best.pt keeps the earliest best


def test_catastrophic_overfitting_needs_fgsm_a_collapse_and_rising_fgsm_accuracy():
    cfg = {"strategy": "fgsm-pgd", "fgsm_epochs": 4}
    seq = rows(heldout_pgd_acc=[0.20, 0.40, 0.45, 0.05, 0.60], train_adv_acc=[0.3, 0.5, 0.6, 0.9, 0.7])
    a = alarms.catastrophic_overfitting(seq, cfg)
    assert a is not None and a.epoch == 3 and "0.450" in a.evidence and "0.900" in a.evidence
    assert alarms.catastrophic_overfitting(seq, {"strategy": "standard"}) is None  # not trained with FGSM
    assert alarms.catastrophic_overfitting(seq, {"strategy": "fgsm-pgd", "fgsm_epochs": 3}) is None  # PGD by then
    falling_fgsm = [dict(r, train_adv_acc=0.2) if r["epoch"] == 3 else r for r in seq]
    assert alarms.catastrophic_overfitting(falling_fgsm, cfg) is None  # both fell: not the FGSM signature
    assert alarms.catastrophic_overfitting(seq, {"strategy": "fast"}).epoch == 3


def test_gradient_masking_from_training_rows_or_evaluation_flags():
    assert alarms.gradient_masking({"epoch": 2, "masked_share": 0.3}).epoch == 2
    assert alarms.gradient_masking({"epoch": 2, "masked_share": 0.001}) is None
    assert alarms.gradient_masking({"epoch": 2, "masked_share": NAN}) is None  # runs without grad_l1
    flagged = alarms.gradient_masking({"epoch": 2}, [{"checkpoint": "last", "attack": "pgd20", "flags": "zero-grad"},
                                                    {"checkpoint": "last", "attack": "clean", "flags": ""}])
    assert flagged is not None and "pgd20: zero-grad" in flagged.evidence


def test_stalled_convergence_when_c_t_falls_and_fosc_does_not():
    stalled = rows(c_t=[0.5, 0.3, 0.25, 0.2], fosc_q50=[0.30, 0.40, 0.41, 0.40])
    a = alarms.stalled_convergence(stalled)
    assert a is not None and a.epoch == 3 and "0.3 (epoch 1)" in a.evidence  # from the first binding epoch
    following = rows(c_t=[0.5, 0.3, 0.25, 0.2], fosc_q50=[0.30, 0.40, 0.33, 0.25])
    assert alarms.stalled_convergence(following) is None
    assert alarms.stalled_convergence(stalled[:3]) is None               # two binding epochs: shorter than the window
    assert alarms.stalled_convergence(rows(c_t=[NAN] * 4, fosc_q50=[0.3] * 4)) is None  # not Dynamic
    not_binding = rows(c_t=[0.5, 0.45, 0.4, 0.35], fosc_q50=[0.3] * 4)
    assert alarms.stalled_convergence(not_binding) is None               # the median example meets c_t
    broken = rows(c_t=[0.5, 0.3, 0.25, 0.2, 0.15], fosc_q50=[0.4, 0.41, 0.2, 0.41, 0.42])
    assert alarms.stalled_convergence(broken) is None                    # the streak restarted at epoch 3
    floor = alarms.stalled_convergence([], {"epoch": 5, "floor_share": 0.7})
    assert floor is not None and "clipping floor" in floor.evidence
    assert alarms.stalled_convergence([], {"epoch": 5, "floor_share": 0.2}) is None


def _examples(run_dir, epoch, **cols):
    n = len(cols["fosc"])
    base = {"batch": [0] * n, "idx": list(range(n)), "loss": [1.0] * n, "steps": [1] * n, "correct": [True] * n,
            "c_t": [NAN] * n, "fosc_box": [NAN] * n, "grad_l1": [NAN] * n, "p_true": [0.5] * n, "rank": 0}
    t = to_arrow("examples", run_dir.name, {**base, **cols})
    write_parquet_atomic(t, files.epoch_dir(run_dir / "examples", epoch) / files.compact_name(0))


def test_epoch_stats_shares_from_the_rows(tmp_path):
    rd = tmp_path / "r"
    _examples(rd, 0, fosc=[0.0, 0.0, 0.5, 0.5], grad_l1=[0.0, 5.0, 5.0, 5.0], fosc_box=[0.0, 0.0, 0.01, 0.4],
              c_t=[0.1] * 4)
    s = alarms.epoch_stats(rd, 0)
    assert s["n"] == 4 and s["masked_share"] == 0.25   # only the FOSC ~ 0 row with ||g||_1 ~ 0
    assert s["floor_share"] == 0.25                     # 0.5 - 0.01 >= 0.9 * 0.5 and above c_t
    foreign = files.epoch_dir(rd / "examples", 1) / files.compact_name(0)
    foreign.parent.mkdir(parents=True)
    pq.write_table(pa.table({"x": [1]}), foreign)
    assert alarms.epoch_stats(rd, 1)["n"] == 0          # a foreign file: no figures, no crash


def test_record_writes_each_alarm_once(tmp_path):
    rd = tmp_path / "r"
    store_runs.write_json(rd / store_runs.CONFIG, {"strategy": "standard"})
    for e, acc in enumerate([0.3, 0.6, 0.4]):
        row = {k.name: NAN for k in TABLES["epochs"] if k.type == pa.float64()}
        row.update(epoch=e, k_max=10, n=4, heldout_pgd_acc=acc)
        write_parquet_atomic(to_arrow("epochs", "r", row), files.summary_path(rd, e))
    _examples(rd, 2, fosc=[0.2, 0.3])
    new = alarms.record(rd, "r", 2)
    assert [a.kind for a in new] == ["robust_overfitting"]
    assert alarms.record(rd, "r", 2) == []              # already an event
    ev = [r for p in files.flat_files(rd / "events") for r in pq.read_table(p).to_pylist()]
    assert [(r["kind"], r["epoch"], r["detail"].split(":")[0]) for r in ev] == [("alarm", 2, "robust_overfitting")]


def test_catastrophic_overfitting_is_a_relative_collapse():
    """A tiny FGSM run measured here (fgsm-pgd, all epochs FGSM, mnist-demo, eps 0.3): held-out PGD
    0.129 -> 0.066 -> 0.023 -> 0.004 while FGSM accuracy 0.21 -> 0.45; the fast strategy's run of the
    same size wobbled (0.211 -> 0.105 -> 0.164 -> 0.113) and is no collapse."""
    cfg = {"strategy": "fgsm-pgd", "fgsm_epochs": 8}
    co = rows(heldout_pgd_acc=[0.129, 0.066, 0.023, 0.004], train_adv_acc=[0.206, 0.317, 0.405, 0.447])
    assert alarms.catastrophic_overfitting(co, cfg).epoch == 2  # 0.023 <= 0.129 / 4
    wobble = rows(heldout_pgd_acc=[0.211, 0.105, 0.164, 0.113], train_adv_acc=[0.201, 0.338, 0.410, 0.476])
    assert alarms.catastrophic_overfitting(wobble, {"strategy": "fast"}) is None
    near_zero = rows(heldout_pgd_acc=[0.04, 0.01], train_adv_acc=[0.2, 0.4])
    assert alarms.catastrophic_overfitting(near_zero, cfg) is None  # a quarter, but only 0.03 down: noise
