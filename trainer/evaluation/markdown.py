"""The one markdown table renderer (evaluate's printout and reproduce's table.md both use it)."""
from __future__ import annotations

import math


def cell(v) -> str:
    """'-' for missing, two decimals for floats, str otherwise."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def table(headers: list[str], rows: list[list], left: int = 1, text_last: bool = False) -> str:
    """A markdown table; the first ``left`` columns (and the last if ``text_last``) are text,
    left-aligned; the others numbers, right-aligned."""
    align = ["---"] * left + ["---:"] * (len(headers) - left)
    if text_last:
        align[-1] = "---"
    lines = ["| " + " | ".join(headers) + " |", "|" + "".join(a + "|" for a in align)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
