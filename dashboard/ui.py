"""Streamlit pieces the pages share: the runs folder, the empty state, run and refresh pickers."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

import dashboard

REFRESH = {"off": None, "2 s": 2.0, "5 s": 5.0, "10 s": 10.0, "30 s": 30.0}
RUN_KEY = "run"  # the run the Run page shows; the Runs page sets it when you open a run


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
    """A run to show: the one opened from the Runs page, else the newest."""
    if st.session_state.get(key) not in runs:
        st.session_state.pop(key, None)  # that run's folder is gone
    current = st.session_state.get(RUN_KEY)
    if current in runs and st.session_state.get(key) != current:
        st.session_state[key] = current  # opened from the Runs page (set before the widget exists)

    def remember():
        st.session_state[RUN_KEY] = st.session_state[key]

    run = st.selectbox("Run", runs, key=key, on_change=remember)
    st.session_state[RUN_KEY] = run
    return run


def spread(values: list[int], n: int = 5) -> list[int]:
    """Up to ``n`` values evenly spread over ``values``, always with the first and the last."""
    if len(values) <= n:
        return list(values)
    picks = {values[round(i * (len(values) - 1) / (n - 1))] for i in range(n)}
    return sorted(picks)
