"""Every dashboard page through streamlit.testing.v1.AppTest, on real tiny runs: charts' data and tables."""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

import store
from dashboard import jobs, live_chart

APP = str(Path(__file__).resolve().parent.parent / "run_dashboard.py")


def app(runs_dir, monkeypatch, page: str | None = None, **state) -> AppTest:
    monkeypatch.setenv("FOSC_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in {"runs_refresh": "off", "run_refresh": "off", **state}.items():
        at.session_state[k] = v
    at.run()
    if page:
        at.switch_page(f"dashboard/pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def _decode(obj):
    """Plotly ships numeric arrays base64-encoded ({"dtype", "bdata"}); back to plain lists."""
    if isinstance(obj, dict):
        if set(obj) >= {"dtype", "bdata"}:
            arr = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
            shape = [int(n) for n in str(obj.get("shape", len(arr))).split(",")]
            return arr.reshape(shape).tolist()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


def figures(at: AppTest) -> dict:
    """Chart title -> Plotly figure, as the page sent it to the browser: st.plotly_chart's, and the
    live charts' (dashboard/live_chart.py: a v2 component whose data carries the figure)."""
    specs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    specs += [json.loads(el.proto.json)["figure"] for el in at.get("bidi_component")
              if el.proto.component_name == live_chart.CHART]
    out = {}
    for spec in specs:
        fig = pio.from_json(json.dumps(_decode(spec)))
        out[fig.layout.title.text or ""] = fig
    return out


def live_charts(at: AppTest) -> dict:
    """Key -> title of the live charts the page mounted (each once, keyed)."""
    return {el.proto.id.rsplit("-", 1)[-1]: json.loads(el.proto.json)["figure"]["layout"]["title"]["text"]
            for el in at.get("bidi_component") if el.proto.component_name == live_chart.CHART}


def frame_with(at: AppTest, column: str):
    """The first table on the page with this column (AppTest finds tables by position only)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def test_runs_page_lists_the_runs_and_offers_the_form(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch)
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["tiny-dynamic", "tiny-standard", "tiny-unsecured"]
    assert set(table["state"]) == {"finished"} and set(table["progress"]) == {"2/2"}
    with store.open(tiny_runs) as con:
        ev = con.query_df("SELECT run, accuracy FROM evals WHERE checkpoint = 'last' AND setting = 'white-box' "
                          "AND attack = 'clean'").set_index("run")["accuracy"]
        ep = con.query_df("SELECT run, epoch, heldout_pgd_acc FROM epochs ORDER BY run, epoch")
    t = table.set_index("run")
    assert (t["test_clean"] / 100).to_dict() == pytest.approx(ev.to_dict())
    for run, g in ep.groupby("run"):  # the trend and its change: held-out only, finished epochs, in %
        trend = (100 * g["heldout_pgd_acc"]).tolist()
        assert t.at[run, "heldout_trend"] == pytest.approx(trend, abs=0.01)
        assert t.at[run, "heldout_delta"] == pytest.approx(trend[-1] - trend[-2], abs=0.01)
        assert t.at[run, "heldout_source"] == "held-out, epoch 1 (last finished), PGD-10, eps 0.3, n=128"
        assert t.at[run, "test_source"] == "test set, last checkpoint, PGD-20 (eps/4), eps 0.3, n=128"
    assert at.selectbox(key="f_strategy").options == list(jobs.STRATEGIES)
    assert at.selectbox(key="f_strategy").value == "dynamic"
    assert "stop_run" not in [b.key for b in at.button]  # nothing is running


def test_runs_page_refuses_a_bad_launch_with_one_line(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch)
    at.text_input(key="f_name").input("../escape")
    at.button[-1].click().run()  # the form's submit button
    assert not at.exception
    assert "invalid run name" in at.error[0].value
    assert not (tiny_runs.parent / "escape").exists()


def test_empty_runs_folder_tells_what_to_do(tmp_path, monkeypatch):
    for page in (None, "run", "compare"):
        at = app(tmp_path / "runs", monkeypatch, page)
        assert any("python -m trainer.run" in i.value for i in at.info), page


def test_run_page_draws_the_chosen_epochs_and_the_schedule(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "run", run="tiny-dynamic")
    figs = figures(at)
    dens = figs["FOSC density, tiny-dynamic"]
    assert [t.name for t in dens.data] == ["epoch 0", "epoch 1"]  # following the latest: both epochs
    # The Run page's charts are live charts (they keep the user's zoom while their data grows), keyed.
    shown = live_charts(at)
    assert {k: shown[k] for k in ("run_density", "run_schedule", "run_batches")} == {
        "run_density": "FOSC density, tiny-dynamic", "run_schedule": "FOSC vs the schedule c_t",
        "run_batches": "training loss per batch"}
    assert {"run_steps", "run_lossacc", "run_below", "run_bins", "run_traj", "run_forgetting"} <= set(shown)
    assert not at.get("plotly_chart")  # none left to lose its zoom on a refresh
    assert [el.proto.component_name for el in at.get("bidi_component")].count(live_chart.LOADER) == 1
    with store.open(tiny_runs) as con:
        ep = con.query_df("SELECT * FROM epochs WHERE run = 'tiny-dynamic' ORDER BY epoch")
    sched = {t.name: t for t in figs["FOSC vs the schedule c_t"].data}
    assert list(sched["FOSC median"].y) == pytest.approx(ep["fosc_q50"].tolist())
    assert list(sched["c_t (logged)"].y) == pytest.approx(ep["c_t"].tolist())
    assert list(figs["PGD steps per epoch"].data[1].y) == pytest.approx(ep["steps_mean"].tolist())
    assert list(figs["Share of examples with FOSC <= c_t"].data[0].y) == pytest.approx(ep["below_ct"].tolist())
    bins = figs["Accuracy and loss by FOSC (epoch 1)"]
    assert sum(bins.data[0].customdata) == 384  # every example of the epoch lands in a bin
    assert len(figs["Trajectories, epoch 1"].data) > 0
    tiles = {m.label: m.value for m in at.metric}
    assert tiles["FOSC median, epoch 1"] == f"{ep['fosc_q50'].iloc[-1]:.4g}"
    assert tiles["held-out PGD, epoch 1"] == f"{100 * ep['heldout_pgd_acc'].iloc[-1]:.1f} %"

    at.toggle(key="run_follow").set_value(False).run()
    at.multiselect(key="run_epochs").set_value([1])
    at.radio(key="run_view").set_value("ridgeline")
    at.radio(key="run_kind").set_value("fine histogram")
    at.run()
    assert not at.exception
    ridge = figures(at)["FOSC density by epoch, tiny-dynamic"]
    assert [t.name for t in ridge.data if t.showlegend is not False] == ["epoch 1"]
    assert ridge.layout.uirevision == "density-tiny-dynamic-ridgeline"


def test_open_a_run_from_the_runs_page(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch)
    at.selectbox(key="runs_pick").set_value("tiny-standard")
    at.button(key="open_run").click().run()
    assert not at.exception
    assert at.selectbox(key="run_select").value == "tiny-standard"
    assert "FOSC density, tiny-standard" in figures(at)


def test_compare_page_robustness_table_equals_the_evals_rows(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "compare")
    at.multiselect(key="cmp_runs").set_value(["tiny-dynamic", "tiny-unsecured"])
    at.multiselect(key="cmp_epochs").set_value([0, 1])
    at.run()
    assert not at.exception
    dens = figures(at)["FOSC density per epoch"]
    assert {t.name for t in dens.data} == {"tiny-dynamic", "tiny-unsecured"} and len(dens.data) == 4
    table = frame_with(at, "evaluation").set_index("run")
    attacks = list(table.columns[2:-1])
    assert list(table.columns[:2]) == ["strategy", "dataset"] and table.columns[-1] == "evaluation"
    assert len(attacks) == 5 and attacks[0] == "Clean" and set(table["evaluation"]) == {"complete"}
    with store.open(tiny_runs) as con:
        ev = con.query_df("SELECT run, attack, accuracy FROM evals WHERE checkpoint = 'last' "
                          "AND setting = 'white-box' AND run IN ('tiny-dynamic', 'tiny-unsecured')")
    assert len(ev) == 10
    for run, g in ev.groupby("run"):  # each row's cells are that run's accuracies, in %
        assert sorted(table.loc[run, attacks]) == pytest.approx(sorted(100 * g["accuracy"]))
    assert at.get("download_button")  # the CSV export
    at.radio(key="cmp_checkpoint").set_value("best").run()
    assert not at.exception and frame_with(at, "evaluation").shape == (2, 9)


def test_sql_page_runs_read_only_queries_and_refuses_writes(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch, "sql")
    at.text_area(key="sql_text").input("SELECT run, count(*) AS n FROM examples GROUP BY run ORDER BY run")
    at.button(key="sql_run").click().run()
    assert not at.exception and not at.error
    df = at.dataframe[0].value
    assert df.to_dict("list") == {"run": ["tiny-dynamic", "tiny-standard", "tiny-unsecured"], "n": [768, 768, 768]}
    chart = figures(at)[""]
    assert list(chart.data[0].y) == [768, 768, 768]
    for bad in ("DROP VIEW runs", "COPY (SELECT 1) TO 'x.csv'", "SELECT * FROM read_csv('/etc/passwd')"):
        at.text_area(key="sql_text").input(bad)
        at.button(key="sql_run").click().run()
        assert not at.exception
        assert at.error and len(at.error[0].value.splitlines()) == 1, bad


def test_runs_dir_comes_from_the_flag_then_the_variable(tmp_path, monkeypatch):
    import dashboard

    monkeypatch.setenv("FOSC_RUNS_DIR", str(tmp_path / "from-env"))
    assert dashboard.runs_dir(["--runs-dir", str(tmp_path / "from-flag")]) == tmp_path / "from-flag"
    assert dashboard.runs_dir(["-x", "other"]) == tmp_path / "from-env"
    monkeypatch.delenv("FOSC_RUNS_DIR")
    monkeypatch.chdir(tmp_path)
    assert dashboard.runs_dir([]) == tmp_path / "runs"


# ---- issue 15: headline sources, partial results, config columns, tags, charts that mean something --------

def _copy(tiny_runs, tmp_path):
    import shutil

    shutil.copytree(tiny_runs, tmp_path / "runs")
    return tmp_path / "runs"


def test_runs_table_shows_config_columns_filters_and_groups(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch)
    t = at.dataframe[0].value.set_index("run")
    for col, want in (("eps", 0.3), ("steps", 10), ("epochs", 2), ("n_train", 384), ("seed", 0), ("lr", 0.01),
                      ("step_size", 0.3 / 4), ("t_prime", 1.0)):
        assert t[col].tolist() == pytest.approx([want] * 3), col
    assert set(t["duration"]) != {""} and set(t["eta"]) == {""}  # finished runs: no ETA
    at.multiselect(key="runs_filter_by").set_value(["strategy"]).run()
    at.multiselect(key="runs_f_strategy").set_value(["unsecured", "dynamic"]).run()
    assert sorted(at.dataframe[0].value["run"]) == ["tiny-dynamic", "tiny-unsecured"]
    at.selectbox(key="runs_group").set_value("strategy").run()
    groups = at.dataframe[0].value  # the group summary comes first
    assert groups.set_index("strategy")["runs"].to_dict() == {"unsecured": 1, "dynamic": 1}


def test_tags_and_note_are_stored_in_the_run_folder_and_queryable(tiny_runs, tmp_path, monkeypatch):
    runs_dir = _copy(tiny_runs, tmp_path)
    at = app(runs_dir, monkeypatch)
    at.selectbox(key="ann_run").set_value("tiny-standard").run()
    at.text_input(key="ann_tags_tiny-standard").input("baseline, mnist")
    at.text_area(key="ann_note_tiny-standard").input("the reference run")
    at.button(key="FormSubmitter:annotate-tiny-standard-Save tags and note").click().run()
    assert not at.exception and not at.error
    assert "Saved tiny-standard" in at.success[0].value
    assert at.dataframe[0].value.set_index("run").at["tiny-standard", "tags_text"] == "baseline, mnist"
    with store.open(runs_dir) as con:
        rows = con.query_df("SELECT run, note FROM runs WHERE list_contains(tags, 'mnist')")
    assert rows.to_dict("list") == {"run": ["tiny-standard"], "note": ["the reference run"]}
    at.text_input(key="ann_tags_tiny-standard").input("bad tag with spaces")
    at.button(key="FormSubmitter:annotate-tiny-standard-Save tags and note").click().run()
    assert len(at.error) == 1 and len(at.error[0].value.splitlines()) == 1


def test_clone_fills_the_form_with_the_runs_settings(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch)
    at.selectbox(key="ann_run").set_value("tiny-unsecured").run()
    at.button(key="ann_clone").click().run()
    assert not at.exception
    assert at.selectbox(key="f_strategy").value == "unsecured"
    assert at.text_input(key="f_name").value == "tiny-unsecured-clone"
    assert (at.text_input(key="f_eps").value, at.text_input(key="f_epochs").value,
            at.text_input(key="f_n_train").value) == ("0.3", "2", "384")


def test_a_partial_evaluation_and_a_live_epoch_are_marked(tiny_runs, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from store import files

    runs_dir = _copy(tiny_runs, tmp_path)
    run = runs_dir / "tiny-dynamic"
    for attack in ("pgd20", "cw"):  # an evaluation killed after PGD-10
        files.eval_path(run, "last", "white-box", attack).unlink()
    files.summary_path(run, 1).unlink()  # epoch 1's rows are there, its summary not yet: live
    fgsm = files.eval_path(runs_dir / "tiny-unsecured", "last", "white-box", "fgsm")
    t = pq.read_table(fgsm)  # an evaluation still running (or killed) marks its row partial
    pq.write_table(t.set_column(t.schema.get_field_index("partial"), "partial", pa.array([True] * len(t))), fgsm)
    at = app(runs_dir, monkeypatch)
    t = at.dataframe[0].value.set_index("run")
    assert t.at["tiny-dynamic", "test_source"] == ("test set, last checkpoint, PGD-10 (eps/4), eps 0.3, n=128 "
                                                   "(partial: no PGD-20 (eps/4))")
    assert t.at["tiny-unsecured", "test_source"].endswith("(partial: FGSM (eps) unfinished)")
    assert t.at["tiny-dynamic", "heldout_source"].startswith("held-out, epoch 0 (last finished)")
    assert "partial" not in t.at["tiny-standard", "test_source"]
    at = app(runs_dir, monkeypatch, "run", run="tiny-dynamic")
    labels = [m.label for m in at.metric]
    assert "test PGD (partial)" in labels and "held-out PGD, epoch 0" in labels
    figs = figures(at)
    assert [t.name for t in figs["FOSC density, tiny-dynamic"].data] == ["epoch 0", "epoch 1 (live, partial)"]
    assert "Accuracy and loss by FOSC (epoch 1: live, partial)" in figs
    at = app(runs_dir, monkeypatch, "compare", cmp_runs=["tiny-dynamic", "tiny-standard"])
    table = frame_with(at, "evaluation").set_index("run")
    assert table.at["tiny-dynamic", "evaluation"] == "partial: no PGD-20 (eps/4), CW-inf-30 (eps/4)"
    assert table.at["tiny-standard", "evaluation"] == "complete"


MEANINGLESS = {  # strategy -> charts that would mean nothing for it (and must not be drawn)
    "standard": {"FOSC vs the schedule c_t", "PGD steps per epoch", "Share of examples with FOSC <= c_t"},
    "unsecured": {"FOSC vs the schedule c_t", "PGD steps per epoch", "Share of examples with FOSC <= c_t"},
    "dynamic": set(),
}


@pytest.mark.parametrize("strategy", ["standard", "dynamic", "unsecured"])
def test_every_page_shows_only_charts_that_mean_something(tiny_runs, monkeypatch, strategy):
    run = f"tiny-{strategy}"
    at = app(tiny_runs, monkeypatch, "run", run=run)
    figs = figures(at)
    titles = set(figs)
    assert not titles & MEANINGLESS[strategy], titles & MEANINGLESS[strategy]
    captions = " ".join(c.value for c in at.caption)
    if strategy == "dynamic":
        assert {"FOSC vs the schedule c_t", "Share of examples with FOSC <= c_t"} <= titles
    else:
        assert "No FOSC-vs-c_t chart" in captions and "No PGD-steps chart" in captions  # says why
    bars = figs["Accuracy and loss by FOSC (epoch 1)"].data[0].name
    assert bars == ("accuracy (clean inputs)" if strategy == "unsecured" else "adversarial accuracy")
    loss = figs["Accuracy and loss by FOSC (epoch 1)"].layout.yaxis2
    assert loss.range[0] == 0 and loss.tick0 == 0  # from 0, ticks at multiples of a round step
    if strategy == "unsecured":
        assert "Trajectories, epoch 1" not in titles and "no PGD steps" in captions
        assert [t.name for t in figs["Loss and accuracy"].data][:2] == ["train loss (clean)", "train (clean)"]
    else:
        traj = figs["Trajectories, epoch 1"]
        assert traj.layout.showlegend is not False and traj.data[0].name.startswith("example ")
    for page in ("compare", "sql"):
        at = app(tiny_runs, monkeypatch, page, cmp_runs=[run])
        assert not at.exception
    assert "FOSC density per epoch" in figures(app(tiny_runs, monkeypatch, "compare", cmp_runs=[run]))


def test_colours_are_fixed_per_run_and_legends_follow_the_table(tiny_runs, monkeypatch):
    from dashboard import charts

    at = app(tiny_runs, monkeypatch, "compare", cmp_runs=["tiny-standard", "tiny-dynamic", "tiny-unsecured"])
    table_order = frame_with(at, "evaluation")["run"].tolist()
    curves = figures(at)["held-out PGD accuracy"]
    assert [t.name for t in curves.data] == table_order
    colours = {t.name: t.line.color for t in curves.data}
    assert colours == {r: charts.run_color(r) for r in table_order}
    at = app(tiny_runs, monkeypatch, "compare", cmp_runs=["tiny-dynamic"])
    assert figures(at)["held-out PGD accuracy"].data[0].line.color == colours["tiny-dynamic"]


def test_deep_links_open_the_named_runs(tiny_runs, monkeypatch):
    monkeypatch.setenv("FOSC_RUNS_DIR", str(tiny_runs))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["run_refresh"] = "off"
    at.query_params["run"] = "tiny-standard"
    at.run()
    assert not at.exception
    assert at.selectbox(key="run_select").value == "tiny-standard"  # the root URL forwarded to the Run page
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["runs"] = "tiny-unsecured,tiny-standard,nope"
    at.run()
    assert not at.exception and at.multiselect(key="cmp_runs").value == ["tiny-unsecured", "tiny-standard"]


def test_compare_says_when_runs_differ_and_averages_seeds(tiny_runs, tmp_path, monkeypatch):
    import json

    from store import runs as store_runs

    runs_dir = _copy(tiny_runs, tmp_path)
    cfg_path = runs_dir / "tiny-unsecured" / store_runs.CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(dict(cfg, eps=0.1, n_train=1000)))
    at = app(runs_dir, monkeypatch, "compare", cmp_runs=["tiny-dynamic", "tiny-unsecured"])
    warnings = " ".join(w.value for w in at.warning)
    assert "differ in budget (eps: 0.1 vs 0.3; step size: 0.025 vs 0.075)" in warnings  # newest run first
    assert "differ in data (data size: 1000 vs 384)" in warnings
    diff = frame_with(at, "tiny-dynamic")
    assert {"strategy", "eps", "data size"} <= set(diff.index)
    # tiny-standard with another seed: the two standard runs differ only by seed and average into one row
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = runs_dir / "tiny-standard-s1"
    shutil.copytree(runs_dir / "tiny-standard", copy)
    (copy / store_runs.CONFIG).write_text(json.dumps(dict(json.loads((copy / store_runs.CONFIG).read_text()), seed=1)))
    for f in copy.rglob("*.parquet"):  # every row names its run
        t = pq.read_table(f)
        if "run" not in t.schema.names:
            continue
        run_col = pa.array(["tiny-standard-s1"] * len(t), t.schema.field("run").type)
        pq.write_table(t.set_column(t.schema.get_field_index("run"), "run", run_col), f)
    at = app(runs_dir, monkeypatch, "compare", cmp_runs=["tiny-standard", "tiny-standard-s1"], cmp_seeds=True)
    avg = frame_with(at, "Clean sd")
    assert len(avg) == 1 and avg["n"].iloc[0] == 2 and "x2 seeds" in avg["runs"].iloc[0]
    with store.open(runs_dir) as con:
        clean = con.query_df("SELECT accuracy FROM evals WHERE run = 'tiny-standard' AND checkpoint = 'last' "
                             "AND setting = 'white-box' AND attack = 'clean'")["accuracy"].iloc[0]
    assert avg["Clean"].iloc[0] == pytest.approx(100 * clean)  # the copy has the same rows: mean = value
    assert avg["Clean sd"].iloc[0] == pytest.approx(0.0)


def test_a_damaged_file_is_named_on_its_run_and_on_the_runs_page(tiny_runs, tmp_path, monkeypatch):
    """A truncated Parquet file of one run: the Runs page and that run's page name it; another run's page
    does not, and both pages still render everything else."""
    import shutil

    rd = tmp_path / "runs"
    shutil.copytree(tiny_runs, rd)
    victim = sorted((rd / "tiny-dynamic" / "examples").rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    rel = str(victim.relative_to(rd))

    def warnings(at):
        return " ".join(w.value for w in at.warning)

    at = app(rd, monkeypatch)
    assert rel in warnings(at) and "tiny-dynamic" in warnings(at)
    assert not at.exception and at.dataframe
    at = app(rd, monkeypatch, "run", run="tiny-dynamic")
    assert rel in warnings(at)
    at = app(rd, monkeypatch, "run", run="tiny-standard")
    assert rel not in warnings(at) and figures(at)
