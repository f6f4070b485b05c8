"""What every ``python -m trainer.*`` command shares: exit codes and a one-line argument parser."""
from __future__ import annotations

import argparse
import sys

EXIT_BAD_INPUT = 2  # a bad flag, value, run name or file: one line on stderr, nothing written
EXIT_IO = 3         # the runs folder cannot be written (disk full, read-only): the run is resumable


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line and exits 2, like every other bad input."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
