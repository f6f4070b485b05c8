"""SQL: read-only queries over every run's tables (the views of store.open), a table and a quick chart."""
import duckdb
import pandas as pd
import streamlit as st

from dashboard import charts, queries, ui
from store import runs as store_runs
from store import sql as store_sql
from store.reader import RUNS_COLUMNS
from store.schema import TABLES, table_schema

RD = ui.runs_dir()
SHOWN = 10_000  # rows the chart draws; aggregate in SQL for more
PAGE = 1_000    # rows per page of the table: a 43k-row result shows at once, paged
SCHEMA = {"runs": [f.name for f in RUNS_COLUMNS],
          **{t: [f.name for f in table_schema(t)] for t in TABLES}}  # from store.schema, as the views

EXAMPLES = {
    "FOSC per epoch": "SELECT run, epoch, fosc_q10, fosc_q50, fosc_q90, c_t, steps_mean\nFROM epochs\n"
                      "ORDER BY run, epoch",
    "Robustness (last checkpoint)": "SELECT run, setting, attack, round(100 * accuracy, 2) AS acc\nFROM evals\n"
                                    "WHERE checkpoint = 'last'\nORDER BY run, setting, attack",
    "PGD steps taken": "SELECT run, epoch, steps, count(*) AS n\nFROM examples\nGROUP BY ALL\nORDER BY ALL",
    "Accuracy by FOSC decile (last epoch)": (
        "WITH last AS (SELECT run, max(epoch) AS epoch FROM examples GROUP BY run)\n"
        "SELECT run, ntile(10) OVER (PARTITION BY run ORDER BY fosc) AS decile,\n"
        "       fosc, correct::INT AS correct\nFROM examples JOIN last USING (run, epoch)"),
    "Control changes and stops": "SELECT run, time, epoch, batch, kind, detail\nFROM events\nORDER BY time DESC",
    "Runs": "SELECT run, strategy, dataset, model, state, epoch, epochs FROM runs",
}
EXAMPLES["Accuracy by FOSC decile (last epoch)"] = (
    "WITH d AS (\n" + EXAMPLES["Accuracy by FOSC decile (last epoch)"] + "\n)\n"
    "SELECT run, decile, avg(fosc) AS fosc, avg(correct) AS accuracy FROM d GROUP BY ALL ORDER BY ALL")

st.title("SQL")
st.caption("Read-only DuckDB over the runs folder. Views: `runs`, `examples` (one row per example per "
           "batch), `steps` (per PGD step of recorded examples), `epochs`, `evals`, `events`; the "
           "schema is in docs/SCHEMA.md. The same queries run in a shell: `python -m store.sql \"...\"`.")


def use_example():
    st.session_state["sql_text"] = EXAMPLES[st.session_state["sql_example"]]


st.selectbox("Example", list(EXAMPLES), key="sql_example", on_change=use_example)
if "sql_text" not in st.session_state:
    use_example()


def run_sql() -> None:
    """Run the query in the box (the Run button, or Ctrl+Enter in the box: Streamlit applies a text
    area's value on Ctrl+Enter, which calls this)."""
    try:
        with queries.connection(RD) as con:
            con.refresh()  # the views follow the folder: new runs, new epochs
            # Bounded: interrupted after SQL_TIMEOUT_S, at most SQL_ROWS rows fetched, on a cursor
            # of its own (another session's page never waits for this query).
            result = store_sql.run_query(con, st.session_state["sql_text"], timeout_s=queries.SQL_TIMEOUT_S,
                                         max_rows=queries.SQL_ROWS)
            st.session_state["sql_result"] = result
            st.session_state["sql_cut"] = bool(result is not None and result.attrs.get("truncated"))
            st.session_state["sql_skipped"] = sorted(con.skipped.items())
        st.session_state.pop("sql_error", None)
        st.session_state["sql_page"] = 1
    except (store_sql.QueryRefused, store_runs.StoreError, duckdb.Error) as e:
        st.session_state["sql_error"] = store_sql.one_line(e)
        st.session_state.pop("sql_result", None)


with st.expander("Schema: views and columns"):
    st.markdown(" ".join(f"**{v}** ({', '.join(f'`{c}`' for c in cols)})." for v, cols in SCHEMA.items()))
text = st.text_area("Query", key="sql_text", height=160, on_change=run_sql, help="Ctrl+Enter runs it")
st.button("Run", key="sql_run", type="primary", on_click=run_sql)

if "sql_error" in st.session_state:
    st.error(st.session_state["sql_error"])
for path, why in st.session_state.get("sql_skipped", [])[:5]:
    st.warning(f"Left out of the views: {path}: {why}")
if st.session_state.get("sql_cut") and "sql_result" in st.session_state:
    st.info(f"Only the first {queries.SQL_ROWS:,} rows were fetched; aggregate in SQL for the rest.")
df = st.session_state.get("sql_result")
if isinstance(df, pd.DataFrame):
    pages = max(1, -(-len(df) // PAGE))
    c = st.columns([1, 4])
    page = int(c[0].number_input("Page", 1, pages, key="sql_page")) if pages > 1 else 1
    c[1].caption(f"{len(df):,} rows" + (f"; rows {(page - 1) * PAGE + 1:,}-{min(page * PAGE, len(df)):,} "
                                         f"of page {page}/{pages}" if pages > 1 else ""))
    st.dataframe(df.iloc[(page - 1) * PAGE: page * PAGE], hide_index=True, key="sql_table")
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    if len(df.columns) >= 2 and numeric:
        cols = list(df.columns)
        sig = abs(hash(tuple(cols))) % 10**8  # new columns, new pickers: no stale x or empty y
        c = st.columns([2, 3, 2, 2])
        x = c[0].selectbox("x", cols, index=cols.index("epoch") if "epoch" in cols else 0, key=f"sql_x_{sig}")
        others = [n for n in numeric if n != x]
        ys = c[1].multiselect("y", others, default=others[:1], key=f"sql_y_{sig}")
        groups = [n for n in cols if n not in numeric and n != x]
        by = c[2].selectbox("one line per", ["(none)", *groups], index=1 if "run" in groups else 0,
                            key=f"sql_by_{sig}")
        kind = c[3].radio("chart", ["line", "bar", "points"], key="sql_kind", horizontal=True)
        if ys:
            fig = charts.sql_chart(df.head(SHOWN), x, ys, kind, None if by == "(none)" else by)
            st.plotly_chart(fig, key="sql_chart", width="stretch")
