"""Compare: several runs side by side: FOSC distributions, per-epoch curves, the robustness table."""
import streamlit as st

from dashboard import charts, queries, ui

RD, overview = ui.page_overview("Compare runs")

names = overview["run"].tolist()
runs = st.multiselect("Runs", names, default=names[:4], key="cmp_runs")
if not runs:
    st.info("Choose one or more runs.")
    st.stop()

total = int(overview.set_index("run").loc[runs, "epochs"].max())
done = int(overview.set_index("run").loc[runs, "epochs_done"].min())
c = st.columns([3, 2])
epochs = c[0].multiselect("Epochs", list(range(total)), default=ui.spread(list(range(max(done, 1))), 3),
                          key="cmp_epochs", help="Defaults: spread over the epochs every chosen run has finished")
kind = c[1].radio("Estimate", ["kernel density", "fine histogram"], key="cmp_kind", horizontal=True)

hist = queries.load(RD, queries.fosc_hist, tuple(runs), tuple(sorted(epochs)))
if hist.empty:
    st.info("No per-example rows for these runs at these epochs yet.")
else:
    dens = queries.density(hist, "kde" if kind == "kernel density" else "hist")
    st.plotly_chart(charts.density_facets(dens, "cmp-density"), key="cmp_density", width="stretch")

ep = queries.load(RD, queries.epochs, tuple(runs))
METRICS = {"FOSC median": "fosc_q50", "FOSC mean": "fosc_mean", "mean PGD steps": "steps_mean",
           "training loss": "loss_mean", "training adv. accuracy": "train_adv_acc",
           "held-out clean accuracy": "heldout_clean_acc", "held-out PGD accuracy": "heldout_pgd_acc",
           "share below c_t": "below_ct", "c_t": "c_t", "lr": "lr", "examples / s": "examples_per_s"}
if not ep.empty:
    label = st.selectbox("Curve", list(METRICS), key="cmp_metric")
    st.plotly_chart(charts.compare_curves(ep, METRICS[label], "cmp-curves", label), key="cmp_curves",
                    width="stretch")

st.subheader("Robustness (accuracy %, as in the paper's Tables 1 and 2)")
checkpoint = st.radio("Checkpoint", ["last", "best"], key="cmp_checkpoint", horizontal=True,
                      help="best: the epoch with the highest held-out PGD accuracy")
table = queries.load(RD, queries.robustness, tuple(runs), checkpoint)
if len(table.columns) <= 3:
    st.info("No evaluations for these runs yet: runs evaluate themselves at the end "
            "(or: python -m trainer.evaluate RUN --runs-dir ...).")
else:
    base = ["run", "strategy", "dataset"]
    for setting, title in (("white-box", "White-box (Table 1)"), ("black-box", "Black-box (Table 2)")):
        cols = [col for col in table.columns if col.startswith(setting + " ")]
        if not cols:
            continue
        st.markdown(f"**{title}**")
        shown = table[base + cols].rename(columns={col: col[len(setting) + 1:] for col in cols})
        st.dataframe(shown, hide_index=True, key=f"cmp_table_{setting}",
                     column_config={col: st.column_config.NumberColumn(format="%.2f")
                                    for col in shown.columns[3:]})
    st.download_button("Download CSV", table.to_csv(index=False).encode(), file_name=f"robustness-{checkpoint}.csv",
                       mime="text/csv", key="cmp_csv")
