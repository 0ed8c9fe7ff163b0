"""`embed evaluate` and `embed plot`: how good the vectors are, in numbers and in a picture.

Registered in cli/main.py with `app.command()(evaluate)` and `app.command()(plot)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

# Not imported from cli.main: main imports this module to register the commands.
out = Console()
err = Console(stderr=True)
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")


def evaluate(
    corpus_or_out: List[Path] = typer.Argument(..., metavar="CORPUS_OR_OUT",
                                               help="Corpus files (held-out evaluation: trains a model on the "
                                                    "rest), or one `embed encode` output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    seed: int = typer.Option(0, help="Seed for the held-out split, the training and the probes."),
    holdout: float = typer.Option(0.2, help="Share of dialogues held out (corpus only)."),
    epochs: int = typer.Option(0, help="Training epochs (corpus only; 0: chosen from the corpus size)."),
    encoders: Optional[str] = typer.Option(None, help="Comma-separated encoders (default: all)."),
    model_out: Optional[Path] = typer.Option(None, "--model-out", help="Keep the held-out model in this folder."),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Quality probes for each encoder beside a TF-IDF+SVD baseline: Q/A separation, retrieval,
    word order, context."""
    from cli.main import progress_bar
    from embedder.errors import EmbedderError
    from embedder.evaluate import evaluate as run_evaluate, table

    names = [e.strip() for e in encoders.split(",") if e.strip()] if encoders else None
    dirs = [p for p in corpus_or_out if p.is_dir()]
    if dirs:
        if len(corpus_or_out) > 1:
            raise EmbedderError(f"{dirs[0]}: give either one `embed encode` output folder or corpus files, not both")
        kwargs = {"out_dir": dirs[0]}
    else:
        kwargs = {"corpus_paths": corpus_or_out, "holdout": holdout, "epochs": epochs, "model_out": model_out}
    with progress_bar(quiet or as_json) as bar:
        report = run_evaluate(**kwargs, encoders=names, seed=seed, device=device, progress=bar)
    if as_json:
        print(json.dumps(report))
        return
    out.print(table(report))
    if not quiet:
        err.print(f"[dim]{report['seconds']:.0f} s; --json for every number[/]")


def plot(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="An `embed encode` output folder."),
    output: Path = typer.Option(Path("embedding.png"), "-o", "--output", help="PNG file to write."),
    encoder: Optional[str] = typer.Option(None, help="Which encoder's vectors (default: the first)."),
    width: int = typer.Option(1000, help="Image width in pixels."),
    height: int = typer.Option(800, help="Image height in pixels."),
    method: str = typer.Option("auto", help="Projection: auto (t-SNE for small sets, else PCA) | PCA | t-SNE."),
    quiet: bool = QuietOpt,
) -> None:
    """A PNG of the vectors projected to 2-D, coloured by role (question / answer)."""
    from embedder.plot import plot as run_plot

    path = run_plot(out_dir, output, encoder=encoder, width=width, height=height, method=method)
    if not quiet:
        out.print(f"wrote [bold]{path}[/] ({width}×{height})")
