"""FOSC Lab's dashboard: ``streamlit run run_dashboard.py [-- --runs-dir DIR]`` (or $FOSC_RUNS_DIR).

Works from any working directory; binds to 127.0.0.1 (see .streamlit/config.toml when started from
the repository, or pass --server.address). One file per page under dashboard/pages/.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # `streamlit run /path/to/run_dashboard.py` from anywhere
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import ui  # noqa: E402

# No "Deploy" button or developer menu: also when started outside the repository (where
# .streamlit/config.toml, which says the same, is not read).
st.set_option("client.toolbarMode", "viewer")
st.set_page_config(page_title="FOSC Lab", layout="wide")
PAGES = [
    st.Page(ROOT / "dashboard/pages/runs.py", title="Runs", default=True),
    st.Page(ROOT / "dashboard/pages/run.py", title="Run"),
    st.Page(ROOT / "dashboard/pages/compare.py", title="Compare"),
    st.Page(ROOT / "dashboard/pages/examples.py", title="Examples"),
    st.Page(ROOT / "dashboard/pages/example.py", title="Example"),
    st.Page(ROOT / "dashboard/pages/sql.py", title="SQL"),
]
page = st.navigation(PAGES)
st.sidebar.caption(f"Runs folder: `{ui.runs_dir()}`")
if st.get_option("server.address") not in ("127.0.0.1", "localhost", "::1"):
    # The repo's .streamlit/config.toml binds to localhost only when streamlit starts in the repo folder.
    st.sidebar.warning("This dashboard can start processes and is reachable from other machines. "
                       "Start it with --server.address 127.0.0.1 unless that is what you want.")
page.run()
