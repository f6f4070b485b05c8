"""Times every dashboard query at scale against a plain reference measured in the same run.

Generates synthetic runs in the store's real layout (one compacted ``compact-r0.parquet`` per epoch
per run for ``examples``, plus ``steps``, ``epochs``, ``evals`` and the run's JSON files, all written
through ``store.writer``), then times each function of ``dashboard.queries`` (uncached, through
``store.open``) against the reference: the same aggregate computed in pandas over the raw rows that
the query reads, pulled out of DuckDB. Prints seconds and the ratio reference / query.

    python bench/store_query.py                       # 10 runs x 120 epochs x 2,000 rows (~1 min)
    python bench/store_query.py --full                # 10 runs x 120 epochs x 50,000 rows (60M rows)
    python bench/store_query.py --threads 2 --runs-dir /tmp/fosc-bench --keep
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
import pandas as pd
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import store  # noqa: E402
from store import evals as store_evals  # noqa: E402
from store import files  # noqa: E402
from store import runs as store_runs  # noqa: E402
from store.schema import TABLES  # noqa: E402
from store.writer import write_parquet_atomic  # noqa: E402

from dashboard import queries  # noqa: E402

K = 10


def _examples(rng: np.random.Generator, run: str, epoch: int, n: int, n_epochs: int) -> pa.Table:
    # FOSC shrinks as training goes on, as in the paper's Fig. 2; steps follow FOSC roughly.
    scale = 0.4 * (1.0 - 0.8 * epoch / max(n_epochs - 1, 1))
    fosc = rng.gamma(2.0, scale / 2.0, n).astype(np.float32)
    cols = {
        "run": pa.array(np.full(n, run)), "rank": np.zeros(n, np.int16),
        "batch": (np.arange(n) // 128).astype(np.int32), "idx": rng.permutation(n).astype(np.int32),
        "fosc": fosc, "loss": (fosc * 3 + rng.normal(0, 0.1, n)).astype(np.float32),
        "steps": np.clip(np.round(fosc * 20), 1, K).astype(np.int16),
        "correct": rng.random(n) > fosc, "c_t": np.full(n, 0.5 * max(1 - epoch / 100, 0), np.float32),
        "fosc_box": (fosc * 0.9).astype(np.float32), "grad_l1": rng.gamma(2.0, 1.0, n).astype(np.float32),
        "p_true": rng.random(n).astype(np.float32),
    }
    return pa.Table.from_pydict(cols, schema=TABLES["examples"])


def _steps(rng: np.random.Generator, run: str, n_examples: int) -> pa.Table:
    idx = np.repeat(np.arange(n_examples), K + 1).astype(np.int32)
    step = np.tile(np.arange(K + 1), n_examples).astype(np.int16)
    fosc = (0.5 * np.exp(-step / 3.0) + rng.random(len(idx)) * 0.02).astype(np.float32)
    cols = {"run": pa.array(np.full(len(idx), run)), "rank": np.zeros(len(idx), np.int16),
            "batch": np.zeros(len(idx), np.int32), "idx": idx, "step": step, "fosc": fosc,
            "loss": (2.5 - fosc).astype(np.float32), "active": np.ones(len(idx), bool),
            "fosc_box": (fosc * 0.9).astype(np.float32), "grad_l1": np.ones(len(idx), np.float32)}
    return pa.Table.from_pydict(cols, schema=TABLES["steps"])


def _epoch_row(run: str, epoch: int, ex: pa.Table) -> pa.Table:
    f = ex.column("fosc").to_numpy()
    row = {"run": run, "epoch": epoch, "lr": 0.01, "c_t": max(0.5 - epoch * 0.5 / 100, 0.0), "c_max": 0.5,
           "t_prime": 100.0, "k_max": K, "n": len(f), "fosc_mean": float(f.mean()),
           "fosc_q10": float(np.quantile(f, 0.1)), "fosc_q50": float(np.median(f)),
           "fosc_q90": float(np.quantile(f, 0.9)), "below_ct": 0.5, "steps_mean": 5.0, "loss_mean": 1.0,
           "train_adv_acc": 0.5, "heldout_clean_acc": 0.9, "heldout_pgd_acc": 0.5, "wall_s": 60.0,
           "examples_per_s": 1000.0}
    return pa.Table.from_pylist([row], schema=TABLES["epochs"])


def _evals(run: str) -> pa.Table:
    rows = [{"run": run, "checkpoint": c, "setting": "white-box", "attack": store_evals.ATTACKS[a].value,
             "surrogate": "", "eps": 8 / 255,
             "steps": s, "accuracy": acc, "n": 10000, "created_at": pd.Timestamp.now(tz="UTC")}
            for c in ("last", "best") for a, s, acc in
            (("clean", 0, 0.8), ("fgsm", 1, 0.5), ("pgd10", 10, 0.45), ("pgd20", 20, 0.44), ("cw", 30, 0.43))]
    return pa.Table.from_pylist(rows, schema=TABLES["evals"])


def generate(root: Path, n_runs: int, n_epochs: int, n_rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for r in range(n_runs):
        name = f"bench-{r:02d}"
        rd = root / name
        store_runs.write_json(rd / store_runs.CONFIG, {"strategy": "dynamic", "dataset": "cifar10",
                                                      "model": "cnn8", "eps": 8 / 255, "epochs": n_epochs},
                              fsync=False)
        store_runs.write_json(rd / store_runs.STATUS, {"state": "finished", "epoch": n_epochs}, fsync=False)
        for e in range(n_epochs):
            ex = _examples(rng, name, e, n_rows, n_epochs)
            write_parquet_atomic(ex, store_runs.epoch_dir(rd, "examples", e) / files.compact_name(0), fsync=False)
            write_parquet_atomic(_steps(rng, name, 64), store_runs.epoch_dir(rd, "steps", e) / files.compact_name(0),
                                 fsync=False)
            write_parquet_atomic(_epoch_row(name, e, ex), files.summary_path(rd, e), fsync=False)
        write_parquet_atomic(_evals(name), files.eval_path(rd, "last", "white-box", "all"), fsync=False)


# ---- the plain references: the same numbers from raw rows in pandas ---------------------------------

def _raw(con, sql: str, params: list) -> pd.DataFrame:
    return con.query_df(sql, params)


def ref_fosc_hist(con, run, epochs, bins):
    df = _raw(con, f"SELECT epoch, fosc FROM examples WHERE run = ? AND epoch IN ({','.join('?' * len(epochs))})",
              [run, *epochs])
    lo, hi = df["fosc"].min(), df["fosc"].max()
    edges = np.linspace(lo, hi, bins + 1)
    return {e: np.histogram(g["fosc"], edges)[0] for e, g in df.groupby("epoch")}


def view_hist(con, run, epochs, bins):
    """fosc_hist's SQL over the store's all-runs view instead of the listed partitions."""
    where = f"run = ? AND epoch IN ({','.join('?' * len(epochs))})"
    return con.query_df(f"""
        WITH ex AS (SELECT * FROM examples WHERE {where}),
        g AS (SELECT min(fosc) AS lo, (max(fosc) - min(fosc)) / {bins} AS width FROM ex)
        SELECT epoch, least(floor((fosc - g.lo) / g.width), {bins} - 1)::INTEGER AS bin, count(*) AS count
        FROM ex, g GROUP BY ALL""", [run, *epochs])


def ref_fosc_bins(con, run, epoch, bins):
    df = _raw(con, "SELECT fosc, loss, correct FROM examples WHERE run = ? AND epoch = ?", [run, epoch])
    df["bin"] = pd.cut(df["fosc"], bins, labels=False)
    return df.groupby("bin").agg(n=("fosc", "size"), acc=("correct", "mean"), loss=("loss", "mean"))


def ref_steps_hist(con, run):
    df = _raw(con, "SELECT epoch, steps FROM examples WHERE run = ?", [run])
    return df.groupby(["epoch", "steps"]).size()


def ref_compare_hist(con, runs, epoch, bins):
    ph = ",".join("?" * len(runs))
    df = _raw(con, f"SELECT run, fosc FROM examples WHERE run IN ({ph}) AND epoch = ?", [*runs, epoch])
    edges = np.linspace(df["fosc"].min(), df["fosc"].max(), bins + 1)
    return {r: np.histogram(g["fosc"], edges)[0] for r, g in df.groupby("run")}


def ref_all_runs_mean(con):
    df = _raw(con, "SELECT run, epoch, fosc, steps, correct FROM examples", [])
    return df.groupby(["run", "epoch"]).mean()


def run_page(con, run, epochs, last):
    queries.runs_overview(con), queries.example_epochs(con, run), queries.epochs(con, (run,))
    queries.density(queries.fosc_hist(con, (run,), epochs)), queries.steps_hist(con, run)
    queries.fosc_bins(con, run, last), queries.trajectories(con, run, last), queries.events(con, run)


def compare_page(con, runs, epochs):
    queries.runs_overview(con), queries.density(queries.fosc_hist(con, runs, epochs))
    queries.epochs(con, runs), queries.robustness(con, runs)


def _time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--rows", type=int, default=2000, help="examples per epoch per run")
    p.add_argument("--full", action="store_true", help="10 runs x 120 epochs x 50,000 rows (60M rows)")
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads (the budget is for 2 cores)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--runs-dir", type=Path, help="where to generate (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the generated folder (and reuse it next time)")
    p.add_argument("--skip-reference", action="store_true", help="time only the dashboard queries")
    a = p.parse_args(argv)
    if a.full:
        a.runs, a.epochs, a.rows = 10, 120, 50_000
    root = a.runs_dir or Path(tempfile.mkdtemp(prefix="fosc-bench-"))
    marker = root / ".bench.json"
    shape = {"runs": a.runs, "epochs": a.epochs, "rows": a.rows}
    if not (marker.is_file() and json.loads(marker.read_text()) == shape):
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.perf_counter()
        generate(root, a.runs, a.epochs, a.rows)
        marker.write_text(json.dumps(shape))
        print(f"generated {a.runs * a.epochs * a.rows:,} example rows in {time.perf_counter() - t0:.1f} s -> {root}")
    try:
        t0 = time.perf_counter()
        con = store.open(root, threads=a.threads)
        print(f"store.open (snapshot of {a.runs * a.epochs * 3} files, views): {time.perf_counter() - t0:.3f} s")
        run, last = "bench-00", a.epochs - 1
        every = tuple(f"bench-{r:02d}" for r in range(a.runs))
        chosen = tuple(sorted({0, a.epochs // 4, a.epochs // 2, last}))
        cases = [
            ("runs_overview (every run, latest accuracies)", lambda: queries.runs_overview(con), None),
            ("epochs (per-epoch summaries, 1 run)", lambda: queries.epochs(con, (run,)), None),
            ("epochs (per-epoch summaries, every run)", lambda: queries.epochs(con, every), None),
            ("epochs through load, files unchanged (st.cache_data hit, folder signature)",
             lambda: queries.load(root, queries.epochs, every), None),
            (f"fosc_hist (1 run, {len(chosen)} epochs, 400 bins) + binned KDE",
             lambda: queries.density(queries.fosc_hist(con, (run,), chosen)),
             lambda: ref_fosc_hist(con, run, chosen, 400)),
            (f"  the same counts through the all-runs view (WHERE run = ? AND epoch IN ...)",
             lambda: view_hist(con, run, chosen, 400), None),
            ("fosc_bins (Fig. 1a, 1 run, 1 epoch, 20 bins)", lambda: queries.fosc_bins(con, run, last),
             lambda: ref_fosc_bins(con, run, last, 20)),
            ("steps_hist (PGD steps per epoch, 1 run, all epochs)", lambda: queries.steps_hist(con, run),
             lambda: ref_steps_hist(con, run)),
            ("  the same counts through the all-runs view (WHERE run = ?)",
             lambda: con.query_df("SELECT epoch, steps, count(*) FROM examples WHERE run = ? GROUP BY ALL", [run]),
             None),
            ("trajectories (Fig. 1b, 1 run, 1 epoch)", lambda: queries.trajectories(con, run, last), None),
            (f"compare fosc_hist ({a.runs} runs, 1 epoch)",
             lambda: queries.fosc_hist(con, every, (last,)), lambda: ref_compare_hist(con, every, last, 400)),
            ("robustness table (every run)", lambda: queries.robustness(con, None), None),
            ("Run page: every query it makes, uncached", lambda: run_page(con, run, chosen, last), None),
            ("Compare page: 4 runs, 3 epochs, uncached",
             lambda: compare_page(con, every[:4], (0, a.epochs // 2, last)), None),
            ("mean FOSC/steps/acc per epoch, ALL rows (not a dashboard query)",
             lambda: con.query_df("SELECT run, epoch, avg(fosc), avg(steps), avg(correct::INT) FROM examples "
                                  "GROUP BY ALL"),
             # pulling every row into pandas needs ~10 GB at full scale: reference only for small sizes
             (lambda: ref_all_runs_mean(con)) if a.runs * a.epochs * a.rows <= 10_000_000 else None),
        ]
        print(f"\n{a.runs} runs x {a.epochs} epochs x {a.rows:,} rows, DuckDB threads={a.threads}, "
              f"median of {a.repeat}\n")
        print(f"| query | seconds | reference (pandas over raw rows) s | ratio |")
        print("| --- | --- | --- | --- |")
        for label, fn, ref in cases:
            fn()  # warm the OS file cache, as a dashboard that has been open a while would be
            t = _time(fn, a.repeat)
            if ref is None or a.skip_reference:
                print(f"| {label} | {t:.3f} | - | - |")
                continue
            tr = _time(ref, 1)
            print(f"| {label} | {t:.3f} | {tr:.3f} | {tr / t:.1f}x |")
        con.close()
    finally:
        if not a.keep and a.runs_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
