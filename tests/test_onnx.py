"""Where users deploy: `embed export onnx` read back by onnxruntime (and by `embedder.onnx`, with
no torch), `embed serve --runtime onnx`, and a model folder opened by the real
sentence-transformers package."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import embedder
from embedder.encoders.order import float32_scores
from embedder.errors import EmbedderError
from conftest import EXAMPLE, ROOT, SHARED_DATA, TINY, run_embed

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

# Put first on sys.path of a child process: any import of torch fails there, as in an image without it.
HIDE_TORCH = """
import sys
class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(name + " is not installed here")
sys.meta_path.insert(0, _Hidden())
"""


def sentences(n: int = 3000) -> list[str]:
    """A few thousand texts of mixed lengths: STS sentences where the shared data is beside the
    checkout, else the bundled corpus's lines joined in ones, twos and threes; and the edge cases
    (an empty text, one piece, a text past every encoder's max_len)."""
    sts = SHARED_DATA / "sts" / "2015.test.tsv"
    if sts.exists():
        texts = []
        for line in sts.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            texts += [t for t in parts[1:3] if t.strip()]
    else:
        lines = [line[3:] for line in EXAMPLE.read_text().splitlines() if line.strip()]
        texts = [" ".join(lines[i:i + k]) for k in (1, 2, 3) for i in range(len(lines))]
    return texts[:n] + ["", "hi", " ".join(["river bank"] * 80)]


@pytest.fixture(scope="module")
def variants(example_out, tmp_path_factory):
    """The bundled corpus's model (GRU seq2seq, GRU BiRNN), and one with the other cells: a
    Transformer seq2seq and an LSTM BiRNN with attention pooling (a short training: what matters
    here is that the graph computes what the module computes)."""
    root = tmp_path_factory.mktemp("variants")
    other = embedder.train(EXAMPLE, root / "other", arch="transformer", rnn="lstm", pooling="attention",
                           epochs=1, seed=0, device="cpu")
    return {"gru": embedder.load(example_out / "model", device="cpu"), "transformer+lstm": other}


@pytest.fixture(scope="module")
def exports(variants, tmp_path_factory):
    from embedder.encoders.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    return {name: (export_onnx(model, root / name), root / name) for name, model in variants.items()}


@pytest.mark.parametrize("variant", ["gru", "transformer+lstm"])
def test_onnxruntime_gives_the_models_vectors_and_order_scores(variants, exports, variant):
    from embedder.onnx import OnnxModel

    model, (desc, folder) = variants[variant], exports[variant]
    onnx_model = OnnxModel(folder)
    texts = sentences()
    assert set(onnx_model.encoders) == set(model.encoders) == set(desc["encoders"])
    for name in model.encoders:
        with float32_scores():  # what the graph computes; on a CPU without bfloat16, what Model gives
            V, O = model.features(texts, encoder=name)
        W, P = onnx_model.features(texts, encoder=name)
        assert W.dtype == np.float32 and W.shape == V.shape
        assert np.abs(W - V).max() < 1e-4, (variant, name)
        assert np.abs(P - O).max() < 1e-3, (variant, name)
        np.testing.assert_allclose(np.linalg.norm(W, axis=1), 1.0, atol=1e-5)
        # as Model.encode runs on this CPU (its order scorer may multiply in bfloat16)
        assert np.abs(onnx_model.encode(texts[:500], encoder=name) - model.encode(texts[:500], encoder=name)).max() < 1e-4
        assert np.isnan(onnx_model.features(texts[:3], encoder=name, order=False)[1]).all()


def test_export_writes_what_a_caller_needs(exports):
    desc, folder = exports["gru"]
    assert sorted(p.name for p in folder.iterdir()) == ["onnx.json", "seq2seq.onnx", "skipgram-birnn.onnx",
                                                         "tokenizer.model"]
    on_disk = json.loads((folder / "onnx.json").read_text())
    assert on_disk == desc
    assert set(desc["inputs"]) == {"ids", "lengths"} and set(desc["outputs"]) == {"vector", "order"}
    assert desc["padding"]["pad_id"] == 0 and desc["encoders"]["seq2seq"]["max_len"] > 0
    import onnx

    graph = onnx.load(str(folder / "seq2seq.onnx")).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "length"]  # dynamic batch and length


def test_the_command_line_exports_one_encoder(example_out, tmp_path):
    proc = run_embed("export", "onnx", example_out / "model", "-o", tmp_path / "x", "--encoder", "skipgram-birnn",
                     "--opset", "18", "--json")
    out = json.loads(proc.stdout)
    assert list(out["encoders"]) == ["skipgram-birnn"] and out["encoders"]["skipgram-birnn"]["opset"] == 18
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["onnx.json", "skipgram-birnn.onnx", "tokenizer.model"]


def test_bad_exports_are_one_line_and_leave_nothing(example_out, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(example_out / "model", old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["format_version"] = 3
    (old / "manifest.json").write_text(json.dumps(manifest))
    cases = [
        (tmp_path / "missing", [], "no such model folder"),
        (old, [], "retrain the model"),
        (example_out / "model", ["--encoder", "bert"], "encoder 'bert' is not in this model"),
        (example_out / "model", ["--opset", "9"], "--opset 9: must lie in"),
    ]
    for model, extra, needle in cases:
        proc = run_embed("export", "onnx", model, "-o", tmp_path / "out", *extra, check=False)
        assert proc.returncode == 1, proc.stderr
        assert needle in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no folder, no temporary


def test_an_onnx_folder_that_does_not_match_is_one_line(exports, tmp_path):
    from embedder.onnx import OnnxModel

    _, folder = exports["gru"]
    with pytest.raises(EmbedderError, match="no onnx.json"):
        OnnxModel(tmp_path)
    with pytest.raises(EmbedderError, match="no such folder"):
        OnnxModel(tmp_path / "nope")
    changed = tmp_path / "changed"
    shutil.copytree(folder, changed)
    data = bytearray((changed / "seq2seq.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (changed / "seq2seq.onnx").write_bytes(bytes(data))
    with pytest.raises(EmbedderError, match=r"seq2seq.onnx: does not match onnx.json"):
        OnnxModel(changed)
    shutil.copyfile(folder / "seq2seq.onnx", changed / "seq2seq.onnx")
    (changed / "tokenizer.model").unlink()
    with pytest.raises(EmbedderError, match="tokenizer.model: missing"):
        OnnxModel(changed)
    shutil.copyfile(folder / "tokenizer.model", changed / "tokenizer.model")
    desc = json.loads((changed / "onnx.json").read_text())
    desc["format_version"] = 0
    (changed / "onnx.json").write_text(json.dumps(desc))
    with pytest.raises(EmbedderError, match="export the model again"):
        OnnxModel(changed)
    (changed / "onnx.json").write_text("{not json")
    with pytest.raises(EmbedderError, match="onnx.json: corrupt"):
        OnnxModel(changed)
    with pytest.raises(EmbedderError, match="encoder 'bert' is not in this export"):
        OnnxModel(folder).encode(["x"], encoder="bert")


def test_the_onnx_runtime_runs_where_torch_is_not_installed(variants, exports, tmp_path):
    _, folder = exports["gru"]
    texts = sentences(200)
    expected = variants["gru"].encode(texts, encoder="skipgram-birnn")
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = HIDE_TORCH + f"""
import json, numpy as np
from embedder.onnx import OnnxModel
texts = json.loads(open({str(tmp_path / 'texts.json')!r}).read())
np.save({str(tmp_path / 'got.npy')!r}, OnnxModel({str(folder)!r}).encode(texts, encoder="skipgram-birnn"))
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert np.abs(np.load(tmp_path / "got.npy") - expected).max() < 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_runtime_onnx_without_torch(variants, exports, tmp_path):
    """`embed serve --runtime onnx` in a process where torch cannot be imported, over real HTTP:
    OpenAI's embeddings route answers with the model's vectors."""
    pytest.importorskip("fastapi")
    _, folder = exports["gru"]
    port = _free_port()
    script = HIDE_TORCH + f"""
sys.argv = ["embed", "serve", {str(folder)!r}, "--runtime", "onnx", "--port", "{port}", "--workers", "2"]
from cli.main import main
main()
"""
    server = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(base + "/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(server.stderr.read())
                time.sleep(0.1)
        texts = ["Where can I fish by the river?", "Yes, the east bank is public land."]
        body = json.dumps({"input": texts, "model": "seq2seq"}).encode()
        req = urllib.request.Request(base + "/v1/embeddings", body, {"Content-Type": "application/json"})
        got = np.array([d["embedding"] for d in json.load(urllib.request.urlopen(req, timeout=30))["data"]],
                       dtype=np.float32)
        assert np.abs(got - variants["gru"].encode(texts, encoder="seq2seq")).max() < 1e-4
        req = urllib.request.Request(base + "/search", json.dumps({"query": "fish"}).encode(),
                                     {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=30)
        assert refused.value.code == 404
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_runtime_onnx_refuses_a_model_folder(example_out):
    pytest.importorskip("fastapi")
    proc = run_embed("serve", example_out / "model", "--runtime", "onnx", "--port", str(_free_port()), check=False)
    assert proc.returncode == 1 and "not an ONNX export folder" in proc.stderr
    proc = run_embed("serve", example_out, "--runtime", "tensorrt", "--port", str(_free_port()), check=False)
    assert proc.returncode == 1 and "--runtime 'tensorrt'" in proc.stderr


# -- sentence-transformers ------------------------------------------------------------------------


def test_a_model_folder_opens_in_sentence_transformers(variants, tmp_path):
    st_module = pytest.importorskip("sentence_transformers")
    from embedder.encoders.model import ST_MODULE
    from embedder.sentence_transformers import EmbedderModule

    assert ST_MODULE == f"{EmbedderModule.__module__}.{EmbedderModule.__qualname__}"
    model = variants["gru"]
    texts = sentences(400)
    st = st_module.SentenceTransformer(str(model.path), trust_remote_code=True, device="cpu")
    assert st.get_embedding_dimension() == model.dim("seq2seq")
    np.testing.assert_allclose(st.encode(texts, batch_size=64), model.encode(texts, encoder="seq2seq"), atol=1e-5)
    # the other encoder, through the documented class (no flag needed)
    other = st_module.SentenceTransformer(modules=[EmbedderModule(model.path, encoder="skipgram-birnn")], device="cpu")
    np.testing.assert_allclose(other.encode(texts), model.encode(texts, encoder="skipgram-birnn"), atol=1e-5)
    # what the wrappers call: similarity, and a save that opens again with the same vectors
    sims = st.similarity(st.encode(texts[:3]), st.encode(texts[:3]))
    assert np.allclose(np.diag(np.asarray(sims)), 1.0, atol=1e-5)
    other.save(str(tmp_path / "saved"))
    again = st_module.SentenceTransformer(str(tmp_path / "saved"), trust_remote_code=True, device="cpu")
    np.testing.assert_allclose(again.encode(texts[:50]), model.encode(texts[:50], encoder="skipgram-birnn"), atol=1e-5)
    saved_model = next((tmp_path / "saved").rglob("manifest.json")).parent  # sentence-transformers' own layout
    assert embedder.load(saved_model).fingerprint == model.fingerprint


def test_module_needs_a_model_folder(tmp_path):
    pytest.importorskip("sentence_transformers")
    from embedder.sentence_transformers import EmbedderModule

    with pytest.raises(EmbedderError, match="no such model folder"):
        EmbedderModule(tmp_path / "nothing")
    (tmp_path / "tiny.txt").write_text(TINY)
    with pytest.raises(EmbedderError, match="encoder 'bert' is not in this model"):
        EmbedderModule(embedder.train(tmp_path / "tiny.txt", tmp_path / "m", epochs=1, device="cpu").path, encoder="bert")
