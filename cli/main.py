"""The `embed` command: parse, call embedder, print. No logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from cli.options import (DeviceOpt, JsonOpt, QuietOpt, TeacherOpt, VocabOpt, encoder_list, err, one_line_warnings, out,
                         progress_bar, result, teacher_cost)
from cli.quality import evaluate, plot

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sequence-aware utterance vectors for question/answer text → Parquet + FAISS.")
app.command()(evaluate)
app.command()(plot)


@app.command()
def train(
    corpus: List[Path] = typer.Argument(..., help="Corpus files (.txt .tsv .jsonl .parquet .rec)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model folder to write."),
    encoders: Optional[str] = typer.Option(None, help="Comma-separated encoders to train (default: all)."),
    dim: int = typer.Option(256, help="Embedding size."),
    arch: str = typer.Option("gru", help="seq2seq architecture: gru | transformer."),
    rnn: str = typer.Option("gru", help="skipgram-birnn recurrent cell: gru | lstm."),
    pooling: str = typer.Option("auto", help="skipgram-birnn pooling: auto (mean without a teacher, mean and max with one) | mean | meanmax | attention."),
    epochs: int = typer.Option(0, help="Epochs (0: chosen from the corpus size; early stopping applies)."),
    batch_size: int = typer.Option(64),
    seed: int = typer.Option(0, help="CPU runs with one seed give identical models."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last epoch checkpoint."),
    vocab: Optional[Path] = VocabOpt,
    vocab_size: Optional[int] = typer.Option(
        None, "--vocab-size", help="Tokenizer pieces (default: about half the corpus's distinct words, at most "
        "8,000; with a WordPiece teacher, its whole vocabulary, the N the corpus uses most when given)."),
    init_vectors: Optional[Path] = typer.Option(
        None, "--init-vectors", help="word2vec/BlazingText/fastText .txt/.vec/.bin file to start skip-gram from."),
    teacher: Optional[str] = TeacherOpt,
    device: str = DeviceOpt,
    nproc: int = typer.Option(
        1, "--nproc", help="Training processes on this machine (PyTorch DDP: gloo on the CPU, one GPU each with NCCL)."),
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Train the tokenizer and the encoders on CORPUS, into a model folder."""
    import embedder
    from embedder.encoders.registry import DEFAULT_ENCODERS

    with one_line_warnings(), progress_bar(quiet or as_json) as bar:
        model = embedder.train(corpus, output, encoders=encoder_list(encoders) or DEFAULT_ENCODERS, dim=dim,
                               arch=arch, rnn=rnn, pooling=pooling, epochs=epochs, batch_size=batch_size, seed=seed,
                               device=device, resume=resume, vocab=vocab, vocab_size=vocab_size,
                               init_vectors=init_vectors, teacher=teacher, nproc=nproc, progress=bar)
    summary = {"model": str(output), "fingerprint": model.fingerprint,
               "encoders": {n: m.cfg.dim for n, m in model.encoders.items()},
               "training": model.manifest.get("training", {}).get("history", {})}
    if as_json:
        print(json.dumps(summary))
    elif not quiet:
        out.print(f"model written to [bold]{output}[/] (fingerprint {model.fingerprint})")
        if cost := teacher_cost(model.manifest.get("training", {}).get("teacher")):
            out.print(cost, highlight=False)


@app.command()
def encode(
    corpus: List[Path] = typer.Argument(..., help="Corpus files; the first names the default output folder."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model folder (default: train one on CORPUS)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output folder (default: <corpus stem>.embed/)."),
    encoders: Optional[str] = typer.Option(None, help="Comma-separated encoders (default: all in the model)."),
    index_factory: Optional[str] = typer.Option(None, "--index", help="FAISS factory string (default: by size)."),
    target_recall: float = typer.Option(0.95, "--target-recall",
                                        help="Recall@10 an approximate index is tuned to reach, fastest setting first (0-1]."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run into the same output after its last finished shard."),
    shard_rows: int = typer.Option(65536, "--shard-rows", help="Utterances per Parquet shard (what a killed run can lose)."),
    engine: str = typer.Option("local", "--engine", help="local | ray (Ray Data actors; the ray extra)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address for --engine ray (default: start a local one)."),
    seed: int = typer.Option(0, help="Seed for the model trained when no --model is given."),
    epochs: int = typer.Option(0, help="Epochs for the model trained when no --model is given."),
    teacher: str = typer.Option(
        "auto", "--teacher", help="Teacher for the model trained when no --model is given: a folder, "
        "all-MiniLM-L6-v2, auto (MiniLM where the teacher extra is installed) or none (see `embed train`)."),
    vocab: Optional[Path] = VocabOpt,
    device: str = DeviceOpt,
    quiet: bool = QuietOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Vectors for every utterance → OUT/features.parquet + OUT/<encoder>.faiss."""
    from embedder.errors import check_range
    from embedder.storage.encode import default_out_dir, encode_corpus, interrupted_rows

    check_range("--epochs", epochs, 0)
    check_range("--seed", seed, 0)
    check_range("--target-recall", target_recall, 0, 1, open_low=True)
    out_dir = output or default_out_dir(corpus[0])
    done = interrupted_rows(out_dir)
    if done and resume:
        err.print(f"resuming after {done} utterances")
    elif done and not quiet:
        err.print(f"note: starting over; an interrupted run had finished {done} utterances "
                  "(--resume continues it)")
    with one_line_warnings(), progress_bar(quiet or as_json) as bar:
        manifest = encode_corpus(corpus, out_dir, model=model, encoders=encoder_list(encoders),
                                 index_factory=index_factory, device=device, vocab=vocab,
                                 train_options={"seed": seed, "epochs": epochs, "teacher": teacher}, progress=bar,
                                 resume=resume, shard_rows=shard_rows, engine=engine, address=address,
                                 target_recall=target_recall)
    if as_json:
        print(json.dumps({"output": str(out_dir), **manifest}))
    elif not quiet:
        out.print(f"{manifest['rows']} utterances → [bold]{out_dir}[/] "
                  f"({', '.join(manifest['encoders'])})")
        if model is None and (cost := teacher_cost(manifest.get("teacher"))):  # a model trained by this run
            out.print(cost, highlight=False)
    if not as_json:  # an index that missed its recall or speed aim says so, --quiet or not
        for name, info in manifest["encoders"].items():
            search = info.get("search", {})
            if search.get("note"):
                err.print(f"note: {name} index {info['index_factory']}: {search['note']}", highlight=False)


@app.command()
def query(
    out_dir: Path = typer.Argument(..., help="An `embed encode` output folder."),
    text: str = typer.Argument(..., help="The text to look up."),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    encoder: Optional[str] = typer.Option(None, help="Which encoder's index (default: the first)."),
    role: Optional[str] = typer.Option(None, help="Only 'question' or only 'answer' results."),
    search: Optional[str] = typer.Option(
        None, "--search", help="Index search settings for this query, e.g. nprobe=64,rerank=200 (default: as tuned)."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The K nearest utterances to TEXT, with score, role and text."""
    from embedder.data.corpus import ROLES
    from embedder.errors import EmbedderError, check_range, check_text

    check_text(text, "the query text")  # before the imports that bring torch: a mistake answers at once
    check_range("-k", k, 1)
    if role is not None and role not in ROLES:
        raise EmbedderError(f"--role {role!r}: expected one of {', '.join(ROLES)}")
    from embedder.storage.collection import Collection
    from embedder.storage.index import parse_settings

    settings = parse_settings(search)
    hits = Collection(out_dir, device=device).query([text], k=k, encoder=encoder, role=role, settings=settings)[0]
    if as_json:
        print(json.dumps([h.__dict__ for h in hits]))
        return
    t = Table("rank", "score", "role", "text", show_edge=False)
    for h in hits:
        t.add_row(str(h.rank), f"{h.score:.3f}", h.role, escape(h.text))
    out.print(t)


@app.command()
def generate(
    model: Path = typer.Argument(..., help="Model folder."),
    text: str = typer.Argument(..., help="The utterance to answer."),
    beam: int = typer.Option(1, "--beam", help="Beam width (1 = greedy)."),
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The seq2seq decoder's reply to TEXT: what the model learned to say next."""
    import embedder
    from embedder.errors import check_range, check_text

    check_text(text, "the text to answer")  # before loading the model (and torch)
    check_range("--beam", beam, 1)
    replies = embedder.load(model, device=device).replies(text, beam=beam)
    if as_json:
        print(json.dumps({"text": text, "reply": replies[0][0], "beam": beam,
                          "beams": [{"reply": r, "logprob": round(s, 4)} for r, s in replies]}))
    else:
        out.print(replies[0][0], markup=False, highlight=False, soft_wrap=True)


@app.command()
def vectors(
    model: Path = typer.Argument(..., help="Model folder."),
    encoder: str = typer.Option("seq2seq", help="Which encoder."),
    fmt: str = typer.Option("tsv", "--format", help="tsv (the numbers, one row per line) | jsonl | npy."),
    batch_size: int = typer.Option(256, help="Most lines encoded together."),
    device: str = DeviceOpt,
) -> None:
    """Texts on standard input, one per line → vectors on standard output, line by line as they
    arrive (like fastText's print-sentence-vectors); npy waits for the end of the input."""
    import embedder
    from embedder.errors import check_range
    from embedder.storage.stream import check_format, stream_vectors, write_vectors

    check_range("--batch-size", batch_size, 1)
    check_format(fmt)
    loaded = embedder.load(model, device=device)
    write_vectors(stream_vectors(loaded, _stdin_lines(), encoder, max_batch=batch_size), fmt, sys.stdout.buffer)


def _stdin_lines():
    """Standard input as UTF-8 lines; a bad byte is a user's mistake, named by its line."""
    from embedder.errors import EmbedderError

    for n, raw in enumerate(sys.stdin.buffer, start=1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EmbedderError(f"<stdin>:{n}: not valid UTF-8") from None


@app.command()
def neighbors(
    model: Path = typer.Argument(..., help="Model folder."),
    word: str = typer.Argument(..., help="Any word; an unseen one is built from its pieces."),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    as_json: bool = JsonOpt,
) -> None:
    """Nearest words by skip-gram vector (like `fasttext nn`)."""
    import embedder
    from embedder.encoders.birnn import neighbors as nn

    hits = nn(embedder.load(model, device="cpu"), word, k=k)
    if as_json:
        print(json.dumps([{"word": w, "score": s} for w, s in hits]))
        return
    t = Table("word", "score", show_edge=False)
    for w, s in hits:
        t.add_row(escape(w), f"{s:.4f}")
    out.print(t)


export_app = typer.Typer(no_args_is_help=True, help="Write SageMaker RecordIO-protobuf, word2vec or ONNX files.")
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
    as_json: bool = JsonOpt,
) -> None:
    """Question → answer pairs as SageMaker seq2seq train.rec / val.rec + vocab JSON."""
    import embedder
    from embedder.data.sagemaker import export_recordio as run

    tokenizer = embedder.load(model, device="cpu").tokenizer if model else None
    r = run(corpus, output, tokenizer=tokenizer, val_fraction=val_fraction, seed=seed, vocab=vocab)
    result(as_json, r, f"{r['train']} training and {r['val']} validation pairs, vocabulary {r['vocab_size']} → {output}")


@export_app.command("recordio-vectors")
def export_recordio_vectors(
    out_dir: Path = typer.Argument(..., help="An `embed encode` output folder."),
    output: Path = typer.Option(..., "-o", "--output", help="The .rec file to write."),
    encoder: Optional[str] = typer.Option(None, help="Which encoder's vectors (default: the first)."),
    as_json: bool = JsonOpt,
) -> None:
    """Vectors as dense float32 records (label = Parquet id) for SageMaker k-NN / Linear Learner."""
    from embedder.storage.sagemaker import export_recordio_vectors as run

    n = run(out_dir, output, encoder=encoder)
    result(as_json, {"vectors": n, "output": str(output)}, f"{n} vectors → {output}")


@export_app.command("word2vec")
def export_word2vec(
    model: Path = typer.Argument(..., help="Model folder."),
    output: Path = typer.Option(..., "-o", "--output", help="vectors.txt (text) or vectors.bin (binary)."),
    binary: Optional[bool] = typer.Option(None, "--binary/--text", help="Default: binary for .bin."),
    pieces: bool = typer.Option(False, "--pieces", help="Every SentencePiece piece, not only whole words."),
    as_json: bool = JsonOpt,
) -> None:
    """The skip-gram vectors in word2vec format (gensim, fastText, BlazingText read it)."""
    import embedder
    from embedder.encoders.birnn import export_word2vec as run

    n = run(embedder.load(model, device="cpu"), output, binary=binary, pieces=pieces)
    result(as_json, {"vectors": n, "output": str(output)}, f"{n} vectors → {output}")


@export_app.command("onnx")
def export_onnx(
    model: Path = typer.Argument(..., help="Model folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the graphs, tokenizer.model and onnx.json."),
    encoder: Optional[List[str]] = typer.Option(None, "--encoder", help="Only this encoder (repeatable; default: all)."),
    opset: int = typer.Option(17, help="ONNX opset (14-20; a Transformer's graph is written with 18 at the least)."),
    as_json: bool = JsonOpt,
) -> None:
    """Each encoder as an ONNX graph (ids and lengths in; unit vector and order score out), checked
    against the model with onnxruntime; `embedder.onnx.OnnxModel` and `embed serve --runtime onnx` read it."""
    import embedder
    from embedder.encoders.onnx_export import export_onnx as run

    desc = run(embedder.load(model, device="cpu"), output, encoders=encoder, opset=opset)
    names = ", ".join(f"{k} (opset {v['opset']})" for k, v in desc["encoders"].items())
    result(as_json, {"output": str(output), "encoders": desc["encoders"]}, f"{names} → {output}")


@import_app.command("recordio")
def import_recordio(
    rec: Path = typer.Argument(..., help="A SageMaker seq2seq .rec file."),
    output: Path = typer.Option(..., "-o", "--output", help="The .tsv corpus to write."),
    vocab: Optional[Path] = VocabOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A seq2seq .rec file (with its vocab) as a question<TAB>answer corpus."""
    from embedder.data.sagemaker import import_recordio as run

    n = run(rec, output, vocab=vocab)
    result(as_json, {"pairs": n, "output": str(output)}, f"{n} pairs → {output}")


@app.command()
def serve(
    folder: Optional[Path] = typer.Argument(
        None, envvar="EMBED_SERVE_DIR", show_default=False,
        help="An `embed encode` output folder (vectors, search, documents) or a model folder (vectors only); "
             "default in SageMaker's container: /opt/ml/model."),
    model: Optional[Path] = typer.Option(None, envvar="EMBED_MODEL",
                                         help="The model folder, when not the one the output folder names."),
    host: str = typer.Option("127.0.0.1", envvar="EMBED_HOST", help="Address to listen on (loopback by default)."),
    port: Optional[int] = typer.Option(None, help="Port (default: $SAGEMAKER_BIND_TO_PORT, else 8080)."),
    api_key: Optional[str] = typer.Option(None, envvar="EMBED_API_KEY",
                                          help="Require `Authorization: Bearer KEY` (or X-API-Key)."),
    no_auth: bool = typer.Option(False, "--no-auth", envvar="EMBED_NO_AUTH",
                                 help="Allow a non-loopback address without a key (behind an authenticating gateway)."),
    max_batch: int = typer.Option(
        0, help="Texts gathered from concurrent requests into one model call (0: the device's, 16 on the CPU, 512 on a GPU)."),
    max_wait_ms: float = typer.Option(2.0, help="How long a micro-batch waits to fill."),
    max_queue: int = typer.Option(8192, help="Texts waiting before new requests get 429."),
    workers: int = typer.Option(2, help="Model calls at once: one batch fills while another runs."),
    processes: int = typer.Option(1, envvar="EMBED_PROCESSES",
                                  help="Server processes sharing the port, each with its own model (many cores)."),
    shared_model: bool = typer.Option(
        False, "--shared-model", envvar="EMBED_SHARED_MODEL",
        help="With --processes: one model, in the first process, encodes every process's batches (one GPU context)."),
    device: str = DeviceOpt,
    runtime: str = typer.Option("torch", "--runtime",
                                help="torch, or onnx: serve an `embed export onnx` folder without torch (vectors only)."),
) -> None:
    """Serve vectors and neighbours over HTTP: OpenAI-compatible /v1/embeddings, /embed, /search,
    /documents, /health, /metrics, and SageMaker's /ping + /invocations."""
    from embedder.errors import check_range
    from embedder.service.run import serve as run

    check_range("--max-batch", max_batch, 0)
    check_range("--max-wait-ms", max_wait_ms, 0)
    check_range("--max-queue", max_queue, 1)
    check_range("--workers", workers, 1)
    check_range("--processes", processes, 1, 256)
    limits = None
    try:
        from embedder.service.app import Limits
        limits = Limits(max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue, workers=workers)
    except ImportError:
        pass  # run() says which extra to install
    run(folder, model=model, host=host, port=port, api_key=api_key, no_auth=no_auth, device=device,
        limits=limits, announce=lambda line: err.print(line, highlight=False, soft_wrap=True), runtime=runtime,
        processes=processes, shared_model=shared_model)


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 1, never a traceback."""
    from embedder.errors import EmbedderError

    try:
        app()
    except EmbedderError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
