"""FOSC Lab's Streamlit dashboard (``streamlit run run_dashboard.py``).

It reads runs through ``store`` only and starts, stops and steers them only through
``dashboard.jobs`` (``python -m trainer.run`` as a subprocess, the run's control file).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from store.runs import default_runs_dir


def runs_dir(argv: list[str] | None = None) -> Path:
    """The runs folder: ``--runs-dir`` after ``--`` on the streamlit command line, else
    $FOSC_RUNS_DIR, else ./runs (relative to where the dashboard was started)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--runs-dir")
    ns, _ = p.parse_known_args(sys.argv[1:] if argv is None else argv)
    return Path(ns.runs_dir or default_runs_dir()).expanduser().resolve()
