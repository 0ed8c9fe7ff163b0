"""The one progress protocol: a callback `(task name, fraction done)`, fraction in [0, 1].

Every long step reports through it (skip-gram, each encoder's epochs, encoding, the probes);
the command line turns it into one bar per task, and library callers may pass any function.
"""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str, float], None]


def report(progress: Progress | None, task: str, fraction: float) -> None:
    if progress is not None:
        progress(task, fraction)
