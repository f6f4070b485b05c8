"""The writer: atomic hidden temp files, compaction, and failures that reach the trainer with a path."""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import store
from store import runs
from store.schema import EPOCHS
from store.writer import ROW_GROUP_SIZE, RunWriter, WriterError
from store_rows import BATCHES, ROWS, examples, new_run, write_epoch


def fails_soon(writer: RunWriter, epoch: int = 0) -> WriterError:
    """Keep logging as a trainer would until the writer's failure reaches this thread."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            writer.log("examples", epoch, examples(epoch, 0))
        except WriterError as e:
            return e
        time.sleep(0.01)
    raise AssertionError("the writer's failure never reached the trainer")


def test_a_file_where_a_folder_belongs_fails_the_next_call_with_the_path(tmp_path):
    run_dir = tmp_path / "r"
    new_run(run_dir)
    (run_dir / "examples").write_text("not a folder")
    w = RunWriter(run_dir, "r", flush_rows=ROWS)
    e = fails_soon(w)
    assert str(run_dir / "examples" / "epoch=000") in str(e) and str(e).startswith("cannot write ")
    with pytest.raises(WriterError):  # and every call after it
        w.end_epoch(0)
    with pytest.raises(WriterError):
        w.close()


def test_disk_full_during_compaction_fails_end_epoch_with_the_path(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    new_run(run_dir)
    w = RunWriter(run_dir, "r")
    for b in range(3):
        w.log("examples", 0, examples(0, b))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(WriterError) as e:
        w.end_epoch(0)
    target = runs.epoch_dir(run_dir, "examples", 0) / "compact-r0.parquet"
    assert f"cannot write {target}: No space left on device" == str(e.value)
    assert not list(run_dir.rglob("*.tmp"))  # the failed temp file is gone too
    with pytest.raises(WriterError, match="No space left"):
        w.log("examples", 1, examples(1, 0))


def test_summary_and_event_failures_name_the_path(tmp_path):
    run_dir = tmp_path / "r"
    new_run(run_dir)
    (run_dir / "epochs").write_text("")
    (run_dir / "events").write_text("")
    w = RunWriter(run_dir, "r")
    with pytest.raises(WriterError, match=r"cannot write .*/r/epochs/part-003\.parquet"):
        w.write_epoch_summary({"epoch": 3, **{f.name: 0 for f in EPOCHS if f.name not in ("run", "epoch")}})
    with pytest.raises(WriterError, match=r"cannot write .*/r/events/"):
        w.event("start")
    w.close()


def test_temp_files_are_hidden_and_renamed_into_place(tmp_path, monkeypatch):
    run_dir = tmp_path / "r"
    new_run(run_dir)
    written = []
    real = pq.write_table

    def spy(table, where, **kwargs):
        written.append(Path(where))
        return real(table, where, **kwargs)
    monkeypatch.setattr(pq, "write_table", spy)
    w = RunWriter(run_dir, "r", flush_rows=2 * ROWS)
    write_epoch(w, 0)
    w.close()
    assert written and all(p.name.startswith(".") and p.name.endswith(".tmp") for p in written)
    d = runs.epoch_dir(run_dir, "examples", 0)
    assert sorted(p.name for p in d.iterdir()) == ["compact-r0.parquet"]  # chunks compacted, then gone
    meta = pq.ParquetFile(d / "compact-r0.parquet").metadata
    assert meta.num_rows == ROWS * BATCHES and meta.num_row_groups == 1 and ROWS * BATCHES <= ROW_GROUP_SIZE


def test_rows_logged_for_an_epoch_after_its_end_are_not_hidden(tmp_path):
    """A chunk next to a compacted file would be invisible (the compacted file wins): late rows
    are merged into the compacted file instead, and ending an epoch twice keeps its rows."""
    run_dir = tmp_path / "r"
    new_run(run_dir)
    w = RunWriter(run_dir, "r", flush_rows=ROWS)
    write_epoch(w, 0)
    w.log("examples", 0, examples(0, BATCHES))  # a straggler of epoch 0, flushed at once
    w.end_epoch(1)
    query = "SELECT count(*) n, count(DISTINCT idx) u FROM examples WHERE epoch = 0"
    with store.open(tmp_path) as con:
        assert con.query_df(query).iloc[0].tolist() == [ROWS * (BATCHES + 1)] * 2
        w.end_epoch(0)
        w.close()
        con.refresh()
        assert con.query_df(query).iloc[0].tolist() == [ROWS * (BATCHES + 1)] * 2
    assert sorted(p.name for p in runs.epoch_dir(run_dir, "examples", 0).iterdir()) == ["compact-r0.parquet"]


def test_scalars_fill_their_column(tmp_path):
    run_dir = tmp_path / "r"
    new_run(run_dir)
    w = RunWriter(run_dir, "r")
    cols = examples(0, 0)
    assert cols["c_t"].ndim == 0
    w.log("examples", 0, cols)
    w.end_epoch(0)
    w.close()
    with store.open(tmp_path) as con:
        assert con.query_df("SELECT DISTINCT c_t FROM examples")["c_t"].tolist() == [0.5]


def test_flush_puts_every_logged_row_on_disk_as_chunks(tmp_path):
    run_dir = tmp_path / "r"
    new_run(run_dir)
    w = RunWriter(run_dir, "r")  # defaults: nothing would be written for 10 s
    for b in range(3):
        w.log("examples", 0, examples(0, b))
    w.flush()
    d = runs.epoch_dir(run_dir, "examples", 0)
    assert [p.name for p in d.iterdir()] == ["part-r0-000000.parquet"]
    assert pq.ParquetFile(d / "part-r0-000000.parquet").metadata.num_rows == 3 * ROWS
    w.end_epoch(0)
    w.close()
    assert [p.name for p in d.iterdir()] == ["compact-r0.parquet"]


def test_every_file_kind_is_fsynced_before_and_after_its_rename(tmp_path, monkeypatch):
    """Power loss must not leave a zero-byte chunk, event, summary or compacted file: each temp file
    is fsynced before its rename, and its folder after it."""
    synced = []
    real_fsync = os.fsync

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    run_dir = tmp_path / "r"
    new_run(run_dir)
    w = RunWriter(run_dir, "r", flush_rows=ROWS)
    w.log("examples", 0, examples(0, 0))
    w.flush()
    w.event("start")
    w.end_epoch(0)
    w.close()
    names = [Path(p).name for p in synced]
    for kind in ("part-r0-", "compact-r0.parquet", "-r0-"):  # chunk, compacted file, event
        temp = [n for n in names if n.startswith(".") and n.endswith(".tmp") and kind in n]
        assert temp, (kind, names)
    assert str(run_dir / "examples" / "epoch=000") in synced and str(run_dir / "events") in synced
    assert {Path(p).name for p in synced if not p.endswith(".tmp")} >= {"epoch=000", "events"}
