"""Runs: every run with its state and latest accuracies; start, stop and steer runs."""
from datetime import datetime

import streamlit as st

from dashboard import jobs, queries, ui

RD = ui.runs_dir()
st.title("Runs")

COLUMNS = {
    "run": st.column_config.TextColumn("run"),
    "strategy": "strategy", "dataset": "dataset", "model": "model", "state": "state",
    "progress": st.column_config.TextColumn("epoch", help="epochs done / epochs"),
    "clean_acc": st.column_config.NumberColumn("clean acc.", format="%.3f"),
    "robust_acc": st.column_config.NumberColumn("robust acc.", format="%.3f",
                                                help="PGD-20 (else PGD-10) on the test set after training; "
                                                     "during training, PGD on the held-out examples"),
    "acc_source": st.column_config.TextColumn("accuracy from"),
    "message": "message",
}


def overview():
    df = queries.load(RD, queries.runs_overview)
    return df.assign(progress=[f"{d}/{t}" if t == t and t is not None else str(d)
                               for d, t in zip(df["epochs_done"], df["epochs"])])


interval = ui.refresh_picker("runs_refresh")


@st.fragment(run_every=interval)
def runs_table():
    pending = jobs.pending_jobs(RD)  # adopts started jobs into their run folders first
    df = overview()
    if df.empty and not pending:
        ui.empty_state(RD)
    if not df.empty:
        st.dataframe(df[list(COLUMNS)], hide_index=True, column_config=COLUMNS, key="runs_table",
                     width="stretch")
    for rec in pending:
        state = "starting" if rec["alive"] else "exited before creating its run folder"
        with st.expander(f"{rec['name']}: {state} (pid {rec['pid']})", expanded=not rec["alive"]):
            st.code(rec["log_tail"] or "(no output yet)", language=None)
            if not rec["alive"] and st.button("Dismiss", key=f"dismiss-{rec['name']}"):
                jobs.discard_pending(RD, rec["name"])
                st.rerun(scope="fragment")
    run_actions(df)


def run_actions(df):
    """Open, stop or adjust one run."""
    if df.empty:
        return
    st.subheader("A run")
    c1, c2 = st.columns([2, 3])
    name = c1.selectbox("Run", df["run"].tolist(), key="runs_pick")
    if c1.button("Open its page", key="open_run"):
        st.session_state[ui.RUN_KEY] = name
        st.switch_page("dashboard/pages/run.py")
    state = df.loc[df["run"] == name, "state"].iloc[0]
    rec = jobs.job_record(RD, name)
    c1.caption(f"state: **{state}**" + (f"; started from here, pid {rec['pid']}" if rec else ""))
    if state == "running":
        if c1.button("Stop", key="stop_run", type="primary"):
            try:
                with st.spinner(f"stopping {name} (SIGTERM to its process group; SIGKILL after 20 s)"):
                    how = jobs.stop(RD, name)
                st.success(f"{name}: {how}")
            except jobs.JobError as e:
                st.error(str(e))
        with c2.form("adjust"):
            st.markdown("**Adjust the live run** (applied between batches, logged as events)")
            a1, a2, a3 = st.columns(3)
            c_max = a1.number_input("c_max", value=None, min_value=0.0, format="%.4f", key="adj_cmax")
            t_prime = a2.number_input("T'", value=None, min_value=0.001, format="%.2f", key="adj_tprime")
            lr = a3.number_input("lr", value=None, min_value=1e-8, max_value=10.0, format="%.6f", key="adj_lr")
            if st.form_submit_button("Apply"):
                try:
                    now = jobs.adjust(RD, name, c_max=c_max, t_prime=t_prime, lr=lr)
                    st.success(f"control file of {name}: {now}")
                except jobs.JobError as e:
                    st.error(str(e))
    if rec:
        with c2.expander("Log (last lines)"):
            st.code(jobs.log_tail(jobs.run_log(RD, name)) or "(empty)", language=None)


runs_table()

# ---- start -------------------------------------------------------------------------------------------
st.subheader("Start a run")
PRESET_DEFAULT = "(preset)"
with st.form("launch"):
    c = st.columns(4)
    strategy = c[0].selectbox("Strategy", jobs.STRATEGIES, index=jobs.STRATEGIES.index("dynamic"), key="f_strategy")
    preset = c[1].selectbox("Preset", jobs.PRESETS, key="f_preset",
                            help="quick: 5 epochs on 4,000 MNIST digits (CPU); paper-*: the paper's §5.1 settings")
    dataset = c[2].selectbox("Dataset", (PRESET_DEFAULT, *jobs.DATASETS), key="f_dataset")
    model = c[3].selectbox("Model", (PRESET_DEFAULT, *jobs.MODELS), key="f_model")
    c = st.columns(7)
    eps = c[0].number_input("eps", value=None, min_value=1e-6, max_value=1.0, format="%.4f", key="f_eps",
                            placeholder="preset")
    steps = c[1].number_input("K (PGD steps)", value=None, min_value=1, max_value=10_000, step=1, key="f_steps",
                              placeholder="preset")
    alpha = c[2].number_input("alpha", value=None, min_value=1e-6, max_value=1.0, format="%.4f", key="f_alpha",
                              placeholder="eps/4")
    c_max = c[3].number_input("c_max", value=None, min_value=0.0, format="%.3f", key="f_cmax", placeholder="preset")
    t_prime = c[4].number_input("T'", value=None, min_value=0.001, format="%.1f", key="f_tprime", placeholder="preset")
    epochs = c[5].number_input("epochs", value=None, min_value=1, max_value=100_000, step=1, key="f_epochs",
                               placeholder="preset")
    lr = c[6].number_input("lr", value=None, min_value=1e-8, max_value=10.0, format="%.5f", key="f_lr",
                           placeholder="preset")
    c = st.columns(2)
    data_root = c[0].text_input("Data root", key="f_data_root", placeholder="default: offline MNIST digits / ./data")
    name_in = c[1].text_input("Name", key="f_name", placeholder="default: strategy-dataset-time")
    with st.expander("Size (for a quick try)"):
        c = st.columns(6)
        n_train = c[0].number_input("n-train", value=None, min_value=1, step=1, key="f_n_train", placeholder="all")
        batch_size = c[1].number_input("batch size", value=None, min_value=1, step=1, key="f_batch", placeholder="128")
        heldout = c[2].number_input("held-out", value=None, min_value=0, step=1, key="f_heldout", placeholder="preset")
        eval_n = c[3].number_input("eval-n", value=None, min_value=1, step=1, key="f_eval_n", placeholder="preset")
        device = c[4].selectbox("device", jobs.DEVICES, key="f_device")
        evaluate = c[5].checkbox("evaluate at the end", value=True, key="f_eval",
                                 help="the robustness table (Clean, FGSM, PGD-10/20, CW) on the test set")
    submitted = st.form_submit_button("Start run", type="primary")

if submitted:
    label = dataset if dataset != PRESET_DEFAULT else preset
    name = (name_in or "").strip() or f"{strategy}-{label}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    spec = jobs.LaunchSpec(
        name=name, strategy=strategy, preset=preset, dataset=None if dataset == PRESET_DEFAULT else dataset,
        model=None if model == PRESET_DEFAULT else model, eps=eps, steps=steps, alpha=alpha, c_max=c_max,
        t_prime=t_prime, epochs=epochs, lr=lr, data_root=(data_root or "").strip() or None, n_train=n_train,
        batch_size=batch_size, heldout=heldout, eval_n=eval_n, device=None if device == "auto" else device,
        eval_at_end=None if evaluate else False)
    try:
        rec = jobs.launch(RD, spec)
        st.success(f"started **{name}** (pid {rec['pid']}); it appears in the table once the trainer has "
                   f"created its folder. Log: `{rec['log']}`")
    except jobs.JobError as e:
        st.error(str(e))
