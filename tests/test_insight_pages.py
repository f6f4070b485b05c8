"""The Examples and Example pages (AppTest) on a real tiny Dynamic run, regeneration of adversarial
examples (trainer.regenerate), and the store's reading of the run's images (store.datasets)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from streamlit.testing.v1 import AppTest

import store
from store import datasets, insight
from tests.conftest import tiny_run
from tests.test_dashboard_app import _decode
from trainer import regenerate
from trainer.data import load_arrays

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "run_dashboard.py")
RUN = "ins-dynamic"


@pytest.fixture(scope="module")
def dyn_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("insight-pages")
    tiny_run(d, RUN, "dynamic", epochs=2, trajectory_examples=16, eval_at_end=False)
    return d


def page(runs_dir, monkeypatch, name: str, **params) -> AppTest:
    monkeypatch.setenv("FOSC_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["runs_refresh"] = "off"
    at.run()
    for k, v in params.items():
        at.query_params[k] = v
    at.switch_page(f"dashboard/pages/{name}.py").run()
    assert not at.exception, at.exception
    return at


def figures(at) -> dict:
    out = {}
    for el in at.get("plotly_chart"):
        fig = pio.from_json(json.dumps(_decode(json.loads(el.proto.spec))))
        out[fig.layout.title.text or ""] = fig
    return out


def test_examples_page_shows_the_hardest_examples_as_images(dyn_runs, monkeypatch):
    at = page(dyn_runs, monkeypatch, "examples")
    with store.open(dyn_runs) as con:
        want = con.query_df("SELECT idx, avg(loss) AS l FROM examples WHERE run = ? GROUP BY idx "
                            "ORDER BY l DESC, idx LIMIT 16", [RUN])
        n_never = con.query_df("SELECT count(*) FROM (SELECT idx FROM examples WHERE run = ? GROUP BY idx "
                               "HAVING NOT bool_or(correct))", [RUN]).iloc[0, 0]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["examples"] == "384" and metrics["never learned"] == f"{n_never:,}"
    images = at.get("image")
    assert len(images) == 16
    shown = [int(img.proto.imgs[0].caption.split()[0][1:]) for img in images]
    hardest = want["idx"].tolist()  # highest mean loss first, as the SQL says; 4 columns, filled row by row
    assert shown == [hardest[i] for c in range(4) for i in range(c, 16, 4)]
    y = load_arrays("mnist-demo", None)["y_train"]
    assert f"label {y[shown[0]]} " in images[0].proto.imgs[0].caption
    assert {"Data map, epochs 0-1 (click a bin)", "Examples by forgetting events"} <= set(figures(at))
    grid = figures(at)["Data map, epochs 0-1 (click a bin)"]
    assert sum(c[2] for c in grid.data[0].customdata) == 384  # every example in one density bin


def test_regenerating_from_the_page_adds_adversarial_images(dyn_runs, monkeypatch):
    at = page(dyn_runs, monkeypatch, "examples")
    at.select_slider(key="ex_count").set_value(8).run()
    at.button(key="ex_regen").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    caps = [img.proto.imgs[0].caption for img in at.get("image")]
    assert len(caps) == 8 and all("-> " in c and "(adv)" in c for c in caps)
    assert "ex_regen" not in [b.key for b in at.button]  # nothing left to regenerate


def test_regeneration_is_seeded_and_stays_within_eps(dyn_runs, tmp_path):
    ids = [5, 17, 300]
    args = ["--runs-dir", str(dyn_runs), "--run", RUN, "--idx", ",".join(map(str, ids)), "--device", "cpu"]
    assert regenerate.main(args) == 0
    first = [insight.read_regenerated(dyn_runs / RUN, "last", i) for i in ids]
    assert regenerate.main(args) == 0
    again = [insight.read_regenerated(dyn_runs / RUN, "last", i) for i in ids]
    clean, labels = datasets.train_images(json.loads((dyn_runs / RUN / "config.json").read_text()), ids)
    for a, b, x0, y in zip(first, again, clean, labels):
        assert np.array_equal(a["adversarial"], b["adversarial"]) and a["fosc"] == b["fosc"]
        assert np.array_equal(a["clean"], x0) and a["label"] == y and a["attack"] == "pgd"
        delta = np.abs(a["adversarial"] - x0.astype(np.float32) / 255)
        assert delta.max() <= a["eps"] + 1e-6 and delta.max() > a["eps"] / 2  # moved, inside the ball
        assert 0 <= a["adversarial"].min() and a["adversarial"].max() <= 1
        assert 1 <= a["steps"] <= 10 and np.isfinite(a["loss"])


def test_regenerate_refuses_bad_input_with_one_line(dyn_runs, tmp_path):
    for bad in (["--idx", "99999"], ["--idx", "a,b"], ["--run", "../x", "--idx", "1"], ["--run", "nope", "--idx", "1"]):
        argv = ["--runs-dir", str(dyn_runs), "--run", RUN, *bad]
        r = subprocess.run([sys.executable, "-m", "trainer.regenerate", *argv], capture_output=True, text=True,
                           cwd=ROOT, timeout=120)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: "), (bad, r.stderr)
    assert not insight.regen_path(dyn_runs / RUN, "last", 99999).exists()


def test_example_page_shows_one_example_across_epochs_and_its_trajectory(dyn_runs, monkeypatch):
    with store.open(dyn_runs) as con:
        idx = int(con.query_df("SELECT min(idx) FROM steps WHERE run = ?", [RUN]).iloc[0, 0])
        want = con.query_df("SELECT epoch, fosc, loss FROM examples WHERE run = ? AND idx = ? ORDER BY epoch",
                            [RUN, idx])
        steps = con.query_df("SELECT epoch, step, fosc FROM steps WHERE run = ? AND idx = ? ORDER BY epoch, step",
                             [RUN, idx])
    at = page(dyn_runs, monkeypatch, "example", run=RUN, idx=str(idx))
    figs = figures(at)
    hist = figs[f"Example {idx} of {RUN}, epoch by epoch"]
    fosc = next(t for t in hist.data if t.name == "FOSC")
    assert list(fosc.x) == want["epoch"].tolist()
    assert list(fosc.y) == pytest.approx(want["fosc"].tolist())
    traj = figs["Per-step FOSC of the attack, in the epochs it was sampled"]
    assert sum(len(t.x) for t in traj.data) == len(steps) > 0
    assert f"#{idx}" in at.markdown[0].value


def test_an_image_opens_its_history(dyn_runs, monkeypatch):
    at = page(dyn_runs, monkeypatch, "examples")
    first = int(at.get("image")[1].proto.imgs[0].caption.split()[0][1:])
    at.button(key=f"ex_open_{first}").click().run()
    assert not at.exception
    assert at.query_params["idx"] == str(first) and at.query_params["run"] == RUN
    assert f"#{first}" in at.markdown[0].value


def test_datamap_bins_hold_exactly_their_examples(dyn_runs):
    from dashboard import queries

    with store.open(dyn_runs) as con:
        grid = queries.datamap(con, RUN)
        top = grid.sort_values("n").iloc[-1]
        inside = queries.pick_examples(con, RUN, "hardest", conf_bin=int(top.conf_bin), var_bin=int(top.var_bin),
                                       limit=10_000)
    assert len(inside) == top.n
    assert ((inside.confidence >= top.conf_lo - 1e-9) & (inside.confidence <= top.conf_hi + 1e-9)).all()
    assert ((inside.variability >= top.var_lo - 1e-9) & (inside.variability <= top.var_hi + 1e-9)).all()


def test_datasets_read_the_same_images_as_the_trainer(mnist_npz):
    for name, path in (("mnist", mnist_npz), ("cifar10", mnist_npz.parent / "cifar10-jpeg.npz")):
        ids = [0, 7, 12345]
        got, labels = datasets.train_images({"dataset": name, "data_root": str(path)}, ids)
        ref = load_arrays(name, str(path)) if name == "mnist" else None
        if ref is not None:
            assert np.array_equal(got[..., 0], ref["x_train"][ids]) and np.array_equal(labels, ref["y_train"][ids])
        else:
            from trainer.data import decode_jpegs

            with np.load(path) as z:
                assert np.array_equal(got, decode_jpegs(z["train_jpeg"], z["train_offsets"], ids))
                assert np.array_equal(labels, z["y_train"][ids])
        assert got.dtype == np.uint8 and got.shape[0] == 3
    with pytest.raises(datasets.DatasetError, match="out of range"):
        datasets.train_images({"dataset": "mnist", "data_root": str(mnist_npz)}, [60_000])
    with pytest.raises(datasets.DatasetError, match="npz"):
        datasets.train_images({"dataset": "cifar10", "data_root": str(mnist_npz.parent / "nothing-here")}, [0])
