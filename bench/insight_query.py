"""Times one run's data map and forgetting counts (store.insight) against a plain full scan of its rows.

Generates runs in the store's real layout (one ``compact-r0.parquet`` per epoch, every column of
``store.schema``, with a p_true / correct history per example that learns, forgets and relearns), builds
the per-epoch prefix aggregates the way the trainer does at each epoch's end (``insight.update``), then
times, through ``store.open`` with 2 DuckDB threads:

- the plain full scan: every row of the run, ``idx, epoch, correct, p_true`` read and counted;
- the plain SQL definition (``insight.stats_sql``: a window per example over every row) -> data map;
- the dashboard's queries (``dashboard.queries``), which read the prefix aggregates.

    python bench/insight_query.py                  # 2 runs x 120 epochs x 5,000 examples (quick)
    python bench/insight_query.py --full           # 10 runs x 120 epochs x 50,000 examples (the goal)
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import store  # noqa: E402
from store import files, insight  # noqa: E402
from store import runs as store_runs  # noqa: E402
from store.schema import TABLES  # noqa: E402
from store.writer import write_parquet_atomic  # noqa: E402

from dashboard import queries  # noqa: E402


def _epoch(rng, run: str, epoch: int, n_epochs: int, difficulty: np.ndarray) -> pa.Table:
    n = len(difficulty)
    # p_true climbs as training goes on, later for harder examples, with noise: some are forgotten.
    logit = 8 * (epoch / n_epochs - difficulty) + rng.normal(0, 1.5, n)
    p = 1 / (1 + np.exp(-logit))
    fosc = rng.gamma(2.0, 0.1 * (1 - 0.8 * epoch / n_epochs), n)
    base = {"run": np.full(n, run), "rank": np.zeros(n, np.int16), "batch": (np.arange(n) // 128).astype(np.int32),
            "idx": rng.permutation(n).astype(np.int32), "fosc": fosc, "loss": -np.log(np.maximum(p, 1e-6)),
            "steps": np.clip(np.round(fosc * 20), 1, 10).astype(np.int16), "correct": p > 0.5,
            "c_t": np.full(n, 0.5 * max(1 - epoch / 100, 0)), "p_true": p, "fosc_box": fosc, "grad_l1": fosc * 10}
    order = base["idx"]  # the rows of an epoch come in the shuffled order the trainer trains them in
    cols = {k: (v if k in ("run", "rank", "batch", "idx", "c_t") else v[order]) for k, v in base.items()}
    return pa.Table.from_pydict({f.name: pa.array(cols[f.name], f.type) for f in TABLES["examples"]},
                                schema=TABLES["examples"])


def generate(root: Path, n_runs: int, n_epochs: int, n_rows: int, seed: int = 0, aggregated: int = 1) -> float:
    """Writes the runs (the first ``aggregated`` with their prefix aggregates, as the trainer writes them;
    the others only fill the folder, since a query lists the files of its own run only); returns the
    median seconds of one ``insight.update`` (one epoch's aggregate)."""
    rng = np.random.default_rng(seed)
    update_s = []
    for r in range(n_runs):
        name = f"bench-{r:02d}"
        rd = root / name
        store_runs.write_json(rd / store_runs.CONFIG, {"strategy": "standard", "dataset": "cifar10", "model": "cnn8",
                                                      "eps": 8 / 255, "epochs": n_epochs}, fsync=False)
        store_runs.write_json(rd / store_runs.STATUS, {"state": "finished", "epoch": n_epochs}, fsync=False)
        difficulty = rng.random(n_rows)
        for e in range(n_epochs):
            write_parquet_atomic(_epoch(rng, name, e, n_epochs, difficulty),
                                 store_runs.epoch_dir(rd, "examples", e) / files.compact_name(0))
            if r < aggregated:
                t0 = time.perf_counter()
                insight.update(rd, e)
                update_s.append(time.perf_counter() - t0)
    return statistics.median(update_s)


def _time(fn, repeat: int) -> float:
    fn()  # warm the OS file cache, as a dashboard open a while would have it
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--rows", type=int, default=5000, help="examples per epoch per run")
    p.add_argument("--full", action="store_true", help="10 runs x 120 epochs x 50,000 examples")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--aggregated", type=int, default=1, help="runs given prefix aggregates (bench-00 is timed)")
    p.add_argument("--runs-dir", type=Path, help="generate here and keep it, reused next time (default: a temp "
                                                 "folder, removed)")
    a = p.parse_args(argv)
    if a.full:
        a.runs, a.epochs, a.rows = 10, 120, 50_000
    root = a.runs_dir or Path(tempfile.mkdtemp(prefix="fosc-insight-"))
    marker, shape = root / ".bench.json", {"runs": a.runs, "epochs": a.epochs, "rows": a.rows, "agg": a.aggregated}
    try:
        if marker.is_file() and json.loads(marker.read_text()) == shape:
            print(f"reusing {root} ({shape})")
        else:
            shutil.rmtree(root, ignore_errors=True)
            t0 = time.perf_counter()
            upd = generate(root, a.runs, a.epochs, a.rows, aggregated=a.aggregated)
            marker.write_text(json.dumps(shape))
            print(f"generated {a.runs} runs x {a.epochs} epochs x {a.rows:,} examples in "
                  f"{time.perf_counter() - t0:.0f} s; insight.update (one epoch's aggregate, at the epoch's "
                  f"end): median {upd:.3f} s")
        con = store.open(root, threads=a.threads)
        run, rd = "bench-00", root / "bench-00"
        scan, _ = insight._raw_scan(rd.resolve(), insight.logged_epochs(rd))
        plain = lambda: con.query_df(f"SELECT count(*), count(DISTINCT idx), avg(correct::INT), avg(p_true) FROM {scan}")
        rows_stats, _ = insight.stats_relation(rd, use_aggregates=False)
        mid = (a.epochs // 4, 3 * a.epochs // 4)
        cases = [
            ("plain full scan of the run's rows (count, distinct idx, means)", plain),
            ("data map, plain SQL over the rows (window per example)",
             lambda: con.query_df(insight.datamap_sql(rows_stats))),
            ("data map (dashboard: prefix aggregates), all epochs", lambda: queries.datamap(con, run)),
            (f"data map, epochs {mid[0]}..{mid[1]}", lambda: queries.datamap(con, run, *mid)),
            ("forgetting counts + summary, all epochs",
             lambda: (queries.forgetting(con, run), queries.insight_summary(con, run))),
            ("forgetting share per epoch (every epoch)", lambda: queries.forgetting_per_epoch(con, run)),
            ("24 most forgotten examples", lambda: queries.pick_examples(con, run, "most forgotten")),
        ]
        print(f"\n{a.runs} runs x {a.epochs} epochs x {a.rows:,} examples, DuckDB threads={a.threads}, "
              f"median of {a.repeat}\n")
        print("| query | seconds | plain full scan / query |")
        print("| --- | --- | --- |")
        base = None
        for label, fn in cases:
            t = _time(fn, a.repeat)
            base = base or t
            print(f"| {label} | {t:.3f} | {base / t:.1f}x |")
        con.close()
    finally:
        if a.runs_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
