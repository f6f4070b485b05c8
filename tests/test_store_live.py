"""A second process reads while a writer appends: it never fails, never sees a row twice or a
partial file, and its counts only grow. A raw ``read_parquet(glob)`` never hits a partial file
either (it can see a chunk and its compacted file at once, which is why readers use store.open)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from store.writer import RunWriter
from store_rows import BATCHES, ROWS, examples, new_run, write_epoch

ROOT = Path(__file__).resolve().parent.parent

READER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import duckdb
    import store

    runs_dir, stop, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    con = store.open(runs_dir)
    raw = duckdb.connect()
    glob = f"{runs_dir.resolve()}/*/examples/*/*.parquet"
    seen, raw_errors, raw_reads = [], [], 0
    print("ready", flush=True)
    while True:
        last = stop.exists()  # one more read after the writer has finished
        con.refresh()
        n, d = con.query_df("SELECT count(*) AS n, count(DISTINCT (epoch, idx)) AS d FROM examples").iloc[0]
        seen.append([int(n), int(d)])
        try:
            raw.execute(f"SELECT count(*) FROM read_parquet('{glob}')").fetchone()
            raw_reads += 1
        except duckdb.Error as e:
            raw_errors.append([type(e).__name__, str(e).splitlines()[0]])
        if last:
            break
    out.write_text(json.dumps({"seen": seen, "raw_errors": raw_errors, "raw_reads": raw_reads}))
""")


def test_reader_process_during_live_writes(tmp_path):
    runs_dir = tmp_path / "runs"
    run_dir = runs_dir / "live"
    new_run(run_dir)
    stop, out = tmp_path / "stop", tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reader = subprocess.Popen([sys.executable, "-c", READER, str(runs_dir), str(stop), str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert reader.stdout.readline().strip() == "ready"
        writer = RunWriter(run_dir, "live", flush_rows=500, flush_seconds=0.2)
        epochs, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 4.0 or epochs < 3:
            write_epoch(writer, epochs, pause=0.02)  # chunks during the epoch, compaction at its end
            epochs += 1
        writer.close()
        stop.touch()
        _, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert reader.returncode == 0, err  # store.open never raised
    result = json.loads(out.read_text())
    counts = [n for n, _ in result["seen"]]
    assert len(counts) >= 5, "the reader should have read several times while the writer wrote"
    assert all(n == d for n, d in result["seen"])                    # never a row twice
    assert all(n % ROWS == 0 for n in counts)                         # whole files: whole batches
    assert all(a <= b for a, b in zip(counts, counts[1:]))            # counts only grow
    assert len(set(counts)) >= 3 and counts[-1] == epochs * BATCHES * ROWS  # saw it grow, then all of it
    # A raw glob may find a chunk gone (compacted away) between listing and reading; what it must
    # never meet is a partial file (DuckDB calls that InvalidInput: "too small", "no magic bytes").
    assert all(kind == "IOException" for kind, _ in result["raw_errors"]), result["raw_errors"]
    assert result["raw_reads"] > 0


def test_a_listing_taken_before_compaction_is_taken_again(tmp_path, monkeypatch):
    """The race behind a shrinking count, made deterministic: the reader lists an epoch's chunks, the
    writer compacts them away, then the reader checks its (stale) names. It must list again and
    read the compacted file, not silently leave the epoch out."""
    import store
    from store import files

    runs_dir = tmp_path / "runs"
    run_dir = runs_dir / "live"
    new_run(run_dir)
    writer = RunWriter(run_dir, "live", flush_rows=ROWS, flush_seconds=0.0)
    for b in range(BATCHES):
        writer.log("examples", 0, examples(0, b))
    writer.flush()
    stale = files.table_files(run_dir, "examples")
    assert stale and all(files.chunk_seq(f) >= 0 for f in stale)  # chunks only, before compaction
    writer.end_epoch(0)
    writer.close()
    assert not any(f.exists() for f in stale)  # compacted away

    real_listing, calls = files.table_files, []

    def listing(rd, table, epochs=None):
        calls.append(table)
        if table == "examples" and calls.count("examples") == 1:
            return list(stale)
        return real_listing(rd, table, epochs)

    monkeypatch.setattr(files, "table_files", listing)
    with store.open(runs_dir) as con:
        n = con.query_df("SELECT count(*) AS n FROM examples").n.iloc[0]
    assert n == BATCHES * ROWS  # the stale names alone gave 0 rows: the epoch had dropped out
    assert calls.count("examples") >= 2
