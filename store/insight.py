"""Per-example insight: data maps (Swayamdipta et al. 2020) and forgetting events (Toneva et al. 2019).

Over a run's ``examples`` rows in an epoch range [a, b], per example (``idx``):

- ``confidence``  = mean over epochs of ``p_true`` (the probability of the true class on the input trained
  on), ``variability`` = its population standard deviation; NULL for runs logged before ``p_true``;
- ``correctness`` = share of epochs in which it was ``correct``; ``n_correct`` = their number;
- ``forgets``     = forgetting events: epochs e in (a, b] where it was correct at its previous logged epoch
  and is not at e (a 1 -> 0 transition); "unforgettable": learned (n_correct > 0) and never forgotten;
  "never learned": n_correct = 0;
- ``loss_mean``, ``fosc_mean``, ``steps_mean``: means over epochs (finite values only).

An example logged more than once in an epoch (the trainer logs it once) counts by the mean of its rows
(correct if at least half of them were). Two ways to get the same numbers:

1. ``stats_sql(scan, has_p)``: plain SQL over the rows (window ``lag`` per example), which is what a
   user can run on the ``examples`` view (docs/SCHEMA.md) and the reference the tests check against;
2. the per-epoch prefix aggregates of this module: at the end of each epoch the trainer calls
   ``update(run_dir, epoch)`` (pyarrow and numpy only), which writes ``insight/epoch=NNN/cum.parquet``:
   per example, sums over epochs 0..NNN. A range [a, b] is then ``cum[b] - cum[a-1]`` (forgets:
   ``cum[b] - cum[a]``): three files of one row per example instead of every row of every epoch.
   An aggregate counts only if it is newer than every examples file of its epoch (a resumed epoch
   redoes it); otherwise ``stats_relation`` falls back to the plain SQL. Files are untrusted input:
   a damaged one means the fallback, never a failed page.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store import checked, files, runs
from store.writer import write_parquet_atomic

DIR = "insight"
CUM = "cum.parquet"
PER_EPOCH = "per_epoch.parquet"  # one row per epoch: the shares of per_epoch_sql, written with each cum
# Swayamdipta et al.'s regions, with fixed cut-offs (their Fig. 1 splits at similar places).
AMBIGUOUS_VARIABILITY = 0.2   # variability >= this: ambiguous
EASY_CONFIDENCE = 0.5         # otherwise confidence >= this: easy to learn, below: hard to learn
CONF_BINS, VAR_BINS = 25, 25  # the data map's density grid: confidence [0,1] x variability [0,0.5]

CUM_SCHEMA = pa.schema([
    ("idx", pa.int32()),
    ("n", pa.int32()),            # epochs logged so far
    ("n_correct", pa.int32()),
    ("forgets", pa.int32()),      # forgetting events so far
    ("seen", pa.bool_()),         # logged at this epoch
    ("forgot", pa.bool_()),       # a forgetting event at this epoch
    ("last_correct", pa.bool_()),  # correct at its last logged epoch
    ("n_p", pa.int32()), ("sum_p", pa.float64()), ("sumsq_p", pa.float64()),
    ("n_loss", pa.int32()), ("sum_loss", pa.float64()),
    ("n_fosc", pa.int32()), ("sum_fosc", pa.float64()),
    ("sum_steps", pa.float64()),
])
_SUMS = ("n", "n_correct", "n_p", "sum_p", "sumsq_p", "n_loss", "sum_loss", "n_fosc", "sum_fosc", "sum_steps")
STAT_COLUMNS = ("idx", "epochs", "confidence", "variability", "correctness", "n_correct", "forgets",
                "loss_mean", "fosc_mean", "steps_mean")


def cum_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / DIR / f"epoch={int(epoch):03d}" / CUM


def per_epoch_path(run_dir: Path) -> Path:
    return Path(run_dir) / DIR / PER_EPOCH


PER_EPOCH_SCHEMA = pa.schema([("epoch", pa.int32()), ("forgotten", pa.float64()), ("correct", pa.float64()),
                              ("never_learned", pa.float64()), ("unforgettable", pa.float64())])


# ---- writing: the prefix aggregates (trainer side: pyarrow + numpy only) ---------------------------

def _epoch_rows(run_dir: Path, epoch: int) -> dict[str, np.ndarray] | None:
    """One row per example of the epoch (means of its rows), or None without examples files."""
    paths = files.epoch_files(runs.epoch_dir(run_dir, "examples", epoch))
    if not paths:
        return None
    parts = []
    for p in paths:
        try:
            have = set(pq.read_schema(p).names)
            t = pq.read_table(p, columns=[c for c in ("idx", "correct", "p_true", "loss", "fosc", "steps") if c in have])
        except (OSError, pa.ArrowException):  # a damaged file is left out here, as in every view
            continue
        parts.append({c: (t[c].to_numpy(zero_copy_only=False) if c in have else np.full(t.num_rows, np.nan))
                      for c in ("idx", "correct", "p_true", "loss", "fosc", "steps")})
    if not parts:
        return None
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    idx, inv = np.unique(cols["idx"].astype(np.int64), return_inverse=True)
    rows = np.bincount(inv, minlength=len(idx))

    def mean(v):  # mean of the finite values per example; NaN if none
        v = np.asarray(v, dtype=np.float64)
        ok = np.isfinite(v)
        k = np.bincount(inv, weights=ok, minlength=len(idx))
        s = np.bincount(inv, weights=np.where(ok, v, 0.0), minlength=len(idx))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(k > 0, s / np.maximum(k, 1), np.nan)

    correct = np.bincount(inv, weights=cols["correct"].astype(np.float64), minlength=len(idx)) / rows >= 0.5
    return {"idx": idx, "correct": correct, "p": mean(cols["p_true"]), "loss": mean(cols["loss"]),
            "fosc": mean(cols["fosc"]), "steps": mean(cols["steps"])}


def _empty_cum() -> dict[str, np.ndarray]:
    return {f.name: np.zeros(0, dtype=f.type.to_pandas_dtype()) for f in CUM_SCHEMA}


def _advance(prev: dict[str, np.ndarray], ep: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """cum[e] from cum[e-1] and epoch e's per-example rows (examples may join late or be absent)."""
    idx = np.union1d(prev["idx"], ep["idx"]).astype(np.int64)
    out = {}
    ip, ie = np.searchsorted(idx, prev["idx"]), np.searchsorted(idx, ep["idx"])
    for name in CUM_SCHEMA.names:
        if name != "idx":
            out[name] = np.zeros(len(idx), dtype=CUM_SCHEMA.field(name).type.to_pandas_dtype())
            out[name][ip] = prev[name]
    out["idx"] = idx.astype(np.int32)
    was = np.zeros(len(idx), bool)
    was[ip] = (prev["n"] > 0) & prev["last_correct"]
    now = np.zeros(len(idx), bool)
    now[ie] = ep["correct"]
    seen = np.zeros(len(idx), bool)
    seen[ie] = True
    out["seen"] = seen
    out["forgot"] = seen & was & ~now
    out["forgets"] += out["forgot"]
    out["last_correct"] = np.where(seen, now, out["last_correct"])
    out["n"][ie] += 1
    out["n_correct"][ie] += ep["correct"]
    for key, n_col, s_col in (("p", "n_p", "sum_p"), ("loss", "n_loss", "sum_loss"), ("fosc", "n_fosc", "sum_fosc")):
        ok = np.isfinite(ep[key])
        out[n_col][ie] += ok
        out[s_col][ie] += np.where(ok, ep[key], 0.0)
        if key == "p":
            out["sumsq_p"][ie] += np.where(ok, ep[key] ** 2, 0.0)
    out["sum_steps"][ie] += np.nan_to_num(ep["steps"])
    return out


def _read_cum(path: Path) -> dict[str, np.ndarray]:
    t = pq.read_table(path, schema=CUM_SCHEMA)
    return {c: t[c].to_numpy(zero_copy_only=False) for c in CUM_SCHEMA.names}


def fresh(run_dir: Path, epoch: int, read: bool = True) -> bool:
    """The aggregate of ``epoch`` exists and is newer than every examples file of that epoch (and,
    with ``read``, its footer is ours: an untrusted damaged or foreign file counts as missing)."""
    try:
        mine = cum_path(run_dir, epoch).stat().st_mtime_ns
        src = [p.stat().st_mtime_ns for p in files.epoch_files(runs.epoch_dir(run_dir, "examples", epoch))]
    except OSError:
        return False
    if not src or mine < max(src):
        return False
    try:
        return not read or pq.read_schema(cum_path(run_dir, epoch)).equals(CUM_SCHEMA)
    except (OSError, pa.ArrowException):
        return False


def _chain_fresh(run_dir: Path, epochs: list[int], ends: list[int]) -> bool:
    """Every aggregate up to the range's end is newer than its rows (stat calls only); the ones a
    query reads are also ours (one footer each)."""
    return all(fresh(run_dir, e, read=False) for e in epochs) and all(fresh(run_dir, e) for e in ends)


def update(run_dir: str | Path, epoch: int) -> Path | None:
    """Write cum[epoch] (after the epoch's rows are compacted); rebuilds any missing or stale earlier
    ones first. Returns its path, or None if the epoch has no rows. Cost: one epoch's rows per epoch."""
    run_dir = Path(run_dir)
    logged = [e for e, d in files.epoch_dirs(run_dir / "examples") if e <= epoch and files.epoch_files(d)]
    # each aggregate builds on the one before: redo from the first missing or stale one
    start = next((i for i, e in enumerate(logged) if not fresh(run_dir, e, read=False)), len(logged))
    if start == len(logged):
        return cum_path(run_dir, logged[-1]) if logged else None
    prev = _empty_cum()
    if start > 0:
        try:
            prev = _read_cum(cum_path(run_dir, logged[start - 1]))
        except (OSError, pa.ArrowException):
            return _rebuild(run_dir, logged)
    out = None
    for e in logged[start:]:
        prev, out = _write_step(run_dir, e, prev)
    return out


def _rebuild(run_dir: Path, logged: list[int]) -> Path | None:
    prev, out = _empty_cum(), None
    for e in logged:
        prev, out = _write_step(run_dir, e, prev)
    return out


def _write_step(run_dir: Path, epoch: int, prev: dict) -> tuple[dict, Path]:
    ep = _epoch_rows(run_dir, epoch)
    cur = _advance(prev, ep) if ep is not None else prev
    path = cum_path(run_dir, epoch)
    table = pa.Table.from_pydict({c: cur[c] for c in CUM_SCHEMA.names}, schema=CUM_SCHEMA)
    write_parquet_atomic(table, path)  # the store's one atomic writer (temp file, fsync, rename)
    _write_per_epoch(run_dir, epoch, cur)
    return cur, path


def _write_per_epoch(run_dir: Path, epoch: int, cur: dict) -> None:
    """Replace epoch's row (and drop later ones, which build on it) in the per-epoch shares file."""
    seen = cur["seen"]
    k = max(int(seen.sum()), 1)
    row = {"epoch": epoch, "forgotten": float(cur["forgot"][seen].sum()) / k,
           "correct": float(cur["last_correct"][seen].sum()) / k,
           "never_learned": float((cur["n_correct"][seen] == 0).sum()) / k,
           "unforgettable": float(((cur["n_correct"] > 0) & (cur["forgets"] == 0))[seen].sum()) / k}
    old = _read_per_epoch(run_dir)
    rows = [r for r in (old or []) if r["epoch"] < epoch] + [row]
    write_parquet_atomic(pa.Table.from_pylist(rows, schema=PER_EPOCH_SCHEMA), per_epoch_path(run_dir))


def _read_per_epoch(run_dir: Path) -> list[dict] | None:
    try:
        t = pq.read_table(per_epoch_path(run_dir))
    except (OSError, pa.ArrowException):
        return None
    return t.to_pylist() if t.schema.equals(PER_EPOCH_SCHEMA) else None


# ---- reading: SQL ----------------------------------------------------------------------------------

def _lst(paths) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


def stats_sql(scan: str, has_p: bool = True) -> str:
    """Per-example statistics (STAT_COLUMNS) over the rows of relation ``scan`` (columns idx, epoch,
    correct, loss, fosc, steps and, if ``has_p``, p_true): the plain SQL definition."""
    p = "avg(p_true) FILTER (isfinite(p_true))" if has_p else "CAST(NULL AS DOUBLE)"
    return f"""
        WITH pe AS (
            SELECT idx, epoch, avg(correct::INTEGER) >= 0.5 AS correct, {p} AS p,
                   avg(loss) FILTER (isfinite(loss)) AS loss, avg(fosc) FILTER (isfinite(fosc)) AS fosc,
                   avg(steps) AS steps
            FROM {scan} GROUP BY idx, epoch),
        seq AS (SELECT *, lag(correct) OVER (PARTITION BY idx ORDER BY epoch) AS prev FROM pe)
        SELECT idx, count(*) AS epochs, avg(p) AS confidence, stddev_pop(p) AS variability,
               avg(correct::INTEGER) AS correctness, sum(correct::INTEGER) AS n_correct,
               count(*) FILTER (prev AND NOT correct) AS forgets,
               avg(loss) AS loss_mean, avg(fosc) AS fosc_mean, avg(steps) AS steps_mean
        FROM seq GROUP BY idx"""


def _cum_sql(b: Path, a_forgets: Path | None, a_sums: Path | None) -> str:
    """STAT_COLUMNS from prefix aggregates: cum[b] minus cum[a-1] (sums) and cum[a] (forgets). From the
    first logged epoch on, both are absent (nothing before it; no event at it): one file, no join."""
    joins, d = [], {c: f"b.{c}" for c in _SUMS}
    if a_sums is not None:
        joins.append(f"LEFT JOIN read_parquet({_lst([a_sums])}) s USING (idx)")
        d = {c: f"(b.{c} - coalesce(s.{c}, 0))" for c in _SUMS}
    forgets = "b.forgets"
    if a_forgets is not None:
        joins.append(f"LEFT JOIN (SELECT idx, forgets FROM read_parquet({_lst([a_forgets])})) f USING (idx)")
        forgets = "(b.forgets - coalesce(f.forgets, 0))"
    conf = f"{d['sum_p']} / nullif({d['n_p']}, 0)"
    # greatest() skips NULLs: without p_true the variability must stay NULL, not become 0
    var = f"CASE WHEN {d['n_p']} > 0 THEN sqrt(greatest({d['sumsq_p']} / {d['n_p']} - ({conf}) ^ 2, 0)) END"
    return f"""
        SELECT b.idx, {d['n']}::BIGINT AS epochs, {conf} AS confidence, {var} AS variability,
               {d['n_correct']} / {d['n']} AS correctness, {d['n_correct']}::BIGINT AS n_correct,
               {forgets}::BIGINT AS forgets, {d['sum_loss']} / nullif({d['n_loss']}, 0) AS loss_mean,
               {d['sum_fosc']} / nullif({d['n_fosc']}, 0) AS fosc_mean, {d['sum_steps']} / {d['n']} AS steps_mean
        FROM read_parquet({_lst([b])}) b {' '.join(joins)}
        WHERE {d['n']} > 0"""


def logged_epochs(run_dir: Path) -> list[int]:
    return [e for e, d in files.epoch_dirs(Path(run_dir) / "examples") if files.epoch_files(d)]


def _raw_scan(run_dir: Path, epochs: list[int]) -> tuple[str, bool]:
    """(a relation over the run's examples rows of ``epochs``, whether p_true is logged). Only files
    the store's file check passes are read (a damaged, foreign or linked-out file is left out, as the
    views leave it out), so one bad file costs its rows, not the page."""
    check = checked.FileCheck(Path(run_dir).parent)
    paths = [real for e in epochs for p in files.epoch_files(runs.epoch_dir(run_dir, "examples", e))
             if (real := check.check("examples", p)[0]) is not None]
    if not paths:
        return ("(SELECT NULL::INTEGER AS idx, NULL::INTEGER AS epoch, NULL::BOOLEAN AS correct, "
                "NULL::FLOAT AS loss, NULL::FLOAT AS fosc, NULL::SMALLINT AS steps WHERE false)"), False
    try:
        has_p = "p_true" in pq.read_schema(paths[-1]).names
    except (OSError, pa.ArrowException):
        has_p = False
    cols = "idx, epoch, correct, loss, fosc, steps" + (", p_true" if has_p else "")
    src = f"read_parquet({_lst(paths)}, hive_partitioning = true, hive_types = {{'epoch': 'INTEGER'}}, union_by_name = true)"
    return f"(SELECT {cols} FROM {src})", has_p


def stats_relation(run_dir: str | Path, lo: int | None = None, hi: int | None = None,
                   use_aggregates: bool = True) -> tuple[str, str]:
    """(SQL of the per-example statistics of one run over logged epochs lo..hi, 'aggregates' or 'rows').

    With fresh prefix aggregates for the range's ends, the SQL reads three small files; otherwise it
    scans the rows (a live epoch, a run logged before aggregates existed, a damaged file)."""
    run_dir = Path(run_dir).resolve()
    have = logged_epochs(run_dir)
    chosen = [e for e in have if (lo is None or e >= lo) and (hi is None or e <= hi)]
    a, b = (chosen[0], chosen[-1]) if chosen else (None, None)
    before = [e for e in have if a is not None and e < a]
    if use_aggregates and chosen and _chain_fresh(run_dir, [e for e in have if e <= b], [b, a, *before[-1:]]):
        # sums: cum[b] - cum[a-1]; forgets: events at epochs in (a, b], so cum[b] - cum[a]
        return _cum_sql(cum_path(run_dir, b), cum_path(run_dir, a) if before else None,
                        cum_path(run_dir, before[-1]) if before else None), "aggregates"
    scan, has_p = _raw_scan(run_dir, chosen)
    return stats_sql(scan, has_p), "rows"


def region_sql(conf: str = "confidence", var: str = "variability") -> str:
    """The data-map region of an example (NULL without p_true)."""
    return (f"CASE WHEN {conf} IS NULL THEN NULL WHEN {var} >= {AMBIGUOUS_VARIABILITY} THEN 'ambiguous' "
            f"WHEN {conf} >= {EASY_CONFIDENCE} THEN 'easy' ELSE 'hard' END")


def datamap_sql(stats: str) -> str:
    """The data map as a density grid: one row per non-empty (confidence bin, variability bin)."""
    return f"""
        SELECT least(floor(confidence * {CONF_BINS}), {CONF_BINS - 1})::INTEGER AS conf_bin,
               least(floor(variability * 2 * {VAR_BINS}), {VAR_BINS - 1})::INTEGER AS var_bin,
               count(*) AS n, avg(correctness) AS correctness, avg(forgets) AS forgets_mean
        FROM ({stats}) WHERE confidence IS NOT NULL GROUP BY ALL ORDER BY ALL"""


def forgetting_sql(stats: str) -> str:
    """How many examples were forgotten 0, 1, 2, ... times; never-learned ones apart (forgets = -1)."""
    return f"""
        SELECT CASE WHEN n_correct = 0 THEN -1 ELSE forgets END AS forgets, count(*) AS n
        FROM ({stats}) GROUP BY ALL ORDER BY ALL"""


def summary_sql(stats: str) -> str:
    return f"""
        SELECT count(*) AS n, count(*) FILTER (n_correct = 0) AS never_learned,
               count(*) FILTER (n_correct > 0 AND forgets = 0) AS unforgettable,
               sum(forgets) AS forgetting_events, avg(confidence) AS confidence_mean,
               count(*) FILTER ({region_sql()} = 'easy') AS easy,
               count(*) FILTER ({region_sql()} = 'ambiguous') AS ambiguous,
               count(*) FILTER ({region_sql()} = 'hard') AS hard
        FROM ({stats})"""


def overlap_sql(stats_a: str, stats_b: str) -> str:
    """Do two runs forget the same examples? One row over the examples both logged: forgetting events
    and examples forgotten at least once per run, how many were forgotten by both / only one, the
    Jaccard index of the two forgotten sets and of the never-learned sets, and the correlation of the
    per-example forgetting counts. (Same data order and seed make the comparison per example fair.)"""
    return f"""
        WITH j AS (SELECT a.forgets AS fa, b.forgets AS fb, a.n_correct AS ca, b.n_correct AS cb
                   FROM ({stats_a}) a JOIN ({stats_b}) b USING (idx))
        SELECT count(*) AS n, sum(fa) AS events_a, sum(fb) AS events_b,
               count(*) FILTER (fa > 0) AS forgotten_a, count(*) FILTER (fb > 0) AS forgotten_b,
               count(*) FILTER (fa > 0 AND fb > 0) AS forgotten_both,
               count(*) FILTER (fa > 0 AND fb = 0) AS forgotten_only_a,
               count(*) FILTER (fa = 0 AND fb > 0) AS forgotten_only_b,
               count(*) FILTER (fa > 0 AND fb > 0) / nullif(count(*) FILTER (fa > 0 OR fb > 0), 0) AS jaccard_forgotten,
               count(*) FILTER (ca = 0) AS never_learned_a, count(*) FILTER (cb = 0) AS never_learned_b,
               count(*) FILTER (ca = 0 AND cb = 0) / nullif(count(*) FILTER (ca = 0 OR cb = 0), 0)
                   AS jaccard_never_learned,
               corr(fa, fb) AS corr_forgets
        FROM j"""


def per_epoch_sql(run_dir: str | Path) -> tuple[str, str]:
    """Per logged epoch: share of examples forgotten at it, correct at it, never learned so far and
    unforgettable so far (from epoch 0). (SQL, 'aggregates' or 'rows')."""
    run_dir = Path(run_dir).resolve()
    have = logged_epochs(run_dir)
    if have and _chain_fresh(run_dir, have, []):
        rows = _read_per_epoch(run_dir)
        try:
            newer = per_epoch_path(run_dir).stat().st_mtime_ns >= cum_path(run_dir, have[-1]).stat().st_mtime_ns
        except OSError:
            newer = False
        if rows is not None and newer and [r["epoch"] for r in rows] == have:
            cols = ", ".join(f.name for f in PER_EPOCH_SCHEMA)
            return f"SELECT {cols} FROM read_parquet({_lst([per_epoch_path(run_dir)])}) ORDER BY epoch", "aggregates"
    scan, _ = _raw_scan(run_dir, have)
    return per_epoch_rows_sql(scan), "rows"


def per_epoch_rows_sql(scan: str) -> str:
    """per_epoch_sql's numbers from the rows (the plain definition)."""
    return f"""
        WITH pe AS (SELECT idx, epoch, avg(correct::INTEGER) >= 0.5 AS correct FROM {scan} GROUP BY idx, epoch),
        seq AS (SELECT *, lag(correct) OVER w AS prev,
                       sum(correct::INTEGER) OVER (w ROWS UNBOUNDED PRECEDING) AS n_correct,
                       count(*) FILTER (lag_c AND NOT correct) OVER (w ROWS UNBOUNDED PRECEDING) AS forgets
                FROM (SELECT *, lag(correct) OVER (PARTITION BY idx ORDER BY epoch) AS lag_c FROM pe)
                WINDOW w AS (PARTITION BY idx ORDER BY epoch))
        SELECT epoch, avg((coalesce(prev, false) AND NOT correct)::INTEGER) AS forgotten,
               avg(correct::INTEGER) AS correct, avg((n_correct = 0)::INTEGER) AS never_learned,
               avg((n_correct > 0 AND forgets = 0)::INTEGER) AS unforgettable
        FROM seq GROUP BY epoch ORDER BY epoch"""


# ---- picking examples --------------------------------------------------------------------------------

# name -> (which examples, in what order): the Examples page's choices; fixed SQL, never user text.
RANKINGS = {
    "hardest": ("true", "loss_mean DESC NULLS LAST"),
    "never learned": ("n_correct = 0", "loss_mean DESC NULLS LAST"),
    "most forgotten": ("forgets > 0", "forgets DESC, loss_mean DESC NULLS LAST"),
    "slowest to converge": ("true", "steps_mean DESC, fosc_mean DESC NULLS LAST"),
    "least confident": ("confidence IS NOT NULL", "confidence ASC"),
    "most ambiguous": ("variability IS NOT NULL", "variability DESC"),
}
REGIONS = ("easy", "ambiguous", "hard")


def pick_sql(stats: str, ranking: str, region: str | None = None, conf_bin: int | None = None,
             var_bin: int | None = None) -> tuple[str, list]:
    """(SQL, params) of the examples ``ranking`` puts first, optionally inside a data-map region or
    one density bin; the caller appends LIMIT. Unknown names raise ValueError."""
    if ranking not in RANKINGS or (region is not None and region not in REGIONS):
        raise ValueError(f"unknown ranking {ranking!r} or region {region!r}")
    where, order = RANKINGS[ranking]
    conds, params = [where], []
    if region is not None:
        conds.append(f"{region_sql()} = ?")
        params.append(region)
    if conf_bin is not None and var_bin is not None:
        conds.append(f"least(floor(confidence * {CONF_BINS}), {CONF_BINS - 1}) = ? AND "
                     f"least(floor(variability * 2 * {VAR_BINS}), {VAR_BINS - 1}) = ?")
        params += [int(conf_bin), int(var_bin)]
    return (f"SELECT *, {region_sql()} AS region FROM ({stats}) WHERE {' AND '.join(conds)} "
            f"ORDER BY {order}, idx"), params


# ---- regenerated adversarial examples (written by python -m trainer.regenerate) -----------------------

REGEN_DIR = "regenerated"
REGEN_KEYS = ("idx", "label", "clean", "adversarial", "pred_clean", "pred_adv", "fosc", "loss", "steps", "p_true",
              "eps", "epoch", "attack", "seed")


def regen_path(run_dir: Path, checkpoint: str, idx: int) -> Path:
    if checkpoint not in ("last", "best"):
        raise ValueError(f"checkpoint must be last or best, not {checkpoint!r}")
    return Path(run_dir) / DIR / REGEN_DIR / f"{checkpoint}-{int(idx)}.npz"


def write_regenerated(run_dir: Path, checkpoint: str, rec: dict) -> Path:
    """One example's regenerated record (REGEN_KEYS) as an npz, atomically."""
    path = regen_path(run_dir, checkpoint, rec["idx"])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a name
            np.savez(f, **{k: np.asarray(rec[k]) for k in REGEN_KEYS})
    runs.atomic_write(path, write)
    return path


def read_regenerated(run_dir: Path, checkpoint: str, idx: int) -> dict | None:
    """The record, or None when absent or not one of ours (untrusted file: no pickles, checked shape)."""
    path = regen_path(run_dir, checkpoint, idx)
    try:
        with np.load(path, allow_pickle=False) as z:
            rec = {k: z[k] for k in REGEN_KEYS}
    except (OSError, ValueError, KeyError, EOFError):
        return None
    if rec["clean"].ndim != 3 or rec["adversarial"].shape != rec["clean"].shape:
        return None
    out = {k: v.item() for k, v in rec.items() if v.ndim == 0}
    out.update(clean=rec["clean"].astype(np.uint8), adversarial=rec["adversarial"].astype(np.float32))
    return out
