"""dashboard.queries and dashboard.charts against real tiny runs, checked against plain SQL on the views."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import store
from dashboard import charts, queries
from store import evals as store_evals
from store import files
from store.schedule import c_t
from store.writer import write_event, write_parquet_atomic


@pytest.fixture(scope="module")
def con(tiny_runs):
    c = store.open(tiny_runs)
    yield c
    c.close()


def test_runs_overview_lists_every_run_with_latest_test_accuracies(con):
    df = queries.runs_overview(con).set_index("run")
    assert sorted(df.index) == ["tiny-dynamic", "tiny-standard", "tiny-unsecured"]
    assert set(df["state"]) == {"finished"} and set(df["epochs_done"]) == {2}
    ev = con.query_df("SELECT run, attack, accuracy FROM evals WHERE checkpoint = 'last' AND setting = 'white-box'")
    ev["attack"] = ev["attack"].map(store_evals.key_of)
    for run, row in df.iterrows():
        mine = ev[ev["run"] == run].set_index("attack")["accuracy"]
        assert row["clean_acc"] == pytest.approx(mine["clean"])
        assert row["robust_acc"] == pytest.approx(mine["pgd20"])
        assert row["acc_source"] == "test set, last checkpoint"
        assert row["strategy"] == run.split("-")[1]


def test_fosc_hist_counts_every_row_of_the_chosen_partitions_only(con):
    hist = queries.fosc_hist(con, ("tiny-dynamic",), (0, 1), bins=50)
    raw = con.query_df("SELECT epoch, count(*) n, min(fosc) lo, max(fosc) hi FROM examples "
                       "WHERE run = 'tiny-dynamic' GROUP BY epoch ORDER BY epoch")
    assert hist.groupby("epoch")["count"].sum().tolist() == raw["n"].tolist()
    assert hist["bin"].between(0, 49).all()
    assert hist["lo"].iloc[0] == pytest.approx(raw["lo"].min())
    assert hist["lo"].iloc[0] + 50 * hist["width"].iloc[0] == pytest.approx(raw["hi"].max(), rel=1e-6)
    # the same counts as numpy's histogram over the raw rows
    rows = con.query_df("SELECT epoch, fosc FROM examples WHERE run = 'tiny-dynamic' AND epoch = 1")
    edges = hist["lo"].iloc[0] + hist["width"].iloc[0] * np.arange(51)
    expect, _ = np.histogram(rows["fosc"].astype(np.float64), edges)
    got = np.zeros(50, int)
    h1 = hist[hist["epoch"] == 1]
    got[h1["bin"].to_numpy()] = h1["count"].to_numpy()
    assert np.abs(got - expect).sum() <= 2  # float32 values on a bin edge may land either side
    assert queries.fosc_hist(con, ("tiny-dynamic",), (7,)).empty


def test_density_integrates_to_one_for_kde_and_histogram(con):
    hist = queries.fosc_hist(con, ("tiny-dynamic", "tiny-standard"), (1,))
    for kind in ("kde", "hist"):
        dens = queries.density(hist, kind)
        assert set(map(tuple, dens[["run", "epoch"]].drop_duplicates().to_numpy())) == {("tiny-dynamic", 1),
                                                                                      ("tiny-standard", 1)}
        for _, g in dens.groupby("run"):
            dx = np.diff(g["x"].to_numpy()).mean()
            assert (g["density"] >= 0).all()
            assert g["density"].sum() * dx == pytest.approx(1.0, abs=1e-3)


def test_fosc_bins_match_raw_accuracy_and_loss(con):
    bins = queries.fosc_bins(con, "tiny-standard", 1)
    raw = con.query_df("SELECT fosc, loss, correct FROM examples WHERE run = 'tiny-standard' AND epoch = 1")
    assert bins["n"].sum() == len(raw) and len(bins) <= 20
    overall_acc = (bins["adv_acc"] * bins["n"]).sum() / bins["n"].sum()
    assert overall_acc == pytest.approx(raw["correct"].mean())
    assert (bins["loss_mean"] * bins["n"]).sum() / len(raw) == pytest.approx(raw["loss"].mean(), rel=1e-5)
    assert (bins["fosc_lo"].diff().dropna() > 0).all()


def test_steps_hist_trajectories_epochs_and_events(con):
    steps = queries.steps_hist(con, "tiny-dynamic")
    raw = con.query_df("SELECT epoch, steps, count(*) n FROM examples WHERE run = 'tiny-dynamic' "
                       "GROUP BY ALL ORDER BY ALL")
    pd.testing.assert_frame_equal(steps.reset_index(drop=True), raw, check_dtype=False)
    traj = queries.trajectories(con, "tiny-dynamic", 1, n_examples=5)
    assert traj["idx"].nunique() == 5
    assert traj.groupby("idx")["step"].min().eq(0).all()
    ep = queries.epochs(con, ("tiny-dynamic", "tiny-standard"))
    assert ep.groupby("run")["epoch"].apply(list).to_dict() == {"tiny-dynamic": [0, 1], "tiny-standard": [0, 1]}
    assert queries.example_epochs(con, "tiny-unsecured")["epoch"].tolist() == [0, 1]
    assert {"start", "finish"} <= set(queries.events(con, "tiny-dynamic")["kind"])


def test_robustness_table_equals_the_evals_rows(con):
    table = queries.robustness(con, ("tiny-standard", "tiny-dynamic"), "last")
    assert table["run"].tolist() == ["tiny-standard", "tiny-dynamic"]
    assert list(table.columns[3:]) == ["white-box Clean", "white-box FGSM (eps)", "white-box PGD-10 (eps/4)",
                                       "white-box PGD-20 (eps/4)", "white-box CW-inf-30 (eps/4)"]
    ev = con.query_df("SELECT run, attack, accuracy FROM evals WHERE checkpoint = 'last' AND setting = 'white-box'")
    for _, row in ev[ev["run"].isin(table["run"])].iterrows():
        got = table.loc[table["run"] == row["run"], f"white-box {store_evals.header(row['attack'])}"].item()
        assert got == pytest.approx(100 * row["accuracy"])


@pytest.fixture()
def one_run(tiny_runs, tmp_path):
    """A private copy of one tiny run: these tests change its files."""
    shutil.copytree(tiny_runs / "tiny-dynamic", tmp_path / "runs" / "tiny-dynamic")
    return tmp_path / "runs"


def test_load_caches_until_a_file_changes(one_run, monkeypatch):
    """The second load is served from the cache (the query does not run again); a new file in the
    run (an event, renamed into place as the writer does) changes the key, and the next load sees it."""
    calls = []
    real = queries._QUERIES["events"]
    monkeypatch.setitem(queries._QUERIES, "events", lambda con, *a, **k: calls.append(a) or real(con, *a, **k))
    a = queries.load(one_run, queries.events, "tiny-dynamic")
    b = queries.load(one_run, queries.events, "tiny-dynamic")
    assert len(calls) == 1 and a.equals(b) and {"start", "finish"} <= set(a["kind"])
    write_event(one_run / "tiny-dynamic", "tiny-dynamic", "note", "from the test")
    c = queries.load(one_run, queries.events, "tiny-dynamic")
    assert len(calls) == 2 and len(c) == len(a) + 1 and "note" in set(c["kind"])


def test_epochs_follow_a_rewritten_summary_file(one_run):
    """A resume rewrites an epoch's summary: the next query shows the new row, never a kept copy."""
    with store.open(one_run) as con:
        before = queries.epochs(con, ("tiny-dynamic",))
        path = files.summary_path(one_run / "tiny-dynamic", 1)
        t = pq.read_table(path)
        write_parquet_atomic(t.set_column(t.schema.get_field_index("fosc_mean"), "fosc_mean",
                                          pa.array([123.0])), path)
        after = queries.epochs(con, ("tiny-dynamic",))
    assert before["fosc_mean"].iloc[1] != 123.0 and after["fosc_mean"].tolist()[1] == 123.0
    assert after["epoch"].tolist() == before["epoch"].tolist() == [0, 1]


def test_damaged_lists_each_file_left_out_per_run(one_run):
    bad = one_run / "tiny-dynamic" / "examples" / "epoch=000" / "compact-r0.parquet"
    bad.write_bytes(b"")
    with store.open(one_run) as con:
        assert queries.example_epochs(con, "tiny-dynamic")["epoch"].tolist() == [1]
        assert queries.fosc_hist(con, ("tiny-dynamic",), (0, 1))["epoch"].unique().tolist() == [1]
        d = queries.damaged(con)
    assert d.to_dict("list") == {"run": ["tiny-dynamic"], "file": ["tiny-dynamic/examples/epoch=000/compact-r0.parquet"],
                                 "reason": ["empty file (0 bytes)"]}


# ---- charts: pure functions of small frames ---------------------------------------------------------

def test_density_charts_have_one_trace_per_epoch_and_keep_zoom(con):
    dens = queries.density(queries.fosc_hist(con, ("tiny-dynamic",), (0, 1)))
    fig = charts.density_overlay(dens, "rev-1")
    assert isinstance(fig, go.Figure) and fig.layout.uirevision == "rev-1"
    assert [t.name for t in fig.data] == ["epoch 0", "epoch 1"]
    ridge = charts.density_ridgeline(dens, "rev-2")
    assert [t.name for t in ridge.data if t.showlegend is not False] == ["epoch 0", "epoch 1"]
    facets = charts.density_facets(queries.density(queries.fosc_hist(con, ("tiny-dynamic", "tiny-standard"), (0, 1))),
                                   "rev-3")
    assert len(facets.data) == 4 and {t.name for t in facets.data} == {"tiny-dynamic", "tiny-standard"}


def test_schedule_chart_projects_c_t_over_every_epoch(con):
    ep = queries.epochs(con, ("tiny-dynamic",))
    fig = charts.schedule(ep, 6, "s")
    traces = {t.name: t for t in fig.data}
    last = ep.iloc[-1]
    proj = traces["c_t (projected)"]
    assert list(proj.x) == list(range(int(last["epoch"]), 6))
    assert list(proj.y) == pytest.approx([c_t(t, last["c_max"], last["t_prime"]) for t in range(1, 6)])
    assert list(traces["FOSC median"].y) == pytest.approx(ep["fosc_q50"].tolist())
    assert "c_t (logged)" not in {t.name for t in charts.schedule(queries.epochs(con, ("tiny-standard",)), 2, "s").data}


@pytest.mark.parametrize("raw, step", [(0.13, 0.2), (0.2, 0.2), (0.21, 0.5), (3.0, 5.0), (7.0, 10.0), (0.0004, 0.0005)])
def test_nice_step_is_the_next_1_2_5_step(raw, step):
    assert charts.nice_step(raw) == pytest.approx(step)


def test_other_charts_carry_the_query_values(con):
    ep = queries.epochs(con, ("tiny-dynamic",))
    steps = charts.steps_per_epoch(queries.steps_hist(con, "tiny-dynamic"), ep, "x")
    assert list(steps.data[1].y) == pytest.approx(ep["steps_mean"].tolist())
    assert np.asarray(steps.data[0].z).sum(axis=0) == pytest.approx([1.0, 1.0])  # shares per epoch
    bins = queries.fosc_bins(con, "tiny-dynamic", 1)
    fb = charts.fosc_bins(bins, "x", epoch=1)
    assert list(fb.data[0].y) == pytest.approx(bins["adv_acc"].tolist())
    # The loss axis: from 0, ticks at whole multiples of a 1-2-5 step, the top above the largest loss.
    loss_axis = fb.layout.yaxis2
    assert loss_axis.range[0] == 0 and loss_axis.tick0 == 0 and loss_axis.range[1] >= bins["loss_mean"].max()
    assert loss_axis.dtick in [m * 10.0 ** k for m in (1, 2, 5) for k in range(-4, 4)]
    traj = queries.trajectories(con, "tiny-dynamic", 1, n_examples=3)
    assert len(charts.trajectories(traj, "x").data) == 6  # FOSC and loss per example
    la = charts.loss_accuracy(ep, "x")
    assert [t.name for t in la.data] == ["train loss (adv.)", "train (adv.)", "held-out clean", "held-out PGD"]
    assert list(charts.below_ct(ep, "x").data[0].y) == pytest.approx(ep["below_ct"].tolist())
    cc = charts.compare_curves(queries.epochs(con, ("tiny-dynamic", "tiny-standard")), "fosc_q50", "x")
    assert [t.name for t in cc.data] == ["tiny-dynamic", "tiny-standard"]
    sq = charts.sql_chart(pd.DataFrame({"a": [1, 2], "b": [3.0, 4.0]}), "a", ["b"], "bar")
    assert list(sq.data[0].y) == [3.0, 4.0]
