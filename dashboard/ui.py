"""Streamlit pieces the pages share: the runs folder, the empty state, run and refresh pickers, deep
links, and the one runs frame (state, headline, configuration) the Runs and Compare pages show."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import streamlit as st

import dashboard

REFRESH = {"off": None, "2 s": 2.0, "5 s": 5.0, "10 s": 10.0, "30 s": 30.0}
RUN_KEY = "run"  # the run the Run page shows; the Runs page sets it when you open a run
RUN_PAGE, COMPARE_PAGE = "dashboard/pages/run.py", "dashboard/pages/compare.py"


def runs_dir() -> Path:
    return dashboard.runs_dir()


def empty_state(runs_dir: Path) -> None:
    st.info(
        f"No runs in `{runs_dir}` yet. Start one from the form on the **Runs** page, or from a shell:\n\n"
        f"```\npython -m trainer.run --preset quick --strategy dynamic --runs-dir {runs_dir}\n```\n"
        "A quick run trains 5 epochs on 4,000 MNIST digits on the CPU; its FOSC curves appear here "
        "after its first flush (every 10 s)."
    )


def page_overview(title: str):
    """A page's title and the runs overview; the empty state (and a stop) when there are no runs."""
    from dashboard import queries

    rd = runs_dir()
    st.title(title)
    overview = queries.load(rd, queries.runs_overview)
    if overview.empty:
        empty_state(rd)
        st.stop()
    return rd, overview


def refresh_picker(key: str, default: str = "5 s") -> float | None:
    """How often the live part of a page reruns (None: never; zoom and selections are kept)."""
    label = st.segmented_control("Auto-refresh", list(REFRESH), default=default, key=key)
    return REFRESH.get(label or "off")


def run_picker(runs: list[str], key: str = "run_select") -> str:
    """A run to show: the deep link's ``?run=NAME``, else the one opened from the Runs page, else the
    newest. The choice goes back into the address bar, so the page's URL always names its run."""
    linked = st.query_params.get("run")
    if linked in runs and st.session_state.get("_linked_run") != linked:
        st.session_state["_linked_run"] = linked  # honoured once: later picks are the user's
        st.session_state[RUN_KEY] = linked
    if st.session_state.get(key) not in runs:
        st.session_state.pop(key, None)  # that run's folder is gone
    current = st.session_state.get(RUN_KEY)
    if current in runs and st.session_state.get(key) != current:
        st.session_state[key] = current  # opened from the Runs page (set before the widget exists)

    def remember():
        st.session_state[RUN_KEY] = st.session_state[key]

    run = st.selectbox("Run", runs, key=key, on_change=remember)
    st.session_state[RUN_KEY] = run
    st.session_state["_linked_run"] = run
    if st.query_params.get("run") != run:
        st.query_params["run"] = run
    return run


def linked_runs(names: list[str]) -> list[str] | None:
    """The runs of a ``?runs=A,B`` deep link that exist (None: no link)."""
    raw = st.query_params.get("runs")
    if not raw:
        return None
    return [r for r in dict.fromkeys(s.strip() for s in raw.split(",")) if r in names]


def spread(values: list[int], n: int = 5) -> list[int]:
    """Up to ``n`` values evenly spread over ``values``, always with the first and the last."""
    if len(values) <= n:
        return list(values)
    picks = {values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)}
    return sorted(picks)


# ---- one frame per run: state, headline, configuration -------------------------------------------------

def duration(seconds: float | None) -> str:
    """12 s, 4 min, 2.5 h, 3.1 d: a duration at a glance ('' when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 2 * 86400 else f"{seconds / 86400:.1f} d"


def _elapsed(created, updated, state: str) -> float | None:
    start = pd.to_datetime(created, utc=True, errors="coerce")
    end = pd.Timestamp(datetime.now(timezone.utc)) if state == "running" else pd.to_datetime(
        updated, utc=True, errors="coerce")
    if pd.isna(start) or pd.isna(end):
        return None
    return (end - start).total_seconds()


def runs_frame(rd: Path) -> pd.DataFrame:
    """The overview joined with each run's headline and configuration, with duration and ETA.

    Rows in the overview's order (newest first): the order of every table and legend."""
    from dashboard import queries

    ov = queries.load(rd, queries.runs_overview)
    if ov.empty:
        return ov
    head = queries.load(rd, queries.headline)
    cfg = queries.load(rd, queries.run_configs).drop(columns=["dataset", "model", "eps", "epochs"])
    df = ov.drop(columns=["clean_acc", "robust_acc", "acc_source"], errors="ignore")
    df = df.merge(head, on="run", how="left").merge(cfg, on="run", how="left")
    df["progress"] = [f"{d}/{int(t)}" if pd.notna(t) else str(d) for d, t in zip(df["epochs_done"], df["epochs"])]
    df["duration"] = [duration(_elapsed(c, u, s)) for c, u, s in
                      zip(df["created_at_x" if "created_at_x" in df else "created_at"], df["updated_at"], df["state"])]
    df["eta"] = [duration(e * (t - d)) if s == "running" and pd.notna(e) and pd.notna(t) else ""
                 for s, e, t, d in zip(df["state"], df["epoch_s"], df["epochs"], df["epochs_done"])]
    df["tags_text"] = [", ".join(t) if isinstance(t, list) else "" for t in df["tags"]]
    return df.rename(columns={"created_at_x": "created_at"}).drop(columns=["created_at_y"], errors="ignore")


def filter_and_group(df: pd.DataFrame, columns: dict[str, str], key: str) -> tuple[pd.DataFrame, str | None]:
    """Filter widgets (any of ``columns``: column -> label, plus tags) and a group-by choice; returns
    the filtered rows (grouped rows together, in table order within a group) and the group column."""
    options = {**columns, "tags_text": "tags"}
    c = st.columns([3, 2, 2])
    chosen = c[0].multiselect("Filter by", list(options), format_func=options.get, key=f"{key}_filter_by")
    group = c[1].selectbox("Group by", [None, *options], format_func=lambda k: "(none)" if k is None else options[k],
                           key=f"{key}_group")
    text = c[2].text_input("Search run, tag or note", key=f"{key}_search")
    if text:
        hay = df["run"].astype(str) + " " + df["tags_text"] + " " + df["note"].fillna("").astype(str)
        df = df[hay.str.contains(text, case=False, regex=False)]
    if chosen:
        fc = st.columns(len(chosen))
        for col, box in zip(chosen, fc):
            if col == "tags_text":
                values = sorted({t for ts in df["tags"] for t in (ts if isinstance(ts, list) else [])})
                pick = box.multiselect(options[col], values, key=f"{key}_f_{col}")
                if pick:
                    df = df[[bool(set(pick) & set(ts if isinstance(ts, list) else [])) for ts in df["tags"]]]
                continue
            values = sorted(df[col].dropna().unique().tolist(), key=str)
            pick = box.multiselect(options[col], values, key=f"{key}_f_{col}")
            if pick:
                df = df[df[col].isin(pick)]
    if group:
        order = {v: i for i, v in enumerate(dict.fromkeys(df[group].astype(str)))}
        df = df.assign(_g=df[group].astype(str).map(order)).sort_values("_g", kind="stable").drop(columns="_g")
    return df, group


def damaged_notice(runs_dir: Path, run: str | None = None) -> None:
    """Name the files the store left out (damaged, foreign, linked out) — of one run, or of every run —
    so a user sees why numbers may be missing; everything else on the page still works."""
    from dashboard import queries

    bad = queries.load(runs_dir, queries.damaged)
    if run is not None:
        bad = bad[bad["run"] == run]
    if bad.empty:
        return
    lines = "\n".join(f"- `{r.file}`: {r.reason}" for r in bad.head(10).itertuples())
    more = f"\n- ... and {len(bad) - 10} more (`python -m store.sql` lists them all)" if len(bad) > 10 else ""
    where = f"run {run}" if run is not None else f"{bad['run'].nunique()} run(s): {', '.join(sorted(bad['run'].unique()))}"
    st.warning(f"Left out of every table, {where} — these files could not be read as what they should be:\n"
               f"{lines}{more}", icon="⚠️")


def run_notices(runs_dir: Path, run: str) -> None:
    """The Run page's banners: each alarm of store.alarms with its evidence, then damaged files."""
    from dashboard import queries

    for a in queries.load(runs_dir, queries.alarms, (run,)).itertuples():
        st.warning(f"**{a.title}** (epoch {a.epoch}): {a.evidence}", icon="⚠️")
    damaged_notice(runs_dir, run)
