"""``python -m trainer.evaluate``: the table, the evals rows, replacement, bad input, black-box, and
an independent check of our PGD against torchattacks (PGD and AutoAttack)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import store
from conftest import tiny_run
from store import evals as ev
from trainer import checkpoint, evaluate


def tree_hashes(root: Path, skip: str | None = None) -> dict[str, str]:
    """sha256 of every file under root (optionally skipping one top-level folder of each run)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not (skip and skip in rel.parts):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def runs_copy(tiny_runs, tmp_path) -> Path:
    """A private copy of the session's tiny runs (this module rewrites their evals)."""
    d = tmp_path / "runs"
    for name in ("tiny-standard", "tiny-unsecured"):
        shutil.copytree(tiny_runs / name, d / name)
    return d


def test_runs_evaluate_themselves_at_the_end(tiny_runs):
    rows = evaluate.read_evals(tiny_runs / "tiny-dynamic")
    got = {(r["checkpoint"], ev.key_of(r["attack"])) for r in rows}
    assert got == {(c, a) for c in ("last", "best") for a in evaluate.WHITE_BOX}
    assert {r["attack"] for r in rows} == {ev.ATTACKS[a].value for a in evaluate.WHITE_BOX}
    assert all(r["setting"] == "white-box" and r["n"] == 128 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert all(r["subset"].startswith("stratified seed 0: 128 of") and r["partial"] is False for r in rows)


def test_cli_prints_table_writes_evals_and_replaces_on_reevaluation(runs_copy, capsys):
    before = tree_hashes(runs_copy, skip="evals")
    rc = evaluate.main(["tiny-standard", "tiny-unsecured", "--runs-dir", str(runs_copy), "--n", "64",
                        "--attacks", "clean,fgsm,pgd20", "--device", "cpu", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| run | checkpoint | Clean [stratified seed 0: 64 of 1000] | FGSM (eps) [stratified seed 0: 64 of 1000] " \
           "| PGD-20 (eps/4) [stratified seed 0: 64 of 1000] | flags |" in out
    for run in ("tiny-standard", "tiny-unsecured"):
        for which in ("last", "best"):
            assert f"| {run} | {which} |" in out
    con = store.open(runs_copy)
    ev_df = con.query_df("SELECT run, checkpoint, attack, n, accuracy FROM evals WHERE n = 64")
    assert len(ev_df) == 2 * 2 * 3
    # The clean column is the checkpoint's plain accuracy on the 64 digits of the saved subset.
    model, cfg = evaluate.load_model(runs_copy / "tiny-standard", "last", torch.device("cpu"))
    x_all, y_all = evaluate._test_arrays(cfg.dataset, cfg.data_root, torch.device("cpu"))
    idx = pq.read_table(ev.subset_file(runs_copy / "tiny-standard", "last", "white-box", "clean"))["index"].to_pylist()
    assert len(idx) == 64 and idx != list(range(64))  # a stratified sample, not the first 64
    with torch.no_grad():
        expect = (model(x_all[idx]).argmax(1) == y_all[idx]).float().mean().item()
    evs = ev_df
    got = evs[(evs.run == "tiny-standard") & (evs.checkpoint == "last") & (evs.attack == "clean")].accuracy.item()
    assert got == pytest.approx(expect)
    for (run, which), g in evs.groupby(["run", "checkpoint"]):
        acc = {ev.key_of(a): v for a, v in zip(g.attack, g.accuracy)}
        assert acc["pgd20"] <= acc["clean"]
    files_before = sorted((runs_copy / "tiny-standard" / "evals").iterdir())

    rc = evaluate.main(["tiny-standard", "--runs-dir", str(runs_copy), "--n", "32", "--attacks", "pgd20",
                        "--checkpoint", "last", "--device", "cpu", "--quiet"])
    assert rc == 0
    assert sorted((runs_copy / "tiny-standard" / "evals").iterdir()) == files_before  # replaced, not added
    rows = {(r["checkpoint"], ev.key_of(r["attack"])): r["n"] for r in evaluate.read_evals(runs_copy / "tiny-standard")}
    assert rows[("last", "pgd20")] == 32 and rows[("best", "pgd20")] == 64 and rows[("last", "clean")] == 64
    assert tree_hashes(runs_copy, skip="evals") == before  # training logs, checkpoints, status untouched


def _no_checkpoint(d: Path) -> list[str]:
    shutil.rmtree(d / "tiny-standard" / "checkpoints")
    return ["tiny-standard"]


def _corrupt_checkpoint(d: Path) -> list[str]:
    p = checkpoint.path(d / "tiny-standard", "last")
    p.write_bytes(p.read_bytes()[: 1000])
    return ["tiny-standard"]


@pytest.mark.parametrize("case, make, message", [
    ("missing run", lambda d: ["no-such-run"], "no run 'no-such-run'"),
    ("no checkpoint", _no_checkpoint, "no checkpoint"),
    ("corrupt checkpoint", _corrupt_checkpoint, "corrupt"),
    ("unknown attack", lambda d: ["tiny-standard", "--attacks", "clean,pgd7"], "unknown attack 'pgd7'"),
    ("bad checkpoint choice", lambda d: ["tiny-standard", "--checkpoint", "first"], "invalid choice"),
    ("missing surrogate", lambda d: ["tiny-standard", "--surrogate", "nope"], "no run 'nope'"),
])
def test_bad_input_one_line_exit_2_nothing_changed(runs_copy, capsys, case, make, message):
    args = make(runs_copy)
    before = tree_hashes(runs_copy)
    try:
        rc = evaluate.main([*args, "--runs-dir", str(runs_copy), "--n", "16", "--device", "cpu", "--quiet"])
    except SystemExit as e:  # argparse errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, case
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert tree_hashes(runs_copy) == before


def test_black_box_transfer_from_a_surrogate(runs_copy, capsys):
    rc = evaluate.main(["tiny-unsecured", "--runs-dir", str(runs_copy), "--surrogate", "tiny-standard",
                        "--attacks", "clean,pgd20", "--checkpoint", "last", "--n", "64", "--device", "cpu", "--quiet"])
    assert rc == 0
    assert "black-box accuracy (%), examples crafted on tiny-standard" in capsys.readouterr().out
    f = runs_copy / "tiny-unsecured" / "evals" / "last-black-box-pgd20-tiny-standard.parquet"
    row = pq.read_table(f).to_pylist()[0]
    assert (row["setting"], row["surrogate"], row["attack"], row["n"]) == ("black-box", "tiny-standard",
                                                                          "pgd-20 (eps/4)", 64)
    evaluate.main(["tiny-unsecured", "--runs-dir", str(runs_copy), "--attacks", "clean,pgd20",
                   "--checkpoint", "last", "--n", "64", "--device", "cpu", "--quiet"])
    rows = {(r["setting"], ev.key_of(r["attack"])): r["accuracy"] for r in evaluate.read_evals(runs_copy / "tiny-unsecured")
            if r["checkpoint"] == "last" and r["n"] == 64}
    # Clean does not depend on where examples are crafted; transfer is weaker than attacking the model itself.
    assert rows[("black-box", "clean")] == rows[("white-box", "clean")]
    assert rows[("black-box", "pgd20")] >= rows[("white-box", "pgd20")]


# ---- AutoAttack at the reference budget ---------------------------------------------------------
def test_autoattack_members_budgets_and_order():
    pytest.importorskip("torchattacks", reason="the AutoAttack column needs torchattacks 3.5.1")
    import torchattacks

    from trainer.evaluation import external

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 10))
    aa = evaluate.build_attack("autoattack", 0.3)
    assert aa.members == ("apgd-ce", "apgd-t", "fab-t", "square")  # the reference order
    assert evaluate.build_attack("apgd-ce+t", 0.3).members == ("apgd-ce", "apgd-t")
    ce, t, fab, sq = (external.member(m, model, 0.3) for m in aa.members)
    assert type(ce) is torchattacks.APGD and (ce.steps, ce.n_restarts, ce.loss, ce.eps) == (100, 1, "ce", 0.3)
    assert type(t) is torchattacks.APGDT and (t.steps, t.n_restarts, t.n_target_classes) == (100, 1, 9)
    assert type(fab) is torchattacks.FAB and (fab.steps, fab.n_restarts, fab.n_target_classes) == (100, 1, 9)
    assert fab.multi_targeted and fab.norm == "Linf"
    assert type(sq) is torchattacks.Square and (sq.n_queries, sq.n_restarts, sq.p_init) == (5000, 1, 0.8)
    assert {m.seed for m in (ce, t, fab, sq)} == {0}
    # torchattacks' own AutoAttack is *not* the reference budget: that is why it is not used.
    ta = torchattacks.AutoAttack(model, eps=0.3, version="standard", seed=0)
    assert [a.steps for a in ta._autoattack.attacks[:3]] == [10, 10, 10]


def test_each_member_attacks_only_what_the_previous_left_correct(monkeypatch):
    from trainer.evaluation import external

    seen = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def __call__(self, x, y):
            seen.append((self.name, x[:, 0].tolist()))
            out = x.clone()
            out[: len(seen)] = -1.0  # the model below misclassifies x < 0
            return out

    monkeypatch.setattr(external, "member", lambda name, model, eps, seed=0: Fake(name))

    class Sign(torch.nn.Module):  # class 1 for x >= 0, class 0 for x < 0
        def forward(self, x):
            v = x[:, :1]
            return torch.cat([-v, v], 1)

    x = torch.tensor([[-0.5], [0.1], [0.2], [0.3], [0.4], [0.5], [0.6], [0.7]]).float()
    y = torch.ones(8, dtype=torch.long)
    res = external.ExternalAttack("autoattack", 0.3)(Sign(), x, y)
    # Example 0 is wrong already (never attacked); member k fools the first k+1 examples it is given.
    assert [s[0] for s in seen] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [len(s[1]) for s in seen] == [7, 6, 4, 1]
    assert res.stages == {"clean": 7, "apgd-ce": 6, "apgd-t": 4, "fab-t": 1, "square": 0}
    assert (Sign()(res.x_adv).argmax(1) == y).sum().item() == 0


@pytest.mark.slow
def test_autoattack_at_most_each_member_and_pgd20_at_most_clean(tmp_path):
    torchattacks = pytest.importorskip("torchattacks", reason="the AutoAttack column needs torchattacks 3.5.1")
    # eps 0.1 keeps the tiny model's robust accuracy away from 0, so the comparison means something.
    rd = tiny_run(tmp_path, "aa", "standard", epochs=2, n_train=512, eps=0.1, eval_n=8)
    rows = evaluate.evaluate_run(rd, device="cpu", n=400, attacks=("pgd20",), checkpoints=("last",), progress=False)
    pgd_big = rows[0]["accuracy"]
    # Square's 5,000 queries and FAB-T are slow on a CPU: the 24 stratified digits of the same seed.
    keys = ("clean", "pgd20", "apgd-ce", "apgd-t", "fab-t", "square", "autoattack")
    rows = evaluate.evaluate_run(rd, device="cpu", n=24, attacks=keys, checkpoints=("last",), progress=False)
    acc = {ev.key_of(r["attack"]): r["accuracy"] for r in rows}
    assert all(acc["autoattack"] <= acc[m] for m in ("apgd-ce", "apgd-t", "fab-t", "square", "pgd20")), acc
    assert all(acc[m] <= acc["clean"] for m in keys), acc
    aa = next(r for r in rows if ev.key_of(r["attack"]) == "autoattack")
    st = dict(s.split("=") for s in aa["stages"].split(","))
    assert list(st) == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    # stages are written with 4 decimals: equal to the accuracies to that precision
    assert float(st["square"]) == pytest.approx(acc["autoattack"], abs=5e-5)
    assert float(st["clean"]) == pytest.approx(acc["clean"], abs=5e-5)
    # Our PGD-20 agrees with torchattacks' PGD on the 400 digits (another random start).
    model, cfg = evaluate.load_model(rd, "last", torch.device("cpu"))
    x, y, _, _ = evaluate.test_subset(cfg.dataset, cfg.data_root, torch.device("cpu"), 400)
    torch.manual_seed(1)
    x_ref = torchattacks.PGD(model, eps=cfg.eps, alpha=cfg.eps / 4, steps=20, random_start=True)(x, y)
    with torch.no_grad():
        ref_acc = (model(x_ref).argmax(1) == y).float().mean().item()
    assert 0.05 < pgd_big < 0.95, pgd_big  # a model that is neither broken nor unattackable
    assert abs(pgd_big - ref_acc) <= 0.015, (pgd_big, ref_acc)


# ---- evaluation subsets -----------------------------------------------------------------------
def test_stratified_subset_is_stratified_reproducible_and_nested():
    from trainer.evaluation.subsets import stratified_indices

    y = np.repeat(np.arange(10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])  # MNIST's test classes
    y = y[np.random.default_rng(5).permutation(len(y))]
    a = stratified_indices(y, 1000, seed=0)
    assert len(a) == len(set(a)) == 1000 and list(a) == sorted(a)
    counts = np.bincount(y[a], minlength=10)
    share = 1000 * np.bincount(y) / len(y)
    assert np.all(np.abs(counts - share) < 1), (counts, share)
    assert np.array_equal(a, stratified_indices(y, 1000, seed=0))       # reproducible
    assert not np.array_equal(a, stratified_indices(y, 1000, seed=1))   # seeded
    assert not np.array_equal(a, np.arange(1000))                       # never the first N
    assert set(a) <= set(stratified_indices(y, 2000, seed=0))           # AutoAttack's digits among the white-box ones
    assert np.array_equal(stratified_indices(y, None), np.arange(len(y)))
    assert np.array_equal(stratified_indices(y, 10**6), np.arange(len(y)))


# ---- flags ------------------------------------------------------------------------------------
class Saturated(torch.nn.Module):
    """A model whose softmax saturates: logits x 1e4, so the CE gradient of a correct example is 0."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x) * 1e4


def test_masking_flags_fire_on_a_saturated_softmax_and_not_on_the_model(tiny_runs):
    model, cfg = evaluate.load_model(tiny_runs / "tiny-standard", "last", torch.device("cpu"))
    x, y, _, _ = evaluate.test_subset(cfg.dataset, cfg.data_root, torch.device("cpu"), 128)
    for m, expect in ((model, []), (Saturated(model), [ev.ZERO_GRAD, ev.FOSC_MASKED])):
        for key in ("clean", "pgd20"):
            out = evaluate.attack_batches(m, x, y, evaluate.build_attack(key, cfg.eps), cfg.eps, 64)
            flags = ev.row_flags(out.zero_grad.mean(), out.masked.mean())
            assert flags == expect, (key, expect, out.zero_grad.mean(), out.masked.mean())
    out = evaluate.attack_batches(Saturated(model), x, y, None, cfg.eps, 64)
    # The zero gradients are those of correct digits (a confident wrong one keeps its gradient).
    assert (out.zero_grad <= out.correct).all() and out.zero_grad.mean() > 0.5 * out.correct.mean()


def _r(attack, acc, setting="white-box", correct=None, stages=""):
    return {"attack": ev.ATTACKS[attack].value, "accuracy": acc, "setting": setting, "stages": stages,
            "_correct": correct}


def test_group_flags_pgd_above_autoattack_and_black_box_wins():
    ok = ev.group_flags([_r("pgd20", 0.52), _r("autoattack", 0.50), _r("fgsm", 0.7)])
    assert ok == {}
    gap = ev.group_flags([_r("pgd20", 0.56), _r("autoattack", 0.50)])
    assert gap == {0: [ev.PGD_ABOVE_AA], 1: [ev.PGD_ABOVE_AA]}
    # Compared on the examples both used: 6 points apart on the whole sample, 0 on the shared ones.
    pgd = {i: i < 56 for i in range(100)}
    aa = {i: i < 50 for i in range(50)}  # AutoAttack ran on the first 50 of them: all correct under PGD too
    assert ev.group_flags([_r("pgd20", 0.56, correct=pgd), _r("autoattack", 1.0, correct=aa)]) == {}
    sq = ev.group_flags([_r("pgd20", 0.50), _r("cw", 0.48), _r("square", 0.40)])
    assert sq == {2: [ev.BLACK_BOX_WINS]}
    assert ev.group_flags([_r("pgd20", 0.50), _r("cw", 0.38), _r("square", 0.40)]) == {}  # not below the best
    transfer = ev.group_flags([_r("pgd20", 0.50), _r("pgd20", 0.30, setting="black-box")])
    assert transfer == {1: [ev.BLACK_BOX_WINS]}
    stages = "clean=0.9000,apgd-ce=0.5000,apgd-t=0.4800,fab-t=0.4800,square=0.4500"
    assert ev.group_flags([_r("autoattack", 0.45, stages=stages)]) == {0: [ev.BLACK_BOX_WINS]}
    assert ev.group_flags([_r("autoattack", 0.48, stages=stages.replace("0.4500", "0.4800"))]) == {}


def test_flags_reach_the_evals_rows_and_the_printout(runs_copy, capsys, monkeypatch):
    real = evaluate.load_checkpoint

    def saturated(run_dir, which, device):
        model, cfg, epoch = real(run_dir, which, device)
        return Saturated(model), cfg, epoch

    monkeypatch.setattr(evaluate, "load_checkpoint", saturated)
    assert evaluate.main(["tiny-standard", "--runs-dir", str(runs_copy), "--n", "64", "--attacks", "clean",
                          "--checkpoint", "last", "--device", "cpu", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"flag {ev.ZERO_GRAD}:" in out and f"flag {ev.FOSC_MASKED}:" in out
    con = store.open(runs_copy)
    row = con.query_df("SELECT flags, zero_grad FROM evals WHERE run = 'tiny-standard' AND checkpoint = 'last' "
                       "AND attack = 'clean'").iloc[0]
    assert set(ev.split_flags(row["flags"])) == {ev.ZERO_GRAD, ev.FOSC_MASKED} and row["zero_grad"] > ev.ZERO_GRAD_SHARE


# ---- partial evaluations ------------------------------------------------------------------------
def test_a_killed_evaluation_leaves_a_partial_row_that_no_table_shows(runs_copy, monkeypatch):
    from trainer import reproduce

    real = evaluate.attack_batches

    def killed_after_one_batch(model, x, y, attack, eps, batch_size, source=None, on_batch=None):
        def once(o, n):
            on_batch(o, n)
            raise KeyboardInterrupt  # as a SIGINT/SIGKILL would, after the first batch was written
        return real(model, x, y, attack, eps, batch_size, source, once)

    monkeypatch.setattr(evaluate, "attack_batches", killed_after_one_batch)
    rd = runs_copy / "tiny-standard"
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_run(rd, device="cpu", n=96, attacks=("pgd10",), checkpoints=("last",), batch_size=32,
                              progress=False)
    row = pq.read_table(ev.eval_file(rd, "last", "white-box", "pgd10")).to_pylist()[0]
    assert row["partial"] is True and row["n"] == 32
    rows = [dict(r, run=rd.name) for r in evaluate.read_evals(rd) if r["checkpoint"] == "last"]
    table = evaluate.table_markdown(rows)
    assert "PGD-20" in table and "PGD-10" not in table
    assert not reproduce._has_eval(rd, "last", "pgd10", 96)
    con = store.open(runs_copy)
    assert con.query_df("SELECT count(*) n FROM evals WHERE partial AND run = 'tiny-standard'")["n"].item() == 1


def test_the_run_ends_with_what_it_measured_and_where_to_look(tiny_runs):
    from trainer import results

    text = results.run_report(tiny_runs / "tiny-standard", tiny_runs)
    assert "| run | checkpoint | Clean [stratified seed 0: 128 of 1000] | FGSM (eps) [" in text
    assert "PGD-20 (eps/4) [stratified seed 0: 128 of 1000]" in text and "| tiny-standard | last |" in text
    assert "Mean PGD steps per example: 10.00 over 2 epochs" in text
    assert f"streamlit run run_dashboard.py -- --runs-dir {tiny_runs}" in text
    assert f"python -m store.sql --runs-dir {tiny_runs} \"SELECT epoch" in text
