"""A Plotly chart that keeps the user's zoom, pan and hidden traces while its data grows.

``st.plotly_chart`` hashes the figure into its element id, so a figure with new data (a new epoch's
density, a longer per-batch curve) is a new element: the browser mounts a new plot and the zoom is gone,
whatever the figure's ``uirevision``. Here one keyed ``st.components.v2`` component (its key is its
identity) keeps one graph div alive across reruns; each rerun calls its JS again with the new figure,
which it hands to ``Plotly.react(div, data, layout, config)``: that keeps the view as long as
``layout.uirevision`` stays the same (the charts key it per chart and run, never per data).

plotly.js (``plotly/package_data/plotly.min.js`` of the installed ``plotly`` package, ~4.8 MB; the
machines are offline, so no CDN) reaches the browser once per page, as the JS of a second component,
``fosc_lab.plotly_js``, mounted once per run with constant content. Streamlit sends a new element of
10 kB or more whose message the browser already holds as a reference (its hash) instead
(the ForwardMsg cache: ``global.minCachedMessageSize``; the browser lists the hashes it holds in every
rerun request, fragment reruns included), and the browser imports a component's JS once per content (a
Blob URL per hash), so plotly.js is sent and evaluated once per page, not on every 5 s refresh.
Measured (tests/test_browser_zoom.py decodes every websocket message; test-artifacts/live-chart-wire.json):
the Run page's first run 4.9 MB, of which plotly.js 4.8 MB; a refresh without new data 31 kB, one with a
new epoch 42-104 kB, plotly.js in none of them. Not chosen:
``server.enableStaticServing`` with a ``static/`` folder (a plain cached HTTP file) needs that flag at
server start, and run_dashboard.py is started from any folder, where .streamlit/config.toml is not read;
a component ``asset_dir`` needs a manifest in an installed package's pyproject.toml.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st
from streamlit.errors import StreamlitDuplicateElementKey

PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
CHART = "fosc_lab.live_chart"
LOADER = "fosc_lab.plotly_js"
LOADER_KEY = "fosc_plotly_js"
# Plotly's own config for every live chart: fits the column (responsive), no Plotly logo.
CONFIG = {"responsive": True, "displaylogo": False}

# The chart: one graph div per instance, created on the first call and reused by every later call (the
# component's parentElement survives reruns because its key is its identity).
_CHART_JS = r"""
function plotlyReady() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  return new Promise((resolve) => window.addEventListener("fosc-plotly-ready", () => resolve(window.Plotly),
                                                          { once: true }));
}

// Streamlit's Plotly theme, as st.plotly_chart applies it in the browser (Streamlit 1.67's PlotlyChart:
// the "streamlit" template's placeholder colours #0000NN become the page theme's colours, its layout
// gets the theme's fonts, axes and background, the title is bold), read from the --st-* CSS properties
// Streamlit sets on every v2 component: the live charts look like their st.plotly_chart neighbours, in
// the light and the dark theme.
function themed(fig, el) {
  const css = getComputedStyle(el);
  const v = (name, fallback) => (css.getPropertyValue(name) || "").trim() || fallback;
  const list = (name, fallback) => { const l = v(name, "").split(",").map((c) => c.trim()).filter(Boolean);
                                     return l.length >= 10 ? l : fallback; };
  const text = v("--st-text-color", "#31333f"), bg = v("--st-background-color", "#ffffff");
  const grid = v("--st-border-color", "rgba(49, 51, 63, 0.2)"), font = v("--st-font", "sans-serif");
  const heading = v("--st-heading-color", text), headFont = v("--st-heading-font", font);
  const ramp = ["#0d0887", "#46039f", "#7201a8", "#9c179e", "#bd3786", "#d8576b", "#ed7953", "#fb9f3a",
                "#fdca26", "#f0f921"];
  const colours = [
    ...list("--st-chart-categorical-colors", ["#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3",
                                              "#FF6692", "#B6E880", "#FF97FF", "#FECB52"]),
    ...list("--st-chart-sequential-colors", ramp), ...list("--st-chart-diverging-colors", ramp),
  ];
  const other = { 32: v("--st-green-color", "#3D9970"), 33: v("--st-red-color", "#FF4136"),
                  34: v("--st-blue-color", "#4499FF"), 35: grid, 36: text, 37: text, 38: bg, 39: grid,
                  40: v("--st-secondary-background-color", "#f0f2f6") };
  const json = JSON.stringify(fig).replace(/#0000([0-4][0-9])/g, (m, n) => {
    const i = Number(n);
    return i >= 1 && i <= 30 ? colours[i - 1] : other[i] || m;
  });
  const out = JSON.parse(json);
  const layout = out.layout || {};
  const t = layout.template = layout.template || {};
  const axis = { zerolinecolor: grid, gridcolor: grid, tickcolor: grid, minor: { gridcolor: grid },
                 tickfont: { color: text, size: 12 }, title: { font: { color: text, size: 14 } }, automargin: true };
  t.layout = merge(t.layout || {}, {
    font: { color: text, family: font, size: 12 },
    title: { font: { family: headFont, size: 16, color: heading }, pad: { l: 4 }, xanchor: "left", x: 0 },
    legend: { title: { font: { size: 12, color: text } }, bordercolor: "rgba(0,0,0,0)", borderwidth: 0,
              font: { size: 12, color: text } },
    paper_bgcolor: bg, plot_bgcolor: bg,
    xaxis: merge({ showgrid: false, zeroline: false, title: { standoff: 20 } }, axis),
    yaxis: merge({ ticklabelposition: "outside", title: { standoff: 24 } }, axis),
    margin: { pad: 8, r: 0, l: 0 },
    hoverlabel: { bgcolor: bg, bordercolor: grid, font: { color: text, family: font, size: 12 } },
  });
  if (layout.title) {
    const title = typeof layout.title === "string" ? { text: layout.title } : layout.title;
    if (typeof title.text === "string" && !title.text.startsWith("<b>")) title.text = `<b>${title.text}</b>`;
    layout.title = title;
  }
  layout.autosize = true;
  delete layout.width;
  return out;
}

function merge(a, b) {  // b into a, recursively (b wins)
  for (const [k, val] of Object.entries(b)) {
    a[k] = val && typeof val === "object" && !Array.isArray(val) && a[k] && typeof a[k] === "object"
      ? merge(a[k], val) : val;
  }
  return a;
}

// The user's view, carried into the new figure while its uirevision is the one they changed it under:
// axis ranges they zoomed to (an axis whose range the figure sets itself keeps the figure's) and traces
// they hid in the legend (by name). uirevision alone kept both in every isolated case tried, but in the
// Run page (Chromium, plotly.js 4.1.1) the density lost its zoom and its hidden trace to the next new
// epoch once the schedule chart had been zoomed too (cause not found); this does not depend on it.
function keepView(div, data, layout) {
  const old = div.layout;
  if (!old || old.uirevision === undefined || old.uirevision !== layout.uirevision) return;
  const hidden = new Set((div.data || []).filter((t) => t.visible === "legendonly").map((t) => t.name));
  for (const t of data) if (t.visible === undefined && hidden.has(t.name)) t.visible = "legendonly";
  for (const [k, ax] of Object.entries(old)) {
    const mine = layout[k] || {};
    if (/^[xy]axis[0-9]*$/.test(k) && ax && ax.autorange === false && Array.isArray(ax.range) && !mine.range) {
      layout[k] = Object.assign({}, mine, { range: ax.range.slice(), autorange: false });
    }
  }
}

export default function ({ data, parentElement }) {
  let div = parentElement.querySelector(".fosc-live-chart > div");
  if (!div) {
    // Laid out as st.plotly_chart's: the graph div inside an element with Streamlit's test id for a Plotly
    // chart, by which the browser tests (and ../shared/notes/browser-testing.md) find every Plotly chart.
    const box = document.createElement("div");
    box.className = "fosc-live-chart";
    box.setAttribute("data-testid", "stPlotlyChart");
    div = document.createElement("div");
    div.style.width = "100%";
    box.appendChild(div);
    parentElement.appendChild(box);
  }
  const fig = themed(data.figure, parentElement);
  div.style.height = (fig.layout.height || 450) + "px";
  plotlyReady().then((Plotly) => {
    keepView(div, fig.data, fig.layout);
    return Plotly.react(div, fig.data, fig.layout, data.config);
  });
  // Streamlit calls this on unmount only (and on a call overtaken by a newer one): free the plot only
  // when its div has left the page.
  return () => setTimeout(() => { if (!div.isConnected && window.Plotly) window.Plotly.purge(div); }, 0);
}
"""


@lru_cache(maxsize=1)
def _components():
    chart = st.components.v2.component(CHART, js=_CHART_JS, isolate_styles=False)  # plotly.js styles the page
    loader_js = (PLOTLY_JS.read_text(encoding="utf-8")  # ends with `window.Plotly = Plotly;`
                 + '\nwindow.dispatchEvent(new Event("fosc-plotly-ready"));\nexport default function () {}\n')
    loader = st.components.v2.component(LOADER, js=loader_js, isolate_styles=False)
    return chart, loader


def payload(fig: go.Figure) -> dict:
    """What the component receives: the figure as Plotly JSON (numeric arrays base64-encoded, as
    ``plotly.io.to_json`` writes them and plotly.js reads them) and Plotly's config."""
    return {"figure": json.loads(pio.to_json(fig, validate=False)), "config": CONFIG}


def live_chart(slot, fig: go.Figure, key: str) -> None:
    """Draw ``fig`` in ``slot`` (``st`` or a container) as the chart ``key``: the same plot on every
    rerun, updated in place, so the user's zoom survives new data as long as ``fig.layout.uirevision``
    stays the same. The height is the figure's; the width is the column's."""
    chart, loader = _components()
    with slot.container(gap=None):
        try:  # once per run: plotly.js (sent as a reference after the page's first run)
            loader(key=LOADER_KEY, height=0)
        except StreamlitDuplicateElementKey:
            pass  # another live chart of this run already mounted it
        chart(key=key, data=payload(fig), width="stretch")
