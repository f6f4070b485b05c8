"""Compare: several runs side by side: how their configs differ, FOSC distributions, per-epoch curves, the
robustness table (optionally averaged over runs that differ only by seed)."""
import pandas as pd
import streamlit as st

from dashboard import charts, queries, ui

RD, overview = ui.page_overview("Compare runs")

BUDGET = {"eps": "eps", "steps": "K", "step_size": "step size"}
DATA = {"dataset": "dataset", "n_train": "data size"}
names = overview["run"].tolist()  # newest first: the order of the Runs table, the legends, the tables
finished = overview.loc[overview["state"] == "finished", "run"].tolist()
linked = ui.linked_runs(names)
if linked is not None and st.session_state.get("_cmp_linked") != linked:
    st.session_state["_cmp_linked"] = linked
    st.session_state["cmp_runs"] = linked  # a ?runs=A,B deep link, honoured once
runs = st.multiselect("Runs", names, default=(finished or names)[:4], key="cmp_runs",
                      help="Defaults: the newest finished runs")
runs = [r for r in names if r in runs]  # table order everywhere
if st.query_params.get("runs") != ",".join(runs):
    st.query_params["runs"] = ",".join(runs)  # the URL names what is shown (and is not a new link)
st.session_state["_cmp_linked"] = runs
if not runs:
    st.info("Choose one or more runs.")
    st.stop()
unfinished = [r for r in runs if r not in finished]
if unfinished:
    st.caption(f"Not finished: {', '.join(unfinished)} (their numbers are as of now).")

cfg = queries.load(RD, queries.run_configs).set_index("run").reindex(runs)
cfg = cfg.join(overview.set_index("run")[["strategy"]])


def _fmt(v) -> str:
    """A setting as people write it: 384 not 384.0, 0.075 not 0.07500000000000001, '-' for none."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else f"{v:.4g}"
    return str(v)


shown_cfg = cfg.apply(lambda col: col.map(_fmt))


def _differs(keys: dict) -> list[str]:
    out = []
    for k, label in keys.items():
        vals = list(dict.fromkeys(shown_cfg[k]))
        if len(vals) > 1:
            out.append(f"{label}: " + " vs ".join(vals))
    return out


for what, keys in (("budget", BUDGET), ("data", DATA)):
    diff = _differs(keys)
    if diff:
        st.warning(f"These runs differ in {what} ({'; '.join(diff)}): their accuracies are not comparable "
                   "one to one.")

shown_keys = ["strategy", *queries.CONFIG_COLUMNS]
differing = [k for k in shown_keys if shown_cfg[k].nunique() > 1]
with st.expander(f"Config diff ({len(differing)} of {len(shown_keys)} settings differ)", expanded=bool(differing)):
    if differing:
        diff = shown_cfg[differing].T.rename(index={k: queries.CONFIG_COLUMNS.get(k, k) for k in differing})
        st.dataframe(diff, key="cmp_diff", width="stretch")
    else:
        st.caption("The chosen runs have the same settings.")

total = int(overview.set_index("run").loc[runs, "epochs"].max())
done = int(overview.set_index("run").loc[runs, "epochs_done"].min())
c = st.columns([3, 2, 1, 1])
epochs = c[0].multiselect("Epochs", list(range(total)), default=ui.spread(list(range(max(done, 1))), 3),
                          key="cmp_epochs", help="Defaults: spread over the epochs every chosen run has finished")
kind = c[1].radio("Estimate", ["kernel density", "fine histogram"], key="cmp_kind", horizontal=True)
clip_q = c[2].selectbox("Clip FOSC at", [0.99, 0.999, 0.95, 1.0], key="cmp_clip",
                        format_func=lambda q: "no clip" if q == 1.0 else f"q{q * 100:g}")
log_x = c[3].toggle("Log x", key="cmp_logx")

hist = queries.load(RD, queries.fosc_hist, tuple(runs), tuple(sorted(epochs)))
if hist.empty:
    st.info("No per-example rows for these runs at these epochs yet.")
else:
    dens = queries.density(hist, "kde" if kind == "kernel density" else "hist")
    clip = charts.hist_quantile(hist, clip_q) if clip_q < 1 else None
    st.plotly_chart(charts.density_facets(dens, "cmp-density", clip=clip, log_x=log_x, order=runs),
                    key="cmp_density", width="stretch")

ep = queries.load(RD, queries.epochs, tuple(runs))
METRICS = {"held-out PGD accuracy": "heldout_pgd_acc", "held-out clean accuracy": "heldout_clean_acc",
           "FOSC median": "fosc_q50", "FOSC mean": "fosc_mean", "mean PGD steps": "steps_mean",
           "training loss": "loss_mean", "training accuracy": "train_adv_acc",
           "share below c_t": "below_ct", "c_t": "c_t", "lr": "lr", "examples / s": "examples_per_s"}
PERCENT = {"heldout_pgd_acc", "heldout_clean_acc", "train_adv_acc", "below_ct"}
if not ep.empty:
    label = st.selectbox("Curve", list(METRICS), key="cmp_metric")
    metric = METRICS[label]
    st.plotly_chart(charts.compare_curves(ep, metric, "cmp-curves", label, order=runs, percent=metric in PERCENT),
                    key="cmp_curves", width="stretch")


def _seed_groups() -> dict[str, list[str]]:
    """Runs whose strategy and settings are equal but for the seed: label -> runs."""
    keys = [k for k in shown_keys if k != "seed"]
    groups: dict[str, list[str]] = {}
    for run, row in cfg.iterrows():
        sig = tuple(shown_cfg.at[run, k] for k in keys)
        groups.setdefault(sig, []).append(run)
    return {(g[0] if len(g) == 1 else f"{cfg.at[g[0], 'strategy']} x{len(g)} seeds ({', '.join(g)})"): g
            for g in groups.values()}


def _mean_sd(table: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    rows = []
    for label, members in _seed_groups().items():
        sub = table[table["run"].isin(members)]
        row = {"runs": label, "n": len(sub)}
        for col in cols:
            row[col] = sub[col].mean()
            row[f"{col} sd"] = sub[col].std() if len(sub) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


st.subheader("Robustness (accuracy %, as in the paper's Tables 1 and 2)")
c = st.columns([2, 3])
checkpoint = c[0].radio("Checkpoint", ["last", "best"], key="cmp_checkpoint", horizontal=True,
                        help="best: the epoch with the highest held-out PGD accuracy")
average = c[1].toggle("Average runs that differ only by seed (mean and sd)", key="cmp_seeds",
                      disabled=all(len(g) == 1 for g in _seed_groups().values()),
                      help="Runs with equal strategy and settings except the seed become one row")
table = queries.load(RD, queries.robustness, tuple(runs), checkpoint)
if len(table.columns) <= 3:
    st.info("No evaluations for these runs yet: runs evaluate themselves at the end "
            "(or: python -m trainer.evaluate RUN --runs-dir ...).")
else:
    base = ["run", "strategy", "dataset"]
    head = queries.load(RD, queries.headline).set_index("run")
    for setting, title in (("white-box", "White-box (Table 1)"), ("black-box", "Black-box (Table 2)")):
        cols = [col for col in table.columns if col.startswith(setting + " ")]
        if not cols:
            continue
        st.markdown(f"**{title}**")
        shown = table[base + cols].rename(columns={col: col[len(setting) + 1:] for col in cols})
        attacks = [col[len(setting) + 1:] for col in cols]
        if average:
            avg = _mean_sd(shown, attacks)
            st.dataframe(avg, hide_index=True, key=f"cmp_avg_{setting}",
                         column_config={col: st.column_config.NumberColumn(format="%.2f") for col in avg.columns[2:]})
            continue
        status = []
        for _, row in shown.iterrows():
            gaps = [a for a in attacks if pd.isna(row[a])]
            src = head.at[row["run"], "test_source"] if checkpoint == "last" and row["run"] in head.index else ""
            status.append(("partial: no " + ", ".join(gaps)) if gaps else (
                "partial" if "partial" in str(src) else "complete"))
        shown = shown.assign(evaluation=status)
        st.dataframe(shown, hide_index=True, key=f"cmp_table_{setting}",
                     column_config={col: st.column_config.NumberColumn(format="%.2f") for col in attacks})
    st.caption("Empty cells: that attack has no result for that run (a partial evaluation, or one not asked for). "
               + ("Sources: " + "; ".join(f"{r}: {head.at[r, 'test_source']}" for r in runs
                                          if r in head.index and head.at[r, "test_source"])
                  if checkpoint == "last" else ""))
    st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name=f"robustness-{checkpoint}.csv",
                       mime="text/csv", key="cmp_csv")

st.subheader("Do they forget the same examples?")
if len(runs) < 2:
    st.caption("Choose two runs to compare which examples each forgets (Toneva et al. 2019).")
else:
    c = st.columns(2)
    run_a = c[0].selectbox("Run A", runs, index=0, key="cmp_forget_a")
    run_b = c[1].selectbox("Run B", [r for r in runs if r != run_a], index=0, key="cmp_forget_b")
    common = min(int(overview.set_index("run").loc[[run_a, run_b], "epochs_done"].min()), total)
    if common < 2:
        st.caption("Forgetting needs two finished epochs of both runs.")
    else:
        o = queries.load(RD, queries.forgetting_overlap, run_a, run_b, 0, common - 1).iloc[0]
        st.caption(f"Over epochs 0-{common - 1} (finished by both) and the {int(o['n']):,} examples both logged. "
                   "A forgetting event: correct at one epoch, wrong at the next, on the example trained on "
                   "(each run's own attack: a weaker attack makes more examples correct, so more to forget).")
        rows = [("forgetting events", o["events_a"], o["events_b"]),
                ("examples forgotten at least once", o["forgotten_a"], o["forgotten_b"]),
                ("... of them only by this run", o["forgotten_only_a"], o["forgotten_only_b"]),
                ("never learned", o["never_learned_a"], o["never_learned_b"])]
        st.dataframe(pd.DataFrame(rows, columns=["", run_a, run_b]).astype({run_a: "Int64", run_b: "Int64"}),
                     hide_index=True, key="cmp_forget_table")
        m = st.columns(3)
        m[0].metric("forgotten by both", f"{int(o['forgotten_both']):,}")
        m[1].metric("Jaccard, forgotten sets", "-" if pd.isna(o["jaccard_forgotten"]) else f"{o['jaccard_forgotten']:.2f}",
                    help="examples forgotten by both / by either: 1 = the same examples")
        m[2].metric("Jaccard, never-learned sets",
                    "-" if pd.isna(o["jaccard_never_learned"]) else f"{o['jaccard_never_learned']:.2f}")
