"""Runs: every run with its state and latest accuracies; start, stop and steer runs."""
from datetime import datetime

import streamlit as st

from dashboard import charts, jobs, queries, ui
from store import annotations
from store.runs import StoreError

RD = ui.runs_dir()
st.title("Runs")

if "run" in st.query_params or "runs" in st.query_params:  # a deep link (?run=NAME, ?runs=A,B) to the app's root
    page = ui.RUN_PAGE if "run" in st.query_params else ui.COMPARE_PAGE
    st.switch_page(page, query_params=dict(st.query_params))

CONFIG = {"strategy": "strategy", "state": "state", "dataset": "dataset", "model": "model", "eps": "eps",
          "steps": "K", "step_size": "step size", "c_max": "c_max", "t_prime": "T'", "lr": "lr",
          "epochs": "epochs", "seed": "seed", "n_train": "data size"}
PCT = "%.1f %%"
COLUMNS = {
    "run": st.column_config.TextColumn("run", pinned=True),
    "alarms": st.column_config.TextColumn("alarms", help="what store.alarms finds wrong (the Run page shows the evidence)"),
    "state": "state", "strategy": "strategy",
    "progress": st.column_config.TextColumn("epoch", help="epochs done / epochs"),
    "duration": st.column_config.TextColumn("duration", help="wall clock from the run's creation to its last "
                                                             "status (to now while it runs)"),
    "eta": st.column_config.TextColumn("ETA", help="running runs: median epoch time x epochs left"),
    "heldout_trend": st.column_config.LineChartColumn(
        "held-out PGD trend", y_min=0, y_max=100, help="held-out PGD accuracy (%) after each finished epoch"),
    "heldout_robust": st.column_config.NumberColumn("held-out PGD", format=PCT,
                                                    help="after the last finished epoch (see 'held-out from')"),
    "heldout_delta": st.column_config.NumberColumn("change", format="%+.1f pp",
                                                   help="held-out PGD accuracy: last finished epoch minus the one "
                                                        "before (percentage points)"),
    "heldout_clean": st.column_config.NumberColumn("held-out clean", format=PCT),
    "heldout_source": st.column_config.TextColumn("held-out from"),
    "test_clean": st.column_config.NumberColumn("test clean", format=PCT),
    "test_robust": st.column_config.NumberColumn("test PGD", format=PCT,
                                                 help="the end-of-run evaluation: PGD-20 (else PGD-10)"),
    "test_source": st.column_config.TextColumn("test from", help="checkpoint, attack and budget, examples; "
                                                                 "'partial' when the evaluation was cut short"),
    "dataset": "dataset", "model": "model",
    "eps": st.column_config.NumberColumn("eps", format="%.4g"),
    "steps": st.column_config.NumberColumn("K", format="%d", help="PGD steps (the most, for Dynamic)"),
    "step_size": st.column_config.NumberColumn("step size", format="%.4g"),
    "c_max": st.column_config.NumberColumn("c_max", format="%.4g"),
    "t_prime": st.column_config.NumberColumn("T'", format="%.4g"),
    "lr": st.column_config.NumberColumn("lr", format="%.4g"),
    "epochs": st.column_config.NumberColumn("epochs", format="%d"),
    "seed": st.column_config.NumberColumn("seed", format="%d"),
    "n_train": st.column_config.NumberColumn("data size", format="%d", help="training examples (empty: all)"),
    "tags_text": st.column_config.TextColumn("tags"), "note": st.column_config.TextColumn("note"),
    "message": "message",
}


interval = ui.refresh_picker("runs_refresh")


def _styled(df):
    """The run column in the run's own colour (the one its curves have on every page)."""
    return df.style.map(lambda v: f"color: {charts.run_color(v)}; font-weight: 600", subset=["run"])


def group_summary(df, group: str) -> None:
    """One row per value of the group-by column: how many runs, and their robust accuracies."""
    agg = df.groupby(df[group].astype(str), sort=False).agg(
        runs=("run", "count"), heldout_mean=("heldout_robust", "mean"), heldout_sd=("heldout_robust", "std"),
        test_mean=("test_robust", "mean"), test_sd=("test_robust", "std")).reset_index()
    st.dataframe(agg, hide_index=True, key="runs_groups", column_config={
        group: CONFIG.get(group, "tags"), "runs": "runs",
        "heldout_mean": st.column_config.NumberColumn("held-out PGD, mean", format=PCT),
        "heldout_sd": st.column_config.NumberColumn("sd", format="%.1f pp"),
        "test_mean": st.column_config.NumberColumn("test PGD, mean", format=PCT),
        "test_sd": st.column_config.NumberColumn("sd", format="%.1f pp")})


@st.fragment(run_every=interval)
def runs_table():
    pending = jobs.pending_jobs(RD)  # adopts started jobs into their run folders first
    df = ui.runs_frame(RD)
    if df.empty and not pending:
        ui.empty_state(RD)
    ui.damaged_notice(RD)
    if not df.empty:
        shown, group = ui.filter_and_group(df, CONFIG, "runs")
        shown = shown.assign(alarms=queries.alarm_icons(RD, shown["run"].tolist()))  # store.alarms
        if group:
            group_summary(shown, group)
        st.caption(f"{len(shown)} of {len(df)} runs. Held-out numbers: the run's own held-out split after each "
                   "finished epoch; test numbers: the end-of-run evaluation. Each names its source.")
        st.dataframe(_styled(shown[list(COLUMNS)]), hide_index=True, column_config=COLUMNS, key="runs_table",
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
    """Open, stop, adjust or resume one run. Stop asks first; what happened stays on screen across refreshes."""
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
    if state == "running" or (rec and jobs.trainer_alive(rec)):  # a resumed trainer still loading: Stop, no Resume
        stop_control(c2, name)
    elif state in jobs.RESUMABLE:
        resume_control(c2, name, state)
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
                      "resume it here (Resume) or with `python -m trainer.run --resume {name}`",
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


# ---- resume: a stopped or failed run continues from its last checkpoint ---------------------------------
def resume_control(col, name: str, state: str) -> None:
    with col.container(border=True):
        refused = jobs.resume_error(RD, name)
        if refused:
            st.error(f"The last resume of {name} ended at once: {refused}")
        if st.button("Resume", key="resume_run", help=f"{name} is {state}: continue it from its last checkpoint "
                     "with its saved settings (python -m trainer.run --resume)"):
            try:
                rec = jobs.resume(RD, name)
                action_feedback("success", f"{name}: resuming from its last checkpoint (pid {rec['pid']}); its "
                                           "state turns running once the trainer has loaded it")
            except jobs.JobError as e:
                action_feedback("error", f"{name} was not resumed: {e}")
            st.rerun()  # the caption and the log show the new job at once


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


# ---- a run's tags and note; clone it into the form --------------------------------------------------
def _clone_into_form(name: str, cfg: dict) -> None:
    """The form below takes this run's settings (a callback: it runs before the form exists)."""
    presets = {"mnist-demo": "quick", "mnist": "paper-mnist", "cifar10": "paper-cifar10"}
    st.session_state["f_strategy"] = cfg.get("strategy") if cfg.get("strategy") in jobs.STRATEGIES else "dynamic"
    st.session_state["f_preset"] = presets.get(cfg.get("dataset"), "quick")
    st.session_state["f_dataset"] = cfg["dataset"] if cfg.get("dataset") in jobs.DATASETS else PRESET_DEFAULT
    st.session_state["f_model"] = cfg["model"] if cfg.get("model") in jobs.MODELS else PRESET_DEFAULT
    for key, field, kind in (("f_eps", "eps", float), ("f_steps", "steps", int), ("f_cmax", "c_max", float),
                             ("f_tprime", "t_prime", float), ("f_epochs", "epochs", int), ("f_lr", "lr", float),
                             ("f_n_train", "n_train", int), ("f_batch", "batch_size", int),
                             ("f_heldout", "heldout", int)):
        v = cfg.get(field)
        st.session_state[key] = kind(v) if v is not None and v == v else None
    st.session_state["f_alpha"] = cfg.get("alpha") if isinstance(cfg.get("alpha"), float) else None
    st.session_state["f_name"] = f"{name}-clone"
    st.session_state["runs_feedback"] = (f"The form below holds {name}'s settings (settings the form lacks come "
                                         "from the preset): change what you want and start it.")


def annotate_and_clone() -> None:
    df = ui.runs_frame(RD)
    if df.empty:
        return
    st.subheader("Tags, note, clone")
    c1, c2 = st.columns([2, 3])
    name = c1.selectbox("Run", df["run"].tolist(), key="ann_run")
    row = df.set_index("run").loc[name]
    cfg = {k: (None if isinstance(row.get(k), float) and row.get(k) != row.get(k) else row.get(k))
           for k in ("strategy", "dataset", "model", *queries.CONFIG_COLUMNS)}
    cfg["alpha"] = None  # the step size shown is alpha or eps/4; leave it to the trainer's rule
    c1.button("Clone into the form below", key="ann_clone", on_click=_clone_into_form, args=(name, cfg),
              help="Start a new run with this run's settings, changed where you like")
    with c2.form(f"annotate-{name}"):
        tags = st.text_input("Tags (comma-separated)", value=row["tags_text"], key=f"ann_tags_{name}")
        note = st.text_area("Note", value=row["note"] or "", key=f"ann_note_{name}", height=80)
        saved = st.form_submit_button("Save tags and note")
    if saved:
        try:
            now = annotations.write(RD, name, tags, note)
            st.session_state["runs_feedback"] = f"Saved {name}: tags {', '.join(now['tags']) or '(none)'}; note " \
                                                f"{len(now['note'])} characters."
            st.cache_data.clear()  # the table shows the new tags now, not after the cache's TTL
            st.rerun()
        except StoreError as e:
            c2.error(str(e))
    if st.session_state.get("runs_feedback"):
        st.success(st.session_state["runs_feedback"])


annotate_and_clone()

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
