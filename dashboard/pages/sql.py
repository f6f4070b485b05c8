"""SQL: read-only queries over every run's tables (the views of store.open), a table and a quick chart."""
import duckdb
import pandas as pd
import streamlit as st

from dashboard import charts, queries, ui
from store import sql as store_sql

RD = ui.runs_dir()
SHOWN = 10_000  # rows sent to the browser; aggregate in SQL for more

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
text = st.text_area("Query", key="sql_text", height=160)

if st.button("Run", key="sql_run", type="primary"):
    try:
        with queries.connection(RD) as con:
            con.refresh()  # the views follow the folder: new runs, new epochs
            st.session_state["sql_result"] = store_sql.run_query(con, text)
        st.session_state.pop("sql_error", None)
    except (store_sql.QueryRefused, duckdb.Error) as e:
        st.session_state["sql_error"] = store_sql.one_line(e)
        st.session_state.pop("sql_result", None)

if "sql_error" in st.session_state:
    st.error(st.session_state["sql_error"])
df = st.session_state.get("sql_result")
if isinstance(df, pd.DataFrame):
    st.caption(f"{len(df):,} rows" + (f"; showing the first {SHOWN:,}" if len(df) > SHOWN else ""))
    st.dataframe(df.head(SHOWN), hide_index=True, key="sql_table")
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    if len(df.columns) >= 2 and numeric:
        cols = list(df.columns)
        c = st.columns([2, 3, 2, 2])
        x = c[0].selectbox("x", cols, index=cols.index("epoch") if "epoch" in cols else 0, key="sql_x")
        others = [n for n in numeric if n != x]
        ys = c[1].multiselect("y", others, default=others[:1], key="sql_y")
        groups = [n for n in cols if n not in numeric and n != x]
        by = c[2].selectbox("one line per", ["(none)", *groups], index=1 if "run" in groups else 0, key="sql_by")
        kind = c[3].radio("chart", ["line", "bar", "points"], key="sql_kind", horizontal=True)
        if ys:
            fig = charts.sql_chart(df.head(SHOWN), x, ys, kind, None if by == "(none)" else by)
            st.plotly_chart(fig, key="sql_chart", width="stretch")
