"""The dashboard's queries: aggregates computed in DuckDB, returned as small DataFrames.

Every function here takes a store connection (``store.open``) and returns at most a few thousand
rows, whatever the number of logged examples: histograms are binned in SQL, and each query reads
only the files of the runs and epochs it needs (see ``_files``). Pages call them through
``load`` (cached with a short TTL, one shared connection per runs folder); tests and
``bench/store_query.py`` call them directly.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import duckdb
import numpy as np
import pandas as pd
import streamlit as st

import store
from store import files
from store import runs as store_runs
from store.reader import StoreConnection, runs_table
from store.schema import PARTITIONED, table_schema

TTL_S = 2.0            # a live run's page refreshes every few seconds; older aggregates are stale
DENSITY_BINS = 400     # fine enough for a smooth curve, small enough to ship
FOSC_BINS = 20         # Fig. 1a of the paper

ATTACKS = {"clean": "Clean", "fgsm": "FGSM", "pgd10": "PGD-10", "pgd20": "PGD-20", "cw": "CW-inf"}
SETTINGS = ("white-box", "black-box")

_QUERIES: dict[str, Callable] = {}


def query(fn: Callable) -> Callable:
    """Register ``fn`` so pages can run it cached through ``load``."""
    _QUERIES[fn.__name__] = fn
    return fn


# ---- the shared connection and pruned scans ---------------------------------------------------------

class _Entry:
    def __init__(self, runs_dir: Path):
        self.con = store.open(runs_dir)
        self.lock = threading.Lock()


_CONS: dict[str, _Entry] = {}
_CONS_LOCK = threading.Lock()


@contextmanager
def connection(runs_dir: str | Path) -> Iterator[StoreConnection]:
    """The runs folder's sandboxed store connection, held exclusively (a DuckDB connection is not
    thread-safe and Streamlit serves each browser tab from its own thread)."""
    key = str(Path(runs_dir).resolve())
    with _CONS_LOCK:
        entry = _CONS.get(key)
        if entry is None:
            entry = _CONS[key] = _Entry(Path(key))
    with entry.lock:
        yield entry.con


@st.cache_data(ttl=TTL_S, show_spinner=False, max_entries=512)
def _cached(runs_dir: str, name: str, args: tuple, kwargs: tuple) -> pd.DataFrame:
    with connection(runs_dir) as con:
        return _QUERIES[name](con, *args, **dict(kwargs))


def load(runs_dir: str | Path, fn: Callable, *args, **kwargs) -> pd.DataFrame:
    """``fn(con, *args, **kwargs)`` on the runs folder's connection, cached for TTL_S seconds."""
    return _cached(str(runs_dir), fn.__name__, tuple(args), tuple(sorted(kwargs.items())))


def _files(con: StoreConnection, table: str, runs: tuple[str, ...], epochs: tuple[int, ...] | None) -> list[str]:
    """The files of ``table`` for exactly these runs (and epochs), by the store's snapshot rule.

    Listing the partitions we need, instead of filtering the all-runs view, is what keeps a query's
    cost independent of how many runs and epochs the folder holds: DuckDB would otherwise open the
    footer of every file of every run to test ``run = ?`` (``run`` is a column, not a path part).
    """
    root, out = con.runs_dir, []
    for run in runs:
        rd = store_runs.run_dir(root, run).resolve()
        if not rd.is_relative_to(root):  # a symlinked run folder: the sandbox refuses its files
            continue
        if table not in PARTITIONED:
            found = files.flat_files(rd / table)
        elif epochs is None:
            found = files.partitioned_files(rd / table)
        else:
            found = [f for e in epochs for f in files.epoch_files(store_runs.epoch_dir(rd, table, e))]
        out.extend(str(p) for p in found)  # the writer makes plain files, never links
    return out


def _scan(con: StoreConnection, table: str, runs, epochs=None) -> str:
    """A SQL relation over ``table``'s rows of ``runs`` (and ``epochs``) with the view's columns."""
    cols = ", ".join(f'"{f.name}"' for f in table_schema(table))
    paths = _files(con, table, tuple(runs), None if epochs is None else tuple(int(e) for e in epochs))
    if not paths:
        return f"(SELECT {cols} FROM {_empty(con, table)})"
    lst = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"
    hive = "true, hive_types = {'epoch': 'INTEGER'}" if table in PARTITIONED else "false"
    # No union_by_name: the writer casts every file to the one schema, and unioning opens every
    # footer at bind time (3x slower over 1,200 small epoch files here). Columns still match by name.
    return f"(SELECT {cols} FROM read_parquet({lst}, hive_partitioning = {hive}))"


def _empty(con: StoreConnection, table: str) -> str:
    """A typed empty table standing in for a table with no files yet (registering is cheap)."""
    name = f"_dash_empty_{table}"
    con.con.register(name, table_schema(table).empty_table())
    return name


def _df(con: StoreConnection, build: Callable[[], tuple[str, list]]) -> pd.DataFrame:
    """Run the SQL that ``build`` makes; once more with fresh file lists if a live run's chunk was
    compacted away between listing and reading."""
    try:
        sql, params = build()
        return con.con.execute(sql, params).df()
    except duckdb.IOException:
        sql, params = build()
        return con.con.execute(sql, params).df()


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
        # each run's newest summary file: part-NNN.parquet with the highest epoch number
        last_epoch = [max(fs, key=_epoch_of) for r in names if (fs := _files(con, "epochs", (r,), None))]
        lst = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in last_epoch) + "]"
        ep = (f"read_parquet({lst})" if last_epoch else "(SELECT * FROM "
              f"{_empty(con, 'epochs')})")
        return f"""
            WITH ev AS (
                SELECT run, attack, arg_max(accuracy, created_at) AS acc FROM {_scan(con, 'evals', names)}
                WHERE checkpoint = 'last' AND setting = 'white-box' GROUP BY run, attack),
            evp AS (
                SELECT run, max(acc) FILTER (attack = 'clean') AS clean,
                       coalesce(max(acc) FILTER (attack = 'pgd20'), max(acc) FILTER (attack = 'pgd10')) AS robust
                FROM ev GROUP BY run),
            ep AS (SELECT run, epoch + 1 AS epochs_done, heldout_clean_acc AS clean, heldout_pgd_acc AS robust
                   FROM {ep})
            SELECT coalesce(evp.run, ep.run) AS run, coalesce(ep.epochs_done, 0) AS epochs_done,
                   coalesce(evp.clean, ep.clean) AS clean_acc, coalesce(evp.robust, ep.robust) AS robust_acc,
                   CASE WHEN evp.clean IS NOT NULL THEN 'test set, last checkpoint'
                        WHEN ep.clean IS NOT NULL THEN 'held-out, latest epoch' ELSE '' END AS acc_source
            FROM evp FULL JOIN ep USING (run)""", []

    acc = _df(con, build)
    out = recs.merge(acc, on="run", how="left")
    out["epochs_done"] = out["epochs_done"].fillna(0).astype(int)
    out["acc_source"] = out["acc_source"].fillna("")
    return out.sort_values(["created_at", "run"], ascending=[False, True], na_position="last").reset_index(drop=True)


def _epoch_of(path: str) -> int:
    digits = "".join(ch for ch in Path(path).stem if ch.isdigit())
    return int(digits) if digits else -1


_EPOCHS_MEMO: dict[tuple[str, str], tuple[tuple, pd.DataFrame]] = {}


@query
def epochs(con, runs: tuple[str, ...]) -> pd.DataFrame:
    """The per-epoch summary rows (one per run and epoch) of ``runs``.

    A run writes one small file per epoch and never changes it (a resume rewrites it: new mtime),
    so each run's rows are kept until its file list or a file's mtime changes: opening 10 runs x 120
    files costs most of a second, re-listing them a few ms. Runs not kept are read in one query.
    """
    root = str(con.runs_dir)
    sigs = {run: _signature(_files(con, "epochs", (run,), None)) for run in runs}
    stale = [r for r in runs if _EPOCHS_MEMO.get((root, r), (None,))[0] != sigs[r]]
    if stale:
        fresh = _df(con, lambda: (f"SELECT * FROM {_scan(con, 'epochs', stale)} ORDER BY run, epoch", []))
        for run in stale:
            _EPOCHS_MEMO[(root, run)] = (sigs[run], fresh[fresh["run"] == run].reset_index(drop=True))
    frames = [_EPOCHS_MEMO[(root, r)][1] for r in runs]
    if not frames:
        return _df(con, lambda: (f"SELECT * FROM {_empty(con, 'epochs')}", []))
    return pd.concat(frames, ignore_index=True)


def _signature(paths: list[str]) -> tuple:
    out = []
    for p in paths:
        try:
            out.append((p, os.stat(p).st_mtime_ns))
        except FileNotFoundError:  # removed by a resume while we listed: the next call sees it
            out.append((p, -1))
    return tuple(out)


def clear_memo() -> None:
    _EPOCHS_MEMO.clear()
    _STEPS_MEMO.clear()


@query
def example_epochs(con, run: str) -> pd.DataFrame:
    """The epochs of ``run`` that have per-example files (from the file listing: no data is read)."""
    rd = store_runs.run_dir(con.runs_dir, run)
    have = [e for e, d in files.epoch_dirs(rd / "examples") if files.epoch_files(d)]
    return pd.DataFrame({"epoch": pd.Series(have, dtype="int64")})


@query
def events(con, run: str, limit: int = 50) -> pd.DataFrame:
    return _df(con, lambda: (f"SELECT time, epoch, batch, kind, detail FROM {_scan(con, 'events', (run,))} "
                             "ORDER BY time DESC LIMIT ?", [int(limit)]))


# ---- FOSC distributions -----------------------------------------------------------------------------

def _binned(con, runs, epochs, bins: int, aggs: str, keys: str) -> pd.DataFrame:
    """Rows of the chosen partitions in ``bins`` equal FOSC bins over their common range: one query,
    two scans of those files only (the range, then the aggregates ``aggs`` grouped by ``keys``, bin)."""
    def build():
        return f"""
            WITH ex AS (SELECT * FROM {_scan(con, 'examples', runs, epochs)} WHERE isfinite(fosc)),
            g AS (SELECT min(fosc) AS lo, CASE WHEN max(fosc) > min(fosc) THEN (max(fosc) - min(fosc)) / ?
                                               ELSE 1e-6 END AS width FROM ex)
            SELECT {keys}least(floor((fosc - g.lo) / g.width), ? - 1)::INTEGER AS bin, {aggs},
                   any_value(g.lo) AS lo, any_value(g.width) AS width
            FROM ex, g GROUP BY ALL ORDER BY ALL""", [bins, bins]
    return _df(con, build)


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


_STEPS_MEMO: dict[tuple[str, str, int], tuple[tuple, pd.DataFrame]] = {}


@query
def steps_hist(con, run: str) -> pd.DataFrame:
    """How many examples took each number of PGD steps, per epoch (one run, every epoch).

    An epoch's files do not change once it is compacted, so its counts are kept until its file
    signature changes: a live run costs one epoch's scan per refresh, not the whole run's.
    """
    root, rd = str(con.runs_dir), store_runs.run_dir(con.runs_dir, run)
    sigs = {e: _signature([str(f) for f in files.epoch_files(d)]) for e, d in files.epoch_dirs(rd / "examples")}
    stale = [e for e, sig in sigs.items() if _STEPS_MEMO.get((root, run, e), (None,))[0] != sig]
    if stale:
        fresh = _df(con, lambda: (f"SELECT epoch, steps, count(*) AS n FROM {_scan(con, 'examples', (run,), stale)} "
                                  "GROUP BY ALL ORDER BY epoch, steps", []))
        for e in stale:
            _STEPS_MEMO[(root, run, e)] = (sigs[e], fresh[fresh["epoch"] == e])
    frames = [_STEPS_MEMO[(root, run, e)][1] for e in sorted(sigs)]
    if not frames:
        return pd.DataFrame({"epoch": pd.Series(dtype="int32"), "steps": pd.Series(dtype="int16"),
                             "n": pd.Series(dtype="int64")})
    return pd.concat(frames, ignore_index=True)


@query
def trajectories(con, run: str, epoch: int, n_examples: int = 12) -> pd.DataFrame:
    """Fig. 1b: per-step FOSC and loss of ``n_examples`` recorded examples of one epoch."""
    def build():
        src = _scan(con, "steps", (run,), (int(epoch),))
        return f"""
            WITH s AS (SELECT idx, step, fosc, loss, active FROM {src}),
            pick AS (SELECT DISTINCT idx FROM s ORDER BY idx LIMIT ?)
            SELECT * FROM s WHERE idx IN (SELECT idx FROM pick) ORDER BY idx, step""", [int(n_examples)]
    return _df(con, build)


# ---- robustness -------------------------------------------------------------------------------------

@query
def robustness(con, runs: tuple[str, ...] | None, checkpoint: str = "last") -> pd.DataFrame:
    """The paper's Tables 1 and 2: accuracy (%) per run under each attack, white-box then black-box.

    One row per run; columns ``white-box Clean`` .. ``white-box CW-inf``, ``black-box FGSM`` ..
    ``black-box CW-inf`` (only columns with at least one value). Latest evaluation wins.
    """
    recs = run_records(con.runs_dir)
    names = tuple(runs) if runs else tuple(recs["run"])
    long = _df(con, lambda: (f"""
        SELECT run, setting, attack, arg_max(accuracy, created_at) * 100 AS acc
        FROM {_scan(con, 'evals', names)} WHERE checkpoint = ? GROUP BY ALL""", [checkpoint]))
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
    df = _df(con, lambda: (insight.datamap_sql(stats), []))
    df["conf_lo"], df["var_lo"] = df["conf_bin"] / insight.CONF_BINS, df["var_bin"] / (2 * insight.VAR_BINS)
    df["conf_hi"] = df["conf_lo"] + 1 / insight.CONF_BINS
    df["var_hi"] = df["var_lo"] + 1 / (2 * insight.VAR_BINS)
    return df.assign(source=source)


@query
def forgetting(con, run: str, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
    """Examples per forgetting count over epochs lo..hi (forgets -1: never learned)."""
    from store import insight

    stats, source = _insight(con, run, lo, hi)
    return _df(con, lambda: (insight.forgetting_sql(stats), [])).assign(source=source)


@query
def insight_summary(con, run: str, lo: int | None = None, hi: int | None = None) -> pd.DataFrame:
    """One row: examples, never learned, unforgettable, forgetting events, data-map regions."""
    from store import insight

    stats, source = _insight(con, run, lo, hi)
    return _df(con, lambda: (insight.summary_sql(stats), [])).assign(source=source)


@query
def forgetting_per_epoch(con, run: str) -> pd.DataFrame:
    """Per epoch: shares forgotten at it, correct, never learned and unforgettable so far."""
    from store import insight

    sql, source = insight.per_epoch_sql(store_runs.run_dir(con.runs_dir, run))
    return _df(con, lambda: (sql, [])).assign(source=source)


@query
def pick_examples(con, run: str, ranking: str, lo: int | None = None, hi: int | None = None,
                  region: str | None = None, conf_bin: int | None = None, var_bin: int | None = None,
                  limit: int = 24) -> pd.DataFrame:
    """The ``limit`` examples that ``ranking`` (store.insight.RANKINGS) puts first, with their statistics."""
    from store import insight

    stats, _ = _insight(con, run, lo, hi)
    sql, params = insight.pick_sql(stats, ranking, region, conf_bin, var_bin)
    return _df(con, lambda: (sql + " LIMIT ?", [*params, int(limit)]))


@query
def fosc_bin_examples(con, run: str, epoch: int, fosc_lo: float, fosc_hi: float, limit: int = 24) -> pd.DataFrame:
    """Examples of one epoch whose FOSC lies in [fosc_lo, fosc_hi] (a Fig. 1a bin), highest loss first."""
    return _df(con, lambda: (f"""
        SELECT idx, fosc, loss, steps, correct FROM {_scan(con, 'examples', (run,), (int(epoch),))}
        WHERE fosc >= ? AND fosc <= ? ORDER BY loss DESC, idx LIMIT ?""",
                             [float(fosc_lo), float(fosc_hi), int(limit)]))


@query
def example_history(con, run: str, idx: int) -> pd.DataFrame:
    """One example across every epoch of a run: epoch, fosc, loss, steps, correct, p_true, c_t."""
    def build():
        src = _scan(con, "examples", (run,))
        return (f"SELECT epoch, avg(fosc) AS fosc, avg(loss) AS loss, avg(steps) AS steps, "
                f"bool_or(correct) AS correct, avg(p_true) AS p_true, avg(c_t) AS c_t FROM {src} "
                "WHERE idx = ? GROUP BY epoch ORDER BY epoch", [int(idx)])
    return _df(con, build)


@query
def example_steps(con, run: str, idx: int) -> pd.DataFrame:
    """The per-step trajectory of one example in every epoch it was sampled (--trajectory-examples)."""
    return _df(con, lambda: (f"SELECT epoch, step, fosc, loss, active FROM {_scan(con, 'steps', (run,))} "
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
