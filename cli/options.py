"""What every command shares: the consoles, the common options and the progress bar."""

from __future__ import annotations

import contextlib
import json
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

out = Console()
err = Console(stderr=True)

DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")
JsonOpt = typer.Option(False, "--json", help="Machine-readable JSON on standard output.")
TeacherOpt = typer.Option(
    "auto", "--teacher", help="Learn from a sentence-transformers model: a folder, all-MiniLM-L6-v2 (the teacher "
    "extra), auto (MiniLM where the extra is installed, else none) or none.")
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


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Warnings (no teacher installed, more --nproc than cores) as one line each on standard
    error, not Python's two lines with a source location."""
    import warnings

    def show(message, category, *_) -> None:
        label = "note" if category.__name__ == "NoTeacherWarning" else "warning"
        err.print(f"{label}: {escape(str(message))}", highlight=False, soft_wrap=True)

    before = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = before


def teacher_cost(info: dict | None) -> str | None:
    """One line on what the teacher cost, from the teacher entry of a model's manifest (None
    when it had none)."""
    cost = (info or {}).get("cost")
    if not cost:
        return None
    if cost.get("reused"):
        return f"teacher {info['name']}: {cost['texts']:,} vectors read back from the checkpoints"
    rate = cost["texts"] / cost["seconds"] if cost["seconds"] else float("inf")
    return (f"teacher {info['name']}: {cost['texts']:,} texts in {cost['seconds']:.1f} s "
            f"on {cost['device']} ({rate:,.0f}/s)")


def encoder_list(value: Optional[str]) -> Optional[list[str]]:
    """`--encoders a,b` as a list (None when not given)."""
    return [e.strip() for e in value.split(",") if e.strip()] if value else None


def result(as_json: bool, data: object, message: str) -> None:
    """A command's result: JSON on standard output, or one line for a person."""
    if as_json:
        print(json.dumps(data))
    else:
        out.print(message, highlight=False, soft_wrap=True)
