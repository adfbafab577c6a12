"""What the experiments share for talking to the user: progress lines on stderr."""

import sys


def say(message, *, progress=True):
    """A progress line on stderr (the table itself goes to stdout)."""
    if progress:
        print(f"[sparsegap] {message}", file=sys.stderr, flush=True)
