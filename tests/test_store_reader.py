"""store.open on folders that are not (yet) what a finished run leaves: empty, hand-edited, mid-write."""
from __future__ import annotations

import store
from store import runs
from store.reader import VIEWS
from store.schema import duckdb_type, table_schema
from store.writer import RunWriter
from store_rows import ROWS, examples, new_run


def test_an_empty_runs_folder_has_typed_empty_views(tmp_path):
    with store.open(tmp_path) as con:
        for name in VIEWS:
            assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == 0
        described = [(c, t) for c, t, *_ in con.execute("DESCRIBE examples").fetchall()]
        assert described == [(f.name, duckdb_type(f.type)) for f in table_schema("examples")]
        assert con.execute("SHOW TABLES").fetchall() == [(n,) for n in sorted(["_runs", *VIEWS])]


def test_a_broken_config_gives_nulls_not_a_broken_store(tmp_path):
    runs.write_json(tmp_path / "a" / runs.CONFIG, {"eps": "big", "epochs": 3, "strategy": 7})
    runs.write_json(tmp_path / "b" / runs.CONFIG, [1, 2])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / runs.CONFIG).write_text("{not json")
    with store.open(tmp_path) as con:
        df = con.query_df("SELECT run, strategy, eps, epochs, state FROM runs ORDER BY run")
    assert df["run"].tolist() == ["a", "b"]  # c's config cannot be read at all
    assert df["strategy"].isna().all() and df["eps"].isna().all() and df["epochs"].tolist()[0] == 3
    assert df["state"].tolist() == ["created", "created"]


def test_refresh_shows_new_rows_and_open_chunks(tmp_path):
    new_run(tmp_path / "r")
    w = RunWriter(tmp_path / "r", "r", flush_rows=ROWS)
    with store.open(tmp_path) as con:
        w.log("examples", 0, examples(0, 0))
        w.log("examples", 0, examples(0, 1))
        w.end_epoch(0)
        assert con.query_df("SELECT count(*) AS n FROM examples")["n"][0] == 0  # the snapshot of open()
        con.refresh()
        assert con.query_df("SELECT count(*) AS n FROM examples")["n"][0] == 2 * ROWS
        w.log("examples", 1, examples(1, 0))  # flushed as a chunk of the epoch in progress
        w.close()
        con.refresh()
        assert con.query_df("SELECT epoch, count(*) AS n FROM examples GROUP BY epoch ORDER BY epoch"
                            ).values.tolist() == [[0, 2 * ROWS], [1, ROWS]]
