"""Small DataFrames in, Plotly figures out: pure functions, no Streamlit, no store access.

Every figure takes a ``uirevision``: Plotly keeps the user's zoom, pan and legend clicks across
redraws as long as it stays the same, so a live page can refresh without losing the view.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from store.schedule import c_t

HEIGHT = 360
# D3's category10: ten hues far apart, each legible on a white and on a dark background. Run colours
# come from a hash of the name, so two runs share a colour one time in ten (their names tell them apart).
RUN_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]


def run_color(name: str) -> str:
    """The run's colour, the same on every page and in every selection: a hash of its name alone
    (so adding or hiding another run never repaints it)."""
    digest = hashlib.blake2b(str(name).encode(), digest_size=4).digest()
    return RUN_PALETTE[int.from_bytes(digest, "big") % len(RUN_PALETTE)]


def _layout(fig: go.Figure, title: str, uirevision: str, x: str = "", y: str = "", **kw) -> go.Figure:
    top = 75 if fig.layout.annotations else 40  # room for subplot titles under the figure's title
    fig.update_layout(title=dict(text=title, y=0.98, yanchor="top"), uirevision=uirevision,
                      height=kw.pop("height", HEIGHT), margin=dict(l=10, r=10, t=top, b=10),
                      legend=kw.pop("legend", dict(orientation="h", y=-0.2)), **kw)
    if x:
        fig.update_xaxes(title_text=x)
    if y:
        fig.update_yaxes(title_text=y)
    return fig


def _epoch_ticks(fig: go.Figure, n_epochs: int) -> None:
    if 0 < n_epochs <= 20:  # whole epochs only; Plotly would otherwise tick at 0.2, 0.4, ...
        fig.update_xaxes(dtick=1)


def _colors(n: int, scale: str = "Plasma") -> list[str]:
    """``n`` colours of a sequential scale, without its ends: Plasma's near-black start vanishes on a
    dark background and its pale-yellow end on a white one."""
    return sample_colorscale(scale, [0.15 + 0.7 * i / max(n - 1, 1) for i in range(n)]) if n else []


def _ordered(values, order: list | None) -> list:
    """``values`` in ``order`` (the page's table order), the rest after them by name."""
    vals = sorted(set(values), key=str)
    if not order:
        return vals
    first = [v for v in order if v in set(vals)]
    return first + [v for v in vals if v not in set(first)]


def hist_quantile(hist: pd.DataFrame, q: float) -> float | None:
    """The ``q`` quantile of the FOSC values binned in ``hist`` (bin upper edge; pooled over its rows)."""
    if hist.empty:
        return None
    counts = hist.groupby("bin")["count"].sum().sort_index()
    cdf = counts.cumsum() / counts.sum()
    b = int(cdf.index[np.searchsorted(cdf.to_numpy(), q)])
    return float(hist["lo"].iloc[0] + (b + 1) * hist["width"].iloc[0])


def _x_view(fig: go.Figure, dens: pd.DataFrame, clip: float | None, log_x: bool) -> None:
    """A log x-axis on request (FOSC spans decades when unsecured runs sit beside adversarial ones)."""
    if log_x:
        fig.update_xaxes(type="log", title_text="FOSC (log)")


def _clip(dens: pd.DataFrame, clip: float | None, log_x: bool) -> pd.DataFrame:
    """The curves up to ``clip`` (a quantile of the data: the axis then fits where the mass is, not the
    longest tail; the range is left to Plotly, so the user's zoom survives new data)."""
    if not dens.empty and clip is not None:
        dens = dens[dens["x"] <= clip]
    if not dens.empty and log_x:
        dens = dens[dens["x"] > 0]
    return dens


def epoch_name(epoch: int, live=()) -> str:
    return f"epoch {epoch} (live, partial)" if epoch in set(live) else f"epoch {epoch}"


def density_overlay(dens: pd.DataFrame, uirevision: str, by: str = "epoch", title: str = "FOSC density",
                    live=(), clip: float | None = None, log_x: bool = False, order: list | None = None) -> go.Figure:
    """One density curve per ``by`` value (epoch for one run, run for a comparison), overlaid. ``live``
    epochs (still being trained) are dashed and named partial."""
    fig = go.Figure()
    dens = _clip(dens, clip, log_x)
    keys = _ordered(dens[by].unique(), order) if not dens.empty else []
    colors = _colors(len(keys)) if by == "epoch" else [run_color(k) for k in keys]
    for key, color in zip(keys, colors):
        g = dens[dens[by] == key]
        name = epoch_name(key, live) if by == "epoch" else str(key)
        dash = "dash" if by == "epoch" and key in set(live) else None
        fig.add_trace(go.Scatter(x=g["x"], y=g["density"], mode="lines", name=name,
                                 line=dict(color=color, width=2, dash=dash)))
    _layout(fig, title, uirevision, "FOSC", "density")
    _x_view(fig, dens, clip, log_x)
    return fig


def density_ridgeline(dens: pd.DataFrame, uirevision: str, title: str = "FOSC density by epoch", live=(),
                      clip: float | None = None, log_x: bool = False) -> go.Figure:
    """Each epoch's curve on its own baseline, later epochs higher up (the paper's Fig. 2 at a glance)."""
    fig = go.Figure()
    dens = _clip(dens, clip, log_x)
    epochs = sorted(dens["epoch"].unique()) if not dens.empty else []
    peak = float(dens["density"].max()) if not dens.empty else 1.0
    step = 0.6 * peak if peak > 0 else 1.0
    for i, (epoch, color) in enumerate(zip(epochs, _colors(len(epochs)))):
        g = dens[dens["epoch"] == epoch]
        base = i * step
        fig.add_trace(go.Scatter(x=g["x"], y=np.full(len(g), base), mode="lines", line=dict(width=0),
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=g["x"], y=g["density"] + base, mode="lines", fill="tonexty",
                                 name=epoch_name(epoch, live), customdata=g["density"],
                                 line=dict(color=color, width=1.5, dash="dash" if epoch in set(live) else None),
                                 hovertemplate="FOSC %{x:.4g}<br>density %{customdata:.3g}"))
    fig.update_yaxes(tickvals=[i * step for i in range(len(epochs))],
                     ticktext=[epoch_name(e, live).replace(" (live, partial)", "*") for e in epochs])
    _layout(fig, title, uirevision, "FOSC", height=max(HEIGHT, 60 * len(epochs) + 120))
    _x_view(fig, dens, clip, log_x)
    return fig


def density_facets(dens: pd.DataFrame, uirevision: str, title: str = "FOSC density per epoch",
                   clip: float | None = None, log_x: bool = False, order: list | None = None) -> go.Figure:
    """Several runs compared: one panel per epoch, one colour per run (the paper's Figs. 2, 3, 5)."""
    dens = _clip(dens, clip, log_x)
    epochs = sorted(dens["epoch"].unique()) if not dens.empty else [0]
    runs = _ordered(dens["run"].unique(), order) if not dens.empty else []
    fig = make_subplots(rows=1, cols=len(epochs), shared_yaxes=True,
                        subplot_titles=[f"epoch {e}" for e in epochs], horizontal_spacing=0.03)
    for j, epoch in enumerate(epochs):
        for run in runs:
            g = dens[(dens["epoch"] == epoch) & (dens["run"] == run)]
            if g.empty:
                continue
            fig.add_trace(go.Scatter(x=g["x"], y=g["density"], mode="lines", name=str(run), legendgroup=str(run),
                                     showlegend=j == 0, line=dict(color=run_color(run), width=2)),
                          row=1, col=j + 1)
    fig.update_xaxes(title_text="FOSC (log)" if log_x else "FOSC", type="log" if log_x else None)
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
                                 fillcolor="rgba(31,119,180,0.25)", name="FOSC 10-90%"))
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
        # Viridis: zero cells stay dark blue, not white, and read on a dark page as on a light one.
        fig.add_trace(go.Heatmap(x=grid.columns, y=grid.index, z=grid.values, colorscale="Viridis", zmin=0, zmax=1,
                                 name="share", colorbar=dict(title="share", tickformat=".0%"),
                                 hovertemplate="epoch %{x}, %{y} steps: %{z:.1%}<extra></extra>"))
    if not epochs.empty:
        e = epochs.sort_values("epoch")
        fig.add_trace(go.Scatter(x=e["epoch"], y=e["steps_mean"], mode="lines+markers", name="mean steps",
                                 line=dict(color="#ff7f0e")))
    _epoch_ticks(fig, int(epochs["epoch"].nunique()) if not epochs.empty else 0)
    return _layout(fig, "PGD steps per epoch", uirevision, "epoch", "steps")


def loss_accuracy(epochs: pd.DataFrame, uirevision: str, adversarial: bool = True) -> go.Figure:
    """Training loss, and training and held-out clean / PGD accuracy per epoch (accuracy in %).
    ``adversarial=False`` (an unsecured run): training loss and accuracy are on clean inputs."""
    train = "adv." if adversarial else "clean"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "accuracy"))
    e = epochs.sort_values("epoch")
    fig.add_trace(go.Scatter(x=e["epoch"], y=e["loss_mean"], mode="lines+markers", name=f"train loss ({train})"),
                  row=1, col=1)
    for col, label in (("train_adv_acc", f"train ({train})"), ("heldout_clean_acc", "held-out clean"),
                       ("heldout_pgd_acc", "held-out PGD")):
        fig.add_trace(go.Scatter(x=e["epoch"], y=e[col], mode="lines+markers", name=label,
                                 hovertemplate="epoch %{x}: %{y:.1%}"), row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_yaxes(rangemode="tozero", row=1, col=1)
    _epoch_ticks(fig, int(epochs["epoch"].nunique()) if not epochs.empty else 0)
    return _layout(fig, "Loss and accuracy", uirevision)


def below_ct(epochs: pd.DataFrame, uirevision: str) -> go.Figure:
    """Share of a batch's examples whose FOSC ended at or below c_t (those PGD stopped early)."""
    e = epochs.sort_values("epoch")
    fig = go.Figure(go.Scatter(x=e["epoch"], y=e["below_ct"], mode="lines+markers", name="share below c_t"))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    _epoch_ticks(fig, int(epochs["epoch"].nunique()) if not epochs.empty else 0)
    return _layout(fig, "Share of examples with FOSC <= c_t", uirevision, "epoch", "share")


def trajectories(traj: pd.DataFrame, uirevision: str, title: str = "Trajectories of sampled examples") -> go.Figure:
    """The paper's Fig. 1b: FOSC and loss after each PGD step, one line per recorded example; the
    legend names each example by its index in the training set (click to hide one)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("FOSC per PGD step", "loss per PGD step"))
    n = traj["idx"].nunique() if not traj.empty else 0
    colors = sample_colorscale("Turbo", [0.05 + 0.9 * i / max(n - 1, 1) for i in range(n)]) if n else []
    for i, (idx, g) in enumerate(traj.groupby("idx", sort=True)):
        for col, value in ((1, "fosc"), (2, "loss")):
            fig.add_trace(go.Scatter(x=g["step"], y=g[value], mode="lines+markers", name=f"example {idx}",
                                     legendgroup=str(idx), showlegend=col == 1, line=dict(color=colors[i], width=1),
                                     marker=dict(size=4)), row=1, col=col)
    fig.update_xaxes(title_text="PGD step")
    if not traj.empty and traj["step"].max() <= 20:
        fig.update_xaxes(dtick=1)
    return _layout(fig, title, uirevision, legend=dict(title="example (index)", font=dict(size=10)))


FORGETTING_SHARES = {"forgotten": "forgotten at this epoch", "never_learned": "never learned so far",
                     "unforgettable": "unforgettable so far"}


def forgetting_shares(per: pd.DataFrame, uirevision: str, title: str = "Forgetting (Toneva et al. 2019), per epoch") -> go.Figure:
    """Shares of the examples per epoch (queries.forgetting_per_epoch): forgotten at it (correct at the
    epoch before, wrong now), never learned and unforgettable so far."""
    fig = go.Figure([go.Scatter(x=per["epoch"], y=per[c], name=label, mode="lines+markers",
                                hovertemplate="epoch %{x}: %{y:.1%}")
                     for c, label in FORGETTING_SHARES.items()])
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    _epoch_ticks(fig, len(per))
    return _layout(fig, title, uirevision, "epoch", "share of examples")


def nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 x 10^k that is >= ``raw`` (> 0): a tick step people read at a glance."""
    exp = np.floor(np.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10 ** exp >= raw * (1 - 1e-9):
            return float(m * 10 ** exp)
    return float(10 ** (exp + 1))


def fosc_bins(bins: pd.DataFrame, uirevision: str, epoch: int | None = None, adversarial: bool = True,
              partial: bool = False) -> go.Figure:
    """The paper's Fig. 1a: adversarial accuracy (bars) and mean loss (line) in equal FOSC bins.
    ``adversarial=False``: the accuracy is on clean inputs (an unsecured run trains without an attack)."""
    acc = "adversarial accuracy" if adversarial else "accuracy (clean inputs)"
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=bins["fosc_mid"], y=bins["adv_acc"], name=acc, customdata=bins["n"],
                         hovertemplate="FOSC %{x:.4g}<br>accuracy %{y:.1%}<br>%{customdata} examples",
                         marker_color="#2ca02c", opacity=0.7), secondary_y=False)
    fig.add_trace(go.Scatter(x=bins["fosc_mid"], y=bins["loss_mean"], mode="lines+markers", name="mean loss",
                             line=dict(color="#d62728")), secondary_y=True)
    fig.update_yaxes(title_text=acc, range=[0, 1.02], tickformat=".0%", secondary_y=False)
    # A loss is >= 0: the axis starts at 0 with ticks at round multiples of one step from 0 (Plotly's
    # own tick placement on this second axis drew a "-4e-16" tick: floating error around 0).
    top = float(np.nanmax(bins["loss_mean"])) if len(bins) and bins["loss_mean"].notna().any() else 1.0
    step = nice_step(max(top, 1e-6) / 5)
    fig.update_yaxes(title_text="loss", range=[0, (np.floor(top / step) + 1) * step], tick0=0, dtick=step,
                     tickformat=".3~g", showgrid=False, secondary_y=True)
    where = "" if epoch is None else f" (epoch {epoch}" + (": live, partial)" if partial else ")")
    return _layout(fig, "Accuracy and loss by FOSC" + where, uirevision, "FOSC")


def compare_curves(epochs: pd.DataFrame, metric: str, uirevision: str, label: str | None = None,
                   order: list | None = None, percent: bool = False) -> go.Figure:
    """One per-epoch metric, one line per run in the run's colour; ``percent``: a 0-1 share shown in %."""
    fig = go.Figure()
    for run in _ordered(epochs["run"].unique(), order) if not epochs.empty else []:
        g = epochs[epochs["run"] == run].sort_values("epoch")
        fig.add_trace(go.Scatter(x=g["epoch"], y=g[metric], mode="lines+markers", name=str(run),
                                 line=dict(color=run_color(run))))
    if percent:
        fig.update_yaxes(tickformat=".0%", rangemode="tozero")
        fig.update_traces(hovertemplate="epoch %{x}: %{y:.1%}")
    _epoch_ticks(fig, epochs["epoch"].nunique() if not epochs.empty else 0)
    return _layout(fig, label or metric, uirevision, "epoch", label or metric)


def ema(values: np.ndarray, alpha: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard and Adam do): without the 1 - (1-a)^t
    correction the first points would be pulled towards 0."""
    out, acc = np.empty(len(values)), 0.0
    for t, v in enumerate(np.asarray(values, dtype=float), start=1):
        acc = (1 - alpha) * acc + alpha * v
        out[t - 1] = acc / (1 - (1 - alpha) ** t)
    return out


def batch_curves(batches: pd.DataFrame, metric: str, uirevision: str, label: str, x: str = "batch",
                 smoothing: float = 0.6, percent: bool = False, live=()) -> go.Figure:
    """A per-batch metric: the raw trace faint, its debiased EMA (``smoothing`` = 1 - alpha) on top.
    ``x``: 'batch' (batches since the start) or 'time' (seconds of training, from each epoch's wall time)."""
    fig = go.Figure()
    b = batches.sort_values(["epoch", "batch"])
    xs = b["t_s"] if x == "time" else b["step"]
    if not b.empty:
        fig.add_trace(go.Scatter(x=xs, y=b[metric], mode="lines", name=f"{label} (raw)", opacity=0.3,
                                 line=dict(color="#1f77b4", width=1)))
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=xs, y=ema(b[metric].to_numpy(), 1 - smoothing), mode="lines",
                                     name=f"{label} (EMA {smoothing:.2f})", line=dict(color="#1f77b4", width=2.5)))
        for e in sorted(set(b["epoch"]))[1:]:  # epoch boundaries
            fig.add_vline(x=float(xs[b["epoch"] == e].min()), line=dict(color="gray", width=1, dash="dot"))
    if percent:
        fig.update_yaxes(tickformat=".0%")
    xlabel = "training time (s, from epoch wall times)" if x == "time" else "batch (since the start)"
    title = label + " per batch" + (" (the last epoch is live, partial)" if live else "")
    return _layout(fig, title, uirevision, xlabel, label)


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
