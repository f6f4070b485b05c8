"""A run's tags and note: what a user says about a run, kept in its folder as ``annotations.json``.

The dashboard writes it (never the trainer); readers (the ``runs`` view, the dashboard) take it as
untrusted input: anything that is not a short list of short tags and one bounded note reads as none.
"""
from __future__ import annotations

import re
from pathlib import Path

from store import runs

ANNOTATIONS = "annotations.json"
MAX_TAGS, MAX_TAG, MAX_NOTE = 20, 40, 2000
_TAG = re.compile(r"^[\w.+:=/-]{1,40}$")  # no spaces or commas: tags are typed comma-separated


def parse_tags(text: str) -> list[str]:
    """'a, b,a' -> ['a', 'b']; StoreError (one line) for a tag with other characters or too many tags."""
    tags = []
    for t in (s.strip() for s in str(text or "").split(",")):
        if not t:
            continue
        if not _TAG.match(t):
            raise runs.StoreError(f"tag {t[:MAX_TAG]!r}: use 1-{MAX_TAG} letters, digits or . + : = / - _")
        if t not in tags:
            tags.append(t)
    if len(tags) > MAX_TAGS:
        raise runs.StoreError(f"at most {MAX_TAGS} tags, got {len(tags)}")
    return tags


def read(run: Path) -> dict:
    """{'tags': [...], 'note': str} of a run folder; empty for a missing or malformed file."""
    try:
        raw = runs.read_json(Path(run) / ANNOTATIONS, {}) or {}
    except runs.StoreError:
        raw = {}
    raw = raw if isinstance(raw, dict) else {}
    tags = raw.get("tags")
    tags = [t for t in tags if isinstance(t, str) and _TAG.match(t)][:MAX_TAGS] if isinstance(tags, list) else []
    note = raw.get("note")
    return {"tags": tags, "note": note[:MAX_NOTE] if isinstance(note, str) else ""}


def write(runs_dir: str | Path, name: str, tags: list[str] | str, note: str) -> dict:
    """Replace run ``name``'s tags and note (atomically); returns what was stored."""
    rd = runs.run_dir(runs_dir, name)
    if not (rd / runs.CONFIG).is_file():
        raise runs.StoreError(f"no run {name!r} in {runs_dir}")
    tags = parse_tags(tags) if isinstance(tags, str) else parse_tags(",".join(tags))
    note = str(note or "")
    if len(note) > MAX_NOTE:
        raise runs.StoreError(f"the note is {len(note)} characters; at most {MAX_NOTE}")
    value = {"tags": tags, "note": note}
    runs.write_json(rd / ANNOTATIONS, value)
    return value
