"""What every command shares: the consoles, the common options and the progress bar."""

from __future__ import annotations

import contextlib
import json
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

out = Console()
err = Console(stderr=True)

DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON on standard output.")
TeacherOpt = typer.Option(
    None, "--teacher", help="A sentence-transformers model folder, or all-MiniLM-L6-v2 (the teacher extra).")
VocabOpt = typer.Option(None, "--vocab", help="SageMaker vocab.src.json for .rec corpora (default: beside the file).")


@contextlib.contextmanager
def progress_bar(quiet: bool) -> Iterator:
    """A callback `(task, fraction)` (embedder's progress protocol) that drives one rich bar per task."""
    if quiet:
        yield None
        return
    with Progress(TextColumn("{task.description:>14}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False) as p:
        tasks: dict[str, int] = {}

        def update(name: str, fraction: float) -> None:
            if name not in tasks:
                tasks[name] = p.add_task(name, total=1.0)
            p.update(tasks[name], completed=min(1.0, fraction))

        yield update


def encoder_list(value: Optional[str]) -> Optional[list[str]]:
    """`--encoders a,b` as a list (None when not given)."""
    return [e.strip() for e in value.split(",") if e.strip()] if value else None


def result(as_json: bool, data: object, message: str) -> None:
    """A command's result: JSON on standard output, or one line for a person."""
    if as_json:
        print(json.dumps(data))
    else:
        out.print(message, highlight=False, soft_wrap=True)
