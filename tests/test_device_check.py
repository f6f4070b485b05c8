"""scripts/device_check.sh: the device work of issue 18, run here with --dry-run (CPU, tiny sizes).

The dry run takes the same steps through the same code as the device call, so a device is never
spent on a script that does not work; the second test checks that one step's failure or timeout
neither stops the later steps nor hides in the summary.
"""
from __future__ import annotations

import csv
import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "device_check.sh"
STEPS = ["env", "smoke", "train_step", "dynamic_cost", "mnist", "pack"]
RESULT = {"env": "env.txt", "smoke": "smoke.log", "train_step": "train_step.log",
          "dynamic_cost": "dynamic_cost.log", "mnist": "mnist.log"}
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")  # what a device call brings back (device README, Limits)


def run_check(tmp_path: Path, mnist_npz: Path, *args: str, timeout: int = 850):
    carry = tmp_path / "carry"
    (carry / "data").mkdir(parents=True, exist_ok=True)
    if not (carry / "data" / "mnist.npz").exists():
        (carry / "data" / "mnist.npz").symlink_to(mnist_npz)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "TMPDIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--carry", str(carry), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)
    with open(out / "summary.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return proc, out, rows


def archive(out: Path, table: str = "mnist-tiny") -> tarfile.TarFile:
    parts = sorted(out.glob(f"{table}-runs.tgz.*"))
    assert parts, f"no {table}-runs.tgz.* in {sorted(p.name for p in out.iterdir())}"
    return tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts)), mode="r:gz")


def assert_comes_back(out: Path) -> None:
    """Everything under $OUT fits what one device call brings back."""
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8, sorted(p.name for p in files)
    for p in files:
        rel = p.relative_to(out)
        assert len(rel.parts) <= 3 and all(NAME_OK.match(s) for s in rel.parts), rel
        assert p.stat().st_size <= 16 * 2**20, rel


@pytest.mark.slow
def test_dry_run_takes_every_step_and_brings_back_its_results(tmp_path, mnist_npz):
    doc = (ROOT / "docs" / "BENCHMARKS.md").read_bytes()
    proc, out, rows = run_check(tmp_path, mnist_npz, "--budget", "840")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [r["step"] for r in rows] == STEPS + ["total"]
    assert all(r["rc"] == "0" for r in rows), rows
    assert rows[-1]["result"] == "ok"
    for step, name in RESULT.items():
        assert (out / name).stat().st_size > 0, step

    assert "torch " in (out / "env.txt").read_text()
    smoke = (out / "smoke.log").read_text()
    assert re.search(r"^\s*state\s*\n\s*finished\s*$", smoke, re.M), smoke[-2000:]
    assert re.search(r"^\s*smoke\s+last\s+white-box\s", smoke, re.M), smoke[-2000:]  # evaluated at the end
    # Each bench printed its figures and the doc subsection --write-doc made (in a copy of the doc).
    ts = (out / "train_step.log").read_text()
    assert "### Figures: cpu" in ts
    for batch in (8, 16):
        assert re.search(rf"^\| cnn4 \| {batch} \| fosc-lab \| [0-9.]+ \| [0-9.]+x \|", ts, re.M), ts[-2000:]
        assert f"| cnn4 | {batch} | bf16 autocast |" in ts  # --tools ran
    dc = (out / "dynamic_cost.log").read_text()
    assert "### Figures: cpu" in dc and re.search(r"^\| early \(~3\) \| [0-9.]+ \| compact \|", dc, re.M), dc[-2000:]
    assert (ROOT / "docs" / "BENCHMARKS.md").read_bytes() == doc, "a dry run must not edit the real doc"
    mnist = (out / "mnist.log").read_text()
    assert "| standard | last (1) |" in mnist and "| unsecured | last (1) |" in mnist, mnist[-2000:]

    # The pack brings back what resuming needs (config, status, checkpoints, the table) and none of
    # the per-example logs.
    names = archive(out).getnames()
    for run in ("mnist-tiny-standard", "mnist-tiny-unsecured"):
        for f in ("config.json", "status.json", "checkpoints/last.pt", "checkpoints/best.pt"):
            assert f"mnist-tiny/{run}/{f}" in names, (run, f)
    assert "mnist-tiny-table/table.md" in names
    assert not [n for n in names if re.search(r"/(examples|steps|insight)(/|$)", n)]
    assert_comes_back(out)
    assert not list(tmp_path.glob("device-check.*")), "the script's temporary folder is left behind"


def test_a_failed_or_timed_out_step_is_reported_and_the_later_steps_still_run(tmp_path, mnist_npz):
    (tmp_path / "carry" / "whl").mkdir(parents=True)
    (tmp_path / "carry" / "whl" / "broken-1.0-py3-none-any.whl").write_bytes(b"not a zip file")
    runs = tmp_path / "runs" / "mnist-tiny"   # what an earlier, stopped table left behind
    for rel, data in [("r/config.json", b"{}"), ("r/checkpoints/last.pt", b"ck"),
                      ("r/examples/epoch=000/compact-r0.parquet", b"x"), ("r/insight/epoch=000/cum.parquet", b"x"),
                      ("r/steps/epoch=000/compact-r0.parquet", b"x")]:
        (runs / rel).parent.mkdir(parents=True, exist_ok=True)
        (runs / rel).write_bytes(data)
    proc, out, rows = run_check(tmp_path, mnist_npz, "--steps", "env,smoke,pack", "--limit", "smoke=1",
                                "--runs-root", str(tmp_path / "runs"), timeout=300)
    rc = {r["step"]: r["rc"] for r in rows}
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert rc == {"env": "1", "smoke": "124", "pack": "0", "total": "1"}, rows  # 124: out of time
    assert rows[-1]["result"] == "failed: env smoke"
    assert "broken-1.0-py3-none-any.whl" in (out / "env.txt").read_text()
    assert int(next(r for r in rows if r["step"] == "smoke")["seconds"]) < 30  # nothing of it lingered
    assert sorted(archive(out).getnames()) == ["mnist-tiny", "mnist-tiny/r", "mnist-tiny/r/checkpoints",
                                               "mnist-tiny/r/checkpoints/last.pt", "mnist-tiny/r/config.json"]
    assert_comes_back(out)
