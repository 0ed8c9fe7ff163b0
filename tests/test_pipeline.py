"""The README's main job end to end: corpus → model → features.parquet + FAISS → embed query."""

import json

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import embedder
from embedder.data.corpus import read_corpus
from conftest import EXAMPLE, ORDER_ATOL, run_embed


def _answers_found(path, encoder: str, k: int = 3) -> float:
    """Share of questions (followed by an answer in their dialogue) whose answer is in the top k
    of all other utterances, searched through the written FAISS index."""
    t = pq.read_table(path / "features.parquet").to_pandas()
    index = faiss.read_index(str(path / f"{encoder}.faiss"))
    col = encoder.replace("-", "_")
    nxt = {(d, p): i for i, d, p in zip(t["id"], t["dialogue"], t["position"])}
    hits = total = 0
    for _, row in t[t["role"] == "question"].iterrows():
        ans = nxt.get((row["dialogue"], row["position"] + 1))
        if ans is None or t.loc[t["id"] == ans, "role"].item() != "answer":
            continue
        _, ids = index.search(np.asarray(row[col], dtype=np.float32)[None], k + 1)
        others = [i for i in ids[0] if i != row["id"]][:k]
        hits += ans in others
        total += 1
    assert total >= 100
    return hits / total


def test_encode_writes_parquet_and_index(example_out):
    t = pq.read_table(example_out / "features.parquet")
    n = sum(1 for _ in read_corpus([EXAMPLE]))
    assert t.num_rows == n
    assert t.schema.field("id").type == "int64" and t.schema.field("dialogue").type == "int64"
    assert t.schema.field("position").type == "int32"
    vec = t.schema.field("seq2seq").type
    assert pa.types.is_fixed_size_list(vec) and vec.list_size == 256 and vec.value_type == pa.float32()
    meta = json.loads(t.schema.metadata[b"embedder"])
    assert meta["unit_length"] and meta["encoders"]["seq2seq"]["dim"] == 256 and meta["model_fingerprint"]
    X = np.stack(t.column("seq2seq").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert set(t.column("role").to_pylist()) == {"question", "answer"}
    index = faiss.read_index(str(example_out / "seq2seq.faiss"))
    assert index.ntotal == n
    scores, ids = index.search(X[:5], 1)
    np.testing.assert_array_equal(ids[:, 0], t.column("id").to_numpy()[:5])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-4)
    manifest = json.loads((example_out / "embed.json").read_text())
    assert manifest["rows"] == n and manifest["model"] == "model"
    assert not list(example_out.parent.glob(".*tmp"))


def test_question_finds_its_answer(example_out):
    assert _answers_found(example_out, "seq2seq") >= 0.8


def test_query_cli(example_out):
    table = run_embed("query", example_out, "How do I charge my phone quickly?", "-k", "3").stdout
    assert "rank" in table and "score" in table and table.count("\n") >= 4
    hits = json.loads(run_embed("query", example_out, "How do I charge my phone quickly?", "-k", "4",
                                "--role", "answer", "--json").stdout)
    assert len(hits) == 4 and [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert all(h["role"] == "answer" for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]


def test_python_api_matches_stored_vectors(example_out):
    model = embedder.load(example_out / "model")
    t = pq.read_table(example_out / "features.parquet", columns=["text", "seq2seq"]).slice(0, 20)
    X = model.encode(t.column("text").to_pylist(), encoder="seq2seq")
    assert X.dtype == np.float32 and X.shape == (20, 256)
    np.testing.assert_allclose(X, np.stack(t.column("seq2seq").to_numpy(zero_copy_only=False)), atol=1e-5)


def test_save_load_gives_identical_vectors(tiny_corpus, tmp_path):
    model = embedder.train([tiny_corpus], out=tmp_path / "m", epochs=3, seed=3)
    texts = ["where can i charge it?", "a completely new sentence", "bank"]
    again = embedder.load(tmp_path / "m")
    np.testing.assert_array_equal(model.encode(texts), again.encode(texts))


def test_same_seed_same_vectors(tiny_corpus, tmp_path):
    texts = ["how do i charge my phone?", "the river bank"]
    a = embedder.train([tiny_corpus], out=tmp_path / "a", epochs=3, seed=7).encode(texts)
    b = embedder.train([tiny_corpus], out=tmp_path / "b", epochs=3, seed=7).encode(texts)
    c = embedder.train([tiny_corpus], out=tmp_path / "c", epochs=3, seed=8).encode(texts)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_resume_continues_an_interrupted_run(tiny_corpus, tmp_path):
    texts = ["how do i charge my phone?", "the river bank"]
    straight = embedder.train([tiny_corpus], out=tmp_path / "s", epochs=4, seed=1).encode(texts)

    class Stop(Exception):
        pass

    def stop_after_two(name, fraction):
        if fraction >= 0.5:
            raise Stop

    with pytest.raises(Stop):
        embedder.train([tiny_corpus], out=tmp_path / "r", epochs=4, seed=1, progress=stop_after_two)
    assert not (tmp_path / "r" / "manifest.json").exists()
    resumed = embedder.train([tiny_corpus], out=tmp_path / "r", epochs=4, seed=1, resume=True)
    np.testing.assert_allclose(resumed.encode(texts), straight, atol=1e-6)
    history = resumed.manifest["training"]["history"]["seq2seq"]
    assert history["epochs"] == 4


def test_a_run_resumed_from_an_earlier_checkpoint_ends_the_same(tiny_corpus, tmp_path, monkeypatch):
    """Checkpoints are written only as often as their cost allows (`loop.CHECKPOINT_RATIO`), so an
    interrupted run may go back several epochs: it replays them to the same weights."""
    import torch

    from embedder.training import loop

    texts = ["how do i charge my phone?", "the river bank"]
    opts = dict(epochs=5, seed=1, encoders=["skipgram-birnn"])
    straight = embedder.train([tiny_corpus], out=tmp_path / "s", **opts).encode(texts, encoder="skipgram-birnn")
    monkeypatch.setattr(loop, "CHECKPOINT_RATIO", 1e9)  # writing seems dear: the first and last epochs only

    class Stop(Exception):
        pass

    def stop_late(name, fraction):
        if name == "skipgram-birnn" and fraction >= 0.7:
            raise Stop

    with pytest.raises(Stop):
        embedder.train([tiny_corpus], out=tmp_path / "r", progress=stop_late, **opts)
    saved = torch.load(tmp_path / "r" / "checkpoints" / "skipgram-birnn.last.pt", weights_only=True)
    assert saved["epoch"] == 0  # the two epochs finished after it were not written
    resumed = embedder.train([tiny_corpus], out=tmp_path / "r", resume=True, **opts)
    np.testing.assert_allclose(resumed.encode(texts, encoder="skipgram-birnn"), straight, atol=1e-6)
    assert resumed.manifest["training"]["history"]["skipgram-birnn"]["epochs"] == 5


def test_generate_reproduces_an_overfit_answer(tiny_corpus, tmp_path):
    embedder.train([tiny_corpus], tmp_path / "m", epochs=150, seed=0, encoders=["seq2seq"], device="cpu")
    assert run_embed("generate", tmp_path / "m", "where is the river bank?").stdout.strip() == \
        "walk down the hill past the old mill."
    found = json.loads(run_embed("generate", tmp_path / "m", "can i get a bank loan?", "--beam", "3", "--json").stdout)
    assert found["reply"] == found["beams"][0]["reply"] == "yes, fill in the form at the counter."
    scores = [b["logprob"] for b in found["beams"]]
    assert 1 <= len(scores) <= 3 and scores == sorted(scores, reverse=True) and scores[0] <= 0


def test_transformer_arch(tiny_corpus, tmp_path):
    model = embedder.train([tiny_corpus], out=tmp_path / "t", arch="transformer", epochs=2, dim=32)
    X = model.encode(["how do i charge my phone?", "phone charge how do i my?"])
    assert X.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert embedder.load(tmp_path / "t").encoders["seq2seq"].cfg.arch == "transformer"


def test_every_stage_reports_progress_as_it_goes(tiny_corpus, tmp_path):
    """One `(task, fraction)` protocol for all of training: skip-gram reports along the way too
    (its bar used to jump from 0 to 1), and every task ends at 1."""
    seen: dict[str, list[float]] = {}
    embedder.train([tiny_corpus], out=tmp_path / "m", epochs=2, seed=0,
                   progress=lambda task, fraction: seen.setdefault(task, []).append(fraction))
    assert set(seen) == {"skip-gram", "seq2seq", "skipgram-birnn"}
    for task, fractions in seen.items():
        assert fractions[-1] == pytest.approx(1.0), task
        assert all(a <= b + 1e-9 for a, b in zip(fractions, fractions[1:])), task
    assert any(0.0 < f < 1.0 for f in seen["skip-gram"])


def test_training_leaves_torch_threads_alone(tiny_corpus, tmp_path):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embedder.train([tiny_corpus], out=tmp_path / "m", epochs=1, seed=0)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


TIE = 0.01  # cosines that differ by less than this may come out in either order on another CPU


def test_readme_shows_what_the_commands_print(example_out):
    """The README's example output is what `embed encode` and `embed query` print today."""
    readme = (EXAMPLE.parents[1] / "README.md").read_text(encoding="utf-8")
    rows = n = None
    for block in readme.split("```text\n")[1:]:
        body = block.split("```")[0]
        if "utterances →" in body:
            n = int(body.split()[0])
        if body.startswith("$ embed query"):
            rows = [line.split("│")[1:] for line in body.splitlines() if "│" in line]
    assert n == sum(1 for _ in read_corpus([EXAMPLE]))
    shown = [(float(score), role.strip(), text.strip()) for score, role, text in rows]
    # one more than shown: CPUs differ in the third decimal, which may swap two near-tied answers
    hits = json.loads(run_embed("query", example_out, "Where can I fish by the river?", "-k", str(len(shown) + 1),
                                "--role", "answer", "--json").stdout)
    found = {h["text"]: h for h in hits}
    for rank, (score, role, text) in enumerate(shown):
        assert text in found and found[text]["role"] == role, f"{text!r} is not among the answers"
        assert abs(found[text]["score"] - score) <= TIE, (text, found[text]["score"], score)
        assert abs(hits[rank]["score"] - score) <= TIE, f"rank {rank + 1}: {hits[rank]}, README {score}"


def test_decoder_stage_trains_the_decoder_and_moves_no_vector(tiny_corpus):
    """The stage after a short main training updates the decoder alone: every vector stays."""
    import torch

    from embedder.data.corpus import read_corpus
    from embedder.data.pairs import PairCorpus
    from embedder.data.tokenizer import Tokenizer
    from embedder.encoders.seq2seq import DECODER_UPDATES, Seq2Seq
    from embedder.training.loop import TrainConfig, fit

    data = PairCorpus.from_utterances(read_corpus([tiny_corpus]))
    tok = Tokenizer.train(data.texts, vocab_size=64)
    data = data.tokenized(tok, max_len=64)
    torch.manual_seed(0)
    module = Seq2Seq.build(Seq2Seq.configure(len(tok), {"dim": 32}))
    cfg = TrainConfig(epochs=2, seed=0, device="cpu")
    main = fit(module, data, cfg)
    stage = module.follow_up(main.updates)
    assert stage is not None and stage.updates == DECODER_UPDATES - main.updates
    assert module.follow_up(DECODER_UPDATES) is None  # enough updates already: no stage

    src, lens = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]]), torch.tensor([4, 3])
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    with torch.no_grad():
        vectors = module.embed(src, lens)
    stage.updates = 20
    hist = fit(module, data, cfg, stage=stage)
    assert hist.updates == 20
    encoder = {id(p) for p in module.encoder_parameters()}
    moved = {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}
    frozen = {name for name, p in module.named_parameters() if id(p) in encoder}
    assert not moved & frozen  # the embeddings, encoder, projection and order scorer stay
    assert not {name for name in moved if name.startswith("role_head")}  # and the training-only head
    assert {"decoder.weight_ih_l0", "combine.weight", "out.head.weight"} <= moved
    with torch.no_grad():
        assert torch.equal(module.embed(src, lens), vectors)


def test_generate_answers_bundled_questions_with_corpus_replies(example_out):
    """The model the README's first command trains answers most of the corpus's questions with
    one of its own replies (greedy decoding)."""
    model = embedder.load(example_out / "model", device="cpu")
    utts = list(read_corpus([EXAMPLE]))
    known = {u.text.lower() for u in utts}
    questions = [a.text for a, b in zip(utts, utts[1:]) if a.dialogue == b.dialogue and a.role == "question"][:20]
    replies = [model.generate(q) for q in questions]
    assert sum(r.lower() in known for r in replies) >= 10, replies
    assert "seq2seq decoder" in model.manifest["training"]["history"]


def test_role_term_is_in_new_models_and_absent_from_older_configs():
    """New models train the role term (a head that reads question/answer off the vector); a
    config.json written before it existed has no `role_weight`, builds no head and so loads its
    weights as they are."""
    from embedder.encoders.birnn import BiRNNConfig, BiRNNEncoder
    from embedder.encoders.seq2seq import Seq2Seq, Seq2SeqConfig

    for cls, cfg_class in ((Seq2Seq, Seq2SeqConfig), (BiRNNEncoder, BiRNNConfig)):
        new = cls.build(cls.configure(64, {"dim": 16}))
        assert new.cfg.role_weight > 0 and new.role_head is not None
        old = cls.build(cfg_class(vocab_size=64, dim=16))
        assert old.role_head is None and not any(k.startswith("role_head") for k in old.state_dict())


def test_batches_side_by_side_give_the_vectors_of_one_batch(example_out):
    """On the CPU a long input's batches run on one thread each, side by side: the vectors and
    order scores are those of a single batch, and torch's thread count is as it was, in this
    thread and in threads started afterwards."""
    import threading

    import torch

    model = embedder.load(example_out / "model", device="cpu")
    texts = [u.text for u in read_corpus([EXAMPLE])]
    threads = torch.get_num_threads()
    for name in model.encoders:
        ids = model.tokens(texts, encoder=name)
        many = model.features_of_tokens(ids, name, batch_size=16, threads=2)   # ~20 batches on 2 workers
        one = model.features_of_tokens(ids, name, batch_size=len(texts), threads=1,   # one, in this thread
                                       max_tokens=0)
        np.testing.assert_allclose(many[0], one[0], atol=1e-6)
        np.testing.assert_allclose(many[1], one[1], atol=ORDER_ATOL)
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert torch.get_num_threads() == threads and seen == [threads]


def test_batches_are_capped_in_pieces_and_give_the_same_vectors(example_out):
    """Inference batches hold at most `max_tokens` padded pieces (long texts come fewer to a
    batch, a text longer than the cap alone), every text exactly once, and the vectors and order
    scores do not depend on the cap."""
    from embedder.encoders.batching import buckets

    lengths = np.random.default_rng(0).integers(0, 90, 5000)
    batches = buckets(lengths, 256, max_tokens=1024)
    assert sorted(np.concatenate(batches).tolist()) == list(range(5000))
    assert all(len(b) * max(lengths[b].max(), 1) <= 1024 for b in batches)
    assert max(len(b) for b in batches) == 256 and min(len(b) for b in batches[:-1]) == 1024 // 89
    model = embedder.load(example_out / "model", device="cpu")
    texts = [u.text for u in read_corpus([EXAMPLE])]
    for name in model.encoders:
        ids = model.tokens(texts, encoder=name)
        capped = model.features_of_tokens(ids, name, max_tokens=64, threads=1)
        free = model.features_of_tokens(ids, name, max_tokens=0, threads=1)
        np.testing.assert_allclose(capped[0], free[0], atol=1e-6)
        np.testing.assert_allclose(capped[1], free[1], atol=ORDER_ATOL)
