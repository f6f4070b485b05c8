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
    """Chart title -> Plotly figure, as the page sent it to the browser."""
    out = {}
    for el in at.get("plotly_chart"):
        fig = pio.from_json(json.dumps(_decode(json.loads(el.proto.spec))))
        out[fig.layout.title.text or ""] = fig
    return out


def test_runs_page_lists_the_runs_and_offers_the_form(tiny_runs, monkeypatch):
    at = app(tiny_runs, monkeypatch)
    table = at.dataframe[0].value
    assert sorted(table["run"]) == ["tiny-dynamic", "tiny-standard", "tiny-unsecured"]
    assert set(table["state"]) == {"finished"} and set(table["progress"]) == {"2/2"}
    with store.open(tiny_runs) as con:
        ev = con.query_df("SELECT run, accuracy FROM evals WHERE checkpoint = 'last' AND setting = 'white-box' "
                          "AND attack = 'clean'").set_index("run")["accuracy"]
    assert table.set_index("run")["clean_acc"].to_dict() == pytest.approx(ev.to_dict())
    assert at.selectbox(key="f_strategy").options == ["unsecured", "standard", "curriculum", "dynamic", "fgsm-pgd",
                                                       "fat", "trades"]
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
    with store.open(tiny_runs) as con:
        ep = con.query_df("SELECT * FROM epochs WHERE run = 'tiny-dynamic' ORDER BY epoch")
    sched = {t.name: t for t in figs["FOSC vs the schedule c_t"].data}
    assert list(sched["FOSC median"].y) == pytest.approx(ep["fosc_q50"].tolist())
    assert list(sched["c_t (logged)"].y) == pytest.approx(ep["c_t"].tolist())
    assert list(figs["PGD steps per epoch"].data[1].y) == pytest.approx(ep["steps_mean"].tolist())
    assert list(figs["Share of examples with FOSC <= c_t"].data[0].y) == pytest.approx(ep["below_ct"].tolist())
    bins = figs["Accuracy and loss by FOSC (epoch 1)"]
    assert sum(bins.data[0].customdata) == 384  # every example of the epoch lands in a bin
    assert len(figs["Trajectories of sampled examples"].data) > 0
    assert at.metric[0].value == f"{ep['fosc_q50'].iloc[-1]:.4g}"

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
    table = at.dataframe[0].value.set_index("run")
    assert list(table.columns) == ["strategy", "dataset", "Clean", "FGSM", "PGD-10", "PGD-20", "CW-inf"]
    with store.open(tiny_runs) as con:
        ev = con.query_df("SELECT run, attack, accuracy FROM evals WHERE checkpoint = 'last' "
                          "AND setting = 'white-box' AND run IN ('tiny-dynamic', 'tiny-unsecured')")
    names = {"clean": "Clean", "fgsm": "FGSM", "pgd10": "PGD-10", "pgd20": "PGD-20", "cw": "CW-inf"}
    assert len(ev) == 10
    for _, row in ev.iterrows():
        assert table.at[row["run"], names[row["attack"]]] == pytest.approx(100 * row["accuracy"])
    assert at.get("download_button")  # the CSV export
    at.radio(key="cmp_checkpoint").set_value("best").run()
    assert not at.exception and at.dataframe[0].value.shape == (2, 8)


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
