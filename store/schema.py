"""Every table's columns and types, in one place.

The writer casts to these schemas, the reader builds its views from them, and
``docs/SCHEMA.md`` documents them (a test checks the page against this module and real files).
"""
from __future__ import annotations

import pyarrow as pa

# Tables that live as Parquet under a run folder. ``epoch`` of the partitioned tables comes from
# the hive path (``epoch=NNN``), not from the file, so Spark and DuckDB both read it as a partition.
PARTITIONED = ("examples", "steps")

EXAMPLES = pa.schema([
    ("run", pa.string()),
    ("rank", pa.int16()),
    ("batch", pa.int32()),
    ("idx", pa.int32()),
    ("fosc", pa.float32()),
    ("loss", pa.float32()),
    ("steps", pa.int16()),
    ("correct", pa.bool_()),
    ("c_t", pa.float32()),
    # Added later (issues 13, 16): runs logged before them read these as NULL (see NEWER_COLUMNS).
    ("fosc_box", pa.float32()),
    ("grad_l1", pa.float32()),
    ("p_true", pa.float32()),
])

STEPS = pa.schema([
    ("run", pa.string()),
    ("rank", pa.int16()),
    ("batch", pa.int32()),
    ("idx", pa.int32()),
    ("step", pa.int16()),
    ("fosc", pa.float32()),
    ("loss", pa.float32()),
    ("active", pa.bool_()),
    ("fosc_box", pa.float32()),
    ("grad_l1", pa.float32()),
])

EPOCHS = pa.schema([
    ("run", pa.string()),
    ("epoch", pa.int32()),
    ("lr", pa.float64()),
    ("c_t", pa.float64()),
    ("c_max", pa.float64()),
    ("t_prime", pa.float64()),
    ("k_max", pa.int32()),
    ("n", pa.int64()),
    ("fosc_mean", pa.float64()),
    ("fosc_q10", pa.float64()),
    ("fosc_q50", pa.float64()),
    ("fosc_q90", pa.float64()),
    ("below_ct", pa.float64()),
    ("steps_mean", pa.float64()),
    ("loss_mean", pa.float64()),
    ("train_adv_acc", pa.float64()),
    ("heldout_clean_acc", pa.float64()),
    ("heldout_pgd_acc", pa.float64()),
    ("wall_s", pa.float64()),
    ("examples_per_s", pa.float64()),
])

EVALS = pa.schema([
    ("run", pa.string()),
    ("checkpoint", pa.string()),
    ("setting", pa.string()),
    ("attack", pa.string()),
    ("surrogate", pa.string()),
    ("eps", pa.float64()),
    ("steps", pa.int32()),
    ("accuracy", pa.float64()),
    ("n", pa.int64()),
    ("created_at", pa.timestamp("us", tz="UTC")),
    # Added later (issue 13): which test examples, finished or not, flags, AutoAttack's stages.
    ("subset", pa.string()),      # 'all' or 'stratified seed S: N of M' (indices in evals/subsets/)
    ("partial", pa.bool_()),      # true while (or if killed while) the evaluation runs: not a result
    ("flags", pa.string()),       # comma-separated store.evals flags, '' when none
    ("zero_grad", pa.float64()),  # share of examples whose input gradient is exactly 0
    ("masked", pa.float64()),     # share whose FOSC ~ 0 because ||g||_1 ~ 0
    ("stages", pa.string()),      # AutoAttack: robust share after clean and each member, 'clean=0.93,...'
])

EVENTS = pa.schema([
    ("run", pa.string()),
    ("time", pa.timestamp("us", tz="UTC")),
    ("epoch", pa.int32()),
    ("batch", pa.int32()),
    ("kind", pa.string()),
    ("detail", pa.string()),
])

TABLES: dict[str, pa.Schema] = {
    "examples": EXAMPLES,
    "steps": STEPS,
    "epochs": EPOCHS,
    "evals": EVALS,
    "events": EVENTS,
}

# Columns added after runs had been logged without them: a reader selects NULL for them from older files.
NEWER_COLUMNS: dict[str, tuple[str, ...]] = {
    "examples": ("fosc_box", "grad_l1", "p_true"),
    "steps": ("fosc_box", "grad_l1"),
    "evals": ("subset", "partial", "flags", "zero_grad", "masked", "stages"),
}

# What the reader adds to the partitioned tables from the path.
PARTITION_COLUMNS = {"epoch": pa.int32()}


def table_schema(name: str) -> pa.Schema:
    """The schema of table ``name`` as readers see it (partition columns included)."""
    schema = TABLES[name]
    if name in PARTITIONED:
        schema = schema.insert(1, pa.field("epoch", PARTITION_COLUMNS["epoch"]))
    return schema


# How DuckDB types each Arrow type of these schemas when it reads the Parquet files.
_DUCKDB_TYPES = {
    pa.string(): "VARCHAR", pa.bool_(): "BOOLEAN", pa.int16(): "SMALLINT", pa.int32(): "INTEGER",
    pa.int64(): "BIGINT", pa.float32(): "FLOAT", pa.float64(): "DOUBLE",
    pa.timestamp("us", tz="UTC"): "TIMESTAMP WITH TIME ZONE",
}


def duckdb_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):  # e.g. the runs view's tags
        return duckdb_type(t.value_type) + "[]"
    return _DUCKDB_TYPES[t]
