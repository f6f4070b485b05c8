"""The paper's FOSC figures as PNG, computed from the logs with SQL (``store.open``).

``fosc_density``: the distribution of FOSC at chosen epochs, one panel per strategy (paper Figs. 2c/5).
``fosc_vs_accuracy``: the final epoch's PGD examples in 20 equal-width FOSC groups, with the model's
accuracy and loss on each group (paper Fig. 1a, there on test examples, here on the training log).
Figures are drawn with Plotly and rendered by Kaleido (Chromium) when that works here, else with
Matplotlib; ``render`` returns which one drew them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

N_BINS = 20


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    series: list[tuple[str, list[float], list[float]]] = field(default_factory=list)


def _in(values) -> str:
    return "(" + ", ".join("'" + str(v).replace("'", "''") + "'" for v in values) + ")"


def _bin(bw: float) -> str:
    # FOSC >= 0 up to float rounding (tiny negatives go to the first bin), the x-range end to the last.
    return f"greatest(least(floor(fosc / {bw!r}), {N_BINS - 1}), 0)::INT"


def _upper(con, runs: list[str], epochs_sql: str, q: float = 0.99) -> float:
    """A common x-range end for the runs: the q-quantile of their FOSC (the tail would squash the rest)."""
    df = con.query_df(f"SELECT quantile_cont(fosc, {q}) AS hi FROM examples WHERE run IN {_in(runs)} "
                      f"AND {epochs_sql} AND isfinite(fosc)")
    hi = df["hi"].iloc[0] if len(df) else None
    return float(hi) if hi is not None and hi == hi and hi > 0 else 1.0


def fosc_density(con, runs: dict[str, str], epochs: tuple[int, ...]) -> list[Panel]:
    """One panel per strategy (runs: label -> run name): % of examples per FOSC bin, one line per epoch."""
    ep_sql = f"epoch IN ({', '.join(str(int(e)) for e in epochs)})"
    panels = []
    for label, run in runs.items():
        hi = _upper(con, [run], ep_sql)  # per strategy: their FOSC scales differ by an order of magnitude
        bw = hi / N_BINS
        # Percent of all the epoch's examples (the tail beyond the x-range counts in the total).
        df = con.query_df(
            f"WITH s AS (SELECT epoch, fosc FROM examples WHERE run = '{run}' AND {ep_sql} AND isfinite(fosc)), "
            f"t AS (SELECT epoch, count(*) AS total FROM s GROUP BY epoch) "
            f"SELECT s.epoch, {_bin(bw)} AS bin, count(*) AS n, any_value(t.total) AS total "
            f"FROM s JOIN t USING (epoch) WHERE fosc <= {hi!r} GROUP BY ALL ORDER BY 1, 2")
        p = Panel(f"{label}: FOSC density", "FOSC", "% of examples")
        for ep, g in df.groupby("epoch"):
            p.series.append((f"epoch {ep}", [(b + 0.5) * bw for b in g["bin"]], (100 * g["n"] / g["total"]).tolist()))
        panels.append(p)
    return panels


def fosc_vs_accuracy(con, runs: dict[str, str], epoch: int) -> list[Panel]:
    """Accuracy and loss of the model on its PGD examples of ``epoch``, grouped by FOSC (20 bins):
    the accuracy panels of every strategy, then their loss panels."""
    accs, losses = [], []
    for label, run in runs.items():
        if label == "unsecured":
            continue  # its logged examples are clean inputs, not PGD examples
        hi = _upper(con, [run], f"epoch = {int(epoch)}")
        bw = hi / N_BINS
        df = con.query_df(
            f"SELECT {_bin(bw)} AS bin, avg(correct::INT) AS acc, "
            f"avg(loss) AS loss, count(*) AS n FROM examples WHERE run = '{run}' AND epoch = {int(epoch)} "
            f"AND isfinite(fosc) AND fosc <= {hi!r} GROUP BY ALL HAVING count(*) >= 20 ORDER BY bin")
        x = [(b + 0.5) * bw for b in df["bin"]]
        accs.append(Panel(f"{label}: accuracy per FOSC group", "FOSC", "accuracy on its PGD examples (%)",
                          [(label, x, (100 * df["acc"]).tolist())]))
        losses.append(Panel(f"{label}: loss per FOSC group", "FOSC", "mean loss", [(label, x, df["loss"].tolist())]))
    return accs + losses


# ---- drawing ------------------------------------------------------------------------------------
def render(panels: list[Panel], path: Path, title: str, cols: int | None = None) -> str:
    """Write the panels as a PNG grid (``cols`` per row, default all in one row); returns the renderer
    used ('plotly+kaleido' or 'matplotlib')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = cols or len(panels)
    try:
        _plotly(panels, path, title, cols)
        return "plotly+kaleido"
    except Exception:  # kaleido needs a working Chromium; without one, Matplotlib draws the same data
        _matplotlib(panels, path, title, cols)
        return "matplotlib"


def _plotly(panels, path, title, cols):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if os.path.exists("/usr/bin/chromium"):
        os.environ.setdefault("BROWSER_PATH", "/usr/bin/chromium")
    rows = -(-len(panels) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p.title for p in panels])
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    for i, p in enumerate(panels):
        r, c = i // cols + 1, i % cols + 1
        for j, (name, x, y) in enumerate(p.series):
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, legendgroup=name,
                                     showlegend=name not in {t.name for t in fig.data},
                                     line=dict(color=palette[j % len(palette)])), row=r, col=c)
        fig.update_xaxes(title_text=p.xlabel, row=r, col=c)
        fig.update_yaxes(title_text=p.ylabel, row=r, col=c)
    fig.update_layout(title=title, width=380 * cols + 120, height=380 * rows + 40, template="plotly_white")
    fig.write_image(str(path), scale=1)


def _matplotlib(panels, path, title, cols):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols + 1, 4 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, p in zip(axes.flat, panels):
        for name, x, y in p.series:
            ax.plot(x, y, marker="o", ms=3, label=name)
        ax.set(title=p.title, xlabel=p.xlabel, ylabel=p.ylabel)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
