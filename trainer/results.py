"""A reproduced table's files: ``table.md`` and ``table.csv`` from the runs' evals and epoch summaries
(pyarrow only, so it works where DuckDB is missing), and the FOSC figures (``figures.py``, DuckDB)."""
from __future__ import annotations

import csv
import math
import sys
from datetime import datetime
from pathlib import Path

from store import evals as ev
from store import files, runs, strategies
from trainer.evaluate import read_evals
from trainer.evaluation import markdown as md
from trainer.tables import ORDER, PAPER, PAPER_OF, run_name


def epoch_rows(rd: Path) -> list[dict]:
    from store import checked

    rows, _ = checked.read_rows(rd, "epochs", [f for _, f in files.summary_files(rd)])  # damaged: left out
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
            "git_commit": meta.get("git_commit"), "state": runs.effective_state(rd),
            "label": strategy_label(runs.read_json(rd / runs.CONFIG, {}) or {})}


def strategy_label(cfg: dict) -> str:
    """The strategy as the table names it (store.strategies: curriculum-fixed is its own name)."""
    return strategies.label(cfg)


def table_rows(table: str, spec, strategies, runs_dir: Path) -> list[dict]:
    """One row per (strategy, checkpoint): accuracies (%) and subsets of the complete evaluations,
    AutoAttack's per-member stages, the flags raised, and the run's cost."""
    out = []
    for s in sorted(strategies, key=ORDER.index):
        rd = runs_dir / run_name(table, s)
        if not rd.is_dir():
            continue
        evs = [r for r in ev.complete(read_evals(rd)) if r["setting"] == "white-box"]
        summ = run_summary(rd)
        for which in ("last", "best"):
            cells = {ev.key_of(r["attack"]): r for r in evs if r["checkpoint"] == which}
            if not cells:
                continue
            row = {"strategy": summ["label"], "run": rd.name, "checkpoint": which,
                   "epoch": summ["epochs"] - 1 if which == "last" else summ["best_epoch"]}
            for a in _columns(spec):
                c = cells.get(a)
                row[a] = round(100 * c["accuracy"], 2) if c else None
                row[f"n_{a}"] = c["n"] if c else None
                row[f"subset_{a}"] = (c.get("subset") or f"first {c['n']}") if c else None
            aa = cells.get(spec.aa_attack) if spec.aa_attack else None
            row["aa_stages"] = aa.get("stages") if aa else None
            row["flags"] = ",".join(sorted({f for c in cells.values() for f in ev.split_flags(c.get("flags"))}))
            row.update(epoch_wall_s=round(summ["epoch_wall_s"], 1), run_wall_s=round(summ["run_wall_s"], 1),
                       steps_mean=round(summ["steps_mean"], 3))
            out.append(row)
    return out


def _columns(spec) -> list[str]:
    return [a for a in (*spec.attacks, spec.aa_attack) if a]


def _subsets(rows: list[dict], attacks) -> str:
    seen = {a: sorted({r[f"subset_{a}"] for r in rows if r.get(f"subset_{a}")}) for a in attacks}
    return "; ".join(f"{ev.header(a)}: {', '.join(v)}" for a, v in seen.items() if v)


def _stages_line(r: dict) -> str | None:
    """AutoAttack's robust accuracy (%) after each member, e.g. 'clean 93.1 > apgd-ce 45.0 > ...'."""
    if not r.get("aa_stages"):
        return None
    parts = [p.split("=") for p in r["aa_stages"].split(",")]
    return " > ".join(f"{k} {100 * float(v):.1f}" for k, v in parts)


def markdown(table: str, spec, rows: list[dict], summaries: dict[str, dict], command: str, renderer: str | None) -> str:
    attacks = _columns(spec)
    lines = [f"# Table: {table}", "", f"Setting: {spec.note}.", "", f"Command: `{command}`", "",
             "White-box test accuracy (%), eps as trained; every column names its attack and budget. "
             f"Test examples per column: {_subsets(rows, attacks)}"
             + (f" ({ev.header(spec.aa_attack)}: last checkpoint only)" if spec.aa_attack else "")
             + ". `best` = the epoch with the highest held-out PGD-10 accuracy. Only complete evaluations "
               "are shown (a killed one is marked partial and left out).", ""]
    heads = ["strategy", "checkpoint (epoch)", *[ev.header(a) for a in attacks], "train wall (s)",
             "mean PGD steps/epoch", "flags"]
    body = [[r["strategy"], f"{r['checkpoint']} ({r['epoch']})", *[r.get(a) for a in attacks],
             f"{r['epoch_wall_s']:.0f}", f"{r['steps_mean']:.2f}", r["flags"] or "-"] for r in rows]
    lines.append(md.table(heads, body, left=2, text_last=True))
    stages = [(r["strategy"], _stages_line(r)) for r in rows if _stages_line(r)]
    if stages:
        lines += ["", f"{ev.header(spec.aa_attack)}, robust accuracy (%) after each member, last checkpoint:", ""]
        lines += [f"- {s}: {line}" for s, line in stages]
    raised = sorted({f for r in rows for f in ev.split_flags(r["flags"])})
    lines += ["", "Flags: " + ("; ".join(f"`{f}`: {ev.FLAG_TEXT[f]}" for f in raised) if raised else "none raised") + "."]
    paper = PAPER.get(PAPER_OF.get(table, ""), {})
    if paper:
        lines += ["", f"The paper's Table 1 ({PAPER_OF[table].upper()}, white-box, %):", "",
                  md.table(["strategy", "Clean", "FGSM", "PGD-10", "PGD-20", "CW-inf"],
                           [[s, *vals] for s, vals in paper.items()])]
    lines += ["", "Per-epoch schedule (mean PGD steps per example; held-out PGD-10 accuracy %; Dynamic's c_t):", ""]
    for s, summ in summaries.items():
        lines.append(f"- {summ['label']}: steps " + ", ".join(f"{v:.2f}" for v in summ["steps_per_epoch"]) +
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

    out.mkdir(parents=True, exist_ok=True)
    summaries = {s: run_summary(runs_dir / run_name(table, s)) for s in sorted(strategies, key=ORDER.index)
                 if (runs_dir / run_name(table, s)).is_dir()}
    rows = table_rows(table, spec, strategies, runs_dir)
    renderer = write_figures(table, spec, strategies, runs_dir, out, summaries) if figures and summaries else None
    (out / "table.md").write_text(markdown(table, spec, rows, summaries, command, renderer))
    write_csv(rows, out / "table.csv")
    written = [out / "table.md", out / "table.csv"]
    return written + ([out / "fosc_density.png", out / "fosc_vs_accuracy.png"] if renderer else [])


# ---- what ``python -m trainer.run`` prints at its end (issue 13 section 4) ----------------------
RUN_COLUMNS = ("clean", "fgsm", "pgd20")


def run_report(rd: Path, runs_dir: Path) -> str:
    """The robustness the run measured (Clean, FGSM, PGD-20 and their subset), its mean PGD steps per
    example, and the two commands to look further: the dashboard and a SQL query."""
    import pyarrow as pa

    try:
        rows = [dict(r, run=rd.name) for r in ev.complete(read_evals(rd)) if r["setting"] == "white-box"]
        ep = epoch_rows(rd)
    except (OSError, KeyError, pa.ArrowException) as e:  # the run's files are untrusted input
        rows, ep = [], []
        print(f"warning: cannot read {rd.name}'s evals or epochs: {str(e).splitlines()[0][:200]}", file=sys.stderr)
    steps = [r["steps_mean"] for r in ep]
    lines = []
    got = {ev.key_of(r["attack"]) for r in rows}
    if got & set(RUN_COLUMNS):
        from trainer.evaluate import table_markdown

        lines += ["Robustness measured at the end (test accuracy %):", "",
                  table_markdown(rows, [a for a in RUN_COLUMNS if a in got]), ""]
    else:
        lines.append("No end-of-run evaluation (--no-eval-at-end, or it did not finish): "
                     f"python -m trainer.evaluate {rd.name} --runs-dir {runs_dir}")
    if steps:
        lines.append(f"Mean PGD steps per example: {sum(steps) / len(steps):.2f} over {len(steps)} epochs "
                     f"(per epoch: {', '.join(f'{v:.2f}' for v in steps)}).")
    sql = (f"SELECT epoch, fosc_mean, steps_mean, heldout_pgd_acc FROM epochs WHERE run = '{rd.name}' "
           "ORDER BY epoch")
    lines += ["Look further:",
              f"  streamlit run run_dashboard.py -- --runs-dir {runs_dir}",
              f"  python -m store.sql --runs-dir {runs_dir} \"{sql}\""]
    return "\n".join(lines)
