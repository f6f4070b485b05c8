"""Small DataFrames in, Plotly figures out: pure functions, no Streamlit, no store access.

Every figure takes a ``uirevision``: Plotly keeps the user's zoom, pan and legend clicks across
redraws as long as it stays the same, so a live page can refresh without losing the view.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from store.schedule import c_t

HEIGHT = 360
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # runs keep their colour from chart to chart (they are sorted by name everywhere)


def _layout(fig: go.Figure, title: str, uirevision: str, x: str = "", y: str = "", **kw) -> go.Figure:
    top = 75 if fig.layout.annotations else 40  # room for subplot titles under the figure's title
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), uirevision=uirevision,
                      height=kw.pop("height", HEIGHT), margin=dict(l=10, r=10, t=top, b=10),
                      legend=dict(orientation="h", y=-0.2), **kw)
    if x:
        fig.update_xaxes(title_text=x)
    if y:
        fig.update_yaxes(title_text=y)
    return fig


def _epoch_ticks(fig: go.Figure, n_epochs: int) -> None:
    if 0 < n_epochs <= 20:  # whole epochs only; Plotly would otherwise tick at 0.2, 0.4, ...
        fig.update_xaxes(dtick=1)


def _colors(n: int, scale: str = "Viridis") -> list[str]:
    return sample_colorscale(scale, [i / max(n - 1, 1) for i in range(n)]) if n else []


def density_overlay(dens: pd.DataFrame, uirevision: str, by: str = "epoch", title: str = "FOSC density") -> go.Figure:
    """One density curve per ``by`` value (epoch for one run, run for a comparison), overlaid."""
    fig = go.Figure()
    keys = sorted(dens[by].unique()) if not dens.empty else []
    colors = _colors(len(keys)) if by == "epoch" else [None] * len(keys)
    for key, color in zip(keys, colors):
        g = dens[dens[by] == key]
        name = f"epoch {key}" if by == "epoch" else str(key)
        fig.add_trace(go.Scatter(x=g["x"], y=g["density"], mode="lines", name=name, line=dict(color=color, width=2)))
    return _layout(fig, title, uirevision, "FOSC", "density")


def density_ridgeline(dens: pd.DataFrame, uirevision: str, title: str = "FOSC density by epoch") -> go.Figure:
    """Each epoch's curve on its own baseline, later epochs higher up (the paper's Fig. 2 at a glance)."""
    fig = go.Figure()
    epochs = sorted(dens["epoch"].unique()) if not dens.empty else []
    peak = float(dens["density"].max()) if not dens.empty else 1.0
    step = 0.6 * peak if peak > 0 else 1.0
    for i, (epoch, color) in enumerate(zip(epochs, _colors(len(epochs)))):
        g = dens[dens["epoch"] == epoch]
        base = i * step
        fig.add_trace(go.Scatter(x=g["x"], y=np.full(len(g), base), mode="lines", line=dict(width=0),
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=g["x"], y=g["density"] + base, mode="lines", fill="tonexty", name=f"epoch {epoch}",
                                 line=dict(color=color, width=1.5), customdata=g["density"],
                                 hovertemplate="FOSC %{x:.4g}<br>density %{customdata:.3g}"))
    fig.update_yaxes(tickvals=[i * step for i in range(len(epochs))], ticktext=[f"epoch {e}" for e in epochs])
    return _layout(fig, title, uirevision, "FOSC", height=max(HEIGHT, 60 * len(epochs) + 120))


def density_facets(dens: pd.DataFrame, uirevision: str, title: str = "FOSC density per epoch") -> go.Figure:
    """Several runs compared: one panel per epoch, one colour per run (the paper's Figs. 2, 3, 5)."""
    epochs = sorted(dens["epoch"].unique()) if not dens.empty else [0]
    runs = sorted(dens["run"].unique()) if not dens.empty else []
    fig = make_subplots(rows=1, cols=len(epochs), shared_yaxes=True,
                        subplot_titles=[f"epoch {e}" for e in epochs], horizontal_spacing=0.03)
    for j, epoch in enumerate(epochs):
        for i, run in enumerate(runs):
            g = dens[(dens["epoch"] == epoch) & (dens["run"] == run)]
            if g.empty:
                continue
            fig.add_trace(go.Scatter(x=g["x"], y=g["density"], mode="lines", name=str(run), legendgroup=str(run),
                                     showlegend=j == 0, line=dict(color=PALETTE[i % len(PALETTE)], width=2)),
                          row=1, col=j + 1)
    fig.update_xaxes(title_text="FOSC")
    return _layout(fig, title, uirevision)


def schedule(epochs: pd.DataFrame, total_epochs: int, uirevision: str) -> go.Figure:
    """The Dynamic schedule c_t over all epochs (logged, then projected from the latest c_max and T')
    against the observed FOSC median and its 10-90% band per epoch."""
    fig = go.Figure()
    e = epochs.sort_values("epoch")
    if not e.empty:
        fig.add_trace(go.Scatter(x=e["epoch"], y=e["fosc_q90"], mode="lines", line=dict(width=0), showlegend=False,
                                 hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=e["epoch"], y=e["fosc_q10"], mode="lines", line=dict(width=0), fill="tonexty",
                                 fillcolor="rgba(31,119,180,0.2)", name="FOSC 10-90%"))
        fig.add_trace(go.Scatter(x=e["epoch"], y=e["fosc_q50"], mode="lines+markers", name="FOSC median",
                                 line=dict(color="#1f77b4")))
    sched = e.dropna(subset=["c_max", "t_prime"]) if not e.empty else e
    if not sched.empty:
        last = sched.iloc[-1]
        fig.add_trace(go.Scatter(x=sched["epoch"], y=sched["c_t"], mode="lines+markers", name="c_t (logged)",
                                 line=dict(color="#d62728")))
        future = np.arange(int(last["epoch"]), max(int(total_epochs), int(last["epoch"]) + 1))
        fig.add_trace(go.Scatter(x=future, y=[c_t(t, float(last["c_max"]), float(last["t_prime"])) for t in future],
                                 mode="lines", name="c_t (projected)", line=dict(color="#d62728", dash="dash")))
    fig.update_xaxes(range=[-0.5, max(int(total_epochs), 1) - 0.5])
    _epoch_ticks(fig, int(total_epochs))
    return _layout(fig, "FOSC vs the schedule c_t", uirevision, "epoch", "FOSC")


def steps_per_epoch(hist: pd.DataFrame, epochs: pd.DataFrame, uirevision: str) -> go.Figure:
    """Share of examples by PGD steps taken (heatmap) and the mean, per epoch."""
    fig = go.Figure()
    if not hist.empty:
        share = hist.assign(share=hist["n"] / hist.groupby("epoch")["n"].transform("sum"))
        grid = share.pivot(index="steps", columns="epoch", values="share").fillna(0.0)
        fig.add_trace(go.Heatmap(x=grid.columns, y=grid.index, z=grid.values, colorscale="Blues", name="share",
                                 colorbar=dict(title="share"), hovertemplate="epoch %{x}, %{y} steps: %{z:.1%}"))
    if not epochs.empty:
        e = epochs.sort_values("epoch")
        fig.add_trace(go.Scatter(x=e["epoch"], y=e["steps_mean"], mode="lines+markers", name="mean steps",
                                 line=dict(color="#ff7f0e")))
    _epoch_ticks(fig, int(epochs["epoch"].nunique()) if not epochs.empty else 0)
    return _layout(fig, "PGD steps per epoch", uirevision, "epoch", "steps")


def loss_accuracy(epochs: pd.DataFrame, uirevision: str) -> go.Figure:
    """Training loss, and training (adversarial) and held-out clean / PGD accuracy per epoch."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    e = epochs.sort_values("epoch")
    fig.add_trace(go.Scatter(x=e["epoch"], y=e["loss_mean"], mode="lines+markers", name="train loss (adv.)"),
                  row=1, col=1)
    for col, label in (("train_adv_acc", "train (adv.)"), ("heldout_clean_acc", "held-out clean"),
                       ("heldout_pgd_acc", "held-out PGD")):
        fig.add_trace(go.Scatter(x=e["epoch"], y=e[col], mode="lines+markers", name=label), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    _epoch_ticks(fig, int(epochs["epoch"].nunique()) if not epochs.empty else 0)
    return _layout(fig, "Loss and accuracy", uirevision)


def below_ct(epochs: pd.DataFrame, uirevision: str) -> go.Figure:
    """Share of a batch's examples whose FOSC ended at or below c_t (those PGD stopped early)."""
    e = epochs.sort_values("epoch")
    fig = go.Figure(go.Scatter(x=e["epoch"], y=e["below_ct"], mode="lines+markers", name="share below c_t"))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    _epoch_ticks(fig, int(epochs["epoch"].nunique()) if not epochs.empty else 0)
    return _layout(fig, "Share of examples with FOSC <= c_t", uirevision, "epoch", "share")


def trajectories(traj: pd.DataFrame, uirevision: str) -> go.Figure:
    """The paper's Fig. 1b: FOSC and loss after each PGD step, one line per recorded example."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("FOSC per PGD step", "loss per PGD step"))
    for i, (idx, g) in enumerate(traj.groupby("idx", sort=True)):
        color = _colors(traj["idx"].nunique(), "Turbo")[i]
        for col, value in ((1, "fosc"), (2, "loss")):
            fig.add_trace(go.Scatter(x=g["step"], y=g[value], mode="lines+markers", name=f"example {idx}",
                                     legendgroup=str(idx), showlegend=col == 1, line=dict(color=color, width=1),
                                     marker=dict(size=4)), row=1, col=col)
    fig.update_xaxes(title_text="PGD step")
    if not traj.empty and traj["step"].max() <= 20:
        fig.update_xaxes(dtick=1)
    return _layout(fig, "Trajectories of sampled examples", uirevision, showlegend=False)


def fosc_bins(bins: pd.DataFrame, uirevision: str, epoch: int | None = None) -> go.Figure:
    """The paper's Fig. 1a: adversarial accuracy (bars) and mean loss (line) in equal FOSC bins."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=bins["fosc_mid"], y=bins["adv_acc"], name="adversarial accuracy", customdata=bins["n"],
                         hovertemplate="FOSC %{x:.4g}<br>accuracy %{y:.1%}<br>%{customdata} examples",
                         marker_color="#2ca02c", opacity=0.7), secondary_y=False)
    fig.add_trace(go.Scatter(x=bins["fosc_mid"], y=bins["loss_mean"], mode="lines+markers", name="mean loss",
                             line=dict(color="#d62728")), secondary_y=True)
    fig.update_yaxes(title_text="adversarial accuracy", range=[0, 1], tickformat=".0%", secondary_y=False)
    fig.update_yaxes(title_text="loss", secondary_y=True)
    title = "Accuracy and loss by FOSC" + (f" (epoch {epoch})" if epoch is not None else "")
    return _layout(fig, title, uirevision, "FOSC")


def compare_curves(epochs: pd.DataFrame, metric: str, uirevision: str, label: str | None = None) -> go.Figure:
    """One per-epoch metric, one line per run (each run in the colour it has in ``density_facets``)."""
    fig = go.Figure()
    for i, (run, g) in enumerate(epochs.sort_values(["run", "epoch"]).groupby("run", sort=True)):
        fig.add_trace(go.Scatter(x=g["epoch"], y=g[metric], mode="lines+markers", name=str(run),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    _epoch_ticks(fig, epochs["epoch"].nunique() if not epochs.empty else 0)
    return _layout(fig, label or metric, uirevision, "epoch", label or metric)


def sql_chart(df: pd.DataFrame, x: str, ys: list[str], kind: str = "line", by: str | None = None) -> go.Figure:
    """A quick chart of a query result: ``ys`` against ``x`` as lines, bars or points, one trace per
    value of the column ``by`` (e.g. run) if given."""
    fig = go.Figure()
    groups = df.groupby(by, sort=True) if by else [(None, df)]
    for key, g in groups:
        for y in ys:
            name = y if key is None else (f"{key}" if len(ys) == 1 else f"{key}: {y}")
            if kind == "bar":
                fig.add_trace(go.Bar(x=g[x], y=g[y], name=name))
            else:
                fig.add_trace(go.Scatter(x=g[x], y=g[y], name=name, mode="lines+markers" if kind == "line" else "markers"))
    return _layout(fig, "", "sql", x, ", ".join(ys))
