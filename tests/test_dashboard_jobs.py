"""dashboard.jobs: real background training runs launched, adjusted and stopped; bad values refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from dashboard import jobs
from store import runs

TINY = dict(preset="quick", epochs=1, n_train=256, eval_n=64, heldout=64)


def wait_for(pred, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    tail = jobs.log_tail(str(log)) if log else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def group_members(pgid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def test_the_form_choices_are_the_trainers():
    from trainer import config

    assert jobs.STRATEGIES == config.STRATEGIES
    assert set(jobs.PRESETS) == set(config.PRESETS) and jobs.PRESETS[0] == "quick"  # the form's default
    assert jobs.DATASETS == config.DATASETS and jobs.MODELS == config.MODELS and jobs.DEVICES == config.DEVICES


@pytest.mark.parametrize("bad, message", [
    (dict(name="../escape"), "invalid run name"),
    (dict(name="a; rm -rf ~"), "invalid run name"),
    (dict(name="$(reboot)"), "invalid run name"),
    (dict(name="ok", eps=-0.1), "eps must be a number > 0"),
    (dict(name="ok", eps="0.3; ls"), "eps must be a number"),
    (dict(name="ok", lr=float("nan")), "lr must be a finite number"),
    (dict(name="ok", epochs=1.5), "whole number"),
    (dict(name="ok", steps=0), "steps must be a whole number >= 1"),
    (dict(name="ok", strategy="dynamic && reboot"), "unknown strategy"),
    (dict(name="ok", data_root="/tmp/x`id`"), "characters"),
    (dict(name="ok", data_root="/no/such/folder"), "does not exist"),
])
def test_bad_values_are_refused_before_anything_runs(tmp_path, bad, message):
    with pytest.raises(jobs.JobError, match=message.replace("$", r"\$").replace("(", r"\(")) as e:
        jobs.launch(tmp_path, jobs.LaunchSpec(**bad))
    assert len(str(e.value).splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # no log, no job record, no run folder


def test_argv_is_a_list_for_the_trainer_without_a_shell(tmp_path):
    argv = jobs.build_argv(tmp_path, jobs.LaunchSpec(name="a", eps="0.25", steps=7, data_root=str(tmp_path)))
    assert argv[:3] == [sys.executable, "-m", "trainer.run"]
    assert "--no-eval-at-end" in jobs.build_argv(tmp_path, jobs.LaunchSpec(name="a", eval_at_end=False))
    assert f"--runs-dir={tmp_path.resolve()}" in argv and "--eps=0.25" in argv and "--steps=7" in argv
    assert f"--data-root={tmp_path.resolve()}" in argv


def test_adjust_and_stop_refuse_runs_that_are_not_live_or_not_ours(tiny_runs):
    with pytest.raises(jobs.JobError, match="not running"):
        jobs.adjust(tiny_runs, "tiny-dynamic", c_max=0.1)
    with pytest.raises(jobs.JobError, match="not started from the dashboard"):
        jobs.stop(tiny_runs, "tiny-dynamic")
    with pytest.raises(jobs.JobError, match="invalid run name"):
        jobs.stop(tiny_runs, "../tiny-dynamic")
    assert not (tiny_runs / "tiny-dynamic" / runs.CONTROL).exists()


# ---- job records are untrusted: hostile ones show, delete and signal nothing ------------------------
def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def trainer_argv(name: str) -> list[str]:
    return [sys.executable, "-m", "trainer.run", f"--name={name}"]


@pytest.fixture
def outside(tmp_path) -> Path:
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("SECRET")
    return secret


def test_pending_record_with_a_log_outside_shows_and_deletes_nothing(tmp_path, outside):
    runs_dir = tmp_path / "runs"
    (runs_dir / jobs.JOBS_DIR).mkdir(parents=True)
    (runs_dir / jobs.LOGS_DIR).mkdir()
    (runs_dir / jobs.LOGS_DIR / "evil.log").symlink_to(outside)  # even the canonical log path is a link out
    pid = dead_pid()
    (runs_dir / jobs.JOBS_DIR / "evil.json").write_text(json.dumps(
        {"name": "evil", "pid": pid, "pgid": pid, "start_time": 1, "argv": trainer_argv("evil"), "log": str(outside)}))
    [rec] = jobs.pending_jobs(runs_dir)
    assert rec["name"] == "evil" and not rec["alive"] and "SECRET" not in rec["log_tail"]
    assert jobs.run_log(runs_dir, "evil") is None
    jobs.discard_pending(runs_dir, "evil")  # what Dismiss calls
    assert outside.read_text() == "SECRET"  # not deleted
    assert not (runs_dir / jobs.JOBS_DIR / "evil.json").exists()  # only the record went


def test_adopted_record_and_a_linked_train_log_show_nothing_outside(tmp_path, outside):
    runs_dir = tmp_path / "runs"
    rd = runs_dir / "run1"
    rd.mkdir(parents=True)
    (rd / runs.CONFIG).write_text("{}")
    (rd / runs.JOB).write_text(json.dumps({"name": "run1", "pid": dead_pid(), "start_time": 1,
                                           "argv": trainer_argv("run1"), "log": str(outside)}))
    (rd / runs.LOG).symlink_to(outside)
    assert jobs.job_record(runs_dir, "run1")["name"] == "run1"
    assert jobs.run_log(runs_dir, "run1") is None and jobs.log_tail(rd / runs.LOG) == ""
    # A pending record whose log names a file in some other '.logs' folder: adopt moves nothing of it.
    victim = tmp_path / "elsewhere" / jobs.LOGS_DIR / "run2.log"
    victim.parent.mkdir(parents=True)
    victim.write_text("keep me")
    (runs_dir / "run2").mkdir()
    (runs_dir / "run2" / runs.CONFIG).write_text("{}")
    (runs_dir / jobs.JOBS_DIR).mkdir()
    (runs_dir / jobs.JOBS_DIR / "run2.json").write_text(json.dumps(
        {"name": "run2", "pid": dead_pid(), "start_time": 1, "argv": trainer_argv("run2"), "log": str(victim)}))
    jobs.adopt(runs_dir)
    assert victim.read_text() == "keep me" and not (runs_dir / "run2" / runs.LOG).exists()
    assert outside.read_text() == "SECRET"


def test_stop_never_signals_a_process_it_cannot_prove_it_started(tmp_path):
    """A foreign process group (a real sleeping child of this test, in its own session) named by a
    job record: with a dead pid, with the sleeper's own pid and start time, or claiming a trainer's
    command line: never signalled."""
    runs_dir = tmp_path / "runs"
    rd = runs_dir / "victim"
    rd.mkdir(parents=True)
    (rd / runs.CONFIG).write_text("{}")
    sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        start = jobs._proc(sleeper.pid)[2]
        records = [
            {"pid": dead_pid(), "pgid": sleeper.pid, "start_time": start, "argv": trainer_argv("victim")},
            {"pid": sleeper.pid, "pgid": sleeper.pid, "start_time": start, "argv": ["sleep", "120"]},
            {"pid": sleeper.pid, "pgid": sleeper.pid, "start_time": start, "argv": trainer_argv("victim")},
            {"pid": sleeper.pid, "pgid": sleeper.pid, "start_time": start + 1, "argv": ["sleep", "120"]},
        ]
        outcomes = []
        for rec in records:
            (rd / runs.JOB).write_text(json.dumps({"name": "victim", **rec}))
            try:
                outcomes.append(jobs.stop(runs_dir, "victim", timeout=1.0))
            except jobs.JobError as e:
                outcomes.append(str(e))
            assert sleeper.poll() is None, rec  # still alive: no SIGTERM, no SIGKILL reached it
        assert outcomes[0] == "not running"
        assert all("is not the trainer of run 'victim'" in o for o in outcomes[1:]), outcomes
        assert not jobs.trainer_alive({"name": "victim", **records[1]})
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
def test_launch_one_to_the_end_and_adjust_then_stop_another(tmp_path):
    done = jobs.launch(tmp_path, jobs.LaunchSpec(name="finishes", strategy="dynamic", eval_at_end=False, **TINY))
    live = jobs.launch(tmp_path, jobs.LaunchSpec(name="stops", strategy="dynamic", eval_at_end=False,
                                                 **dict(TINY, epochs=200, heldout=0)))
    for rec in (done, live):
        assert rec["pgid"] == rec["pid"] != os.getpgid(0)  # its own process group, not ours
        assert rec["argv"][0] == sys.executable and "trainer.run" in rec["argv"]
        assert Path(rec["log"]).parent.name == jobs.LOGS_DIR
    with pytest.raises(jobs.JobError, match="already"):
        jobs.launch(tmp_path, jobs.LaunchSpec(name="stops", **TINY))

    rd = tmp_path / "stops"
    wait_for(lambda: runs.read_status(rd).get("state") == "running", 180, "the run to start", Path(live["log"]))
    jobs.adopt(tmp_path)
    assert jobs.job_record(tmp_path, "stops")["pid"] == live["pid"]
    assert (rd / runs.JOB).is_file() and (rd / runs.LOG).is_file()
    assert not (tmp_path / jobs.JOBS_DIR / "stops.json").exists()

    now = jobs.adjust(tmp_path, "stops", c_max="0.2", lr=0.005)
    assert now == {"c_max": 0.2, "lr": 0.005} == runs.read_json(rd / runs.CONTROL)

    def applied():
        with store.open(tmp_path) as con:
            return set(con.query_df("SELECT kind FROM events WHERE run = 'stops'")["kind"]) >= {"set_c_max", "set_lr"}
    wait_for(applied, 120, "the trainer to apply the control file", rd / runs.LOG)

    # SIGTERM must stop it cleanly: a SIGKILL ("killed") means the trainer ignored the stop.
    assert jobs.stop(tmp_path, "stops") == "stopped"
    assert group_members(live["pgid"]) == [] and not jobs.group_alive(live["pgid"])
    assert runs.effective_state(rd) == "stopped"

    fin = tmp_path / "finishes"
    wait_for(lambda: runs.effective_state(fin) == "finished" if (fin / runs.CONFIG).exists() else False, 240,
             "the tiny run to finish", Path(done["log"]))
    jobs.adopt(tmp_path)
    assert "finished" in jobs.log_tail(str(fin / runs.LOG))
    with store.open(tmp_path) as con:
        assert con.query_df("SELECT count(*) n FROM examples WHERE run = 'finishes'")["n"].item() == 256
    assert jobs.pending_jobs(tmp_path) == []
    wait_for(lambda: not jobs.group_alive(done["pgid"]), 60, "the finished trainer to exit")
    assert jobs.stop(tmp_path, "finishes") == "not running"


@pytest.mark.slow
def test_stop_during_the_end_of_run_evaluation(tmp_path):
    """SIGTERM while the trainer evaluates its robustness table (no batch boundary of the training
    loop): it stops within seconds with state 'stopped', not SIGKILLed as failed, and the evaluation
    it cut short is not left looking complete."""
    from trainer import evaluate

    rec = jobs.launch(tmp_path, jobs.LaunchSpec(name="evals", strategy="dynamic", preset="quick", epochs=1,
                                                n_train=128, heldout=0, eval_n=1000, device="cpu"))
    rd = tmp_path / "evals"
    wait_for(lambda: runs.read_status(rd).get("message") == "evaluating", 240, "the evaluation to start",
             tmp_path / jobs.LOGS_DIR / "evals.log")
    time.sleep(1.0)  # inside the attacks now
    t0 = time.monotonic()
    assert jobs.stop(tmp_path, "evals") == "stopped", jobs.log_tail(jobs.run_log(tmp_path, "evals"))
    assert time.monotonic() - t0 < 20.0 and not jobs.group_alive(rec["pgid"])  # the Stop button's SIGKILL bound
    status = runs.read_status(rd)
    assert status["state"] == "stopped" and runs.effective_state(rd) == "stopped"
    complete = [r for r in evaluate.read_evals(rd) if not r.get("partial", False)]
    assert len(complete) < len(evaluate.WHITE_BOX) * 2  # some attack of 'last' or 'best' never finished


# ---- the Runs page's forms (AppTest): every wrong field named beside it, nothing started --------------
APP = str(Path(__file__).resolve().parent.parent / "run_dashboard.py")


def runs_page(runs_dir: Path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("FOSC_RUNS_DIR", str(runs_dir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["runs_refresh"] = "off"
    at.run()
    at.switch_page("dashboard/pages/runs.py").run()
    assert not at.exception, at.exception
    return at


def red(at) -> list[str]:
    return [c.value for c in at.caption if c.value.startswith(":red[")]


@pytest.fixture
def live_runs(tiny_runs, tmp_path) -> Path:
    """Copies of a dynamic and a standard run that look live (status 'running' with this test's pid)."""
    import shutil

    for name in ("tiny-dynamic", "tiny-standard"):
        rd = tmp_path / "runs" / name
        shutil.copytree(tiny_runs / name, rd)
        runs.write_json(rd / runs.STATUS, {**runs.read_status(rd), "state": "running", "pid": os.getpid()})
    return tmp_path / "runs"


LAUNCH_BAD = {"f_eps": "-5", "f_lr": "1e9", "f_epochs": "1e12", "f_cmax": "nan", "f_tprime": "inf",
              "f_steps": "3.5", "f_batch": "-3"}


def test_launch_form_names_each_wrong_field_and_starts_nothing(live_runs, monkeypatch):
    at = runs_page(live_runs, monkeypatch)
    assert "cuda" not in at.selectbox(key="f_device").options or jobs.cuda_here()  # offered only with a GPU
    for key, value in LAUNCH_BAD.items():
        at.text_input(key=key).set_value(value)
    at.button(key="FormSubmitter:launch-Start run").click().run()
    assert not at.exception, at.exception
    shown = red(at)
    for words in ("eps must be a number > 0 and <= 100, got '-5'", "lr must be a number > 0 and <= 10, got '1e9'",
                  "epochs must be a whole number >= 1 and <= 100000, got '1e12'",
                  "c-max must be a finite number, got 'nan'", "t-prime must be a finite number, got 'inf'",
                  "steps must be a whole number, got '3.5'", "batch-size must be a whole number >= 1"):
        assert any(words in c for c in shown), (words, shown)
    assert len(shown) == len(LAUNCH_BAD)
    assert any("nothing started: 7 field(s)" in e.value for e in at.error)
    assert not (live_runs / jobs.JOBS_DIR).exists() and not (live_runs / jobs.LOGS_DIR).exists()
    at.text_input(key="f_eps").set_value("5")  # linf: wider than the pixel range
    at.button(key="FormSubmitter:launch-Start run").click().run()
    assert any("eps 5 is larger than the [0,1] pixel range" in c for c in red(at))


def test_adjust_form_fields_follow_the_strategy_and_bad_values_are_named(live_runs, monkeypatch):
    at = runs_page(live_runs, monkeypatch)
    at.selectbox(key="runs_pick").set_value("tiny-standard").run()
    assert [t.key for t in at.text_input if t.key.startswith("adj_")] == ["adj_lr"]  # c_max, T': Dynamic only
    at.selectbox(key="runs_pick").set_value("tiny-dynamic").run()
    assert [t.key for t in at.text_input if t.key.startswith("adj_")] == ["adj_c_max", "adj_t_prime", "adj_lr"]
    assert at.text_input(key="adj_c_max").placeholder == "now 0.5"  # current values shown
    at.text_input(key="adj_c_max").set_value("-1")
    at.text_input(key="adj_t_prime").set_value("0")
    at.text_input(key="adj_lr").set_value("0.005")
    at.button(key="FormSubmitter:adjust-Apply").click().run()
    shown = red(at)
    assert any("c-max must be a number >= 0" in c for c in shown) and any("t-prime must be a number > 0" in c
                                                                           for c in shown), shown
    assert not (live_runs / "tiny-dynamic" / runs.CONTROL).exists()  # nothing applied, lr neither
    at.text_input(key="adj_c_max").set_value("0.2")
    at.text_input(key="adj_t_prime").set_value("")
    at.button(key="FormSubmitter:adjust-Apply").click().run()
    assert runs.read_json(live_runs / "tiny-dynamic" / runs.CONTROL) == {"c_max": 0.2, "lr": 0.005}
    at.run()  # a refresh: the confirmation is still there, and it is words, not a dict
    assert not at.exception, at.exception
    [ok] = [s.value for s in at.success if "wrote" in s.value]
    assert "c_max = 0.2, lr = 0.005" in ok and "{" not in ok
    assert at.text_input(key="adj_c_max").placeholder == "now 0.2"


def test_stop_asks_first_and_says_what_happened(live_runs, monkeypatch):
    at = runs_page(live_runs, monkeypatch)
    at.selectbox(key="runs_pick").set_value("tiny-dynamic").run()
    assert not [b for b in at.button if b.key == "stop_yes"]
    at.button(key="stop_run").click().run()
    assert any("Stop **tiny-dynamic**?" in w.value for w in at.warning)
    at.button(key="stop_no").click().run()  # Cancel: back to the plain button, nothing signalled
    assert not [b for b in at.button if b.key == "stop_yes"] and [b for b in at.button if b.key == "stop_run"]
    at.button(key="stop_run").click().run()
    at.button(key="stop_yes").click().run()  # no job record: refused, and said so
    at.run()
    assert not at.exception, at.exception
    assert any("tiny-dynamic was not stopped: run 'tiny-dynamic' was not started from the dashboard" in e.value
               for e in at.error)


# ---- resume: a stopped or failed run continues from its last checkpoint ---------------------------------
def test_the_resume_point_is_the_trainers(tmp_path):
    from trainer import checkpoint

    assert jobs.last_checkpoint(tmp_path / "r") == checkpoint.path(tmp_path / "r")  # what --resume loads
    assert jobs.resume_argv(tmp_path, "r") == [sys.executable, "-m", "trainer.run", "--resume", "r", "--runs-dir",
                                               str(tmp_path.resolve()), "--quiet"]


def copy_run(tiny_runs: Path, runs_dir: Path, name: str, **status) -> Path:
    """A copy of the finished tiny-dynamic run under ``name``, its status changed by ``status``."""
    import shutil

    rd = runs_dir / name
    shutil.copytree(tiny_runs / "tiny-dynamic", rd)
    if status:
        runs.write_json(rd / runs.STATUS, {**runs.read_status(rd), **status})
    return rd


def fake_trainer(tmp_path: Path, name: str) -> subprocess.Popen:
    """A real process with a resumed trainer's command line (`python -m trainer.run --resume NAME`, in
    its own process group) that only sleeps: a package named trainer in its working folder."""
    pkg = tmp_path / "fake" / "trainer"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "run.py").write_text("import time\ntime.sleep(120)\n")
    return subprocess.Popen([sys.executable, "-m", "trainer.run", "--resume", name, "--runs-dir", "x", "--quiet"],
                            cwd=pkg.parent, start_new_session=True)


def test_resume_refuses_what_cannot_or_must_not_resume(tiny_runs, tmp_path, outside):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    copy_run(tiny_runs, runs_dir, "done")  # finished
    copy_run(tiny_runs, runs_dir, "live", state="running", pid=os.getpid())
    nock = copy_run(tiny_runs, runs_dir, "nock", state="stopped")
    (nock / runs.CHECKPOINTS / "last.pt").unlink()
    linkck = copy_run(tiny_runs, runs_dir, "linkck", state="stopped")
    (linkck / runs.CHECKPOINTS / "last.pt").unlink()
    (linkck / runs.CHECKPOINTS / "last.pt").symlink_to(tiny_runs / "tiny-dynamic" / runs.CHECKPOINTS / "last.pt")
    copy_run(tiny_runs, runs_dir, "created").joinpath(runs.STATUS).unlink()  # never wrote a status
    elsewhere = copy_run(tiny_runs, tmp_path / "elsewhere", "away", state="stopped")
    (runs_dir / "away").symlink_to(elsewhere)  # a run folder that is a link out of the runs folder
    resuming = copy_run(tiny_runs, runs_dir, "resuming", state="stopped")  # a resume already under way
    sleeper = fake_trainer(tmp_path, "resuming")
    try:
        wait_for(lambda: (jobs._proc(sleeper.pid) or [None] * 4)[3][1:3] == ["-m", "trainer.run"], 30, "the sleeper")
        runs.write_json(resuming / runs.JOB, {"name": "resuming", "pid": sleeper.pid, "pgid": sleeper.pid,
                                              "start_time": jobs._proc(sleeper.pid)[2], "argv": sleeper.args,
                                              "resumed": True})
        before = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*") if not p.is_symlink()}
        cases = {"../done": "invalid run name", "missing": "no run 'missing' in",
                 "done": "run 'done' is finished: nothing to resume",
                 "live": f"run 'live' is still running \\(pid {os.getpid()}\\); stop it first",
                 "nock": "run 'nock' has no checkpoint \\(checkpoints/last.pt\\)",
                 "linkck": "checkpoint .*last.pt is a symbolic link; not resumed",
                 "created": "run 'created' is 'created': only stopped or failed runs resume",
                 "away": "run folder .*away is a symbolic link \\(to .*elsewhere/away'\\), not a folder of",
                 "resuming": f"run 'resuming' is still running \\(pid {sleeper.pid}, started from here\\)"}
        for name, message in cases.items():
            with pytest.raises(jobs.JobError, match=message) as e:
                jobs.resume(runs_dir, name)
            assert len(str(e.value).splitlines()) == 1, name
        assert sleeper.poll() is None  # refused, and nothing signalled
        after = {p: p.stat().st_mtime_ns for p in runs_dir.rglob("*") if not p.is_symlink()}
        assert after == before  # no job record, no log, no file changed or added
        assert not (elsewhere / runs.LOG).exists() and not (runs_dir / jobs.JOBS_DIR).exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def stopped_run(runs_dir: Path, name: str, monkeypatch) -> Path:
    """A real 2-epoch run stopped (control file, as the Stop button's SIGTERM does) in the middle of
    epoch 1: status stopped, checkpoint of epoch 0, part of epoch 1's rows on disk."""
    from store import control
    from trainer import run

    rd = runs_dir / name

    def progress(quiet):
        def bar(n, epoch):
            class Bar:
                def update(self, k):
                    if epoch == 1:
                        control.write(rd, stop=True)

                def set_postfix(self, **_):
                    pass

                def close(self):
                    pass
            return Bar()
        return bar
    monkeypatch.setattr(run, "_progress", progress)
    assert run.main(["--preset", "quick", "--strategy", "dynamic", "--name", name, "--runs-dir", str(runs_dir),
                     "--epochs", "2", "--n-train", "48", "--batch-size", "16", "--heldout", "16",
                     "--heldout-pgd-steps", "1", "--steps", "3", "--trajectory-examples", "4", "--no-eval-at-end",
                     "--quiet"]) == 0
    monkeypatch.undo()
    return rd


def example_rows(runs_dir: Path, name: str):
    with store.open(runs_dir) as con:
        return con.query_df("SELECT epoch, idx, count(*) n FROM examples WHERE run = ? GROUP BY epoch, idx "
                            "ORDER BY epoch, idx", [name])


@pytest.mark.slow
def test_resume_continues_a_stopped_run_to_the_end(tmp_path, monkeypatch):
    rd = stopped_run(tmp_path, "halted", monkeypatch)
    assert runs.read_status(rd)["state"] == "stopped" and runs.read_status(rd)["epoch"] == 1
    first = example_rows(tmp_path, "halted")
    epoch0 = first[first["epoch"] == 0]
    assert len(epoch0) == 48 and 0 < (first["epoch"] == 1).sum() < 48  # stopped inside epoch 1

    rec = jobs.resume(tmp_path, "halted")
    assert rec["argv"] == jobs.resume_argv(tmp_path, "halted") and rec["pgid"] == rec["pid"] != os.getpgid(0)
    assert jobs.job_record(tmp_path, "halted")["pid"] == rec["pid"]  # its job.json: Stop and the log find it
    assert jobs.run_log(tmp_path, "halted") == rd / runs.LOG and jobs.pending_jobs(tmp_path) == []
    def finished():
        if runs.effective_state(rd) == "finished":
            return True
        assert jobs.group_alive(rec["pgid"]) or runs.effective_state(rd) == "finished", \
            f"the resumed trainer exited, run {runs.effective_state(rd)}:\n{jobs.log_tail(rd / runs.LOG)}"
    wait_for(finished, 240, "the resumed run to finish", rd / runs.LOG)
    wait_for(lambda: not jobs.group_alive(rec["pgid"]), 60, "the resumed trainer to exit")
    assert "run halted finished" in jobs.log_tail(jobs.run_log(tmp_path, "halted"), lines=200)
    rows = example_rows(tmp_path, "halted")
    assert rows["epoch"].value_counts().sort_index().to_dict() == {0: 48, 1: 48}  # every epoch, all rows
    assert (rows["n"] == 1).all()  # no example logged twice in an epoch (the cut epoch 1 was redone, not added to)
    assert rows[rows["epoch"] == 0]["idx"].tolist() == epoch0["idx"].tolist()
    with store.open(tmp_path) as con:
        assert con.query_df("SELECT epoch FROM epochs WHERE run = 'halted' ORDER BY epoch")["epoch"].tolist() == [0, 1]
        kinds = con.query_df("SELECT kind FROM events WHERE run = 'halted' ORDER BY time")["kind"].tolist()
    assert kinds[:2] == ["start", "stop"] and "resume" in kinds and kinds[-1] == "finish"
    with pytest.raises(jobs.JobError, match="is finished"):
        jobs.resume(tmp_path, "halted")
    assert jobs.resume_error(tmp_path, "halted") is None


@pytest.mark.slow
def test_a_damaged_checkpoint_is_refused_by_the_trainer_and_said(tiny_runs, tmp_path):
    rd = copy_run(tiny_runs, tmp_path, "broken", state="stopped")
    (rd / runs.CHECKPOINTS / "last.pt").write_bytes(b"not a checkpoint")
    status = runs.read_status(rd)
    rec = jobs.resume(tmp_path, "broken")
    wait_for(lambda: not jobs.group_alive(rec["pgid"]), 120, "the trainer to refuse", rd / runs.LOG)
    said = jobs.resume_error(tmp_path, "broken")
    assert said and "checkpoint" in said and "unreadable" in said, jobs.log_tail(rd / runs.LOG)
    assert runs.read_status(rd) == status  # the run as it was


def test_resume_button_only_for_resumable_runs_and_it_starts_the_job(tiny_runs, tmp_path, monkeypatch):
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    copy_run(tiny_runs, runs_dir, "done")
    copy_run(tiny_runs, runs_dir, "live", state="running", pid=os.getpid())
    copy_run(tiny_runs, runs_dir, "stale", state="running", pid=dead_pid())  # killed: reads failed
    copy_run(tiny_runs, runs_dir, "paused", state="stopped", message="stopped by user; resume with --resume")
    nock = copy_run(tiny_runs, runs_dir, "nock", state="stopped")
    (nock / runs.CHECKPOINTS / "last.pt").unlink()
    at = runs_page(runs_dir, monkeypatch)
    offered = {}
    for name in ("done", "live", "stale", "paused", "nock"):
        at.selectbox(key="runs_pick").set_value(name).run()
        assert not at.exception, at.exception
        offered[name] = [b.key for b in at.button if b.key == "resume_run"] != []
    assert offered == {"done": False, "live": False, "stale": True, "paused": True, "nock": True}

    at.button(key="resume_run").click().run()  # nock: refused, and the refusal is on the page
    assert any("nock was not resumed: run 'nock' has no checkpoint" in e.value for e in at.error), at.error
    assert not (nock / runs.JOB).exists()

    at.selectbox(key="runs_pick").set_value("paused").run()
    at.button(key="resume_run").click().run()
    assert not at.exception, at.exception
    rec = jobs.job_record(runs_dir, "paused")
    try:
        assert rec and rec["resumed"] and rec["argv"] == jobs.resume_argv(runs_dir, "paused")
        assert jobs.trainer_alive(rec)
        at.run()  # a refresh: the feedback is still there; its trainer is live, so Stop and no second Resume
        [ok] = [s.value for s in at.success if "resuming" in s.value]
        assert f"paused: resuming from its last checkpoint (pid {rec['pid']})" in ok
        assert [b for b in at.button if b.key == "stop_run"] and not [b for b in at.button if b.key == "resume_run"]
        assert jobs.stop(runs_dir, "paused") == "stopped"  # Stop works on a resumed job as on a launched one
        assert group_members(rec["pgid"]) == []
    finally:
        if rec and jobs.group_alive(rec["pgid"]):
            os.killpg(rec["pgid"], 9)
