"""Run: one run, live: is it getting robust (the headline), FOSC densities, the c_t schedule, PGD steps,
loss and accuracy per epoch and per batch, Figs. 1a/1b. Charts appear only where they mean something.

Layout rule: the live fragment draws the same slots in the same order on every refresh (a caption
stands in a chart's slot when it has nothing to show), so Streamlit never remounts a chart and Plotly's
``uirevision`` (per chart and run) keeps the user's zoom, pan and hidden traces across new data.
"""
import math

import streamlit as st

from dashboard import charts, queries, ui
from dashboard.live_chart import live_chart

RD, overview = ui.page_overview("Run")

top = st.columns([3, 3, 2, 2])
with top[0]:
    run = ui.run_picker(overview["run"].tolist())
with top[1]:
    interval = ui.refresh_picker("run_refresh")
view = top[2].radio("Density view", ["overlay", "ridgeline"], key="run_view", horizontal=True)
kind = top[3].radio("Estimate", ["kernel density", "fine histogram"], key="run_kind", horizontal=True)

info = overview.set_index("run").loc[run]
ui.run_notices(RD, run)  # alarms (store.alarms) and files the store left out
total = int(info["epochs"]) if info["epochs"] == info["epochs"] else 1
strategy = str(info["strategy"] or "")
ADVERSARIAL = strategy != "unsecured"  # an unsecured run trains on clean inputs: no attack, no PGD steps
planned = list(range(total))  # stable options: a live run's new epochs do not reset the selection
c = st.columns([1.5, 3, 2, 2])  # wide enough for "Follow latest" at 1280 px
follow = c[0].toggle("Follow latest", value=True, key="run_follow",
                     help="Show up to 5 epochs spread over those logged so far, always including the newest")
chosen = c[1].multiselect("Epochs", planned, default=planned[:1], key="run_epochs", disabled=follow)
detail = c[2].selectbox("Epoch for Figs. 1a, 1b", ["latest", *planned], key="run_detail",
                        help="the per-example views (accuracy and loss by FOSC; per-step trajectories)")
with c[3].popover("FOSC axis", width="stretch"):
    clip_q = st.select_slider("Clip at quantile", [0.9, 0.95, 0.99, 0.999, 1.0], value=0.99, key="run_clip",
                              help="Draw the densities up to this quantile of FOSC (1.0: everything): a few "
                                   "far-out values otherwise squeeze the curves into spikes")
    log_x = st.toggle("Log x-axis", value=False, key="run_logx")


def _pct(v) -> str:
    return "-" if v is None or v != v else f"{v:.1f} %"


def headline(h, ep) -> None:
    """Is it getting robust: held-out PGD accuracy after each finished epoch (trend and change), the
    test-set evaluation when there is one; every number with its source."""
    m = st.columns(4)  # four cards: their labels fit at 1280 px
    trend = list(h["heldout_trend"]) if h is not None and isinstance(h["heldout_trend"], list) else []
    if trend:
        e = int(h["heldout_epoch"])
        delta = None if h["heldout_delta"] != h["heldout_delta"] else f"{h['heldout_delta']:+.1f} pp"
        m[0].metric(f"held-out PGD, epoch {e}", _pct(h["heldout_robust"]), delta, chart_data=trend,
                    help=f"{h['heldout_source']}; change since epoch {e - 1}" if delta else h["heldout_source"],
                    border=True)
        m[1].metric(f"held-out clean, epoch {e}", _pct(h["heldout_clean"]), help=h["heldout_source"], border=True)
    else:
        m[0].metric("held-out PGD", "-", help="after the first finished epoch", border=True)
        m[1].metric("held-out clean", "-", border=True)
    partial = bool(h is not None and h["test_partial"])
    has_test = h is not None and h["test_source"]
    label = "test PGD" + (" (partial)" if partial else "")
    m[2].metric(label, _pct(h["test_robust"]) if has_test else "-", border=True,
                help=h["test_source"] if has_test else "the end-of-run evaluation (python -m trainer.evaluate)")
    m[3].metric("test clean" + (" (partial)" if partial else ""), _pct(h["test_clean"]) if has_test else "-",
                border=True, help=h["test_source"] if has_test else None)
    parts = [s for s in (h["heldout_source"] if h is not None else "", h["test_source"] if has_test else "") if s]
    st.caption(" | ".join(parts) if parts else "No finished epoch yet.")


def tiles(ep) -> None:
    """What the schedule and optimiser did in the last finished epoch (only what the strategy has)."""
    last = ep.iloc[-1]
    m = st.columns(5)
    e = int(last["epoch"])
    m[4].metric(f"FOSC median, epoch {e}", f"{last['fosc_q50']:.4g}",
                help="the last finished epoch's median FOSC (0: the attack reached a stationary point)")
    m[0].metric(f"c_t, epoch {e}", "-" if math.isnan(last["c_t"]) else f"{last['c_t']:.4g}",
                help="Dynamic's FOSC target; other strategies have none")
    m[1].metric(f"mean PGD steps, epoch {e}", f"{last['steps_mean']:.2f}" if ADVERSARIAL else "-",
                help=None if ADVERSARIAL else "an unsecured run takes no PGD steps")
    m[2].metric(f"lr, epoch {e}", f"{last['lr']:.3g}")
    m[3].metric(f"examples / s, epoch {e}", f"{last['examples_per_s']:.0f}")


def density(slot, epochs: list[int], live: list[int]) -> None:
    hist = queries.load(RD, queries.fosc_hist, (run,), tuple(epochs))
    dens = queries.density(hist, "kde" if kind == "kernel density" else "hist")
    clip = charts.hist_quantile(hist, clip_q) if clip_q < 1 else None
    rev = f"density-{run}-{view}"  # per chart and run (and view): never per data
    fig = (charts.density_overlay(dens, rev, title=f"FOSC density, {run}", live=live, clip=clip, log_x=log_x)
           if view == "overlay" else
           charts.density_ridgeline(dens, rev, title=f"FOSC density by epoch, {run}", live=live, clip=clip,
                                    log_x=log_x))
    live_chart(slot, fig, key="run_density")  # keeps the zoom while new epochs arrive


def schedule_and_steps(a, b, ep, steps, total: int) -> None:
    if ep["c_t"].notna().any():
        live_chart(a, charts.schedule(ep, total, f"schedule-{run}"), key="run_schedule")
    else:
        a.caption(f"No FOSC-vs-c_t chart: the {strategy} strategy has no schedule c_t (only Dynamic has one).")
    if not ADVERSARIAL:
        b.caption("No PGD-steps chart: an unsecured run trains on clean inputs and takes no PGD steps.")
    elif steps.empty or steps["steps"].nunique() <= 1:
        k = int(steps["steps"].iloc[0]) if not steps.empty else "K"
        b.caption(f"No PGD-steps chart: every example took the same {k} steps in every epoch "
                  f"(the {strategy} strategy never stops PGD early). Mean steps: see the tiles above.")
    else:
        live_chart(b, charts.steps_per_epoch(steps, ep, f"steps-{run}"), key="run_steps")


def per_batch(slot, live: list[int]) -> None:
    """Loss / accuracy / FOSC per batch, smoothed, against batches or training time."""
    batches = queries.load(RD, queries.batch_summary, run)
    if batches.empty:
        slot.caption("Per-batch curves appear with the first per-example rows.")
        return
    with slot.container():
        c = st.columns([2, 2, 3])
        options = {"loss": "training loss", "acc": "training accuracy", "fosc": "mean FOSC"}
        if ADVERSARIAL:
            options["steps"] = "mean PGD steps"
        metric = c[0].selectbox("Per-batch curve", list(options), format_func=options.get, key="run_batch_metric")
        x = c[1].radio("x-axis", ["batch", "time"], key="run_batch_x", horizontal=True,
                       format_func={"batch": "batch", "time": "training time"}.get)
        smooth = c[2].slider("Smoothing (EMA)", 0.0, 0.99, 0.6, 0.01, key="run_smooth")
        b = _batch_axis(batches, queries.load(RD, queries.epochs, (run,)))
        label = options[metric].replace("training accuracy", "training accuracy (adv.)" if ADVERSARIAL
                                        else "training accuracy (clean)")
        live_chart(st, charts.batch_curves(b, metric, f"batch-{run}", label, x=x, smoothing=smooth,
                                           percent=metric == "acc", live=live), key="run_batches")


def _batch_axis(batches, ep):
    """Batches since the start, and seconds of training: each epoch's wall time spread evenly over its
    batches (the live epoch at the median epoch time so far)."""
    b = batches.sort_values(["epoch", "batch"]).reset_index(drop=True)
    b["step"] = range(len(b))
    wall = dict(zip(ep["epoch"], ep["wall_s"])) if not ep.empty else {}
    default = float(ep["wall_s"].median()) if not ep.empty else 1.0
    start, t = 0.0, []
    for e, g in b.groupby("epoch", sort=True):
        w = float(wall.get(e, default))
        t.extend(start + w * (g["batch"].to_numpy() + 1) / (g["batch"].max() + 1))
        start += w
    b["t_s"] = t
    return b


@st.fragment(run_every=interval)
def live() -> None:
    ov = queries.load(RD, queries.runs_overview).set_index("run")
    if run not in ov.index:
        st.warning(f"run {run} is gone from {RD}")
        return
    r = ov.loc[run]
    total = int(r["epochs"]) if r["epochs"] == r["epochs"] else 1  # now: a resume may have added epochs
    have = queries.load(RD, queries.example_epochs, run)["epoch"].tolist()
    ep = queries.load(RD, queries.epochs, (run,))
    heads = queries.load(RD, queries.headline).set_index("run")
    h = heads.loc[run] if run in heads.index else None
    finished = set(ep["epoch"].tolist())
    live_epochs = [e for e in have if e not in finished]  # rows logged, summary not yet written
    slots = [st.container() for _ in range(9)]  # fixed slots: charts keep their place (and zoom)
    with slots[0]:
        st.markdown(f"**{run}**: {strategy} on {r['dataset']} ({r['model']}), eps {r['eps']:.4g}; "
                    f"state **{r['state']}**, {r['epochs_done']}/{total} epochs done. {r['message'] or ''}")
        headline(h, ep)
        if live_epochs:
            st.caption(f"Epoch {', '.join(map(str, live_epochs))}: live, partial (its rows so far; the tiles "
                       "and the per-epoch curves use finished epochs only).")
    if not ep.empty:
        with slots[1]:
            tiles(ep)
    if not have:
        slots[2].info("No per-example rows yet: the trainer writes them every 10 s (flush-seconds) and at the end "
                      "of each epoch. This page refreshes by itself unless auto-refresh is off.")
        return
    epochs = ui.spread(have) if follow else [e for e in chosen if e in have]
    missing = sorted(set(chosen) - set(have)) if not follow else []
    with slots[2]:
        density(st.container(), epochs, live_epochs)
        if missing:
            st.caption(f"no rows yet for epoch(s) {missing}")
    if ep.empty:
        slots[3].caption("Per-epoch summaries appear when the first epoch ends.")
    else:
        a, b = slots[3].columns(2)
        schedule_and_steps(a, b, ep, queries.load(RD, queries.steps_hist, run), total)
        a, b = slots[4].columns([2, 1])
        live_chart(a, charts.loss_accuracy(ep, f"lossacc-{run}", adversarial=ADVERSARIAL), key="run_lossacc")
        if ep["below_ct"].notna().any():
            live_chart(b, charts.below_ct(ep, f"below-{run}"), key="run_below")
        else:
            b.caption("No share-below-c_t chart: only Dynamic runs have a schedule c_t.")
    per_batch(slots[5], live_epochs)
    at = have[-1] if detail == "latest" or detail not in have else detail
    a, b = slots[6].columns(2)
    bins = queries.load(RD, queries.fosc_bins, run, at)
    live_chart(a, charts.fosc_bins(bins, f"bins-{run}", epoch=at, adversarial=ADVERSARIAL, partial=at in live_epochs),
               key="run_bins")
    traj = queries.load(RD, queries.trajectories, run, at)
    if traj.empty:
        b.caption(f"No per-step trajectories for epoch {at}: " + (
            "an unsecured run takes no PGD steps." if not ADVERSARIAL else
            "the run records --trajectory-examples per epoch; none were recorded."))
    else:
        title = f"Trajectories, epoch {at}" + (" (live, partial)" if at in live_epochs else "")
        live_chart(b, charts.trajectories(traj, f"traj-{run}", title=title), key="run_traj")
    per = queries.load(RD, queries.forgetting_per_epoch, run)
    if len(per) < 2:
        slots[7].caption("Forgetting shares appear from the second epoch (a forgetting event is correct at one "
                         "epoch, wrong at the next).")
    else:
        live_chart(slots[7], charts.forgetting_shares(per, f"forget-{run}"), key="run_forgetting")
    with slots[8].expander("Events (starts, control changes, stops)"):
        st.dataframe(queries.load(RD, queries.events, run), hide_index=True, key="run_events")


live()
