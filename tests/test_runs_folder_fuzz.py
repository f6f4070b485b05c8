"""Seeded fuzz over a runs folder: every kind of file damaged every way, every reader still answers.

For each file kind of a run folder (each Parquet table, each JSON file, a checkpoint, the control
file, job records) and each damage (truncate, zero, flip bytes, a symbolic link to a file outside,
a foreign Parquet file), on a fresh copy of real tiny runs: ``store.sql`` answers for what is not
damaged, or ends with one line; each dashboard page renders under AppTest without an exception; no
output shows the outside file's content, and the outside files are neither changed nor deleted.
"""
from __future__ import annotations

import hashlib
import random
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streamlit.testing.v1 import AppTest

from store import files, runs
from store import sql as store_sql

SEED = 20261201
RUN = "tiny-dynamic"  # the run whose files are damaged; the other two are the control
SECRET = "SECRET-OUTSIDE-7f3a"
APP = str(Path(__file__).resolve().parent.parent / "run_dashboard.py")

KINDS = {
    "examples chunk": lambda rd: rd / "examples" / "epoch=002" / files.chunk_name(0, 7),
    "examples compacted": lambda rd: rd / "examples" / "epoch=001" / files.compact_name(0),
    "steps compacted": lambda rd: rd / "steps" / "epoch=000" / files.compact_name(0),
    "epochs summary": lambda rd: files.summary_path(rd, 1),
    "evals": lambda rd: files.table_files(rd, "evals")[0],
    "events": lambda rd: files.table_files(rd, "events")[0],
    "config.json": lambda rd: rd / runs.CONFIG,
    "meta.json": lambda rd: rd / runs.META,
    "status.json": lambda rd: rd / runs.STATUS,
    "control.json": lambda rd: rd / runs.CONTROL,
    "job.json": lambda rd: rd / runs.JOB,
    "checkpoint": lambda rd: rd / runs.CHECKPOINTS / "last.pt",
    "pending job record": lambda rd: rd.parent / ".jobs" / "queued.json",
}
DAMAGES = ("truncate", "zero", "flip", "link-out", "foreign-parquet")
QUERIES = ("SELECT run, count(*) AS n FROM examples GROUP BY run ORDER BY run",
           "SELECT run, epoch, fosc_q50 FROM epochs ORDER BY run, epoch",
           "SELECT run, attack, accuracy FROM evals ORDER BY ALL",
           "SELECT run, kind FROM events ORDER BY ALL",
           "SELECT run, strategy, state, config FROM runs ORDER BY run",
           "SELECT count(*) AS n FROM steps")


@pytest.fixture(scope="module")
def base(tiny_runs, tmp_path_factory) -> Path:
    """tiny_runs plus the files a live or dashboard-launched run has: a chunk of an epoch in
    progress, control.json, job.json and a pending job record."""
    root = tmp_path_factory.mktemp("fuzzbase") / "runs"
    shutil.copytree(tiny_runs, root)
    rd = root / RUN
    chunk = KINDS["examples chunk"](rd)
    chunk.parent.mkdir(parents=True)
    shutil.copy(KINDS["examples compacted"](rd), chunk)
    runs.write_json(rd / runs.CONTROL, {"lr": 0.01})
    runs.write_json(rd / runs.JOB, {"name": RUN, "pid": 1, "pgid": 1, "argv": ["python"], "log": str(rd / runs.LOG)})
    runs.write_json(root / ".jobs" / "queued.json", {"name": "queued", "pid": 1, "pgid": 1, "argv": ["python"]})
    return root


def _outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret.json").write_text(f'{{"strategy": "{SECRET}", "epochs": 2, "lr": 0.1}}')
    pq.write_table(pa.table({"run": [SECRET], "kind": [SECRET]}), out / "secret.parquet")
    return out


def _fingerprint(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def damage(path: Path, how: str, outside: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: rng.randrange(1, max(2, len(data)))])
    elif how == "zero":
        path.write_bytes(b"")
    elif how == "flip":
        b = bytearray(data)
        for _ in range(max(1, len(b) // 50)):
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(b))
    elif how == "link-out":
        path.unlink()
        target = outside / ("secret.parquet" if path.suffix == ".parquet" else "secret.json")
        path.symlink_to(target)
    elif how == "foreign-parquet":
        pq.write_table(pa.table({"x": [1, 2, 3], "note": [SECRET] * 3}), path)


def damaged_copy(base: Path, tmp_path: Path, kind: str, how: str) -> tuple[Path, Path, Path]:
    root = tmp_path / "runs"
    shutil.copytree(base, root, symlinks=True)
    outside = _outside(tmp_path)
    target = KINDS[kind](root / RUN)
    damage(target, how, outside, random.Random(f"{SEED}-{kind}-{how}"))
    return root, outside, target


def _one_line_each(err: str) -> bool:
    return all(line.startswith(("warning: ", "error: ")) for line in err.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", list(KINDS))
def test_store_sql_answers_for_what_is_not_damaged(base, tmp_path, capsys, kind, how):
    root, outside, target = damaged_copy(base, tmp_path, kind, how)
    before = _fingerprint(outside)
    for q in QUERIES:
        rc = store_sql.main(["--runs-dir", str(root), "--format", "csv", q])
        out, err = capsys.readouterr()
        assert rc == 0, (q, err)  # no damage makes a whole query fail: the file is left out
        assert "Traceback" not in err and _one_line_each(err), err
        assert SECRET not in out
        if q.startswith("SELECT run, count(*)"):  # the other runs' rows are all there
            assert "tiny-standard,768" in out and "tiny-unsecured,768" in out
    assert _fingerprint(outside) == before and target.parent.exists()


def _page_text(at: AppTest) -> str:
    parts = [str(e.value) for kind in ("markdown", "caption", "error", "warning", "info", "text", "metric")
             for e in at.get(kind)]
    parts += [e.value.to_string() for e in at.dataframe]
    return "\n".join(parts)


def _render(root: Path, monkeypatch, page: str | None, **state) -> AppTest:
    monkeypatch.setenv("FOSC_RUNS_DIR", str(root))
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in {"runs_refresh": "off", "run_refresh": "off", **state}.items():
        at.session_state[k] = v
    at.run()
    if page:
        at.switch_page(f"dashboard/pages/{page}.py").run()
    return at


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_every_dashboard_page_renders_with_one_damaged_file(base, tmp_path, monkeypatch, kind):
    """One seeded damage per file kind (every page, every kind; all damages are in the test above)."""
    how = random.Random(f"{SEED}-{kind}").choice(DAMAGES)
    root, outside, _ = damaged_copy(base, tmp_path, kind, how)
    before = _fingerprint(outside)
    for page, state in ((None, {}), ("run", {"run": RUN}), ("run", {"run": "tiny-standard"}),
                        ("compare", {}), ("sql", {})):
        at = _render(root, monkeypatch, page, **state)
        assert not at.exception, (kind, how, page, at.exception)
        assert SECRET not in _page_text(at), (kind, how, page)
        if page == "sql":
            at.text_area(key="sql_text").input(QUERIES[0])
            at.button(key="sql_run").click().run()
            assert not at.exception and not at.error, (kind, how, [e.value for e in at.error])
            counts = at.dataframe[0].value.set_index("run")["n"].to_dict()
            assert counts["tiny-standard"] == counts["tiny-unsecured"] == 768
    assert _fingerprint(outside) == before


# The trainer's entry points read a run's config, status, checkpoint, control file and tables too.
TRAINER_KINDS = ("config.json", "meta.json", "status.json", "control.json", "checkpoint", "epochs summary",
                 "events", "evals", "examples compacted")


def _trainer_cases() -> list[tuple[str, str]]:
    """One seeded damage per kind (each entry point costs seconds per case, not milliseconds); the
    checkpoint gets every damage, since both entry points load it."""
    cases = [(k, random.Random(f"{SEED}-trainer-{k}").choice(DAMAGES)) for k in TRAINER_KINDS if k != "checkpoint"]
    return cases + [("checkpoint", d) for d in DAMAGES]


def _entry(name: str, argv: list[str], capsys) -> tuple[int, str]:
    from trainer import evaluate, run

    try:
        rc = {"resume": run.main, "evaluate": evaluate.main}[name](argv)
    except SystemExit as e:  # argparse-style one-line exits
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out + err


@pytest.mark.slow
@pytest.mark.parametrize("kind,how", _trainer_cases())
def test_resume_and_evaluate_work_or_end_with_one_line(base, tmp_path, capsys, kind, how):
    """`trainer.run --resume` and `trainer.evaluate` on a run with one damaged file: they work, or end
    with exit 2 and a one-line error; no traceback, no outside file read into the output or changed,
    and the other runs are untouched."""
    root, outside, _ = damaged_copy(base, tmp_path, kind, how)
    before, others = _fingerprint(outside), _fingerprint(root / "tiny-standard")
    for name, argv in (("resume", ["--resume", RUN, "--runs-dir", str(root), "--quiet"]),
                       ("evaluate", [RUN, "--runs-dir", str(root), "--n", "20", "--attacks", "clean",
                                     "--checkpoint", "last", "--device", "cpu", "--quiet"])):
        rc, text = _entry(name, argv, capsys)
        assert rc in (0, 2), (name, kind, how, rc, text[-2000:])
        assert "Traceback" not in text and SECRET not in text, (name, kind, how, text[-2000:])
        if rc == 2:
            errors = [line for line in text.splitlines() if line.startswith("error")]
            assert len(errors) == 1 and len(errors[0]) < 600, (name, kind, how, text[-2000:])
    assert _fingerprint(outside) == before and _fingerprint(root / "tiny-standard") == others
