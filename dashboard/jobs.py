"""Launch, stop and steer training runs from the dashboard.

A run is started as ``python -m trainer.run --name N --runs-dir D ...``: an argv list (never a
shell), every value validated here first, in its own session and process group, its output going
to a log file (never a pipe, which would block the trainer once full). The trainer refuses to start
in an existing run folder, so the job record and the log start outside it, in ``D/.jobs/N.json``
and ``D/.logs/N.log`` (names starting with '.' are never runs); once the trainer has created the
folder, ``adopt`` moves both in, as ``job.json`` and ``train.log``. A restarted dashboard finds its
jobs in those files, but trusts none of them (they are files in the runs folder): a log is read only
at those two paths, never through a symbolic link, and a pid is signalled only when /proc shows the
process ``launch`` started (start time, command line and own process group together). Stopping then
signals that process group (SIGTERM, then SIGKILL) and checks that no process of it is left. c_max,
T' and lr of a live run change through its control file. ``resume`` continues a stopped or failed
run as ``python -m trainer.run --resume N --runs-dir D``, started by the same code as ``launch``; its
folder exists, so its record goes straight to ``job.json`` and its output is appended to ``train.log``.
"""
from __future__ import annotations

import glob
import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from store import choices, control, datasets, runs, strategies

PROJECT_ROOT = Path(__file__).resolve().parent.parent
JOBS_DIR, LOGS_DIR = ".jobs", ".logs"

# The trainer's choices, from the store's registries (the dashboard may not import the trainer).
STRATEGIES = strategies.NAMES
PRESETS = tuple(choices.PRESETS)
DATASETS = tuple(datasets.DATASETS)
MODELS = tuple(choices.MODELS)
DEVICES = choices.DEVICES

_SAFE_PATH = re.compile(r"^[\w./~+@:, -]+$")  # no quotes, $, ;, |, &, <, >, backticks or newlines


class JobError(ValueError):
    """A refused launch, stop or adjustment; str(e) is one line for the user."""


@dataclass(frozen=True)
class LaunchSpec:
    """What the form asks for. ``None`` leaves a value to the preset (or the trainer's default)."""
    name: str
    strategy: str = "dynamic"
    preset: str | None = "quick"
    dataset: str | None = None
    model: str | None = None
    eps: float | None = None
    steps: int | None = None        # K
    alpha: float | None = None
    c_max: float | None = None
    t_prime: float | None = None    # T'
    epochs: int | None = None
    lr: float | None = None
    data_root: str | None = None
    n_train: int | None = None
    batch_size: int | None = None
    heldout: int | None = None
    eval_n: int | None = None
    device: str | None = None
    eval_at_end: bool | None = None  # None: the trainer's default (evaluate the robustness table)


FORM_NUMBERS = ("eps", "alpha", "steps", "c_max", "t_prime", "epochs", "lr", "n_train", "batch_size", "heldout",
                "eval_n")  # the launch form's number fields; their bounds are the trainer's (store.control.BOUNDS)
CHOICES = {"strategy": STRATEGIES, "preset": PRESETS, "dataset": DATASETS, "model": MODELS, "device": DEVICES}


def parse_number(field: str, value) -> float | int:
    """A form value (number or text) as the field's type within the trainer's bounds, else JobError.
    The launch form has no norm: its runs are linf, whose eps the trainer caps at the pixel range."""
    try:
        num = control.parse(field, value)
    except ValueError as e:
        raise JobError(str(e)) from None
    if field == "eps" and num > control.LINF_EPS_MAX:
        raise JobError(f"eps {num:g} is larger than the [0,1] pixel range (linf)")
    return num


def check_numbers(values: dict) -> tuple[dict, dict]:
    """A form's number fields, each against the trainer's bound: (parsed values, field -> one-line
    error). Empty fields are left out of both (they mean "the preset's value")."""
    clean, errors = {}, {}
    for field, value in values.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        try:
            clean[field] = parse_number(field, value)
        except JobError as e:
            errors[field] = str(e)
    return clean, errors


def cuda_here() -> bool:
    """Whether this machine has an NVIDIA GPU, from the driver's device files: the dashboard may not
    import the trainer (nor torch, seconds to import). The trainer still checks CUDA itself."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or any(Path("/proc/driver/nvidia/gpus").glob("*"))


def devices_here() -> tuple[str, ...]:
    """The device choices worth offering on this machine (no 'cuda' without a GPU)."""
    return DEVICES if cuda_here() else tuple(d for d in DEVICES if d != "cuda")


def _check_path(value: str) -> str:
    text = str(value).strip()
    if not _SAFE_PATH.match(text):
        raise JobError(f"data root {value!r} has characters a path here should not have")
    path = Path(text).expanduser().resolve()
    if not path.exists():
        raise JobError(f"data root {str(path)!r} does not exist")
    return str(path)


def build_argv(runs_dir: str | Path, spec: LaunchSpec) -> list[str]:
    """The trainer's argv for ``spec``, every value checked; JobError (one line) on the first bad one."""
    try:
        name = runs.validate_run_name(spec.name)
    except runs.StoreError as e:
        raise JobError(str(e)) from None
    argv = [sys.executable, "-m", "trainer.run", f"--name={name}", f"--runs-dir={Path(runs_dir).resolve()}",
            "--quiet"]  # a log file wants lines, not a progress bar
    for f in fields(LaunchSpec):
        value = getattr(spec, f.name)
        if f.name == "name" or value is None or value == "":
            continue
        if f.name == "eval_at_end":
            if not isinstance(value, bool):
                raise JobError(f"eval-at-end must be true or false, got {value!r}")
            argv.append("--eval-at-end" if value else "--no-eval-at-end")
            continue
        if f.name in CHOICES:
            if value not in CHOICES[f.name]:
                raise JobError(f"unknown {f.name} {value!r}; choose one of: {', '.join(CHOICES[f.name])}")
            if f.name == "device" and value == "cuda" and not cuda_here():
                raise JobError("device cuda: this machine has no NVIDIA GPU; choose cpu or auto")
        elif f.name in FORM_NUMBERS:
            value = parse_number(f.name, value)
        elif f.name == "data_root":
            value = _check_path(value)
        argv.append(f"--{f.name.replace('_', '-')}={value}")  # '=' keeps a value from reading as a flag
    return argv


# ---- job records --------------------------------------------------------------------------------
# A job record is a file in the runs folder, so it is untrusted input like every other: its ``log``
# field is never opened, moved or deleted (logs live at the paths below, derived from the run's name),
# and its pid is signalled only when /proc shows the very process this dashboard started (see
# ``trainer_alive``).

def _pending_path(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir) / JOBS_DIR / f"{name}.json"


def _pending_log(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir) / LOGS_DIR / f"{name}.log"


def _valid_record(rec, name: str) -> dict | None:
    """``rec`` if it has the shape ``launch`` writes for run ``name``, else None."""
    if not isinstance(rec, dict) or rec.get("name") != name:
        return None
    pid, start, argv = rec.get("pid"), rec.get("start_time"), rec.get("argv")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (pid, start)):
        return None
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        return None
    return rec


def job_record(runs_dir: str | Path, name: str) -> dict | None:
    """The job record of run ``name`` (in its folder once adopted, else pending), or None if there
    is none or it is not one this dashboard could have written."""
    runs_dir = Path(runs_dir)
    for path in (runs.run_dir(runs_dir, name) / runs.JOB, _pending_path(runs_dir, name)):
        try:
            rec = _valid_record(runs.read_json(path), name)
        except (runs.StoreError, OSError, UnicodeDecodeError):
            continue
        if rec is not None:
            return rec
    return None


def adopt(runs_dir: str | Path) -> None:
    """Move the record and log of each job whose trainer has created its run folder into that folder."""
    pending = Path(runs_dir) / JOBS_DIR
    if not pending.is_dir():
        return
    for path in sorted(pending.glob("*.json")):
        name = path.stem
        try:
            rd = runs.run_dir(runs_dir, name)
            rec = _valid_record(runs.read_json(path), name)
        except (runs.StoreError, OSError, UnicodeDecodeError):
            continue
        if rec is None or not (rd / runs.CONFIG).is_file() or (rd / runs.JOB).exists():
            continue
        log = _pending_log(runs_dir, name)
        if _regular_file(log) and not (rd / runs.LOG).exists():
            # The trainer keeps writing through its open descriptor: a rename moves the file, not the writes.
            os.replace(log, rd / runs.LOG)
        runs.write_json(rd / runs.JOB, dict(rec, log=str(rd / runs.LOG)))
        path.unlink(missing_ok=True)


def pending_jobs(runs_dir: str | Path) -> list[dict]:
    """Launched jobs whose run folder does not exist (yet): starting up, or refused by the trainer."""
    adopt(runs_dir)
    out = []
    for path in sorted((Path(runs_dir) / JOBS_DIR).glob("*.json")):
        try:
            rec = _valid_record(runs.read_json(path), path.stem)
        except (runs.StoreError, OSError, UnicodeDecodeError):
            continue
        if rec is not None:
            out.append(dict(rec, alive=trainer_alive(rec), log_tail=log_tail(_pending_log(runs_dir, rec["name"]))))
    return out


def discard_pending(runs_dir: str | Path, name: str) -> None:
    """Forget a pending job that is no longer alive: its record only (never a file the record names)."""
    try:
        path = _pending_path(runs_dir, runs.validate_run_name(name))
        rec = _valid_record(runs.read_json(path, default=None), name)
    except (runs.StoreError, OSError, UnicodeDecodeError) as e:
        raise JobError(str(e).splitlines()[0]) from None
    if rec is not None and trainer_alive(rec):
        raise JobError(f"job {name!r} is still running; stop it first")
    path.unlink(missing_ok=True)


def run_log(runs_dir: str | Path, name: str) -> Path | None:
    """Run ``name``'s log: ``train.log`` in its folder, else the pending log; a symbolic link or a
    path that resolves outside those folders is not a log of ours (None)."""
    runs_dir = Path(runs_dir)
    for path, home in ((runs.run_dir(runs_dir, name) / runs.LOG, runs.run_dir(runs_dir, name)),
                       (_pending_log(runs_dir, name), runs_dir / LOGS_DIR)):
        if _regular_file(path) and path.resolve().parent == home.resolve():
            return path
    return None


def _regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)  # lstat: a symbolic link is not followed
    except OSError:
        return False


def log_tail(path: str | Path | None, lines: int = 20) -> str:
    """The last lines of a log file (never through a symbolic link)."""
    if not path:
        return ""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return ""
        f.seek(0, os.SEEK_END)
        f.seek(max(f.tell() - 16384, 0))
        return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])


# ---- processes ----------------------------------------------------------------------------------

_CHILDREN: dict[int, subprocess.Popen] = {}  # this process's children, reaped so they never linger as zombies


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


def _proc(pid: int) -> tuple[str, int, int, list[str]] | None:
    """(state, process group, start time in clock ticks since boot, argv) of ``pid`` from /proc, or None."""
    try:
        stat_ = Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()
        argv = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    if argv and argv[-1] == b"":
        argv = argv[:-1]
    return stat_[0], int(stat_[2]), int(stat_[19]), [a.decode(errors="replace") for a in argv]


def trainer_alive(rec: dict) -> bool:
    """Whether the job's trainer runs: the recorded pid still is the process ``launch`` started,
    proven by its start time, its command line (the argv launched, naming this run) and its process
    group (its own) together. A reused pid, a foreign pgid or a record without /proc proves nothing."""
    _reap()
    if _valid_record(rec, rec.get("name") if isinstance(rec, dict) else None) is None:
        return False
    seen = _proc(rec["pid"])
    if seen is None:
        return False
    state, pgrp, start, argv = seen
    return (state != "Z" and start == rec["start_time"] and pgrp == rec["pid"] and argv == rec["argv"]
            and argv[1:3] == ["-m", "trainer.run"] and _names_run(argv, rec["name"]))


def _names_run(argv: list[str], name: str) -> bool:
    """Whether a trainer argv starts (``--name=NAME``, from ``launch``) or resumes (``--resume NAME``,
    from ``resume``) run ``name``."""
    return f"--name={name}" in argv or any(a == "--resume" and b == name for a, b in zip(argv, argv[1:]))


def group_alive(pgid: int | None) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies do not count)."""
    if not pgid:
        return False
    _reap()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            seen = _proc(int(entry.name))
            if seen is not None and seen[1] == int(pgid) and seen[0] != "Z":
                return True
    return False


def _start(name: str, argv: list[str], log_path: Path, record_path: Path, append: bool = False,
           **extra) -> dict:
    """Start ``argv`` (a trainer of run ``name``) in the background, in its own session and process
    group, stdout and stderr into ``log_path`` (truncated, or appended to), and write its job record
    (pid, start time from /proc, argv, log, ``extra``) to ``record_path``. The one place a process starts."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p))
    # O_NOFOLLOW: a planted symbolic link must not make the trainer write elsewhere; O_NONBLOCK: a
    # planted FIFO must not block the dashboard (it is then refused as not a regular file).
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | (os.O_APPEND if append else os.O_TRUNC)
    try:
        fd = os.open(log_path, flags, 0o644)
    except OSError as e:
        raise JobError(f"cannot write the log {log_path}: {e.strerror or e} (a link or a special file?)") from None
    with os.fdopen(fd, "wb") as log:
        if not stat.S_ISREG(os.fstat(log.fileno()).st_mode):
            raise JobError(f"the log {log_path} is not a regular file; nothing started")
        os.set_blocking(log.fileno(), True)
        if append:
            log.write(f"\n--- {' '.join(argv[1:])} (from the dashboard, "
                      f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}) ---\n".encode())
            log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=PROJECT_ROOT, env=env, start_new_session=True, close_fds=True)
    _CHILDREN[proc.pid] = proc
    seen = _proc(proc.pid)
    rec = {"name": name, "pid": proc.pid, "pgid": proc.pid, "start_time": seen[2] if seen else 0, "argv": argv,
           "log": str(log_path), "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra}
    runs.write_json(record_path, rec)
    return rec


def launch(runs_dir: str | Path, spec: LaunchSpec) -> dict:
    """Start the trainer for ``spec`` in the background; returns the job record (pid, start time, argv, log)."""
    runs_dir = Path(runs_dir).resolve()
    argv = build_argv(runs_dir, spec)
    name = spec.name
    adopt(runs_dir)
    if runs.run_dir(runs_dir, name).exists():
        raise JobError(f"run {name!r} already exists in {runs_dir}; choose another name")
    old = job_record(runs_dir, name)
    if old and trainer_alive(old):
        raise JobError(f"run {name!r} is already starting (pid {old.get('pid')})")
    return _start(name, argv, _pending_log(runs_dir, name), _pending_path(runs_dir, name),
                  spec={k: v for k, v in asdict(spec).items() if v is not None})


# ---- resume: a stopped or failed run continues from its last checkpoint ---------------------------------
# What store.runs.effective_state reports and the trainer resumes: 'stopped' (Stop, Ctrl-C, the control
# file), 'failed' (a crash, a full disk, SIGKILL; also a 'running' status whose process is gone). Not
# 'running' (the trainer refuses), 'finished' (nothing left to train), 'created' (no epoch ever ended).
RESUMABLE = ("stopped", "failed")


def last_checkpoint(rd: Path) -> Path:
    return runs.checkpoint_path(rd, "last")  # what --resume loads (trainer.checkpoint reads the same name)


def resume_argv(runs_dir: str | Path, name: str) -> list[str]:
    return [sys.executable, "-m", "trainer.run", "--resume", name, "--runs-dir", str(Path(runs_dir).resolve()),
            "--quiet"]


def resume(runs_dir: str | Path, name: str) -> dict:
    """Continue run ``name`` (stopped or failed) from its last checkpoint with its saved config, in the
    background, as ``launch`` starts one: its record becomes the run's ``job.json`` and its output is
    appended to the run's ``train.log``, so Stop, the log and adopt treat it as a launched run.
    JobError (one line) for a run that runs, is finished or not resumable, has no checkpoint, or
    whose name or folder is not a run of this runs folder. The trainer still checks the checkpoint
    and config itself (exit 2 with one line in the log, the run unchanged: see ``resume_error``)."""
    runs_dir = Path(runs_dir).resolve()
    try:
        rd = runs.run_dir(runs_dir, name)
    except runs.StoreError as e:
        raise JobError(str(e)) from None
    if os.path.islink(rd):
        raise JobError(f"run folder {rd} is a symbolic link (to {os.readlink(rd)!r}), not a folder of "
                       f"{runs_dir}; not resumed")
    if not rd.is_dir() or not os.path.lexists(rd / runs.CONFIG):
        raise JobError(f"no run {name!r} in {runs_dir}")
    try:
        cfg = runs.read_json(rd / runs.CONFIG)
    except (runs.StoreError, OSError) as e:
        raise JobError(f"run {name!r} cannot resume: {str(e).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise JobError(f"run {name!r} cannot resume: {rd / runs.CONFIG} is not a run config")
    adopt(runs_dir)
    old = job_record(runs_dir, name)
    if old and trainer_alive(old):
        raise JobError(f"run {name!r} is still running (pid {old['pid']}, started from here); stop it first")
    state = runs.effective_state(rd)
    if state == "running":
        raise JobError(f"run {name!r} is still running (pid {runs.read_status(rd).get('pid')}); stop it first")
    if state == "finished":
        raise JobError(f"run {name!r} is finished: nothing to resume (clone it into the form to train more)")
    if state not in RESUMABLE:
        raise JobError(f"run {name!r} is {state!r}: only {' or '.join(RESUMABLE)} runs resume")
    ck = last_checkpoint(rd)
    if os.path.islink(ck) or os.path.islink(ck.parent):
        raise JobError(f"run {name!r}'s checkpoint {ck} is a symbolic link; not resumed")
    if not _regular_file(ck):
        raise JobError(f"run {name!r} has no checkpoint ({ck.relative_to(rd)}): it ended before "
                       "its first epoch did; start it again instead")
    return _start(name, resume_argv(runs_dir, name), rd / runs.LOG, rd / runs.JOB, append=True, resumed=True)


def resume_error(runs_dir: str | Path, name: str) -> str | None:
    """The trainer's one-line refusal (``error: ...``, exit 2: a damaged checkpoint or config) when
    the last resume started here has exited and left the run where it was; None otherwise."""
    try:
        rd = runs.run_dir(runs_dir, name)
    except runs.StoreError:
        return None
    rec = job_record(runs_dir, name)
    if not rec or not rec.get("resumed") or trainer_alive(rec) or runs.effective_state(rd) not in RESUMABLE:
        return None
    last = log_tail(run_log(runs_dir, name), lines=1).strip()
    return last[len("error:"):].strip() if last.startswith("error:") else None


def _wait_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def stop(runs_dir: str | Path, name: str, timeout: float = 20.0) -> str:
    """Stop run ``name``: SIGTERM to its trainer's process group (the trainer finishes its batch, saves
    and marks the run stopped), SIGKILL after ``timeout`` s. Only a trainer proven to be the one this
    dashboard started (``trainer_alive``) is signalled. Returns how it ended; JobError otherwise."""
    runs_dir = Path(runs_dir)
    try:
        runs.validate_run_name(name)
    except runs.StoreError as e:
        raise JobError(str(e)) from None
    adopt(runs_dir)
    rec = job_record(runs_dir, name)
    if rec is None:
        raise JobError(f"run {name!r} was not started from the dashboard; stop it where it runs (Ctrl-C), "
                       "or write {\"stop\": true} into its control.json")
    if not trainer_alive(rec):
        if _proc(rec["pid"]) is not None and _proc(rec["pid"])[0] != "Z":
            raise JobError(f"pid {rec['pid']} is not the trainer of run {name!r} (its start time, command line or "
                           "process group differ); not signalling it")
        return "not running"
    # Proven: pid is our trainer and leads its own group; while the group has members its id is not reused.
    pgid = rec["pid"]
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:  # it ended between the check and the signal
        return "not running"
    if _wait_gone(pgid, timeout):
        return "stopped"
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if _wait_gone(pgid, 10.0):
        return "killed"
    raise JobError(f"process group {pgid} of run {name!r} is still alive after SIGKILL")


def current_schedule(runs_dir: str | Path, name: str) -> dict:
    """c_max, t_prime and lr a live run uses now: its config, then what its control file changed
    (values that fail the bounds are left out, as the trainer leaves them out)."""
    try:
        cfg = runs.read_json(runs.run_dir(runs_dir, name) / runs.CONFIG, default={})
    except (runs.StoreError, OSError, UnicodeDecodeError):
        cfg = {}
    now = {}
    for key in control.CONTROL_KEYS:
        for source in (control.read(runs.run_dir(runs_dir, name)), cfg if isinstance(cfg, dict) else {}):
            try:
                now[key] = control.validate(key, source[key])
                break
            except (KeyError, ValueError):
                continue
    return now


def launch_status(runs_dir: str | Path, name: str) -> tuple[str, str]:
    """(kind, one line) saying what a run launched from here does now: "success", "info" or "error",
    from its status file once its folder exists, else from its pending record and log."""
    try:
        rd = runs.run_dir(runs_dir, name)
    except runs.StoreError as e:
        return "error", str(e)
    if (rd / runs.CONFIG).is_file():
        state, status = runs.effective_state(rd), runs.read_status(rd)
        message = str(status.get("message") or "")[:300]
        if state == "failed":
            return "error", f"{name} failed: {message or 'its process ended without a word (see its log)'}"
        if state == "running":
            return "info", f"{name} is running: epoch {status.get('epoch')} of {status.get('epochs')} ({message})"
        return ("success" if state == "finished" else "info"), f"{name} is {state}" + (f": {message}" if message else "")
    rec = job_record(runs_dir, name)
    if rec is None:
        return "error", f"{name}: no job record any more (dismissed?)"
    if trainer_alive(rec):
        return "info", f"{name} is starting (pid {rec['pid']})"
    last = (log_tail(_pending_log(runs_dir, name), lines=1) or "no output").strip()
    return "error", f"{name} exited before creating its run folder: {last}"


def adjust(runs_dir: str | Path, name: str, **values) -> dict:
    """Write c_max, t_prime and/or lr into a live run's control file (the trainer applies them
    between batches and logs an event). Returns the file's content."""
    unknown = sorted(set(values) - {"c_max", "t_prime", "lr"})
    if unknown:
        raise JobError(f"cannot adjust {', '.join(unknown)}; only c_max, t_prime and lr")
    try:
        rd = runs.run_dir(runs_dir, name)
    except runs.StoreError as e:
        raise JobError(str(e)) from None
    if not (rd / runs.CONFIG).is_file():
        raise JobError(f"no run {name!r} in {runs_dir}")
    if runs.effective_state(rd) != "running":
        raise JobError(f"run {name!r} is not running; adjustments apply to live runs only")
    clean = {k: v for k, v in values.items() if v is not None and v != ""}
    if not clean:
        raise JobError("nothing to adjust: give c_max, T' or lr")
    return control.write(rd, **{k: parse_number(k, v) for k, v in clean.items()})
