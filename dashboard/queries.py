"""The dashboard's queries: aggregates computed in DuckDB, returned as small DataFrames.

Every function here takes a store connection (``store.open``) and returns at most a few thousand
rows, whatever the number of logged examples: histograms are binned in SQL, and each query reads
only the files of the runs and epochs it needs (``scan``: the store reader's checked file lists).
Pages call them through ``load`` (``st.cache_data``, keyed by a signature of the runs folder that
changes when a file does); tests and ``bench/store_query.py`` call them directly.

Writing a new one: decorate ``def name(con, ...)`` with ``@query``, build SQL over
``scan(con, table, runs, epochs)`` and run it with ``run_sql(con, build)``; a page calls
``load(runs_dir, name, ...)``. The store reader does the rest: damaged or foreign files are left
out (``damaged``), a chunk compacted away mid-query is retried, and each query is time-bounded.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import streamlit as st

import store
from store import files
from store import runs as store_runs
from store import evals as store_evals
from store.reader import StoreConnection, runs_table

TTL_S = 30.0           # the cache key changes with the files; this only bounds an in-place edit's staleness
DENSITY_BINS = 400     # fine enough for a smooth curve, small enough to ship
FOSC_BINS = 20         # Fig. 1a of the paper
SQL_TIMEOUT_S = 30.0   # the SQL page: a user query running longer is interrupted
SQL_ROWS = 100_000     # the SQL page: rows fetched at most (the rest is never computed); aggregate for more

# Attack keys -> table headers, in table order: from the one registry (store.evals), never a copy.
ATTACKS = {key: a.header for key, a in store_evals.ATTACKS.items()}
SETTINGS = ("white-box", "black-box")

_QUERIES: dict[str, Callable] = {}


def query(fn: Callable) -> Callable:
    """Register ``fn`` so pages can run it cached through ``load``."""
    _QUERIES[fn.__name__] = fn
    return fn


# ---- the shared connection, cached loads, pruned scans ----------------------------------------------

@st.cache_resource(show_spinner=False)
def store_connection(runs_dir: str) -> StoreConnection:
    """The runs folder's sandboxed store connection, shared by every session. No lock: the reader
    runs each query on a cursor of its own, so one session's slow query never holds up another's."""
    return store.open(runs_dir)


@contextmanager
def connection(runs_dir: str | Path) -> Iterator[StoreConnection]:
    yield store_connection(str(Path(runs_dir).resolve()))


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=512)
def _cached(runs_dir: str, name: str, args: tuple, kwargs: tuple, signature: str) -> pd.DataFrame:
    return _QUERIES[name](store_connection(runs_dir), *args, **dict(kwargs))


def load(runs_dir: str | Path, fn: Callable, *args, **kwargs) -> pd.DataFrame:
    """``fn(con, *args, **kwargs)`` on the runs folder's connection, cached until a file changes."""
    rd = str(Path(runs_dir).resolve())
    return _cached(rd, fn.__name__, tuple(args), tuple(sorted(kwargs.items())), files.folder_signature(Path(rd)))


def scan(con: StoreConnection, table: str, runs, epochs=None) -> str:
    """A SQL relation over ``table``'s rows of ``runs`` (and ``epochs``; 'last': each run's latest)
    with the view's columns. Listing the partitions we need, instead of filtering the all-runs view,
    keeps a query's cost independent of how many runs and epochs the folder holds."""
    eps = epochs if epochs is None or epochs == "last" else tuple(int(e) for e in epochs)
    return con.relation(table, tuple(runs), eps)


def run_sql(con: StoreConnection, build: Callable[[], tuple[str, list]]) -> pd.DataFrame:
    """Run the SQL that ``build`` makes (called again on a retry, so its file lists are fresh)."""
    return con.query_df(build)




@query
def damaged(con) -> pd.DataFrame:
    """One row per file left out of every query (damaged, foreign, or a link out): run, file, reason."""
    rows = [(run, *item.split(": ", 1)) for run, items in con.damaged().items() for item in items]
    return pd.DataFrame(rows, columns=["run", "file", "reason"])


# ---- runs and per-epoch summaries -------------------------------------------------------------------

RUN_COLUMNS = ["run", "strategy", "dataset", "model", "eps", "state", "epoch", "epochs", "message", "created_at"]


def run_records(runs_dir: str | Path) -> pd.DataFrame:
    """One row per run folder from its JSON files (config, meta, status): cheap, always current."""
    df = runs_table(Path(runs_dir)).to_pandas()[RUN_COLUMNS]
    df["message"] = df["message"].fillna("")
    return df


@query
def runs_overview(con) -> pd.DataFrame:
    """One row per run: what it trains, its state and progress, its latest clean and robust accuracy.

    Accuracies come from the end-of-run evaluation (last checkpoint, white-box; robust = PGD-20, else
    PGD-10) when there is one, otherwise from the latest epoch's held-out clean / PGD accuracy.
    """
    recs = run_records(con.runs_dir)
    names = tuple(recs["run"])
    if not names:
        return recs.assign(epochs_done=[], clean_acc=[], robust_acc=[], acc_source=[])

    def build():
        return f"""
            WITH ev AS (
                SELECT run, {store_evals.key_sql()} AS attack, arg_max(accuracy, created_at) AS acc
                FROM {scan(con, 'evals', names)}
                WHERE checkpoint = 'last' AND setting = 'white-box' GROUP BY ALL),
            evp AS (
                SELECT run, max(acc) FILTER (attack = 'clean') AS clean,
                       coalesce(max(acc) FILTER (attack = 'pgd20'), max(acc) FILTER (attack = 'pgd10')) AS robust
                FROM ev GROUP BY run),
            ep AS (SELECT run, epoch + 1 AS epochs_done, heldout_clean_acc AS clean, heldout_pgd_acc AS robust
                   FROM {scan(con, 'epochs', names, 'last')})
            SELECT coalesce(evp.run, ep.run) AS run, coalesce(ep.epochs_done, 0) AS epochs_done,
                   coalesce(evp.clean, ep.clean) AS clean_acc, coalesce(evp.robust, ep.robust) AS robust_acc,
                   CASE WHEN evp.clean IS NOT NULL THEN 'test set, last checkpoint'
                        WHEN ep.clean IS NOT NULL THEN 'held-out, latest epoch' ELSE '' END AS acc_source
            FROM evp FULL JOIN ep USING (run)""", []

    acc = run_sql(con, build)
    out = recs.merge(acc, on="run", how="left")
    out["epochs_done"] = out["epochs_done"].fillna(0).astype(int)
    out["acc_source"] = out["acc_source"].fillna("")
    return out.sort_values(["created_at", "run"], ascending=[False, True], na_position="last").reset_index(drop=True)


@query
def epochs(con, runs: tuple[str, ...]) -> pd.DataFrame:
    """The per-epoch summary rows (one per run and epoch) of ``runs``."""
    return run_sql(con, lambda: (f"SELECT * FROM {scan(con, 'epochs', runs)} ORDER BY run, epoch", []))


@query
def example_epochs(con, run: str) -> pd.DataFrame:
    """The epochs of ``run`` that have per-example files (from the file listing: no rows are read)."""
    return pd.DataFrame({"epoch": pd.Series(con.partitions("examples", run), dtype="int64")})


@query
def events(con, run: str, limit: int = 50) -> pd.DataFrame:
    return run_sql(con, lambda: (f"SELECT time, epoch, batch, kind, detail FROM {scan(con, 'events', (run,))} "
                                 "ORDER BY time DESC LIMIT ?", [int(limit)]))


# ---- FOSC distributions -----------------------------------------------------------------------------

def _binned(con, runs, epochs, bins: int, aggs: str, keys: str) -> pd.DataFrame:
    """Rows of the chosen partitions in ``bins`` equal FOSC bins over their common range: one query,
    two scans of those files only (the range, then the aggregates ``aggs`` grouped by ``keys``, bin)."""
    def build():
        return f"""
            WITH ex AS (SELECT * FROM {scan(con, 'examples', runs, epochs)} WHERE isfinite(fosc)),
            g AS (SELECT min(fosc) AS lo, CASE WHEN max(fosc) > min(fosc) THEN (max(fosc) - min(fosc)) / ?
                                               ELSE 1e-6 END AS width FROM ex)
            SELECT {keys}least(floor((fosc - g.lo) / g.width), ? - 1)::INTEGER AS bin, {aggs},
                   any_value(g.lo) AS lo, any_value(g.width) AS width
            FROM ex, g GROUP BY ALL ORDER BY ALL""", [bins, bins]
    return run_sql(con, build)


@query
def fosc_hist(con, runs: tuple[str, ...], epochs: tuple[int, ...], bins: int = DENSITY_BINS) -> pd.DataFrame:
    """FOSC counts in ``bins`` equal bins over the common range of the chosen runs and epochs.

    Columns: run, epoch, bin, count, lo, width (bin b covers [lo + b*width, lo + (b+1)*width)).
    """
    if not runs or not epochs:
        return pd.DataFrame(columns=["run", "epoch", "bin", "count", "lo", "width"])
    return _binned(con, runs, epochs, bins, "count(*) AS count", "run, epoch, ")


def density(hist: pd.DataFrame, kind: str = "kde", bins: int = DENSITY_BINS) -> pd.DataFrame:
    """Binned counts -> density curves per (run, epoch): columns run, epoch, x, density.

    ``kind='kde'``: a Gaussian kernel density estimate computed on the bins (binned KDE: the cost
    depends on the bin count, not the row count; Silverman's bandwidth from the binned moments).
    ``kind='hist'``: the fine histogram itself, normalised to a density.
    """
    out = []
    if hist.empty:
        return pd.DataFrame(columns=["run", "epoch", "x", "density"])
    lo, width = float(hist["lo"].iloc[0]), float(hist["width"].iloc[0])
    for (run, epoch), g in hist.groupby(["run", "epoch"], sort=True):
        counts = np.zeros(bins)
        np.add.at(counts, g["bin"].to_numpy(dtype=int).clip(0, bins - 1), g["count"].to_numpy(dtype=float))
        x = lo + (np.arange(bins) + 0.5) * width
        if kind == "kde":
            x, dens = _binned_kde(counts, x, width)
        else:
            dens = counts / (counts.sum() * width)
        out.append(pd.DataFrame({"run": run, "epoch": int(epoch), "x": x, "density": dens}))
    return pd.concat(out, ignore_index=True)


def _binned_kde(counts: np.ndarray, x: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    n = counts.sum()
    mean = (counts * x).sum() / n
    sd = np.sqrt(max((counts * (x - mean) ** 2).sum() / n, 0.0))
    cdf = np.cumsum(counts) / n
    iqr = x[np.searchsorted(cdf, 0.75)] - x[np.searchsorted(cdf, 0.25)]
    spread = min(sd, iqr / 1.34) if iqr > 0 else sd
    h = max(0.9 * spread * n ** -0.2, width)  # never narrower than one bin
    half = int(np.ceil(4 * h / width))
    kernel = np.exp(-0.5 * ((np.arange(-half, half + 1) * width) / h) ** 2)
    kernel /= kernel.sum() * width
    padded = np.concatenate([np.zeros(half), counts, np.zeros(half)])  # let the tails show
    xs = x[0] + (np.arange(len(padded)) - half) * width
    return xs, np.convolve(padded, kernel, mode="same") / n


@query
def fosc_bins(con, run: str, epoch: int, bins: int = FOSC_BINS) -> pd.DataFrame:
    """Fig. 1a: one epoch's examples in ``bins`` equal FOSC bins -> count, adversarial accuracy, mean loss."""
    df = _binned(con, (run,), (int(epoch),), bins,
                 "count(*) AS n, avg(correct::INTEGER) AS adv_acc, avg(loss) AS loss_mean", "")
    df["fosc_lo"] = df["lo"] + df["bin"] * df["width"]
    df["fosc_hi"] = df["fosc_lo"] + df["width"]
    df["fosc_mid"] = df["fosc_lo"] + df["width"] / 2
    return df[["bin", "fosc_lo", "fosc_hi", "fosc_mid", "n", "adv_acc", "loss_mean"]]


@query
def steps_hist(con, run: str) -> pd.DataFrame:
    """How many examples took each number of PGD steps, per epoch (one run, every epoch)."""
    return run_sql(con, lambda: (f"SELECT epoch, steps, count(*) AS n FROM {scan(con, 'examples', (run,))} "
                                 "GROUP BY ALL ORDER BY epoch, steps", []))


@query
def trajectories(con, run: str, epoch: int, n_examples: int = 12) -> pd.DataFrame:
    """Fig. 1b: per-step FOSC and loss of ``n_examples`` recorded examples of one epoch."""
    def build():
        src = scan(con, "steps", (run,), (int(epoch),))
        return f"""
            WITH s AS (SELECT idx, step, fosc, loss, active FROM {src}),
            pick AS (SELECT DISTINCT idx FROM s ORDER BY idx LIMIT ?)
            SELECT * FROM s WHERE idx IN (SELECT idx FROM pick) ORDER BY idx, step""", [int(n_examples)]
    return run_sql(con, build)


# ---- robustness -------------------------------------------------------------------------------------

@query
def robustness(con, runs: tuple[str, ...] | None, checkpoint: str = "last") -> pd.DataFrame:
    """The paper's Tables 1 and 2: accuracy (%) per run under each attack, white-box then black-box.

    One row per run; columns ``<setting> <header>`` (headers from store.evals, e.g. ``white-box Clean``,
    ``white-box PGD-20 (eps/4)``), white-box then black-box in the registry's order (only columns with
    at least one value). Latest evaluation wins.
    """
    recs = run_records(con.runs_dir)
    names = tuple(runs) if runs else tuple(recs["run"])
    long = run_sql(con, lambda: (f"""
        SELECT run, setting, {store_evals.key_sql()} AS attack, arg_max(accuracy, created_at) * 100 AS acc
        FROM {scan(con, 'evals', names)} WHERE checkpoint = ? GROUP BY ALL""", [checkpoint]))
    long = long.merge(recs[["run", "strategy", "dataset"]], on="run", how="left").fillna({"strategy": "", "dataset": ""})
    cols = [f"{s} {label}" for s in SETTINGS for a, label in ATTACKS.items()
            if not (s == "black-box" and a == "clean")]
    base = ["run", "strategy", "dataset"]
    if long.empty:
        return pd.DataFrame(columns=base)
    long["column"] = long["setting"] + " " + long["attack"].map(ATTACKS).fillna(long["attack"])
    wide = long.pivot_table(index=base, columns="column", values="acc", aggfunc="first").reset_index()
    present = [c for c in cols if c in wide.columns]
    wide = wide[base + present]
    wide.columns.name = None
    order = {r: i for i, r in enumerate(names)}
    return wide.sort_values("run", key=lambda s: s.map(order)).reset_index(drop=True)


# ---- the headline and the configuration of each run (pages Runs, Run, Compare) ------------------------

# Config fields shown as columns, in order: config key -> column label. ``step_size`` is the config's
# alpha, else eps/4 (the trainer's rule); ``n_train`` None means the whole training set.
CONFIG_COLUMNS = {"dataset": "dataset", "model": "model", "eps": "eps", "steps": "K", "step_size": "step size",
                  "c_max": "c_max", "t_prime": "T'", "lr": "lr", "epochs": "epochs", "seed": "seed",
                  "n_train": "data size", "batch_size": "batch", "heldout": "held-out n",
                  "heldout_pgd_steps": "held-out PGD K"}
ROBUST_ATTACK = ("pgd20", "pgd10")  # the test-set robust column: the strongest PGD there is


def _num(value):
    """A config value as a float, None if it is not a finite number (config.json is untrusted)."""
    if isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


@query
def run_configs(con) -> pd.DataFrame:
    """One row per run: the config columns of CONFIG_COLUMNS, tags, note and times (from the runs view's
    columns, read fresh from the run folders like ``run_records``)."""
    import json

    tbl = runs_table(Path(con.runs_dir)).to_pandas()
    rows = []
    for _, r in tbl.iterrows():
        try:
            cfg = json.loads(r["config"] or "{}")
        except ValueError:
            cfg = {}
        cfg = cfg if isinstance(cfg, dict) else {}
        row = {"run": r["run"]}
        for key in CONFIG_COLUMNS:
            v = cfg.get(key)
            row[key] = v if key in ("dataset", "model") and isinstance(v, str) else _num(v)
        if row["step_size"] is None and row["eps"] is not None:
            row["step_size"] = row["eps"] / 4
        row["tags"] = list(r["tags"]) if r.get("tags") is not None else []
        row["note"] = r.get("note") or ""
        row["created_at"], row["updated_at"] = r["created_at"], r["updated_at"]
        rows.append(row)
    cols = ["run", *CONFIG_COLUMNS, "tags", "note", "created_at", "updated_at"]
    return pd.DataFrame(rows, columns=cols)


def _eval_summary(con, names: tuple[str, ...]) -> pd.DataFrame:
    """Per run, its latest white-box evaluation of the last checkpoint as one consistent set of rows:
    clean and robust accuracy with the attack, budget and example count they come from, and whether
    the evaluation is partial (a row still marked partial, a row missing, or rows of different sizes:
    an evaluation killed half-way)."""
    ev = run_sql(con, lambda: (f"""
        SELECT run, {store_evals.key_sql()} AS key, arg_max(accuracy, created_at) AS acc,
               arg_max(n, created_at) AS n, arg_max(eps, created_at) AS eps,
               coalesce(arg_max(partial, created_at), false) AS partial
        FROM {scan(con, 'evals', names)} WHERE checkpoint = 'last' AND setting = 'white-box'
        GROUP BY ALL""", []))
    out = []
    for run, g in ev.groupby("run", sort=False):
        by = g.set_index("key")
        robust = next((a for a in ROBUST_ATTACK if a in by.index), None)
        missing = [a for a in ("clean", ROBUST_ATTACK[0]) if a not in by.index]
        unfinished = [a for a in by.index if bool(by.at[a, "partial"])]
        sizes = {int(n) for n in g["n"].dropna()}
        why = ([f"no {', '.join(store_evals.header(a) for a in missing)}"] if missing else []) + (
            [f"{', '.join(store_evals.header(a) for a in unfinished)} unfinished"] if unfinished else []) + (
            ["unequal n"] if len(sizes) > 1 else [])
        r = by.loc[robust] if robust else None
        n = max(sizes) if sizes else None
        source = (f"test set, last checkpoint, {store_evals.header(robust) if robust else 'no PGD'}"
                  + (f", eps {float(r['eps']):.4g}" if r is not None and pd.notna(r["eps"]) else "")
                  + (f", n={n:,}" if n else "") + (f" (partial: {'; '.join(why)})" if why else ""))
        out.append({"run": run, "test_clean": by.at["clean", "acc"] * 100 if "clean" in by.index else np.nan,
                    "test_robust": float(r["acc"]) * 100 if r is not None else np.nan,
                    "test_source": source, "test_partial": bool(why)})
    return pd.DataFrame(out, columns=["run", "test_clean", "test_robust", "test_source", "test_partial"])


@query
def headline(con) -> pd.DataFrame:
    """Per run, "is it getting robust?": held-out PGD accuracy (%) per finished epoch (the trend), the
    latest and its change since the epoch before, and the test-set evaluation, each with its source.

    Held-out numbers come only from finished epochs (a run writes its summary at an epoch's end); the
    test numbers only from one evaluation (``_eval_summary``): the two are never mixed in one column.
    """
    cfg = run_configs(con).set_index("run")
    names = tuple(cfg.index)
    ep = epochs(con, names) if names else pd.DataFrame(columns=["run", "epoch", "heldout_pgd_acc"])
    rows = []
    for run in names:
        e = ep[ep["run"] == run].sort_values("epoch")
        trend = (e["heldout_pgd_acc"] * 100).round(2).tolist()
        last = e.iloc[-1] if not e.empty else None
        c = cfg.loc[run]
        k, eps, n = c["heldout_pgd_steps"], c["eps"], c["heldout"]
        source = "" if last is None else (
            f"held-out, epoch {int(last['epoch'])} (last finished), PGD-{int(k) if k else '?'}"
            + (f", eps {eps:.4g}" if eps else "") + (f", n={int(n):,}" if n else ""))
        rows.append({"run": run, "heldout_trend": trend,
                     "heldout_robust": trend[-1] if trend else np.nan,
                     "heldout_delta": trend[-1] - trend[-2] if len(trend) >= 2 else np.nan,
                     "heldout_clean": float(last["heldout_clean_acc"]) * 100 if last is not None else np.nan,
                     "heldout_epoch": int(last["epoch"]) if last is not None else -1,
                     "heldout_source": source,
                     "wall_s": float(e["wall_s"].sum()) if not e.empty else 0.0,
                     "epoch_s": float(e["wall_s"].median()) if not e.empty else np.nan})
    out = pd.DataFrame(rows, columns=["run", "heldout_trend", "heldout_robust", "heldout_delta", "heldout_clean",
                                      "heldout_epoch", "heldout_source", "wall_s", "epoch_s"])
    test = _eval_summary(con, names) if names else _eval_summary(con, ("-",))
    out = out.merge(test, on="run", how="left")
    out["test_source"] = out["test_source"].fillna("")
    out["test_partial"] = out["test_partial"].fillna(False).astype(bool)
    return out


@query
def batch_summary(con, run: str) -> pd.DataFrame:
    """Per (epoch, batch) of ``run``: mean loss, accuracy, FOSC and PGD steps over its examples.

    Columns epoch, batch, n, loss, acc, fosc, steps (cached by ``load`` until the run's files change).
    """
    return run_sql(con, lambda: (
        f"SELECT epoch, batch, count(*) AS n, avg(loss) AS loss, avg(correct::INTEGER) AS acc, "
        f"avg(fosc) FILTER (isfinite(fosc)) AS fosc, avg(steps) AS steps "
        f"FROM {scan(con, 'examples', (run,))} GROUP BY epoch, batch ORDER BY epoch, batch", []))


# ---- per-example insight: data maps, forgetting, the examples behind them (store.insight) ------------

def _insight(con, run: str, lo, hi) -> tuple[str, str]:
    from store import insight

    return insight.stats_relation(store_runs.run_dir(con.runs_dir, run), lo, hi)


@query
def datamap(con, run: str, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
    """The data map of one run over epochs lo..hi as a density grid: conf_bin, var_bin, n, correctness,
    forgets_mean, their bin edges, and ``source`` ('aggregates' or 'rows'). Empty without p_true."""
    from store import insight

    stats, source = _insight(con, run, lo, hi)
    df = run_sql(con, lambda: (insight.datamap_sql(stats), []))
    df["conf_lo"], df["var_lo"] = df["conf_bin"] / insight.CONF_BINS, df["var_bin"] / (2 * insight.VAR_BINS)
    df["conf_hi"] = df["conf_lo"] + 1 / insight.CONF_BINS
    df["var_hi"] = df["var_lo"] + 1 / (2 * insight.VAR_BINS)
    return df.assign(source=source)


@query
def forgetting(con, run: str, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
    """Examples per forgetting count over epochs lo..hi (forgets -1: never learned)."""
    from store import insight

    stats, source = _insight(con, run, lo, hi)
    return run_sql(con, lambda: (insight.forgetting_sql(stats), [])).assign(source=source)


@query
def insight_summary(con, run: str, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
    """One row: examples, never learned, unforgettable, forgetting events, data-map regions."""
    from store import insight

    stats, source = _insight(con, run, lo, hi)
    return run_sql(con, lambda: (insight.summary_sql(stats), [])).assign(source=source)


@query
def forgetting_overlap(con, run_a: str, run_b: str, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
    """One row: whether two runs forget the same examples over epochs lo..hi (store.insight.overlap_sql)."""
    from store import insight

    (a, _), (b, _) = _insight(con, run_a, lo, hi), _insight(con, run_b, lo, hi)
    return run_sql(con, lambda: (insight.overlap_sql(a, b), []))


@query
def forgetting_per_epoch(con, run: str) -> pd.DataFrame:
    """Per epoch: shares forgotten at it, correct, never learned and unforgettable so far."""
    from store import insight

    sql, source = insight.per_epoch_sql(store_runs.run_dir(con.runs_dir, run))
    return run_sql(con, lambda: (sql, [])).assign(source=source)


@query
def pick_examples(con, run: str, ranking: str, lo: int | None = None, hi: int | None = None,
                  region: str | None = None, conf_bin: int | None = None, var_bin: int | None = None,
                  limit: int = 24) -> pd.DataFrame:
    """The ``limit`` examples that ``ranking`` (store.insight.RANKINGS) puts first, with their statistics."""
    from store import insight

    stats, _ = _insight(con, run, lo, hi)
    sql, params = insight.pick_sql(stats, ranking, region, conf_bin, var_bin)
    return run_sql(con, lambda: (sql + " LIMIT ?", [*params, int(limit)]))


@query
def fosc_bin_examples(con, run: str, epoch: int, fosc_lo: float, fosc_hi: float, limit: int = 24) -> pd.DataFrame:
    """Examples of one epoch whose FOSC lies in [fosc_lo, fosc_hi] (a Fig. 1a bin), highest loss first."""
    return run_sql(con, lambda: (f"""
        SELECT idx, fosc, loss, steps, correct FROM {scan(con, 'examples', (run,), (int(epoch),))}
        WHERE fosc >= ? AND fosc <= ? ORDER BY loss DESC, idx LIMIT ?""",
                             [float(fosc_lo), float(fosc_hi), int(limit)]))


@query
def example_history(con, run: str, idx: int) -> pd.DataFrame:
    """One example across every epoch of a run: epoch, fosc, loss, steps, correct, p_true, c_t."""
    def build():
        src = scan(con, "examples", (run,))
        return (f"SELECT epoch, avg(fosc) AS fosc, avg(loss) AS loss, avg(steps) AS steps, "
                f"bool_or(correct) AS correct, avg(p_true) AS p_true, avg(c_t) AS c_t FROM {src} "
                "WHERE idx = ? GROUP BY epoch ORDER BY epoch", [int(idx)])
    return run_sql(con, build)


@query
def example_steps(con, run: str, idx: int) -> pd.DataFrame:
    """The per-step trajectory of one example in every epoch it was sampled (--trajectory-examples)."""
    return run_sql(con, lambda: (f"SELECT epoch, step, fosc, loss, active FROM {scan(con, 'steps', (run,))} "
                             "WHERE idx = ? ORDER BY epoch, step", [int(idx)]))


@query
def alarms(con, runs: tuple[str, ...]) -> pd.DataFrame:
    """The alarms raised now (store.alarms) for ``runs``: run, kind, title, epoch, evidence, checkpoint."""
    from store import alarms as store_alarms

    out = [dict(a.as_dict(), run=r) for r in runs for a in store_alarms.check(store_runs.run_dir(con.runs_dir, r))]
    return pd.DataFrame(out, columns=["run", "kind", "title", "epoch", "evidence", "checkpoint"])


def alarm_icons(runs_dir, runs) -> list[str]:
    """A warning sign and the alarms' titles per run, '' for none (the Runs table's column)."""
    df = load(runs_dir, alarms, tuple(runs))
    titles = df.groupby("run")["title"].agg(", ".join).to_dict()
    return [f"⚠️ {titles[r]}" if r in titles else "" for r in runs]
