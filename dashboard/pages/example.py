"""Example: one training example of a run (``?run=NAME&idx=N``) across every epoch: its FOSC, loss,
attack steps, p_true and correctness, its per-step trajectory where it was sampled, and its images."""
import math

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from dashboard import queries, ui
from store import datasets, insight
from store import runs as store_runs

EXAMPLES_PAGE = "dashboard/pages/examples.py"

RD, overview = ui.page_overview("Example")
runs_list = overview["run"].tolist()
qp = st.query_params
if qp.get("run") in runs_list and st.session_state.get("exd_from") != (qp.get("run"), qp.get("idx")):
    st.session_state[ui.RUN_KEY] = qp["run"]  # opened from a link or an Examples page image
    st.session_state["exd_from"] = (qp.get("run"), qp.get("idx"))
    if str(qp.get("idx", "")).isdigit():
        st.session_state["exd_idx"] = int(qp["idx"])
c = st.columns([3, 2, 2])
with c[0]:
    run = ui.run_picker(runs_list, key="exd_run")
idx = int(c[1].number_input("Example (idx)", min_value=0, step=1, key="exd_idx"))
if c[2].button("Back to the examples", key="exd_back"):
    st.switch_page(EXAMPLES_PAGE, query_params={"run": run})
st.query_params.update({"run": run, "idx": str(idx)})  # a shareable address

hist = queries.load(RD, queries.example_history, run, idx)
if hist.empty:
    st.info(f"{run} logged no rows for example {idx} (an index outside its training set, or held out).")
    st.stop()


def _images() -> None:
    rd = store_runs.run_dir(RD, run)
    config = store_runs.read_json(rd / store_runs.CONFIG, {}) or {}
    try:
        img, label = datasets.train_images(config, [idx])
    except datasets.DatasetError as e:
        st.error(str(e))
        return
    rec = insight.read_regenerated(rd, "last", idx)
    a, b, m = st.columns([1, 1, 3])
    big = lambda x: np.kron(x, np.ones((4, 4, 1), dtype=x.dtype)) if x.shape[0] <= 32 else x  # noqa: E731
    a.image(big(img[0]), caption=f"clean, label {int(label[0])}")
    if rec is not None:
        b.image(big((rec["adversarial"] * 255).round().astype(np.uint8)),
                caption=f"adversarial ({rec['attack']}, epoch {rec['epoch']}): predicted {rec['pred_adv']}")
    else:
        b.caption("No regenerated adversarial image yet: the Examples page regenerates them on demand.")
    forgets = int(((hist["correct"].shift(1) == True) & ~hist["correct"]).sum())  # noqa: E712 (a few epochs)
    m.markdown(f"**#{idx}** of **{run}**: correct in {int(hist['correct'].sum())} of {len(hist)} epochs, "
               f"forgotten {forgets} times; last epoch: FOSC {hist['fosc'].iloc[-1]:.4g}, loss "
               f"{hist['loss'].iloc[-1]:.4g}, {hist['steps'].iloc[-1]:.0f} steps.")


def history_figure() -> go.Figure:
    fig = make_subplots(rows=2, cols=2, shared_xaxes=True, subplot_titles=("FOSC (and c_t)", "loss", "attack steps",
                                                                           "p_true (o correct, x wrong)"))
    fig.add_scatter(x=hist["epoch"], y=hist["fosc"], name="FOSC", row=1, col=1)
    if hist["c_t"].notna().any():
        fig.add_scatter(x=hist["epoch"], y=hist["c_t"], name="c_t", line=dict(dash="dot"), row=1, col=1)
    fig.add_scatter(x=hist["epoch"], y=hist["loss"], name="loss", row=1, col=2)
    fig.add_scatter(x=hist["epoch"], y=hist["steps"], name="steps", row=2, col=1)
    p = hist["p_true"] if hist["p_true"].notna().any() else hist["correct"].astype(float)
    fig.add_scatter(x=hist["epoch"], y=p, name="p_true", mode="lines+markers", row=2, col=2,
                    marker=dict(symbol=np.where(hist["correct"], "circle", "x"), size=9))
    fig.update_layout(title=f"Example {idx} of {run}, epoch by epoch", height=520, showlegend=False)
    fig.update_xaxes(title_text="epoch", row=2)
    return fig


def trajectory_figure(steps) -> go.Figure:
    fig = go.Figure([go.Scatter(x=g["step"], y=g["fosc"], name=f"epoch {e}", mode="lines+markers")
                     for e, g in steps.groupby("epoch")])
    fig.update_layout(title="Per-step FOSC of the attack, in the epochs it was sampled", xaxis_title="step k",
                      yaxis_title="FOSC at x_k", height=380)
    return fig


_images()
st.plotly_chart(history_figure(), key="exd_history")
steps = queries.load(RD, queries.example_steps, run, idx)
if steps.empty:
    st.caption("No per-step trajectory: this example was not among the run's --trajectory-examples.")
else:
    st.plotly_chart(trajectory_figure(steps), key="exd_steps")
with st.expander("The numbers"):
    st.dataframe(hist.assign(fosc=hist["fosc"].map(lambda v: v if math.isfinite(v) else None)), hide_index=True)
