"""``python -m trainer.evaluate``: the table, the evals rows, replacement, bad input, black-box, and
an independent check of our PGD against torchattacks (PGD and AutoAttack)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import store
from conftest import tiny_run
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
    got = {(r["checkpoint"], r["attack"]) for r in rows}
    assert got == {(c, a) for c in ("last", "best") for a in evaluate.WHITE_BOX}
    assert all(r["setting"] == "white-box" and r["n"] == 128 and 0 <= r["accuracy"] <= 1 for r in rows)


def test_cli_prints_table_writes_evals_and_replaces_on_reevaluation(runs_copy, capsys):
    before = tree_hashes(runs_copy, skip="evals")
    rc = evaluate.main(["tiny-standard", "tiny-unsecured", "--runs-dir", str(runs_copy), "--n", "64",
                        "--attacks", "clean,fgsm,pgd20", "--device", "cpu", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| run | checkpoint | Clean | FGSM | PGD-20 |" in out
    for run in ("tiny-standard", "tiny-unsecured"):
        for which in ("last", "best"):
            assert f"| {run} | {which} |" in out
    con = store.open(runs_copy)
    ev = con.query_df("SELECT run, checkpoint, attack, n, accuracy FROM evals WHERE n = 64")
    assert len(ev) == 2 * 2 * 3
    # The clean column is the checkpoint's plain accuracy on the first 64 test digits.
    model, cfg = evaluate.load_model(runs_copy / "tiny-standard", "last", torch.device("cpu"))
    ds = evaluate.test_set(cfg.dataset, cfg.data_root, torch.device("cpu"), 64)
    with torch.no_grad():
        expect = (model(ds.x_test).argmax(1) == ds.y_test).float().mean().item()
    got = ev[(ev.run == "tiny-standard") & (ev.checkpoint == "last") & (ev.attack == "clean")].accuracy.item()
    assert got == pytest.approx(expect)
    for (run, which), g in ev.groupby(["run", "checkpoint"]):
        acc = dict(zip(g.attack, g.accuracy))
        assert acc["pgd20"] <= acc["clean"]
    files_before = sorted((runs_copy / "tiny-standard" / "evals").iterdir())

    rc = evaluate.main(["tiny-standard", "--runs-dir", str(runs_copy), "--n", "32", "--attacks", "pgd20",
                        "--checkpoint", "last", "--device", "cpu", "--quiet"])
    assert rc == 0
    assert sorted((runs_copy / "tiny-standard" / "evals").iterdir()) == files_before  # replaced, not added
    rows = {(r["checkpoint"], r["attack"]): r["n"] for r in evaluate.read_evals(runs_copy / "tiny-standard")}
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
    assert (row["setting"], row["surrogate"], row["attack"], row["n"]) == ("black-box", "tiny-standard", "pgd20", 64)
    evaluate.main(["tiny-unsecured", "--runs-dir", str(runs_copy), "--attacks", "clean,pgd20",
                   "--checkpoint", "last", "--n", "64", "--device", "cpu", "--quiet"])
    rows = {(r["setting"], r["attack"]): r["accuracy"] for r in evaluate.read_evals(runs_copy / "tiny-unsecured")
            if r["checkpoint"] == "last" and r["n"] == 64}
    # Clean does not depend on where examples are crafted; transfer is weaker than attacking the model itself.
    assert rows[("black-box", "clean")] == rows[("white-box", "clean")]
    assert rows[("black-box", "pgd20")] >= rows[("white-box", "pgd20")]


@pytest.mark.slow
def test_pgd20_agrees_with_torchattacks_and_autoattack_is_not_weaker(tmp_path):
    torchattacks = pytest.importorskip("torchattacks", reason="the AutoAttack column needs torchattacks 3.5.1")
    # eps 0.1 keeps the tiny model's robust accuracy away from 0, so the comparison means something.
    rd = tiny_run(tmp_path, "aa", "standard", epochs=2, n_train=512, eps=0.1, eval_n=8)
    rows = evaluate.evaluate_run(rd, device="cpu", n=500, attacks=("pgd20",), checkpoints=("last",), progress=False)
    acc = {r["attack"]: r["accuracy"] for r in rows}
    # AutoAttack (Square's 5,000 queries, FAB-T) is slow on a CPU (~30 s for 32 examples on 2 cores):
    # the first 32 of the same examples.
    rows = evaluate.evaluate_run(rd, device="cpu", n=32, attacks=("pgd20", "autoattack"), checkpoints=("last",),
                                 progress=False)
    aa = {r["attack"]: r["accuracy"] for r in rows}
    model, cfg = evaluate.load_model(rd, "last", torch.device("cpu"))
    ds = evaluate.test_set(cfg.dataset, cfg.data_root, torch.device("cpu"), 500)
    torch.manual_seed(1)  # another random start than ours
    ref = torchattacks.PGD(model, eps=cfg.eps, alpha=cfg.eps / 4, steps=20, random_start=True)
    x_ref = ref(ds.x_test, ds.y_test)
    with torch.no_grad():
        ref_acc = (model(x_ref).argmax(1) == ds.y_test).float().mean().item()
    assert 0.05 < acc["pgd20"] < 0.95, acc  # a model that is neither broken nor unattackable
    assert abs(acc["pgd20"] - ref_acc) <= 0.01, (acc, ref_acc)
    assert aa["autoattack"] <= aa["pgd20"], aa
