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
    """Open, stop or adjust one run. Stop asks first; what happened stays on screen across refreshes."""
    if df.empty:
        return
    st.subheader("A run")
    c1, c2 = st.columns([2, 3])
    name = c1.selectbox("Run", df["run"].tolist(), key="runs_pick")
    if c1.button("Open its page", key="open_run"):
        st.session_state[ui.RUN_KEY] = name
        st.switch_page("dashboard/pages/run.py")
    row = df.loc[df["run"] == name].iloc[0]
    state = row["state"]
    rec = jobs.job_record(RD, name)
    c1.caption(f"state: **{state}**" + (f"; started from here, pid {rec['pid']}" if rec else ""))
    show_action_feedback(c1)
    if state == "running":
        adjust_form(c2, name, str(row["strategy"]))
        stop_control(c2, name)
    if rec:
        with c2.expander("Log (last lines)"):
            st.code(jobs.log_tail(jobs.run_log(RD, name)) or "(empty)", language=None)


# ---- feedback that outlives the refresh -------------------------------------------------------------
def action_feedback(kind: str, text: str, where: str = "runs_action") -> None:
    """Remember what an action did (shown until the next action there) and pop a toast now."""
    st.session_state[where] = (kind, text)
    st.toast(text, icon={"success": "✅", "warning": "⚠️", "error": "❌"}.get(kind, "ℹ️"))


def show_action_feedback(col, where: str = "runs_action") -> None:
    kind, text = st.session_state.get(where, (None, None))
    if text:
        getattr(col, kind if kind in ("success", "warning", "error") else "info")(text)


# ---- stop: ask first ----------------------------------------------------------------------------------
STOPPED = {"stopped": "{name} stopped: it finished its batch, saved its checkpoint and is marked stopped; "
                      "resume it with `python -m trainer.run --resume {name}`",
           "killed": "{name} ignored SIGTERM for 20 s and was killed (SIGKILL); it is marked failed",
           "not running": "{name} was not running any more; nothing was signalled"}


def _ask_stop(name):
    st.session_state["stop_ask"] = name


def stop_control(col, name: str) -> None:
    with col.container(border=True):
        if st.session_state.get("stop_ask") != name:
            st.button("Stop this run...", key="stop_run", on_click=_ask_stop, args=(name,),
                      help="asks for confirmation first")
            return
        st.warning(f"Stop **{name}**? It finishes the current batch, saves a checkpoint and ends as "
                   "'stopped' (you can resume it later).")
        yes_col, no_col = st.columns(2)
        no_col.button("Cancel", key="stop_no", on_click=_ask_stop, args=(None,))
        if yes_col.button("Yes, stop it", key="stop_yes", type="primary"):
            st.session_state["stop_ask"] = None
            try:
                with st.spinner(f"stopping {name} (SIGTERM; SIGKILL after 20 s)"):
                    how = jobs.stop(RD, name)
                action_feedback("success" if how == "stopped" else "warning", STOPPED[how].format(name=name))
            except jobs.JobError as e:
                action_feedback("error", f"{name} was not stopped: {e}")
            st.rerun()  # the table and the buttons show the run's new state at once


# ---- adjust: only what means something for the run's strategy -------------------------------------------
ADJUST_LABELS = {"c_max": "c_max", "t_prime": "T'", "lr": "lr"}
SCHEDULED = ("dynamic",)  # strategies whose c_t schedule reads c_max and T'


def _apply_adjust(name: str, keys: tuple[str, ...]) -> None:
    """The Apply button's callback: every field checked first; nothing is written if one is wrong."""
    clean, errors = jobs.check_numbers({k: st.session_state.get(f"adj_{k}") for k in keys})
    st.session_state["adjust_errors"] = (name, errors)
    if errors:
        action_feedback("error", f"nothing applied to {name}: {len(errors)} value(s) out of range (see the form)")
        return
    if not clean:
        action_feedback("warning", f"nothing to apply to {name}: type a new value first")
        return
    try:
        now = jobs.adjust(RD, name, **clean)
    except jobs.JobError as e:
        action_feedback("error", f"nothing applied to {name}: {e}")
        return
    for k in keys:
        st.session_state[f"adj_{k}"] = ""
    sent = ", ".join(f"{ADJUST_LABELS[k]} = {v:g}" for k, v in clean.items())
    action_feedback("success", f"{name}: wrote {sent} to its control file (now {_fmt(now)}); the trainer applies "
                               "it at its next batch and logs a set_... event")


def _fmt(values: dict) -> str:
    return ", ".join(f"{ADJUST_LABELS.get(k, k)} {v:g}" for k, v in values.items() if k in ADJUST_LABELS) or "-"


def adjust_form(col, name: str, strategy: str) -> None:
    keys = ("c_max", "t_prime", "lr") if strategy in SCHEDULED else ("lr",)
    now = jobs.current_schedule(RD, name)
    for_run, errors = st.session_state.get("adjust_errors", (None, {}))
    errors = errors if for_run == name else {}
    with col.form("adjust"):
        st.markdown("**Adjust the live run** (applied between batches, logged as events)")
        st.caption(f"now: {_fmt({k: now[k] for k in keys if k in now})}" + (
            "" if strategy in SCHEDULED else f"; c_max and T' drive Dynamic's schedule only, not {strategy}"))
        for c, k in zip(st.columns(len(keys)), keys):
            c.text_input(ADJUST_LABELS[k], key=f"adj_{k}", placeholder=f"now {now[k]:g}" if k in now else "")
            if k in errors:
                c.caption(f":red[{errors[k]}]")
        st.form_submit_button("Apply", on_click=_apply_adjust, args=(name, keys))

runs_table()

# ---- start -------------------------------------------------------------------------------------------
st.subheader("Start a run")
PRESET_DEFAULT = "(preset)"
# (field, widget key, label, placeholder): typed as text, so "nan", "1e12" or "-5" reach the check and
# are named next to the field, instead of being clamped or dropped by a number widget.
MAIN_NUMBERS = (("eps", "f_eps", "eps", "preset"), ("steps", "f_steps", "K (PGD steps)", "preset"),
                ("alpha", "f_alpha", "alpha", "eps/4"), ("c_max", "f_cmax", "c_max", "preset"),
                ("t_prime", "f_tprime", "T'", "preset"), ("epochs", "f_epochs", "epochs", "preset"),
                ("lr", "f_lr", "lr", "preset"))
SIZE_NUMBERS = (("n_train", "f_n_train", "n-train", "all"), ("batch_size", "f_batch", "batch size", "128"),
                ("heldout", "f_heldout", "held-out", "preset"), ("eval_n", "f_eval_n", "eval-n", "preset"))
for _, key, _, _ in MAIN_NUMBERS + SIZE_NUMBERS:  # a clone may have put numbers there: text fields hold text
    if st.session_state.get(key) is not None and not isinstance(st.session_state[key], str):
        st.session_state[key] = f"{st.session_state[key]:g}" if isinstance(st.session_state[key], float) \
            else str(st.session_state[key])


def _number_field(col, field, key, label, placeholder, errors) -> None:
    col.text_input(label, key=key, placeholder=placeholder)
    if field in errors:
        col.caption(f":red[{errors[field]}]")


def _start_run() -> None:
    """The Start button's callback: every field checked first; nothing starts if one is wrong."""
    ss = st.session_state
    clean, errors = jobs.check_numbers({f: ss.get(k) for f, k, _, _ in MAIN_NUMBERS + SIZE_NUMBERS})
    ss["launch_errors"] = errors
    if errors:
        action_feedback("error", f"nothing started: {len(errors)} field(s) to fix (see the form)", "launch_action")
        return
    dataset, model = ss.get("f_dataset"), ss.get("f_model")
    label = dataset if dataset != PRESET_DEFAULT else ss.get("f_preset")
    name = (ss.get("f_name") or "").strip() or f"{ss.get('f_strategy')}-{label}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    device = ss.get("f_device", "auto")
    try:
        spec = jobs.LaunchSpec(
            name=name, strategy=ss.get("f_strategy"), preset=ss.get("f_preset"),
            dataset=None if dataset == PRESET_DEFAULT else dataset, model=None if model == PRESET_DEFAULT else model,
            data_root=(ss.get("f_data_root") or "").strip() or None, device=None if device == "auto" else device,
            eval_at_end=None if ss.get("f_eval", True) else False, **clean)
        rec = jobs.launch(RD, spec)
    except jobs.JobError as e:
        action_feedback("error", f"nothing started: {e}", "launch_action")
        return
    ss["launched"] = name  # from now on launched_status says what it really does, refresh after refresh
    ss["launch_action"] = (None, None)
    st.toast(f"started {name} (pid {rec['pid']})", icon="🚀")


errors = st.session_state.get("launch_errors", {})
with st.form("launch"):
    c = st.columns(4)
    c[0].selectbox("Strategy", jobs.STRATEGIES, index=jobs.STRATEGIES.index("dynamic"), key="f_strategy")
    c[1].selectbox("Preset", jobs.PRESETS, key="f_preset",
                   help="quick: 5 epochs on 4,000 MNIST digits (CPU); paper-*: the paper's §5.1 settings")
    c[2].selectbox("Dataset", (PRESET_DEFAULT, *jobs.DATASETS), key="f_dataset")
    c[3].selectbox("Model", (PRESET_DEFAULT, *jobs.MODELS), key="f_model")
    for col, spec in zip(st.columns(len(MAIN_NUMBERS)), MAIN_NUMBERS):
        _number_field(col, *spec, errors)
    c = st.columns(2)
    c[0].text_input("Data root", key="f_data_root", placeholder="default: offline MNIST digits / ./data")
    c[1].text_input("Name", key="f_name", placeholder="default: strategy-dataset-time")
    with st.expander("Size (for a quick try)", expanded=any(f in errors for f, *_ in SIZE_NUMBERS)):
        c = st.columns(6)
        for col, spec in zip(c, SIZE_NUMBERS):
            _number_field(col, *spec, errors)
        c[4].selectbox("device", jobs.devices_here(), key="f_device",
                       help="cuda is offered only where this machine has an NVIDIA GPU")
        c[5].checkbox("evaluate at the end", value=True, key="f_eval",
                      help="the robustness table (Clean, FGSM, PGD-10/20, CW) on the test set")
    st.form_submit_button("Start run", type="primary", on_click=_start_run)


@st.fragment(run_every=interval)
def launched_status() -> None:
    """What the last run started here is doing now (a run that failed after starting says so)."""
    name = st.session_state.get("launched")
    if not name:
        return
    kind, text = jobs.launch_status(RD, name)
    getattr(st, kind)(f"You started {name} here. Now: {text}")


show_action_feedback(st, "launch_action")
launched_status()
