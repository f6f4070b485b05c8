"""Every bad input in docs/ROBUSTNESS.md, one test each (the test ids are the table's first column).

Each gets a clear one-line error (exit code 2 for the trainer's command line) and loses nothing:
the runs folder's bytes are compared before and after. A last test keeps the table and the ids equal.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import store
from dashboard import jobs
from store import control as store_control
from store import runs
from store import sql as store_sql
from trainer import checkpoint, run
from trainer import config as config_mod
from trainer.config import ConfigError, RunConfig
from trainer.control import ControlFile

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ROBUSTNESS.md"
TINY = ["--preset", "quick", "--epochs", "1", "--n-train", "32", "--batch-size", "16", "--heldout", "16",
        "--heldout-pgd-steps", "1", "--steps", "2", "--no-eval-at-end", "--quiet"]


def main_rc(argv: list[str]) -> int:
    try:
        return run.main(argv)
    except SystemExit as e:  # argparse errors: still one line and code 2
        return e.code


def one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


N = 128  # examples per epoch of the finished run below


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny Dynamic run (2 epochs of 128 examples), made once for this module."""
    d = tmp_path_factory.mktemp("finished")
    assert run.main(["--preset", "quick", "--name", "tiny-dynamic", "--runs-dir", str(d), "--epochs", "2",
                     "--n-train", str(N), "--batch-size", "64", "--steps", "3", "--heldout", "32",
                     "--heldout-pgd-steps", "1", "--trajectory-examples", "4", "--no-eval-at-end",
                     "--device", "cpu", "--quiet"]) == 0
    return d / "tiny-dynamic"


@pytest.fixture
def done(finished, tmp_path) -> Path:
    """A private copy of the finished run, free to damage; returns its runs folder."""
    shutil.copytree(finished, tmp_path / "runs" / "tiny-dynamic")
    return tmp_path / "runs"


# ---- config values and run names on the command line --------------------------------------------
CLI = {
    "config-eps-nan": (["--eps", "nan"], "eps must be a finite number, got nan"),
    "config-lr-inf": (["--lr", "inf"], "lr must be a finite number, got inf"),
    "config-batch-size-text": (["--batch-size", "64x"], "invalid value for --batch-size"),
    "config-n-train-zero": (["--n-train", "0"], "n-train must be a whole number >= 1"),
    "config-milestones-decreasing": (["--milestones", "4,2"], "milestones must be increasing"),
    "config-c-max-text": (["--c-max", "lots"], "c-max must be a number >= 0 or 'auto'"),
    "config-flush-rows-zero": (["--flush-rows", "0"], "flush-rows must be a whole number >= 1"),
    "config-seed-beyond-int64": (["--seed", str(2**64)], "seed must be a whole number >= 0 and <= 4294967295"),
    "config-batch-size-beyond-int64": (["--batch-size", str(2**63)], "batch-size must be a whole number >= 1"),
    "config-heldout-pgd-steps-zero": (["--heldout-pgd-steps", "0"], "heldout-pgd-steps must be a whole number >= 1"),
    "config-heldout-pgd-steps-negative": (["--heldout-pgd-steps", "-2"], "heldout-pgd-steps must be a whole number >= 1"),
    "config-lr-gamma-zero": (["--lr-gamma", "0"], "lr-gamma must be a number > 0 and <= 1, got 0"),
    "config-lr-gamma-nan": (["--lr-gamma", "nan"], "lr-gamma must be a finite number, got nan"),
    "config-l2-eps-huge": (["--norm", "l2", "--eps", "1e300"], "eps must be a number > 0 and <= 100, got 1e+300"),
    "config-lr-huge": (["--lr", "1e308"], "lr must be a number > 0 and <= 10, got 1e+308"),
    "name-trailing-newline": (["--name", "ok\n"], "invalid run name 'ok\\n'"),
    "resume-with-other-name": (["--resume", "tiny-dynamic", "--name", "other"], "leave out --name 'other'"),
    "name-path-traversal": (["--name", "../escaped"], "invalid run name"),
    "name-absolute-path": (["--name", "/tmp/escaped"], "invalid run name"),
    "name-with-slash": (["--name", "a/b"], "invalid run name"),
    "name-hidden": (["--name", ".hidden"], "invalid run name"),
    "resume-path-traversal": (["--resume", "../../etc"], "invalid run name"),
    "resume-missing-run": (["--resume", "nope"], "no run 'nope'"),
}


@pytest.mark.parametrize("case", list(CLI), ids=list(CLI))
def test_cli(case, tmp_path, capsys):
    argv, words = CLI[case]
    runs_dir = tmp_path / "runs"
    named = [] if "--name" in argv or "--resume" in argv else ["--name", "x"]
    assert main_rc([*TINY, *named, "--runs-dir", str(runs_dir), *argv]) == 2
    assert words in one_line(capsys.readouterr().err)
    assert not runs_dir.exists() or not any(runs_dir.iterdir())  # nothing created
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["runs"])  # nothing outside either


def test_config_device_cuda_without_cuda(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a CPU machine answers
    runs_dir = tmp_path / "runs"
    assert main_rc([*TINY, "--name", "x", "--runs-dir", str(runs_dir), "--device", "cuda"]) == 2
    assert "device cuda requested but no CUDA device is available" in one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []  # not even the runs folder: no run stuck at "created"


def test_config_runs_dir_empty(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "" used to mean ./runs, silently
    assert main_rc([*TINY, "--name", "x", "--runs-dir", ""]) == 2
    assert "--runs-dir is empty" in one_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_config_heldout_larger_than_data(tmp_path, capsys):
    """Known only once the data is read: the half-made folder is removed, so a retry is not 'exists'."""
    runs_dir = tmp_path / "runs"
    argv = [*TINY, "--name", "x", "--runs-dir", str(runs_dir), "--device", "cpu"]
    assert main_rc([*argv, "--heldout", "5000"]) == 2  # mnist-demo has 4,000 training digits
    err = capsys.readouterr().err  # the "run x: ... -> folder" line, then the error
    assert "heldout 5000 leaves no training data (4000 examples)" in one_line(err.splitlines()[-1])
    assert err.count("error:") == 1 and "Traceback" not in err
    assert not (runs_dir / "x").exists()


def test_config_existing_run_name(done, capsys):
    before = snapshot(done)
    assert main_rc([*TINY, "--name", "tiny-dynamic", "--runs-dir", str(done)]) == 2
    assert "already exists" in one_line(capsys.readouterr().err)
    assert snapshot(done) == before


def test_config_resume_with_changed_config(done, capsys):
    before = snapshot(done)
    assert main_rc(["--resume", "tiny-dynamic", "--runs-dir", str(done), "--eps", "0.1"]) == 2
    assert "only --epochs and --device may change (--eps 0.1 differs from the saved 0.3)" in one_line(
        capsys.readouterr().err)
    assert snapshot(done) == before


# ---- checkpoints --------------------------------------------------------------------------------
class Planted:
    """What a hostile last.pt holds: unpickling it calls open(marker, 'w'), i.e. runs code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _planted(ck: Path) -> None:
    state = torch.load(ck, weights_only=True)
    torch.save({**state, "extra": Planted(ck.parents[3] / "PWNED")}, ck)


def _reshaped(ck: Path) -> None:
    state = torch.load(ck, weights_only=True)
    name = next(k for k, t in state["model"].items() if t.dim() == 4)  # a conv weight, one more channel
    w = state["model"][name]
    state["model"][name] = torch.zeros(w.shape[0] + 1, *w.shape[1:])
    torch.save(state, ck)


def _optimizer_groups(ck: Path) -> None:
    state = torch.load(ck, weights_only=True)
    state["optimizer"]["param_groups"] = []
    torch.save(state, ck)


def _epoch_text(ck: Path) -> None:
    torch.save({**torch.load(ck, weights_only=True), "epoch": "two"}, ck)


def _bytes(change):
    return lambda ck: ck.write_bytes(change(ck.read_bytes()))


CHECKPOINTS = {
    "checkpoint-truncated": (_bytes(lambda b: b[: len(b) // 3]), "it may be corrupt"),
    "checkpoint-empty": (_bytes(lambda b: b""), "it may be corrupt"),
    "checkpoint-random-bytes": (_bytes(lambda b: bytes(range(256)) * 64), "it may be corrupt"),
    "checkpoint-foreign": (lambda ck: torch.save({"weights": torch.zeros(3)}, ck), "is not a FOSC Lab checkpoint"),
    "checkpoint-planted-pickle": (_planted, "asks to load io.open, not only tensors and plain values; "
                                           "refused without running it"),
    "checkpoint-wrong-shape": (_reshaped, "does not fit run 'tiny-dynamic': Error(s) in loading state_dict"),
    "checkpoint-epoch-text": (_epoch_text, "is damaged: epoch is str, not int"),
    "checkpoint-optimizer-damaged": (_optimizer_groups, "does not fit run 'tiny-dynamic': loaded state dict has a "
                                                        "different number of parameter groups"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS), ids=list(CHECKPOINTS))
def test_checkpoint(case, done, capsys):
    damage, words = CHECKPOINTS[case]
    ck = checkpoint.path(done / "tiny-dynamic")
    damage(ck)
    before = snapshot(done)
    for argv in (["--epochs", "3"], []):  # with --epochs it would also rewrite the config
        assert main_rc(["--resume", "tiny-dynamic", "--runs-dir", str(done), "--quiet", *argv]) == 2
        assert words in one_line(capsys.readouterr().err)
    assert snapshot(done) == before  # the damaged file stays for inspection; nothing else changed
    assert not (done.parent / "PWNED").exists()  # nothing in the file ran


def test_checkpoint_planted_pickle_evaluate(done, capsys):
    """trainer.evaluate loads the same checkpoint the same way: refused, one line, exit 2, nothing ran."""
    from trainer import evaluate

    _planted(checkpoint.path(done / "tiny-dynamic"))
    before = snapshot(done)
    assert evaluate.main(["tiny-dynamic", "--runs-dir", str(done), "--checkpoint", "last", "--quiet"]) == 2
    assert "refused without running it" in one_line(capsys.readouterr().err)
    assert snapshot(done) == before and not (done.parent / "PWNED").exists()


def test_checkpoint_would_run_without_weights_only(done):
    """The planted file really is hostile: the old torch.load(weights_only=False) runs it."""
    ck = checkpoint.path(done / "tiny-dynamic")
    _planted(ck)
    torch.load(ck, weights_only=False)
    assert (done.parent / "PWNED").exists()


# ---- a saved config.json that is not a run's config -------------------------------------------------
SAVED_CONFIGS = {
    "saved-config-list": ("[]", "is not a valid run config: a run config must be a JSON object, got list"),
    "saved-config-empty-object": ("{}", "missing field(s) strategy, dataset, model"),
    "saved-config-wrong-type": (None, "steps must be a whole number >= 1 and <= 10000, got '3'"),
    "saved-config-not-utf8": (b'{"strategy": "dyn\xffamic"}', "not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(SAVED_CONFIGS), ids=list(SAVED_CONFIGS))
def test_saved_config(case, done, capsys):
    text, words = SAVED_CONFIGS[case]
    cfg_path = done / "tiny-dynamic" / runs.CONFIG
    if text is None:
        text = json.dumps({**json.loads(cfg_path.read_text()), "steps": "3"})
    cfg_path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(done)
    assert main_rc(["--resume", "tiny-dynamic", "--runs-dir", str(done), "--quiet"]) == 2
    assert words in one_line(capsys.readouterr().err)
    assert snapshot(done) == before


# ---- resumes that would contradict the saved run ------------------------------------------------------
def test_resume_fewer_epochs_than_done(done, capsys):
    """--epochs 1 on a finished 2-epoch run would rewrite the config (the dashboard then shows 2/1)."""
    before = snapshot(done)
    assert main_rc(["--resume", "tiny-dynamic", "--runs-dir", str(done), "--epochs", "1", "--quiet"]) == 2
    assert "--epochs 1 is fewer than the 2 epochs run 'tiny-dynamic' has already trained" in one_line(
        capsys.readouterr().err)
    assert snapshot(done) == before


def test_resume_finished_run(done, capsys):
    """--resume of a run with every epoch trained and evaluated: exit 0, nothing trained or evaluated
    again (before: the whole end-of-run evaluation ran again and rewrote the evals rows)."""
    before = snapshot(done)
    assert main_rc(["--resume", "tiny-dynamic", "--runs-dir", str(done), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert f"run tiny-dynamic already finished its 2 epochs: nothing to resume. Train it longer: " \
           f"python -m trainer.run --resume tiny-dynamic --epochs 12 --runs-dir {done}" in err, err
    assert snapshot(done) == before


def test_resume_flag_equal_to_saved_is_accepted_different_is_named(done, capsys):
    before = snapshot(done)
    assert main_rc(["--resume", "tiny-dynamic", "--runs-dir", str(done), "--steps", "4", "--quiet"]) == 2
    assert "(--steps 4 differs from the saved 3)" in one_line(capsys.readouterr().err)
    assert snapshot(done) == before


# ---- a damaged Parquet file in a run -------------------------------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_parquet_truncated_reader(done, capsys):
    """One damaged file never breaks the views: DuckDB names it, store.open leaves it out and
    lists it in ``skipped`` (whether it fails when the views are built or when a query scans it)."""
    rd = done / "tiny-dynamic"
    first = rd / "examples" / "epoch=000" / "compact-r0.parquet"  # read when the view is created
    later = rd / "steps" / "epoch=001" / "compact-r0.parquet"     # read when a query scans it
    with store.open(done) as con:
        steps_0 = con.query_df("SELECT count(*) n FROM steps WHERE epoch = 0")["n"].item()
    _truncate(first)
    _truncate(later)
    with store.open(done) as con:
        assert con.query_df("SELECT count(*) n FROM examples")["n"].tolist() == [N]  # epoch 1's rows
        assert store_sql.run_query(con, "SELECT count(*) n FROM steps")["n"].tolist() == [steps_0]
        assert con.query_df("SELECT count(*) n FROM epochs")["n"].tolist() == [2]
        assert con.query_df("SELECT state FROM runs")["state"].tolist() == ["finished"]
        assert sorted(con.skipped) == sorted([str(first.resolve()), str(later.resolve())])
        assert all("No magic bytes" in why and "\n" not in why for why in con.skipped.values())
    assert first.stat().st_size and later.stat().st_size  # reported, never deleted
    capsys.readouterr()
    assert store_sql.main(["--runs-dir", str(done), "SELECT count(*) FROM examples"]) == 0
    err = capsys.readouterr().err.splitlines()  # one warning per file left out, naming it
    assert len(err) == 2 and all(ln.startswith("warning: left out ") for ln in err), err
    assert {ln.removeprefix("warning: left out ").split(": ")[0] for ln in err} == {str(first.resolve()), str(later.resolve())}


def test_parquet_truncated_resume(done, capsys):
    """Damage in an epoch the checkpoint covers is never read by a resume (left for the user to
    inspect); a damaged chunk of the epoch the resume redoes goes with that epoch's other rows."""
    rd = done / "tiny-dynamic"
    old = rd / "examples" / "epoch=000" / "compact-r0.parquet"
    _truncate(old)
    damaged = old.read_bytes()
    chunk = rd / "examples" / "epoch=002" / "part-r0-000900.parquet"
    chunk.parent.mkdir(parents=True)
    shutil.copy(rd / "examples" / "epoch=001" / "compact-r0.parquet", chunk)
    _truncate(chunk)
    assert main_rc(["--resume", "tiny-dynamic", "--runs-dir", str(done), "--epochs", "3", "--quiet",
                    "--device", "cpu"]) == 0
    assert old.read_bytes() == damaged and not chunk.exists()
    with store.open(done) as con:
        assert con.query_df("SELECT count(*) n, count(DISTINCT idx) u FROM examples WHERE epoch = 2"
                            ).values.tolist() == [[N, N]]
        assert con.query_df("SELECT max(epoch) e FROM epochs")["e"].tolist() == [2]


# ---- the control file ----------------------------------------------------------------------------
CONTROL = {
    "control-not-json": ("{stop: true", "control file ignored"),
    "control-not-an-object": ("[1, 2]", "must hold a JSON object"),
    "control-negative-lr": ('{"lr": -0.1, "c_max": 0.2}', "lr must be a number > 0 and <= 10"),
    "control-huge-lr": ('{"lr": 1e308, "t_prime": 3}', "lr must be a number > 0 and <= 10, got 1e+308"),
    "control-infinite-c-max": ('{"c_max": Infinity, "t_prime": 3}', "c_max must be a finite number"),
    "control-text-value": ('{"t_prime": "30; rm -rf /", "lr": 0.002}', "t_prime must be a number > 0"),
    "control-unknown-key": ('{"epochs": 99, "lr": 0.002}', "unknown control key 'epochs'"),
}


@pytest.mark.parametrize("case", list(CONTROL), ids=list(CONTROL))
def test_control(case, tmp_path):
    text, words = CONTROL[case]
    path = tmp_path / runs.CONTROL
    path.write_text(text)
    ctl = ControlFile(path)
    got = ctl.poll()  # what the trainer does between batches: never raises
    errors = [v for k, v in got if k == "error"]
    assert len(errors) == 1 and words in errors[0] and "\n" not in errors[0]
    good = {k: v for k, v in got if k != "error"}
    try:  # the good values of the same file still apply, the bad one does not
        data = json.loads(text)
    except ValueError:
        data = {}
    expected = {k: v for k, v in data.items() if _valid(k, v)} if isinstance(data, dict) else {}
    assert good == expected and ctl.applied == expected and not ctl.stop
    assert path.read_text() == text  # the trainer never rewrites the user's file


def _valid(key, value) -> bool:
    if key not in store_control.CONTROL_KEYS:
        return False
    try:
        store_control.validate(key, value)
        return True
    except ValueError:
        return False


def test_control_write_bad_value(tmp_path):
    store_control.write(tmp_path, lr=0.01)
    before = (tmp_path / runs.CONTROL).read_bytes()
    for bad in ({"lr": float("nan")}, {"c_max": -1}, {"t_prime": "40"}, {"batch_size": 3}):
        with pytest.raises(ValueError, match="^[^\n]+$"):
            store_control.write(tmp_path, **bad)
    assert (tmp_path / runs.CONTROL).read_bytes() == before


def test_control_write_over_corrupt_file(tmp_path):
    (tmp_path / runs.CONTROL).write_text("{not json")
    assert store_control.write(tmp_path, c_max=0.25) == {"c_max": 0.25}
    assert store_control.read(tmp_path) == {"c_max": 0.25}


# ---- what a user types into the dashboard's forms -------------------------------------------------
SQL = {
    "sql-drop-view": "DROP VIEW examples",
    "sql-delete": "DELETE FROM examples",
    "sql-stacked-copy": "SELECT 1; COPY (SELECT * FROM examples) TO '{out}'",
    "sql-read-outside": "SELECT * FROM read_csv('/etc/passwd')",
    "sql-read-outside-parquet": "SELECT * FROM read_parquet('{elsewhere}')",
    "sql-attach": "ATTACH '{out}' AS evil",
    "sql-set-external-access": "SET enable_external_access = true",
    "sql-install-extension": "INSTALL httpfs",
    "sql-load-extension": "LOAD httpfs",
    "sql-create-macro": "CREATE MACRO pwn() AS 1",
    "sql-comment-hidden-write": "/* SELECT */ DROP VIEW runs; -- SELECT",
}


@pytest.mark.parametrize("case", list(SQL), ids=list(SQL))
def test_sql(case, done, tmp_path):
    out = tmp_path / "pwned.csv"
    elsewhere = tmp_path / "elsewhere.parquet"
    shutil.copy(done / "tiny-dynamic" / "epochs" / "part-000.parquet", elsewhere)
    before = snapshot(done)
    with store.open(done) as con:
        with pytest.raises(store_sql.QueryRefused) as e:
            store_sql.run_query(con, SQL[case].format(out=out, elsewhere=elsewhere))
        assert "\n" not in str(e.value) and str(e.value).startswith("refused")
        assert con.query_df("SELECT count(*) n FROM examples")["n"].tolist() == [2 * N]  # the views are intact
    assert not out.exists() and snapshot(done) == before


RUN_NAMES = {
    "name-sql-quote": "x' OR '1'='1",
    "name-dotdot-inside": "a..b",
    "name-nul-byte": "a\x00b",
    "name-newline": "a\nb",
    "name-too-long": "a" * 81,
    "name-empty": "",
}


@pytest.mark.parametrize("case", list(RUN_NAMES), ids=list(RUN_NAMES))
def test_run_name(case, done):
    name = RUN_NAMES[case]
    with pytest.raises(runs.StoreError, match="^invalid run name [^\n]*$"):
        runs.validate_run_name(name)
    with pytest.raises(jobs.JobError, match="^invalid run name"):  # the dashboard's launch form
        jobs.build_argv(done, jobs.LaunchSpec(name=name))
    with pytest.raises(jobs.JobError, match="^invalid run name"):  # its adjust form
        jobs.adjust(done, name, lr=0.001)
    with store.open(done) as con:  # a filter bound as a parameter matches nothing, never everything
        assert len(con.query_df("SELECT * FROM examples WHERE run = ?", [name])) == 0


FORMS = {
    "form-lr-shell-text": ("adjust", {"lr": "0.1; rm -rf /"}, "lr must be a number"),
    "form-c-max-nan": ("adjust", {"c_max": "nan"}, "c-max must be a finite number"),
    "form-unknown-field": ("adjust", {"epochs": 5}, "cannot adjust epochs"),
    "form-data-root-shell": ("launch", {"data_root": "/tmp/x; touch /tmp/pwned"}, "should not have"),
    "form-eps-text": ("launch", {"eps": "0.3 --device cuda"}, "eps must be a number"),
}


@pytest.mark.parametrize("case", list(FORMS), ids=list(FORMS))
def test_form(case, done):
    kind, values, words = FORMS[case]
    rd = done / "tiny-dynamic"
    # adjust refuses a run that is not live before it looks at values: make this one look live.
    runs.write_json(rd / runs.STATUS, {**runs.read_status(rd), "state": "running", "pid": os.getpid()})
    before = snapshot(done)
    with pytest.raises(jobs.JobError, match=re.escape(words)):
        if kind == "adjust":
            jobs.adjust(done, "tiny-dynamic", **values)
        else:
            jobs.build_argv(done, jobs.LaunchSpec(name="new", **values))
    assert snapshot(done) == before


def test_bounds_one_registry(tmp_path, monkeypatch):
    """RunConfig, the trainer's control file and the dashboard's forms read the same bounds
    (store.control.BOUNDS): tightening one entry there changes what all three accept."""
    cfg = RunConfig(lr=0.5)
    ctl_path = tmp_path / runs.CONTROL
    ctl_path.write_text('{"lr": 0.5}')
    assert cfg.validate() and jobs.parse_number("lr", "0.5") == 0.5
    assert ControlFile(ctl_path).poll() == [("lr", 0.5)]
    monkeypatch.setitem(store_control.BOUNDS, "lr", store_control.Bound(float, 0.0, 0.1, lo_open=True))
    with pytest.raises(ConfigError, match="lr must be a number > 0 and <= 0.1, got 0.5"):
        cfg.validate()
    with pytest.raises(jobs.JobError, match="lr must be a number > 0 and <= 0.1, got '0.5'"):
        jobs.parse_number("lr", "0.5")
    assert ControlFile(ctl_path).poll() == [("error", "lr must be a number > 0 and <= 0.1, got 0.5")]
    covered = {*store_control.BOUNDS, *config_mod.CHOICES, *config_mod.BOOLS, "data_root"}
    assert covered == {f.name for f in dataclasses.fields(RunConfig)}  # every field has a check


# ---- the table in docs/ROBUSTNESS.md lists exactly these tests ------------------------------------
def test_doc_table_matches_tests():
    in_doc = re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(), re.M)
    params = [*CLI, *CHECKPOINTS, *SAVED_CONFIGS, *CONTROL, *SQL, *RUN_NAMES, *FORMS]
    singles = [n[len("test_"):].replace("_", "-") for n, f in globals().items()
               if n.startswith("test_") and callable(f) and n not in (
                   "test_cli", "test_checkpoint", "test_saved_config", "test_control", "test_sql", "test_run_name", "test_form",
                   "test_doc_table_matches_tests")]
    assert sorted(in_doc) == sorted(params + singles)
    assert len(in_doc) == len(set(in_doc))
