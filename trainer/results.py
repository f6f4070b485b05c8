"""A reproduced table's files: ``table.md`` and ``table.csv`` from the runs' evals and epoch summaries
(pyarrow only, so it works where DuckDB is missing), and the FOSC figures (``figures.py``, DuckDB)."""
from __future__ import annotations

import csv
import math
from datetime import datetime
from pathlib import Path

from store import runs
from trainer.evaluate import LABELS, read_evals

# The paper's Table 1 (white-box accuracy %, Clean / FGSM / PGD-10 / PGD-20 / CW-inf).
PAPER = {
    "mnist": {"unsecured": (99.20, 14.04, 0.0, 0.0, 0.0), "standard": (97.61, 94.71, 91.21, 90.62, 91.03),
              "curriculum": (98.62, 95.51, 91.24, 90.65, 91.12), "dynamic": (97.96, 95.34, 91.63, 91.27, 91.47)},
    "cifar10": {"standard": (66.31, 48.65, 44.39, 40.02, 36.33), "curriculum": (72.40, 50.47, 45.54, 40.12, 35.77),
                "dynamic": (72.17, 52.81, 48.06, 42.40, 37.26)},
}
PAPER_OF = {"mnist": "mnist", "mnist-cpu": "mnist", "mnist-tiny": "mnist", "cifar10": "cifar10"}
WHITE = ("clean", "fgsm", "pgd10", "pgd20", "cw")
ORDER = ("unsecured", "standard", "curriculum", "dynamic")


def epoch_rows(rd: Path) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for f in sorted((rd / "epochs").glob("part-*.parquet")):
        rows += pq.read_table(f).to_pylist()
    return sorted(rows, key=lambda r: r["epoch"])


def run_summary(rd: Path) -> dict:
    """Training cost and schedule of one run, from its per-epoch summaries and run record."""
    ep = epoch_rows(rd)
    steps = [r["steps_mean"] for r in ep]
    held = [r["heldout_pgd_acc"] for r in ep]
    best = max(range(len(held)), key=lambda i: (held[i] if held[i] == held[i] else -1, -i)) if held else None
    meta = runs.read_json(rd / runs.META, {}) or {}
    status = runs.read_status(rd)
    try:
        run_wall = (datetime.fromisoformat(status["updated_at"]) - datetime.fromisoformat(meta["created_at"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        run_wall = math.nan
    return {"epochs": len(ep), "epoch_wall_s": sum(r["wall_s"] for r in ep), "run_wall_s": run_wall,
            "steps_per_epoch": steps, "steps_mean": sum(steps) / len(steps) if steps else math.nan,
            "best_epoch": ep[best]["epoch"] if best is not None else None,
            "c_t": [r["c_t"] for r in ep], "heldout_pgd": held, "code_hash": meta.get("code_hash"),
            "git_commit": meta.get("git_commit"), "state": runs.effective_state(rd)}


def table_rows(table: str, spec, strategies, runs_dir: Path) -> list[dict]:
    """One row per (strategy, checkpoint): accuracies (%), n, and the run's cost."""
    from trainer.reproduce import run_name

    out = []
    for s in sorted(strategies, key=ORDER.index):
        rd = runs_dir / run_name(table, s)
        if not rd.is_dir():
            continue
        ev = [r for r in read_evals(rd) if r["setting"] == "white-box"]
        summ = run_summary(rd)
        for which in ("last", "best"):
            cells = {r["attack"]: r for r in ev if r["checkpoint"] == which}
            if not cells:
                continue
            row = {"strategy": s, "run": rd.name, "checkpoint": which,
                   "epoch": summ["epochs"] - 1 if which == "last" else summ["best_epoch"]}
            for a in (*WHITE, spec.aa_attack):
                if a:
                    row[a] = round(100 * cells[a]["accuracy"], 2) if a in cells else None
                    row[f"n_{a}"] = cells[a]["n"] if a in cells else None
            row.update(epoch_wall_s=round(summ["epoch_wall_s"], 1), run_wall_s=round(summ["run_wall_s"], 1),
                       steps_mean=round(summ["steps_mean"], 3))
            out.append(row)
    return out


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else (f"{v:.2f}" if isinstance(v, float) else str(v))


def markdown(table: str, spec, rows: list[dict], summaries: dict[str, dict], command: str, renderer: str | None) -> str:
    attacks = [a for a in (*WHITE, spec.aa_attack) if a]
    n_main = next((r[f"n_{a}"] for r in rows for a in WHITE if r.get(f"n_{a}")), None)
    heads = [LABELS[a] for a in attacks]
    aa = spec.aa_attack
    lines = [f"# Table: {table}", "", f"Setting: {spec.note}.", "", f"Command: `{command}`", "",
             f"White-box test accuracy (%) on {n_main} test examples" +
             (f"; {LABELS[aa]} on the first {rows[0].get(f'n_{aa}') if rows else '?'} of them, last checkpoint only"
              if aa else "") + ". `best` = the epoch with the highest held-out PGD-10 accuracy.", "",
             "| strategy | checkpoint (epoch) | " + " | ".join(heads) + " | train wall (s) | mean PGD steps/epoch |",
             "|---|---|" + "---:|" * (len(attacks) + 2)]
    for r in rows:
        vals = [_fmt(r.get(a)) for a in attacks]
        lines.append(f"| {r['strategy']} | {r['checkpoint']} ({r['epoch']}) | " + " | ".join(vals) +
                     f" | {r['epoch_wall_s']:.0f} | {r['steps_mean']:.2f} |")
    paper = PAPER.get(PAPER_OF.get(table, ""), {})
    if paper:
        lines += ["", f"The paper's Table 1 ({PAPER_OF[table].upper()}, white-box, %):", "",
                  "| strategy | Clean | FGSM | PGD-10 | PGD-20 | CW-inf |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {s} | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for s, vals in paper.items()]
    lines += ["", "Per-epoch schedule (mean PGD steps per example; held-out PGD-10 accuracy %; Dynamic's c_t):", ""]
    for s, summ in summaries.items():
        lines.append(f"- {s}: steps " + ", ".join(f"{v:.2f}" for v in summ["steps_per_epoch"]) +
                     "; held-out " + ", ".join(f"{100 * v:.1f}" for v in summ["heldout_pgd"]) +
                     ("; c_t " + ", ".join(f"{v:.3f}" for v in summ["c_t"]) if s == "dynamic" else "") +
                     f"; run wall {summ['run_wall_s']:.0f} s; code {summ['code_hash']} ({summ['git_commit']})")
    if renderer:
        lines += ["", f"Figures (rendered with {renderer}): `fosc_density.png` (FOSC distribution at epochs "
                      f"{', '.join(map(str, spec.fig_epochs))}, paper Figs. 2/5), `fosc_vs_accuracy.png` "
                      "(final-epoch training PGD examples in 20 FOSC groups, paper Fig. 1a)."]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def write_figures(table: str, spec, strategies, runs_dir: Path, out: Path, summaries: dict) -> str | None:
    """The two FOSC figures; None when DuckDB is not installed (the GPU machine)."""
    try:
        import duckdb  # noqa: F401
    except ImportError:
        return None
    import store
    from trainer import figures
    from trainer.reproduce import run_name

    con = store.open(runs_dir)
    names = {s: run_name(table, s) for s in sorted(strategies, key=ORDER.index) if s in summaries}
    last = min(summ["epochs"] for summ in summaries.values()) - 1
    epochs = tuple(e for e in spec.fig_epochs if e <= last) or (last,)
    r1 = figures.render(figures.fosc_density(con, names, epochs), out / "fosc_density.png",
                        f"{table}: FOSC distribution of the training PGD examples")
    acc_panels = figures.fosc_vs_accuracy(con, names, last)
    r2 = figures.render(acc_panels, out / "fosc_vs_accuracy.png",
                        f"{table}: accuracy and loss vs FOSC (epoch {last})", cols=max(len(acc_panels) // 2, 1))
    return r1 if r1 == r2 else f"{r1} / {r2}"


def write_all(table: str, spec, strategies, runs_dir: Path, out: Path, figures: bool = True,
              command: str = "") -> list[Path]:
    from trainer.reproduce import run_name

    out.mkdir(parents=True, exist_ok=True)
    summaries = {s: run_summary(runs_dir / run_name(table, s)) for s in sorted(strategies, key=ORDER.index)
                 if (runs_dir / run_name(table, s)).is_dir()}
    rows = table_rows(table, spec, strategies, runs_dir)
    renderer = write_figures(table, spec, strategies, runs_dir, out, summaries) if figures and summaries else None
    (out / "table.md").write_text(markdown(table, spec, rows, summaries, command, renderer))
    write_csv(rows, out / "table.csv")
    written = [out / "table.md", out / "table.csv"]
    return written + ([out / "fosc_density.png", out / "fosc_vs_accuracy.png"] if renderer else [])
