"""FOSC Lab store: the contract between the trainer and everything that reads its results.

A runs directory holds one folder per run (see :mod:`store.runs`); per-example logs are
hive-partitioned Parquet (see :mod:`store.schema`). ``store.open(runs_dir)`` returns a DuckDB
connection with the views ``runs``, ``examples``, ``steps``, ``epochs``, ``evals``, ``events``.
"""
from store.runs import default_runs_dir

__all__ = ["open", "default_runs_dir"]


def __getattr__(name):
    # DuckDB loads on first use of store.open, so the trainer runs where only pyarrow is installed (the GPU machine).
    if name == "open":
        from store.reader import open_store

        return open_store
    raise AttributeError(f"module 'store' has no attribute {name!r}")
