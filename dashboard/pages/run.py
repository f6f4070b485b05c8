"""Run: one run, live: FOSC densities, the c_t schedule, PGD steps, loss and accuracy, Figs. 1a/1b."""
import math

import streamlit as st

from dashboard import charts, queries, ui

RD, overview = ui.page_overview("Run")

top = st.columns([3, 3, 2, 2])
with top[0]:
    run = ui.run_picker(overview["run"].tolist())
with top[1]:
    interval = ui.refresh_picker("run_refresh")
view = top[2].radio("Density view", ["overlay", "ridgeline"], key="run_view", horizontal=True)
kind = top[3].radio("Estimate", ["kernel density", "fine histogram"], key="run_kind", horizontal=True)

info = overview.set_index("run").loc[run]
for _a in queries.load(RD, queries.alarms, (run,)).itertuples(): st.warning(f"**{_a.title}** (epoch {_a.epoch}): {_a.evidence}", icon="⚠️")  # noqa: E701,E501 (store.alarms)
total = int(info["epochs"]) if info["epochs"] == info["epochs"] else 1
planned = list(range(total))  # stable options: a live run's new epochs do not reset the selection
c = st.columns([1, 3, 2])
follow = c[0].toggle("Follow latest", value=True, key="run_follow",
                     help="Show up to 5 epochs spread over those logged so far, always including the newest")
chosen = c[1].multiselect("Epochs", planned, default=planned[:1], key="run_epochs", disabled=follow)
detail = c[2].selectbox("Epoch for the per-example views (Figs. 1a, 1b)", ["latest", *planned], key="run_detail")


def _density(epochs: list[int]) -> None:
    hist = queries.load(RD, queries.fosc_hist, (run,), tuple(epochs))
    dens = queries.density(hist, "kde" if kind == "kernel density" else "hist")
    rev = f"density-{run}-{view}"
    fig = (charts.density_overlay(dens, rev, title=f"FOSC density, {run}") if view == "overlay"
           else charts.density_ridgeline(dens, rev, title=f"FOSC density by epoch, {run}"))
    st.plotly_chart(fig, key="run_density", width="stretch")


@st.fragment(run_every=interval)
def live() -> None:
    ov = queries.load(RD, queries.runs_overview).set_index("run")
    if run not in ov.index:
        st.warning(f"run {run} is gone from {RD}")
        return
    r = ov.loc[run]
    have = queries.load(RD, queries.example_epochs, run)["epoch"].tolist()
    ep = queries.load(RD, queries.epochs, (run,))
    st.markdown(f"**{run}**: {r['strategy']} on {r['dataset']} ({r['model']}), eps {r['eps']:.4g}; "
                f"state **{r['state']}**, {r['epochs_done']}/{total} epochs done. {r['message'] or ''}")
    if not have:
        st.info("No per-example rows yet: the trainer writes them every 10 s (flush-seconds) and at the end "
                "of each epoch. This page refreshes by itself unless auto-refresh is off.")
        return
    if not ep.empty:
        last = ep.iloc[-1]
        m = st.columns(5)
        m[0].metric("FOSC median (last epoch)", f"{last['fosc_q50']:.4g}")
        m[1].metric("c_t", "-" if math.isnan(last["c_t"]) else f"{last['c_t']:.4g}")
        m[2].metric("mean PGD steps", f"{last['steps_mean']:.2f}")
        m[3].metric("held-out PGD acc.", f"{last['heldout_pgd_acc']:.3f}")
        m[4].metric("lr", f"{last['lr']:.3g}")
    epochs = ui.spread(have) if follow else [e for e in chosen if e in have]
    missing = sorted(set(chosen) - set(have)) if not follow else []
    if missing:
        st.caption(f"no rows yet for epoch(s) {missing}")
    _density(epochs)
    if ep.empty:
        st.caption("Per-epoch summaries appear when the first epoch ends.")
    else:
        a, b = st.columns(2)
        a.plotly_chart(charts.schedule(ep, total, f"schedule-{run}"), key="run_schedule", width="stretch")
        b.plotly_chart(charts.steps_per_epoch(queries.load(RD, queries.steps_hist, run), ep, f"steps-{run}"),
                       key="run_steps", width="stretch")
        a, b = st.columns([2, 1])
        a.plotly_chart(charts.loss_accuracy(ep, f"lossacc-{run}"), key="run_lossacc", width="stretch")
        if ep["below_ct"].notna().any():
            b.plotly_chart(charts.below_ct(ep, f"below-{run}"), key="run_below", width="stretch")
        else:
            b.caption("Share below c_t: only Dynamic runs have a schedule c_t.")
    at = have[-1] if detail == "latest" or detail not in have else detail
    a, b = st.columns(2)
    bins = queries.load(RD, queries.fosc_bins, run, at)
    a.plotly_chart(charts.fosc_bins(bins, f"bins-{run}", epoch=at), key="run_bins", width="stretch")
    traj = queries.load(RD, queries.trajectories, run, at)
    if traj.empty:
        b.caption(f"No per-step trajectories for epoch {at} (the run records --trajectory-examples per epoch; "
                  "runs without PGD have none).")
    else:
        b.plotly_chart(charts.trajectories(traj, f"traj-{run}"), key="run_traj", width="stretch")
    with st.expander("Events (starts, control changes, stops)"):
        st.dataframe(queries.load(RD, queries.events, run), hide_index=True, key="run_events")


live()
