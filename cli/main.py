"""The `embed` command: parse, call embedder, print. No logic lives here."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sequence-aware utterance vectors for question/answer text → Parquet + FAISS.")
out = Console()
err = Console(stderr=True)

DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar.")
VocabOpt = typer.Option(None, "--vocab", help="SageMaker vocab.src.json for .rec corpora (default: beside the file).")


@contextlib.contextmanager
def progress_bar(quiet: bool):
    """A callback `(task, fraction)` that drives one rich bar per task."""
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


def _encoders(value: Optional[str]) -> Optional[list[str]]:
    return [e.strip() for e in value.split(",") if e.strip()] if value else None


@app.command()
def train(
    corpus: List[Path] = typer.Argument(..., help="Corpus files (.txt .tsv .jsonl .parquet .rec)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model folder to write."),
    encoders: Optional[str] = typer.Option(None, help="Comma-separated encoders to train (default: all)."),
    dim: int = typer.Option(256, help="Embedding size."),
    arch: str = typer.Option("gru", help="seq2seq architecture: gru | transformer."),
    rnn: str = typer.Option("gru", help="skipgram-birnn recurrent cell: gru | lstm."),
    pooling: str = typer.Option("meanmax", help="skipgram-birnn pooling: meanmax | attention."),
    epochs: int = typer.Option(0, help="Epochs (0: chosen from the corpus size; early stopping applies)."),
    batch_size: int = typer.Option(64),
    seed: int = typer.Option(0, help="CPU runs with one seed give identical models."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last epoch checkpoint."),
    vocab: Optional[Path] = VocabOpt,
    init_vectors: Optional[Path] = typer.Option(
        None, "--init-vectors", help="word2vec/BlazingText/fastText .txt/.vec/.bin file to start skip-gram from."),
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Train the tokenizer and the encoders on CORPUS, into a model folder."""
    import embedder
    from embedder.train import DEFAULT_ENCODERS

    with progress_bar(quiet or as_json) as bar:
        model = embedder.train(corpus, output, encoders=_encoders(encoders) or DEFAULT_ENCODERS, dim=dim,
                               arch=arch, rnn=rnn, pooling=pooling, epochs=epochs, batch_size=batch_size, seed=seed,
                               device=device, resume=resume, vocab=vocab, init_vectors=init_vectors,
                               progress=bar)
    summary = {"model": str(output), "fingerprint": model.fingerprint,
               "encoders": {n: m.cfg.dim for n, m in model.encoders.items()},
               "training": model.manifest.get("training", {}).get("history", {})}
    if as_json:
        print(json.dumps(summary))
    elif not quiet:
        out.print(f"model written to [bold]{output}[/] (fingerprint {model.fingerprint})")


@app.command()
def encode(
    corpus: List[Path] = typer.Argument(..., help="Corpus files; the first names the default output folder."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder (default: train one on CORPUS)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder (default: <corpus stem>.embed/)."),
    encoders: Optional[str] = typer.Option(None, help="Comma-separated encoders (default: all in the model)."),
    index_factory: Optional[str] = typer.Option(None, "--index", help="FAISS factory string (default: by size)."),
    seed: int = typer.Option(0, help="Seed for the model trained when no --model is given."),
    epochs: int = typer.Option(0, help="Epochs for the model trained when no --model is given."),
    vocab: Optional[Path] = VocabOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the output manifest as JSON."),
) -> None:
    """Vectors for every utterance → OUT/features.parquet + OUT/<encoder>.faiss."""
    from embedder.encode import default_out_dir, encode_corpus

    out_dir = output or default_out_dir(corpus[0])
    with progress_bar(quiet or as_json) as bar:
        manifest = encode_corpus(corpus, out_dir, model=model, encoders=_encoders(encoders),
                                 index_factory=index_factory, device=device, vocab=vocab,
                                 train_options={"seed": seed, "epochs": epochs}, progress=bar)
    if as_json:
        print(json.dumps({"output": str(out_dir), **manifest}))
    elif not quiet:
        out.print(f"{manifest['rows']} utterances → [bold]{out_dir}[/] "
                  f"({', '.join(manifest['encoders'])})")


@app.command()
def query(
    out_dir: Path = typer.Argument(..., help="An `embed encode` output folder."),
    text: str = typer.Argument(..., help="The text to look up."),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    encoder: Optional[str] = typer.Option(None, help="Which encoder's index (default: the first)."),
    role: Optional[str] = typer.Option(None, help="Only 'question' or only 'answer' results."),
    device: str = DeviceOpt,
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table."),
) -> None:
    """The K nearest utterances to TEXT, with score, role and text."""
    from embedder.corpus import ROLES
    from embedder.encode import Collection
    from embedder.errors import EmbedderError

    if role is not None and role not in ROLES:
        raise EmbedderError(f"--role {role!r}: expected one of {', '.join(ROLES)}")
    if k < 1:
        raise EmbedderError(f"-k {k}: must be at least 1")
    hits = Collection(out_dir, device=device).query([text], k=k, encoder=encoder, role=role)[0]
    if as_json:
        print(json.dumps([h.__dict__ for h in hits]))
        return
    t = Table("rank", "score", "role", "text", show_edge=False)
    for h in hits:
        t.add_row(str(h.rank), f"{h.score:.3f}", h.role, h.text)
    out.print(t)


@app.command()
def generate(
    model: Path = typer.Argument(..., help="Model folder."),
    text: str = typer.Argument(..., help="The utterance to answer."),
    beam: int = typer.Option(1, "--beam", help="Beam width (1 = greedy)."),
    device: str = DeviceOpt,
) -> None:
    """The seq2seq decoder's reply to TEXT: what the model learned to say next."""
    import embedder

    print(embedder.load(model, device=device).generate(text, beam=beam))


@app.command()
def neighbors(
    model: Path = typer.Argument(..., help="Model folder."),
    word: str = typer.Argument(..., help="Any word; an unseen one is built from its pieces."),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Nearest words by skip-gram vector (like `fasttext nn`)."""
    import embedder
    from embedder.interop import neighbors as nn

    hits = nn(embedder.load(model, device="cpu"), word, k=k)
    if as_json:
        print(json.dumps([{"word": w, "score": s} for w, s in hits]))
        return
    for w, s in hits:
        print(f"{w}\t{s:.4f}")


export_app = typer.Typer(no_args_is_help=True, help="Write SageMaker RecordIO-protobuf or word2vec files.")
import_app = typer.Typer(no_args_is_help=True, help="Read SageMaker RecordIO-protobuf files into a corpus.")
app.add_typer(export_app, name="export")
app.add_typer(import_app, name="import")


@export_app.command("recordio")
def export_recordio(
    corpus: List[Path] = typer.Argument(..., help="Corpus files."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for train.rec, val.rec, vocab.*.json."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Use this model's tokenizer (default: train one)."),
    val_fraction: float = typer.Option(0.05, help="Share of dialogues written to val.rec."),
    seed: int = typer.Option(0),
    vocab: Optional[Path] = VocabOpt,
) -> None:
    """Question → answer pairs as SageMaker seq2seq train.rec / val.rec + vocab JSON."""
    import embedder
    from embedder.interop import export_recordio as run

    tokenizer = embedder.load(model, device="cpu").tokenizer if model else None
    r = run(corpus, output, tokenizer=tokenizer, val_fraction=val_fraction, seed=seed, vocab=vocab)
    out.print(f"{r['train']} training and {r['val']} validation pairs, vocabulary {r['vocab_size']} → {output}")


@export_app.command("recordio-vectors")
def export_recordio_vectors(
    out_dir: Path = typer.Argument(..., help="An `embed encode` output folder."),
    output: Path = typer.Option(..., "-o", "--output", help="The .rec file to write."),
    encoder: Optional[str] = typer.Option(None, help="Which encoder's vectors (default: the first)."),
) -> None:
    """Vectors as dense float32 records (label = Parquet id) for SageMaker k-NN / Linear Learner."""
    from embedder.interop import export_recordio_vectors as run

    out.print(f"{run(out_dir, output, encoder=encoder)} vectors → {output}")


@export_app.command("word2vec")
def export_word2vec(
    model: Path = typer.Argument(..., help="Model folder."),
    output: Path = typer.Option(..., "-o", "--output", help="vectors.txt (text) or vectors.bin (binary)."),
    binary: Optional[bool] = typer.Option(None, "--binary/--text", help="Default: binary for .bin."),
    pieces: bool = typer.Option(False, "--pieces", help="Every SentencePiece piece, not only whole words."),
) -> None:
    """The skip-gram vectors in word2vec format (gensim, fastText, BlazingText read it)."""
    import embedder
    from embedder.interop import export_word2vec as run

    out.print(f"{run(embedder.load(model, device='cpu'), output, binary=binary, pieces=pieces)} vectors → {output}")


@import_app.command("recordio")
def import_recordio(
    rec: Path = typer.Argument(..., help="A SageMaker seq2seq .rec file."),
    output: Path = typer.Option(..., "-o", "--output", help="The .tsv corpus to write."),
    vocab: Optional[Path] = VocabOpt,
) -> None:
    """A seq2seq .rec file (with its vocab) as a question<TAB>answer corpus."""
    from embedder.interop import import_recordio as run

    out.print(f"{run(rec, output, vocab=vocab)} pairs → {output}")


from cli.quality import evaluate, plot  # noqa: E402

app.command()(evaluate)
app.command()(plot)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 1, never a traceback."""
    from embedder.errors import EmbedderError

    try:
        app()
    except EmbedderError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
