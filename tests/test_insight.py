"""Data maps and forgetting events (store.insight, dashboard.queries) against an independent pandas
computation over the raw rows of a real tiny run; the prefix aggregates against the plain SQL."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import store
from dashboard import queries
from store import files, insight
from store import runs as store_runs
from tests.conftest import tiny_run

RUN = "ins-unsecured"
OTHER = "ins-unsecured-seed1"


@pytest.fixture(scope="module")
def insight_runs(tmp_path_factory):
    """A 4-epoch unsecured run (learns fast: many examples learned, some forgotten) on real digits."""
    d = tmp_path_factory.mktemp("insight-runs")
    tiny_run(d, RUN, "unsecured", epochs=4, eval_at_end=False)
    tiny_run(d, OTHER, "unsecured", epochs=4, seed=1, eval_at_end=False)  # another seed: mostly the same examples, other forgets
    return d


def rows(runs_dir, run=RUN) -> pd.DataFrame:
    with store.open(runs_dir) as con:
        return con.query_df("SELECT idx, epoch, correct, p_true, loss FROM examples WHERE run = ?", [run])


def pandas_stats(df: pd.DataFrame, lo=None, hi=None) -> pd.DataFrame:
    """The definitions of Swayamdipta et al. and Toneva et al., written independently in pandas."""
    df = df[(df.epoch >= (lo if lo is not None else -1)) & (df.epoch <= (hi if hi is not None else 10**9))]
    df = df.sort_values(["idx", "epoch"])
    prev = df.groupby("idx")["correct"].shift(1)
    df = df.assign(forgot=(prev == True) & (~df["correct"]))  # noqa: E712 (NaN for the first epoch)
    g = df.groupby("idx")
    return pd.DataFrame({"confidence": g["p_true"].mean(), "variability": g["p_true"].std(ddof=0),
                         "correctness": g["correct"].mean(), "n_correct": g["correct"].sum(),
                         "forgets": g["forgot"].sum(), "loss_mean": g["loss"].mean()})


def test_the_trainer_writes_one_aggregate_per_epoch(insight_runs):
    rd = insight_runs / RUN
    assert [e for e in range(4) if insight.fresh(rd, e)] == [0, 1, 2, 3]
    assert pq.read_table(insight.cum_path(rd, 3)).num_rows == 384


def test_summary_and_forgetting_counts_agree_with_pandas(insight_runs):
    ref = pandas_stats(rows(insight_runs))
    with store.open(insight_runs) as con:
        summ = queries.insight_summary(con, RUN).iloc[0]
        hist = queries.forgetting(con, RUN)
    assert summ["source"] == "aggregates"
    assert summ["n"] == len(ref) == 384
    assert summ["never_learned"] == (ref.n_correct == 0).sum()
    assert summ["unforgettable"] == ((ref.n_correct > 0) & (ref.forgets == 0)).sum()
    assert summ["forgetting_events"] == ref.forgets.sum() > 0  # the run does forget examples
    assert summ["confidence_mean"] == pytest.approx(ref.confidence.mean(), rel=1e-6)
    want = ref.assign(k=np.where(ref.n_correct == 0, -1, ref.forgets)).groupby("k").size()
    assert dict(zip(hist["forgets"], hist["n"])) == want.to_dict()


@pytest.mark.parametrize("lo, hi", [(None, None), (1, 3)])
def test_two_runs_forgetting_overlap_agrees_with_pandas(insight_runs, lo, hi):
    a, b = pandas_stats(rows(insight_runs), lo, hi), pandas_stats(rows(insight_runs, OTHER), lo, hi)
    j = a.join(b, lsuffix="_a", rsuffix="_b", how="inner")
    fa, fb = j.forgets_a > 0, j.forgets_b > 0
    with store.open(insight_runs) as con:
        o = queries.forgetting_overlap(con, RUN, OTHER, lo, hi).iloc[0]
    assert o["n"] == len(j) > 300  # the seed also draws the 384 of the 4,000 digits: most are shared
    assert (o["events_a"], o["events_b"]) == (j.forgets_a.sum(), j.forgets_b.sum())
    assert (o["forgotten_both"], o["forgotten_only_a"], o["forgotten_only_b"]) == (
        (fa & fb).sum(), (fa & ~fb).sum(), (~fa & fb).sum())
    assert 0 < o["forgotten_only_a"] and 0 < o["forgotten_only_b"]  # the seeds forget different examples
    assert o["jaccard_forgotten"] == pytest.approx((fa & fb).sum() / (fa | fb).sum())
    na, nb = j.n_correct_a == 0, j.n_correct_b == 0
    assert o["jaccard_never_learned"] == pytest.approx((na & nb).sum() / (na | nb).sum()) if (na | nb).any() \
        else pd.isna(o["jaccard_never_learned"])
    assert o["corr_forgets"] == pytest.approx(np.corrcoef(j.forgets_a, j.forgets_b)[0, 1])


def test_datamap_bins_agree_with_pandas(insight_runs):
    ref = pandas_stats(rows(insight_runs))
    with store.open(insight_runs) as con:
        grid = queries.datamap(con, RUN)
    cb = np.minimum(np.floor(ref.confidence * insight.CONF_BINS), insight.CONF_BINS - 1).astype(int)
    vb = np.minimum(np.floor(ref.variability * 2 * insight.VAR_BINS), insight.VAR_BINS - 1).astype(int)
    want = ref.assign(cb=cb, vb=vb).groupby(["cb", "vb"]).agg(n=("correctness", "size"), c=("correctness", "mean"))
    got = grid.set_index(["conf_bin", "var_bin"])
    assert got["n"].sum() == 384 and len(got) > 5
    assert got["n"].to_dict() == want["n"].to_dict()
    assert got["correctness"].to_numpy() == pytest.approx(want.loc[got.index, "c"].to_numpy())


@pytest.mark.parametrize("lo,hi", [(None, None), (1, 3), (2, 2), (0, 1)])
def test_epoch_ranges_from_aggregates_equal_pandas_and_plain_sql(insight_runs, lo, hi):
    rd = insight_runs / RUN
    ref = pandas_stats(rows(insight_runs), lo, hi)
    with store.open(insight_runs) as con:
        fast_sql, source = insight.stats_relation(rd, lo, hi)
        slow_sql, slow_source = insight.stats_relation(rd, lo, hi, use_aggregates=False)
        fast = con.query_df(fast_sql).set_index("idx").sort_index()
        slow = con.query_df(slow_sql).set_index("idx").sort_index()
    assert (source, slow_source) == ("aggregates", "rows")
    for col in ref.columns:
        assert fast[col].to_numpy(float) == pytest.approx(ref[col].to_numpy(float), abs=1e-6), col
        assert slow[col].to_numpy(float) == pytest.approx(ref[col].to_numpy(float), abs=1e-6), col


def test_share_forgotten_per_epoch_agrees_with_pandas(insight_runs):
    df = rows(insight_runs).sort_values(["idx", "epoch"])
    prev = df.groupby("idx")["correct"].shift(1)
    df["forgot"] = (prev == True) & ~df["correct"]  # noqa: E712
    df["seen_correct"] = df["correct"].astype(int).groupby(df["idx"]).cummax().astype(bool)
    df["forgot_so_far"] = df["forgot"].astype(int).groupby(df["idx"]).cummax().astype(bool)
    with store.open(insight_runs) as con:
        got = queries.forgetting_per_epoch(con, RUN).set_index("epoch")
    assert (got["source"] == "aggregates").all()
    g = df.groupby("epoch")
    assert got["forgotten"].to_numpy() == pytest.approx(g["forgot"].mean().to_numpy())
    assert got["never_learned"].to_numpy() == pytest.approx((~df["seen_correct"]).groupby(df.epoch).mean().to_numpy())
    unforg = (df["seen_correct"] & ~df["forgot_so_far"]).groupby(df.epoch).mean()
    assert got["unforgettable"].to_numpy() == pytest.approx(unforg.to_numpy())
    assert got.loc[0, "forgotten"] == 0 and got["forgotten"].iloc[1:].sum() > 0


def test_most_forgotten_examples_come_first(insight_runs):
    ref = pandas_stats(rows(insight_runs))
    with store.open(insight_runs) as con:
        top = queries.pick_examples(con, RUN, "most forgotten", limit=5)
        never = queries.pick_examples(con, RUN, "never learned", limit=500)
        region = queries.pick_examples(con, RUN, "hardest", region="ambiguous", limit=500)
    assert list(top["forgets"]) == sorted(ref.forgets, reverse=True)[:5]
    assert set(never["idx"]) == set(ref.index[ref.n_correct == 0])
    assert set(region["idx"]) == set(ref.index[ref.variability >= insight.AMBIGUOUS_VARIABILITY])
    with pytest.raises(ValueError):
        insight.pick_sql("x", "'; DROP TABLE x; --")


def test_stale_or_damaged_aggregates_fall_back_to_the_rows(insight_runs, tmp_path):
    src = insight_runs / RUN
    rd = tmp_path / RUN
    shutil.copytree(src, rd)
    want = _summary(tmp_path)
    assert want["source"] == "aggregates"
    f = files.epoch_files(store_runs.epoch_dir(rd, "examples", 2))[0]
    later = insight.cum_path(rd, 3).stat().st_mtime_ns + 1000
    os.utime(f, ns=(later, later))  # epoch 2 redone after its aggregate (a resume): stale
    got = _summary(tmp_path)
    assert got["source"] == "rows" and got.drop("source").equals(want.drop("source"))
    insight.update(rd, 3)  # rebuilds 2 and 3
    assert _summary(tmp_path)["source"] == "aggregates"
    insight.cum_path(rd, 3).write_bytes(b"PAR1 not really")
    got = _summary(tmp_path)
    assert got["source"] == "rows" and got.drop("source").equals(want.drop("source"))


def _summary(runs_dir) -> pd.Series:
    with store.open(runs_dir) as con:
        return queries.insight_summary(con, RUN).iloc[0]


def test_runs_logged_before_p_true_get_forgetting_but_no_confidence(insight_runs, tmp_path):
    rd = tmp_path / RUN
    shutil.copytree(insight_runs / RUN, rd)
    shutil.rmtree(rd / insight.DIR)
    for e in range(4):
        for f in files.epoch_files(store_runs.epoch_dir(rd, "examples", e)):
            t = pq.read_table(f)
            pq.write_table(t.drop_columns(["p_true", "fosc_box", "grad_l1"]), f)
    for e in range(4):
        insight.update(rd, e)
    ref = pandas_stats(rows(insight_runs))
    with store.open(tmp_path) as con:
        stats = con.query_df(insight.stats_relation(rd)[0]).set_index("idx").sort_index()
        assert queries.datamap(con, RUN).empty
    assert stats["confidence"].isna().all() and stats["variability"].isna().all()
    assert (stats["forgets"].to_numpy() == ref["forgets"].to_numpy()).all()


def test_compare_page_shows_the_overlap_of_two_runs(insight_runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FOSC_RUNS_DIR", str(insight_runs))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "run_dashboard.py"),
                           default_timeout=90)
    at.session_state["runs_refresh"] = "off"
    at.run()
    at.switch_page("dashboard/pages/compare.py").run()
    at.multiselect(key="cmp_runs").set_value([RUN, OTHER]).run()
    assert not at.exception, at.exception
    table = next(d.value for d in at.dataframe if "forgetting events" in d.value.iloc[:, 0].tolist())
    with store.open(insight_runs) as con:
        o = queries.forgetting_overlap(con, at.selectbox(key="cmp_forget_a").value,
                                       at.selectbox(key="cmp_forget_b").value, 0, 3).iloc[0]
    a = at.selectbox(key="cmp_forget_a").value
    shown = table.set_index(table.columns[0])
    assert shown.loc["forgetting events", a] == o["events_a"] > 0
    assert shown.loc["examples forgotten at least once", a] == o["forgotten_a"]
    assert [m.value for m in at.metric][:1] == [f"{int(o['forgotten_both']):,}"]
    at.multiselect(key="cmp_runs").set_value([RUN]).run()
    assert any("Choose two runs" in c.value for c in at.caption)


def test_run_page_shows_the_forgetting_shares_per_epoch(insight_runs, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_dashboard_app import figures

    monkeypatch.setenv("FOSC_RUNS_DIR", str(insight_runs))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "run_dashboard.py"), default_timeout=90)
    at.session_state["run_refresh"] = "off"
    at.session_state["run"] = RUN
    at.run()
    at.switch_page("dashboard/pages/run.py").run()
    assert not at.exception, at.exception
    fig = figures(at)["Forgetting (Toneva et al. 2019), per epoch"]
    with store.open(insight_runs) as con:
        per = queries.forgetting_per_epoch(con, RUN)
    assert len(per) == 4 and per["forgotten"].iloc[1:].sum() > 0
    for trace, col in zip(fig.data, ("forgotten", "never_learned", "unforgettable")):
        assert list(trace.y) == pytest.approx(per[col].tolist()), col
