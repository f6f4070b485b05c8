"""Examples: which examples a run finds hard, forgets or never learns, as images with their numbers.

The data map (Swayamdipta et al. 2020) and forgetting events (Toneva et al. 2019) of a run over an
epoch range, aggregated in the store (store.insight); click a density bin of the data map or a bin of
Fig. 1a to see its examples. Clean images come from the run's dataset (store.datasets); adversarial
images and perturbations are regenerated on demand by ``python -m trainer.regenerate`` (a subprocess:
the dashboard never imports the trainer), which writes them where the store says.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dashboard import charts, queries, ui
from store import datasets, insight
from store import runs as store_runs

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_PAGE = "dashboard/pages/example.py"
SCALE = {28: 4, 32: 4}  # small images drawn 4x, pixel by pixel
REGEN_TIMEOUT_S = 600

RD, overview = ui.page_overview("Examples")
runs_list = overview["run"].tolist()
if st.query_params.get("run") in runs_list and "ex_run" not in st.session_state:
    st.session_state[ui.RUN_KEY] = st.query_params["run"]  # a link ?run=NAME

top = st.columns([3, 4, 2])
with top[0]:
    run = ui.run_picker(runs_list, key="ex_run")
have = queries.load(RD, queries.example_epochs, run)["epoch"].tolist()
if not have:
    st.info(f"{run} has no per-example rows yet.")
    st.stop()
lo, hi = (top[1].select_slider("Epochs", options=have, value=(have[0], have[-1]), key="ex_range")
          if len(have) > 1 else (have[0], have[0]))
count = top[2].select_slider("Examples shown", [8, 16, 24, 32, 48], value=16, key="ex_count")


def _summary() -> None:
    s = queries.load(RD, queries.insight_summary, run, lo, hi).iloc[0]
    m = st.columns(6)
    m[0].metric("examples", f"{int(s['n']):,}")
    m[1].metric("never learned", f"{int(s['never_learned']):,}", help="never correct in these epochs")
    m[2].metric("unforgettable", f"{int(s['unforgettable']):,}", help="learned, and never forgotten after")
    m[3].metric("forgetting events", f"{int(s['forgetting_events'] or 0):,}", help="correct -> wrong between epochs")
    m[4].metric("easy / ambiguous / hard", f"{int(s['easy'])} / {int(s['ambiguous'])} / {int(s['hard'])}",
                help=f"data-map regions: ambiguous when variability >= {insight.AMBIGUOUS_VARIABILITY}, "
                     f"else easy when confidence >= {insight.EASY_CONFIDENCE}")
    m[5].metric("computed from", str(s["source"]), help="aggregates: the per-epoch prefix sums the trainer "
                "writes; rows: the examples table itself (a live epoch, an older run)")


def datamap_figure(grid) -> go.Figure:
    """Density bins of (variability, confidence) as square markers: colour = examples in the bin."""
    fig = go.Figure(go.Scatter(
        x=(grid["var_lo"] + grid["var_hi"]) / 2, y=(grid["conf_lo"] + grid["conf_hi"]) / 2, mode="markers",
        marker=dict(symbol="square", size=14, color=np.log10(grid["n"]), colorscale="Viridis",
                    colorbar=dict(title="log10 n")),
        customdata=np.stack([grid["conf_bin"], grid["var_bin"], grid["n"], grid["correctness"]], axis=1),
        hovertemplate="variability %{x:.3f}, confidence %{y:.3f}<br>%{customdata[2]} examples, "
                      "correctness %{customdata[3]:.2f}<extra></extra>"))
    v, c = insight.AMBIGUOUS_VARIABILITY, insight.EASY_CONFIDENCE
    fig.add_vline(x=v, line_dash="dot", line_color="gray")
    fig.add_shape(type="line", x0=0, x1=v, y0=c, y1=c, line=dict(dash="dot", color="gray"))
    for x, y, t in ((v / 2, 0.97, "easy"), (v / 2, 0.03, "hard"), (0.35, 0.5, "ambiguous")):
        fig.add_annotation(x=x, y=y, text=t, showarrow=False, font=dict(color="gray"))
    fig.update_layout(title=f"Data map, epochs {lo}-{hi} (click a bin)", xaxis_title="variability (std of p_true)",
                      yaxis_title="confidence (mean p_true)", xaxis_range=[0, 0.5], yaxis_range=[0, 1],
                      height=420, clickmode="event+select", uirevision=f"dm-{run}")
    return fig


def fosc_bins_figure(bins, epoch: int) -> go.Figure:
    fig = go.Figure(go.Bar(x=bins["fosc_mid"], y=bins["n"], width=bins["fosc_hi"] - bins["fosc_lo"],
                           customdata=np.stack([bins["fosc_lo"], bins["fosc_hi"], bins["adv_acc"]], axis=1),
                           hovertemplate="FOSC %{customdata[0]:.3g}..%{customdata[1]:.3g}: %{y} examples, "
                                         "accuracy %{customdata[2]:.2f}<extra></extra>"))
    fig.update_layout(title=f"Fig. 1a, epoch {epoch}: examples per FOSC bin (click a bin)", xaxis_title="FOSC",
                      yaxis_title="examples", height=420, clickmode="event+select", uirevision=f"f1a-{run}-{epoch}")
    return fig


def _selected(key: str):
    """customdata of the point clicked in chart ``key``, or None."""
    sel = st.session_state.get(key)
    points = (sel or {}).get("selection", {}).get("points", []) if isinstance(sel, dict) else \
        (getattr(getattr(sel, "selection", None), "points", None) or [])
    data = points[0].get("customdata") if points else None
    if isinstance(data, dict):  # the browser sends an array's items keyed "0", "1", ...
        data = [data[k] for k in sorted(data, key=int)]
    return data


def _charts() -> None:
    a, b = st.columns(2)
    grid = queries.load(RD, queries.datamap, run, lo, hi)
    if grid.empty:
        a.caption("No data map: this run logged no p_true (runs before that column); forgetting counts still work.")
    else:
        a.plotly_chart(datamap_figure(grid), key="ex_datamap", on_select="rerun", selection_mode="points")
    bins = queries.load(RD, queries.fosc_bins, run, hi)
    b.plotly_chart(fosc_bins_figure(bins, hi), key="ex_fosc_bins", on_select="rerun", selection_mode="points")
    a, b = st.columns(2)
    hist = queries.load(RD, queries.forgetting, run, lo, hi)
    labels = ["never learned" if k < 0 else str(k) for k in hist["forgets"]]
    fig = go.Figure(go.Bar(x=labels, y=hist["n"]))
    fig.update_layout(title="Examples by forgetting events", xaxis_title="times forgotten", yaxis_title="examples",
                      height=320, xaxis_type="category")
    a.plotly_chart(fig, key="ex_forgetting")
    per = queries.load(RD, queries.forgetting_per_epoch, run)
    b.plotly_chart(charts.forgetting_shares(per, f"ex-forget-{run}", "Share of examples per epoch"), key="ex_per_epoch")


def _picked():
    """The examples to show: a clicked Fig. 1a bin, else a clicked data-map bin, else the ranking."""
    f1a = _selected("ex_fosc_bins")
    if f1a is not None:
        st.subheader(f"Examples of epoch {hi} with FOSC in [{f1a[0]:.4g}, {f1a[1]:.4g}], highest loss first")
        return queries.load(RD, queries.fosc_bin_examples, run, hi, float(f1a[0]), float(f1a[1]), count)
    c = st.columns([2, 2, 3])
    ranking = c[0].selectbox("Show the", list(insight.RANKINGS), key="ex_rank")
    region = c[1].selectbox("in the data-map region", ["any", *insight.REGIONS], key="ex_region")
    dm = _selected("ex_datamap")
    if dm is not None:
        c[2].caption(f"in the clicked data-map bin: confidence {dm[0] / insight.CONF_BINS:.2f}+, "
                     f"variability {dm[1] / (2 * insight.VAR_BINS):.2f}+ ({int(dm[2])} examples)")
    return queries.load(RD, queries.pick_examples, run, ranking, lo, hi, None if region == "any" else region,
                        None if dm is None else int(dm[0]), None if dm is None else int(dm[1]), count)


def _big(img: np.ndarray) -> np.ndarray:
    k = SCALE.get(img.shape[0], 1)
    return np.kron(img, np.ones((k, k, 1), dtype=img.dtype)) if k > 1 else img


def tile(clean: np.ndarray, rec: dict | None) -> np.ndarray:
    """[clean | adversarial | perturbation] side by side (perturbation: -eps black .. +eps white)."""
    x0 = clean.astype(np.float32) / 255.0
    if rec is None:
        parts = [x0]
    else:
        adv = rec["adversarial"]
        parts = [x0, adv, np.clip((adv - x0) / (2 * rec["eps"]) + 0.5, 0, 1)]
    gap = np.ones((x0.shape[0], 2, x0.shape[2]), np.float32)
    row = np.concatenate([p for part in parts for p in (part, gap)][:-1], axis=1)
    return _big((row * 255).round().astype(np.uint8))


def _grid(df) -> None:
    if df.empty:
        st.info("No examples match.")
        return
    rd = store_runs.run_dir(RD, run)
    config = store_runs.read_json(rd / store_runs.CONFIG, {}) or {}
    try:
        images, labels = datasets.train_images(config, df["idx"].tolist())
    except datasets.DatasetError as e:
        st.error(str(e))
        return
    recs = {i: insight.read_regenerated(rd, "last", i) for i in df["idx"]}
    missing = [int(i) for i, r in recs.items() if r is None]
    if missing and st.button(f"Regenerate the adversarial images of {len(missing)} examples (last checkpoint)",
                             key="ex_regen"):
        if _regenerate(missing):
            st.rerun()  # draw the grid again with the new images (and without this button)
    st.caption("Each image: clean | adversarial (regenerated from the last checkpoint with the run's attack, "
               "seed 0) | perturbation (grey = 0, black/white = -/+ eps).")
    cols = st.columns(4)
    for k, (row, img, label) in enumerate(zip(df.itertuples(), images, labels)):
        rec = recs.get(row.idx)
        with cols[k % 4]:
            st.image(tile(img, rec), caption=_caption(row, int(label), rec))
            if st.button(f"history of #{row.idx}", key=f"ex_open_{row.idx}"):
                st.switch_page(EXAMPLE_PAGE, query_params={"run": run, "idx": str(row.idx)})


def _caption(row, label: int, rec: dict | None) -> str:
    parts = [f"#{row.idx} label {label}"]
    if rec is not None:
        parts.append(f"pred {rec['pred_clean']} -> {rec['pred_adv']} (adv)")
    mean = getattr(row, "loss_mean", None)
    if mean is not None:
        parts.append(f"loss {row.loss_mean:.3g}, FOSC {row.fosc_mean:.3g}, steps {row.steps_mean:.1f}, "
                     f"correct {int(row.n_correct)}/{int(row.epochs)}, forgotten {int(row.forgets)}x")
    else:  # one epoch's rows (a Fig. 1a bin)
        parts.append(f"loss {row.loss:.3g}, FOSC {row.fosc:.3g}, steps {int(row.steps)}, "
                     f"{'correct' if row.correct else 'wrong'}")
    return " | ".join(parts)


def _regenerate(ids: list[int]) -> bool:
    argv = [sys.executable, "-m", "trainer.regenerate", "--runs-dir", str(RD), "--run", run,
            "--idx", ",".join(map(str, ids))]
    with st.spinner(f"regenerating {len(ids)} adversarial examples"):
        try:
            done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=REGEN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            st.error(f"regeneration took longer than {REGEN_TIMEOUT_S} s and was stopped")
            return False
    if done.returncode != 0:
        st.error((done.stderr.strip().splitlines() or ["regeneration failed"])[-1])
    return done.returncode == 0


_summary()
_charts()
_grid(_picked())
