"""`embed evaluate` and `embed plot`: how good the vectors are, in numbers and in a picture.

Registered in cli/main.py with `app.command()(evaluate)` and `app.command()(plot)`; the report
table is drawn here, so the library returns only data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli.options import DeviceOpt, JsonOpt, QuietOpt, encoder_list, err, out, progress_bar


def evaluate(
    corpus_or_out: List[Path] = typer.Argument(..., metavar="CORPUS_OR_OUT",
                                               help="Corpus files (held-out evaluation: trains a model on the "
                                                    "rest), or one `embed encode` output folder."),
    as_json: bool = JsonOpt,
    seed: int = typer.Option(0, help="Seed for the held-out split, the training and the probes."),
    holdout: float = typer.Option(0.2, help="Share of dialogues held out (corpus only)."),
    epochs: int = typer.Option(0, help="Training epochs (corpus only; 0: chosen from the corpus size)."),
    encoders: Optional[str] = typer.Option(None, help="Comma-separated encoders (default: all)."),
    model_out: Optional[Path] = typer.Option(None, "--model-out", help="Keep the held-out model in this folder."),
    teacher: Optional[str] = typer.Option(
        None, "--teacher", help="Also probe this sentence-transformers model (a folder, or all-MiniLM-L6-v2), "
                                "as a column beside the encoders."),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Quality probes for each encoder beside a TF-IDF+SVD baseline (and a teacher, if named):
    Q/A separation, retrieval, word order, context."""
    from embedder.errors import EmbedderError
    from embedder.evaluation.evaluate import evaluate as run_evaluate

    names = encoder_list(encoders)
    dirs = [p for p in corpus_or_out if p.is_dir()]
    if dirs:
        if len(corpus_or_out) > 1:
            raise EmbedderError(f"{dirs[0]}: give either one `embed encode` output folder or corpus files, not both")
        kwargs = {"out_dir": dirs[0]}
    else:
        kwargs = {"corpus_paths": corpus_or_out, "holdout": holdout, "epochs": epochs, "model_out": model_out}
    with progress_bar(quiet or as_json) as bar:
        report = run_evaluate(**kwargs, encoders=names, seed=seed, device=device, teacher=teacher, progress=bar)
    if as_json:
        print(json.dumps(report))
        return
    out.print(table(report))
    if not quiet:
        err.print(f"[dim]{report['seconds']:.0f} s; --json for every number[/]")


def plot(
    out_dir: Path = typer.Argument(..., metavar="OUT", help="An `embed encode` output folder."),
    output: Path = typer.Option(Path("embedding.png"), "-o", "--output", help="The .png (or .html) file to write."),
    encoder: Optional[str] = typer.Option(None, help="Which encoder's vectors (default: the first)."),
    color: str = typer.Option("role", "--color", help="Colour points by this Parquet column (role, dialogue, a label)."),
    fmt: Optional[str] = typer.Option(None, "--format", help="png | html (default: from the file name)."),
    width: int = typer.Option(1400, help="Width in pixels."),
    height: int = typer.Option(700, help="Height in pixels."),
    method: str = typer.Option("auto", help="Neighbourhood map: auto (t-SNE for small sets, else PCA) | PCA | t-SNE."),
    seed: int = typer.Option(0, help="Seed for the map, the sampling and the probe's folds."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Two panels: the question/answer direction (with the linear probe's accuracy) and the
    neighbourhood map, coloured by role or any other column."""
    from embedder.evaluation.plot import plot as run_plot

    drawn = run_plot(out_dir, output, encoder=encoder, width=width, height=height, method=method, seed=seed,
                     color=color, fmt=fmt)
    if as_json:
        print(json.dumps(drawn))
    elif not quiet:
        acc = drawn["role_accuracy"]
        out.print(f"wrote [bold]{drawn['output']}[/] ({drawn['points']} {drawn['encoder']} vectors; questions vs "
                  f"answers: linear probe {'n/a' if acc is None else f'{acc:.2f}'})", highlight=False)


ROWS = [
    ("qa_separation", "accuracy", "Q/A separation, acc (no '?')"),
    ("retrieval", "mrr", "Q → its answer, MRR"),
    ("retrieval", "recall@1", "Q → its answer, R@1"),
    ("retrieval", "recall@5", "Q → its answer, R@5"),
    ("retrieval", "recall@10", "Q → its answer, R@10"),
    ("word_order", "accuracy", "word order, acc (0.5 blind)"),
    ("word_order", "paired_accuracy", "word order, paired acc"),
    ("word_order", "order_shift", "word order, 1 − cos"),
    ("word_order", "score_accuracy", "order score column, acc"),
    ("context", "score", "context, within − across"),
]


def _chance(probe: dict, metric: str):
    c = probe.get("chance")
    if isinstance(c, dict):
        return c.get(metric)
    if metric in ("accuracy",):
        return c
    return None


def table(report: dict) -> Table:
    """A rich Table: one row per probe metric, one column per method (and chance)."""
    src = report.get("source", {})
    t = Table(title=f"embed evaluate — {src.get('utterances_eval', '?')} utterances "
                    f"({'held out' if src.get('held_out') else 'not held out' if src.get('held_out') is False else 'held-out unknown'})",
              caption=src.get("note"), show_edge=False)
    t.add_column("probe")
    for m in report["methods"]:
        t.add_column(f"{m}\n{report['dims'][m]}-d", justify="right")
    t.add_column("chance", justify="right", style="dim")
    for probe_name, metric, label in ROWS:
        probe = report["probes"].get(probe_name, {})
        res = probe.get("results")
        if not res:
            t.add_row(label, *["—"] * len(report["methods"]), probe.get("skipped", ""))
            continue
        cells = []
        for m in report["methods"]:
            v = res.get(m, {}).get(metric)
            cells.append("—" if v is None else f"{v + 0.0:.3f}".replace("-0.000", "0.000"))
        ch = _chance(probe, metric)
        if probe_name == "context":
            ch = 0.0
        cells.append("" if ch is None else f"{ch:.3f}")
        t.add_row(label, *cells)
    return t
