"""docs/SCHEMA.md says what is true: its tables match store/schema.py, the Parquet files of a real
run and the types of the DuckDB views."""
from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import store
from store import files, runs
from store.reader import RUNS_COLUMNS, VIEWS
from store.schema import PARTITIONED, TABLES, duckdb_type, table_schema

DOC = Path(__file__).resolve().parent.parent / "docs" / "SCHEMA.md"
RUN = "tiny-dynamic"


def doc_tables() -> dict[str, list[tuple[str, str, str, str]]]:
    """'### name' sections of '## Tables' -> rows (column, DuckDB type, Parquet type, meaning)."""
    text = DOC.read_text().split("\n## Tables", 1)[1]
    out = {}
    for section in re.split(r"^### ", text, flags=re.M)[1:]:
        name, body = section.split("\n", 1)
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in body.splitlines() if line.startswith("|")]
        assert rows[0] == ["column", "DuckDB type", "Parquet type", "meaning"] and set(rows[1][0]) <= set("-:")
        out[name.strip()] = [tuple(r) for r in rows[2:]]
    return out


def expected(name: str) -> list[tuple[str, str, str]]:
    """(column, DuckDB type, Parquet type) as the code defines them."""
    if name == "runs":
        return [(f.name, duckdb_type(f.type), "-") for f in RUNS_COLUMNS]
    stored = {f.name for f in TABLES[name]}
    return [(f.name, duckdb_type(f.type), str(f.type) if f.name in stored else "-") for f in table_schema(name)]


def test_every_view_has_a_section_and_nothing_else():
    assert list(doc_tables()) == list(VIEWS)


@pytest.mark.parametrize("name", VIEWS)
def test_doc_matches_the_code(name):
    rows = doc_tables()[name]
    assert [r[:3] for r in rows] == expected(name)
    assert all(len(r[3]) > 5 for r in rows), "every column has a meaning"


@pytest.mark.parametrize("name", list(TABLES))
def test_doc_matches_real_parquet_files(tiny_runs, name):
    rd = tiny_runs / RUN
    found = files.partitioned_files(rd / name) if name in PARTITIONED else files.flat_files(rd / name)
    assert found, f"the tiny run wrote no {name} files"
    documented = [(c, p) for c, _, p, _ in doc_tables()[name] if p != "-"]
    for path in found:
        schema = pq.read_schema(path)
        assert [(f.name, str(f.type)) for f in schema] == documented, path
    if name in PARTITIONED:  # compacted at the epoch's end, chunks gone
        assert all(p.name.startswith("compact-r") for p in found)


def test_doc_matches_the_duckdb_views(tiny_runs):
    tables = doc_tables()
    with store.open(tiny_runs) as con:
        for name in VIEWS:
            described = con.execute(f"DESCRIBE {name}").fetchall()
            assert [(c, t) for c, t, *_ in described] == [r[:2] for r in tables[name]], name
            assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] > 0, name


def test_layout_names_the_files_the_store_writes(tiny_runs):
    text = DOC.read_text()
    for fname in (runs.CONFIG, runs.META, runs.STATUS, runs.CONTROL, runs.JOB, runs.LOG, runs.CHECKPOINTS):
        assert fname in text
    assert files.chunk_name(0, 12) == "part-r0-000012.parquet" and "part-r<rank>-<seq>.parquet" in text
    assert files.compact_name(0) in text.replace("<rank>", "0")
    rd = tiny_runs / RUN
    for f in (runs.CONFIG, runs.META, runs.STATUS, "checkpoints/last.pt", "epochs/part-000.parquet",
              "examples/epoch=000/compact-r0.parquet", "steps/epoch=001/compact-r0.parquet"):
        assert (rd / f).is_file(), f
