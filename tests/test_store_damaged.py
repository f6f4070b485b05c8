"""A damaged, foreign or linked-in file of a runs folder affects only itself (issue 14).

Synthetic runs from the store's own writer (no training): each damage below is made to one file of
run ``a``; run ``b`` is the control. Every query still works, the damaged file is left out and named
in ``skipped`` (and on the CLI's stderr), and nothing outside the runs folder is read.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import store
from store import files, runs
from store import sql as store_sql
from store.writer import RunWriter
from store_rows import BATCHES, ROWS, new_run, write_epoch

N_EPOCH = ROWS * BATCHES  # examples rows per epoch


@pytest.fixture()
def folder(tmp_path) -> Path:
    """runs/{a,b}: two epochs each, summaries, an event; outside/: files no query may read."""
    root = tmp_path / "runs"
    for name in ("a", "b"):
        rd = root / name
        new_run(rd)
        runs.write_json(rd / runs.STATUS, {"state": "finished", "epoch": 2})
        runs.write_json(rd / runs.META, {"created_at": "2026-01-01T00:00:00+00:00"})
        w = RunWriter(rd, name, flush_rows=ROWS * 4)
        for e in range(2):
            write_epoch(w, e)
            w.write_epoch_summary({**{f.name: 0.5 for f in pa.schema(store.reader.TABLES["epochs"])},
                                   "epoch": e, "k_max": 10, "n": N_EPOCH})
        w.event("start")
        w.close()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text('{"strategy": "SECRET"}')
    pq.write_table(pa.table({"x": [1, 2, 3]}), outside / "x.parquet")
    return root


def counts(con) -> dict:
    df = con.query_df("SELECT run, count(*) AS n FROM examples GROUP BY run ORDER BY run")
    return dict(zip(df["run"], df["n"]))


def _damage(path: Path, how: str, outside: Path) -> None:
    data = path.read_bytes()
    if how == "zero":
        path.write_bytes(b"")
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "tiny":
        path.write_bytes(data[:5])
    elif how == "foreign":
        pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    elif how == "wrong-types":  # the right names, other types: must not read as NULLs or junk
        t = pq.read_table(path)
        pq.write_table(pa.table({n: pa.array([str(v) for v in t[n].to_pylist()]) for n in t.column_names}), path)
    elif how == "link-out":
        path.unlink()
        os.symlink(outside / "x.parquet", path)


KINDS = {  # a file of run a, by table
    "examples compacted": lambda rd: rd / "examples" / "epoch=000" / "compact-r0.parquet",
    "steps compacted": lambda rd: rd / "steps" / "epoch=001" / "compact-r0.parquet",
    "epochs summary": lambda rd: files.summary_path(rd, 1),
    "event": lambda rd: files.table_files(rd, "events")[0],
}


@pytest.mark.parametrize("how", ["zero", "truncate", "tiny", "foreign", "wrong-types", "link-out"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_one_damaged_parquet_file_is_left_out_and_named(folder, kind, how):
    target = KINDS[kind](folder / "a")
    _damage(target, how, folder.parent / "outside")
    with store.open(folder) as con:
        assert list(con.skipped) == [str(target)]
        reason = con.skipped[str(target)]
        assert reason and "\n" not in reason
        assert ("outside the runs folder" in reason) if how == "link-out" else ("outside" not in reason)
        ex = counts(con)
        assert ex["b"] == 2 * N_EPOCH
        assert ex["a"] == (N_EPOCH if kind == "examples compacted" else 2 * N_EPOCH)
        ep = con.query_df("SELECT run, count(*) AS n, count(fosc_mean) AS v FROM epochs GROUP BY run ORDER BY run")
        assert ep["n"].tolist() == ep["v"].tolist() == [1 if kind == "epochs summary" else 2, 2]  # no NULL rows
        assert con.query_df("SELECT count(*) AS n FROM steps WHERE run = 'b'")["n"].item() == 2 * BATCHES * 4
        assert sorted(con.query_df("SELECT run FROM runs")["run"]) == ["a", "b"]
        assert con.damaged() == {"a": [f"{target.relative_to(folder)}: {reason}"]}


def test_bytes_flipped_inside_a_page_are_found_when_duckdb_does_not_name_the_file(folder):
    target = folder / "a" / "examples" / "epoch=001" / "compact-r0.parquet"
    data = bytearray(target.read_bytes())
    rng = random.Random(3)
    for _ in range(64):
        data[rng.randrange(4, len(data) // 2)] ^= 0xFF  # the data pages; the footer stays readable
    target.write_bytes(bytes(data))
    with store.open(folder) as con:
        got = counts(con)
        full = con.query_df("SELECT run, sum(fosc) AS s, count(*) AS n FROM examples GROUP BY run ORDER BY run")
    assert got["b"] == 2 * N_EPOCH and full["n"].tolist()[1] == 2 * N_EPOCH
    # Either DuckDB read the flipped pages without noticing (then the file is kept) or it failed
    # and the file alone was left out: never an error for the whole query.
    assert full["n"].tolist()[0] in (N_EPOCH, 2 * N_EPOCH)
    if full["n"].tolist()[0] == N_EPOCH:
        assert list(con.skipped) == [str(target)]


@pytest.mark.parametrize("name", [runs.CONFIG, runs.META, runs.STATUS])
@pytest.mark.parametrize("damage", ["not-utf8", "not-json", "link-out", "fifo"])
def test_a_damaged_json_file_is_named_and_affects_only_its_run(folder, name, damage):
    path = folder / "a" / name
    path.unlink()
    if damage == "not-utf8":
        path.write_bytes(b'{"strategy": "caf\xe9"}')
    elif damage == "not-json":
        path.write_text('{"strategy": ')
    elif damage == "link-out":
        os.symlink(folder.parent / "outside" / "secret.json", path)
    else:
        os.mkfifo(path)  # a reader that opened it without care would hang here
    with store.open(folder) as con:
        rows = con.query_df("SELECT run, strategy, state, created_at FROM runs ORDER BY run")
        assert counts(con) == {"a": 2 * N_EPOCH, "b": 2 * N_EPOCH}
        assert list(con.skipped) == [str(path)] and "\n" not in con.skipped[str(path)]
    assert "SECRET" not in rows.to_string()
    b = rows[rows["run"] == "b"].iloc[0]
    assert (b["strategy"], b["state"]) == ("synthetic", "finished")
    if name == runs.CONFIG:
        assert rows["run"].tolist() == ["b"]  # not a readable run any more
    else:
        a = rows[rows["run"] == "a"].iloc[0]
        assert a["strategy"] == "synthetic"
        assert pd.isna(a["state"]) == (name == runs.STATUS) and pd.isna(a["created_at"]) == (name == runs.META)


def test_folders_linked_out_are_not_followed(folder):
    outside = folder.parent / "outside"
    far = outside / "far"
    (far / "epoch=000").mkdir(parents=True)
    pq.write_table(pq.read_table(folder / "b" / "examples" / "epoch=000" / "compact-r0.parquet"),
                   far / "epoch=000" / "compact-r0.parquet")
    os.symlink(far / "epoch=000", folder / "a" / "examples" / "epoch=005")  # an epoch folder linked out
    os.symlink(folder / "b", folder / "b-again")                            # a link inside: fine
    os.symlink(outside, folder / "c")                                       # a run folder linked out
    runs.write_json(outside / runs.CONFIG, {"strategy": "SECRET"})
    with store.open(folder) as con:
        assert counts(con) == {"a": 2 * N_EPOCH, "b": 4 * N_EPOCH}  # b's rows twice: b-again is b
        assert sorted(con.query_df("SELECT run FROM runs")["run"]) == ["a", "b", "b-again"]
        assert sorted(Path(p).name for p in con.skipped) == ["c", "compact-r0.parquet"]


def test_the_cli_names_each_left_out_file_on_stderr_and_still_answers(folder, capsys):
    bad = KINDS["examples compacted"](folder / "a")
    _damage(bad, "zero", folder.parent / "outside")
    (folder / "b" / runs.META).write_bytes(b"\xff\xfe")
    rc = store_sql.main(["--runs-dir", str(folder), "--format", "csv", "SELECT count(*) AS n FROM examples"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.splitlines() == ["n", str(3 * N_EPOCH)]
    lines = sorted(err.splitlines())
    assert len(lines) == 2 and all(line.startswith("warning: left out ") for line in lines)
    assert f"{bad}: empty file" in lines[0] and f"{folder / 'b' / runs.META}: not UTF-8" in lines[1]


def test_damage_after_open_is_caught_at_query_time(folder):
    """A file damaged between the snapshot and the query: DuckDB names it (in any case, 'too small'
    included), the file is left out and the query runs again without it."""
    with store.open(folder) as con:
        target = KINDS["steps compacted"](folder / "a")
        target.write_bytes(b"PAR1")  # 'too small to be a Parquet file'
        n = con.query_df("SELECT count(*) AS n FROM steps")["n"].item()
        assert n == 3 * BATCHES * 4 and list(con.skipped) == [str(target)]
        assert "too small" in con.skipped[str(target)].lower()
