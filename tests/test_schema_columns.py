"""Columns added to a table later: runs logged before them still read, with NULL in the new columns."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

import store
from store import files, runs
from store.schema import NEWER_COLUMNS, TABLES
from store.writer import to_arrow


def _write_examples(runs_dir, name: str, epochs: int, drop: tuple[str, ...]) -> None:
    (runs_dir / name).mkdir(parents=True)
    runs.write_json(runs_dir / name / runs.CONFIG, {"strategy": "standard"})
    n = 4
    for epoch in range(epochs):
        cols = {f.name: np.zeros(n, dtype=np.float32) for f in TABLES["examples"] if f.name != "run"}
        cols.update(rank=np.zeros(n, np.int16), batch=np.zeros(n, np.int32), idx=np.arange(n, dtype=np.int32),
                    steps=np.ones(n, np.int16), correct=np.ones(n, bool), p_true=np.full(n, 0.25, np.float32))
        tbl = to_arrow("examples", name, cols)
        tbl = tbl.drop_columns(list(drop)) if epoch == 0 else tbl  # a resumed old run: old epoch 0, new epoch 1
        d = runs.epoch_dir(runs_dir / name, "examples", epoch)
        d.mkdir(parents=True)
        pq.write_table(tbl, d / files.compact_name(0))


def test_runs_logged_before_the_new_columns_read_them_as_null(tmp_path):
    _write_examples(tmp_path, "new", 2, ())
    _write_examples(tmp_path, "old", 2, NEWER_COLUMNS["examples"])
    with store.open(tmp_path) as con:
        df = con.query_df("SELECT run, epoch, count(*) AS n, count(p_true) AS with_p, max(p_true) AS p "
                          "FROM examples GROUP BY run, epoch ORDER BY run, epoch")
    assert df["n"].tolist() == [4, 4, 4, 4]
    assert df["with_p"].tolist() == [4, 4, 0, 4]  # new/0, new/1, old/0 (NULL), old/1
    assert df["p"].dropna().tolist() == [0.25, 0.25, 0.25]


def test_a_folder_of_old_runs_only_still_has_every_column(tmp_path):
    _write_examples(tmp_path, "old", 1, NEWER_COLUMNS["examples"])
    with store.open(tmp_path) as con:
        df = con.query_df("SELECT fosc, fosc_box, grad_l1, p_true FROM examples")
    assert len(df) == 4 and df[["fosc_box", "grad_l1", "p_true"]].isna().all().all() and (df["fosc"] == 0).all()
