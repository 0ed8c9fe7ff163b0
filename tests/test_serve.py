"""`embed serve`, tested as clients meet it: a real server in a child process on a loopback port,
real HTTP (httpx, the official OpenAI client), a real SIGKILL."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import ORDER_ATOL, ROOT, run_embed

import embedder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`embed serve FOLDER ARGS...` in a child process, until stopped."""

    def __init__(self, folder: Path, *args: str, env: dict | None = None, sagemaker_port: bool = False):
        self.processes = int(args[args.index("--processes") + 1]) if "--processes" in args else 1
        self.args = args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(folder.parent / f"serve-{self.port}.log", "w+")
        env = {**os.environ, **(env or {})}
        if sagemaker_port:  # the port as SageMaker names it, with no --port
            env["SAGEMAKER_BIND_TO_PORT"] = str(self.port)
        else:
            args = ("--port", str(self.port), *args)
        self.proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", str(folder), *args], cwd=ROOT,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited ({self.proc.returncode}):\n{self.output()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server did not come up:\n{self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def post(self, path: str, body, **kw) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=60, **kw)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module", params=[("1",), ("2",), ("2", "--shared-model")],
                ids=["1-process", "2-processes", "2-processes-one-model"])
def served(example_out, tmp_path_factory, request):
    """The same server with one process, with two (a front with its own model, passing the
    collection's routes to the first), and with two encoding with the first's model (the front
    sends its batches there): every test below must hold for all three."""
    folder = tmp_path_factory.mktemp("serve") / "qa.embed"
    shutil.copytree(example_out, folder)
    # a batch waits 20 ms to fill (default 2): the test's client threads, sharing the GIL, send
    # their requests a few ms apart, and the gathering test must not hang on the machine's load
    server = Server(folder, "--max-wait-ms", "20", "--processes", *request.param)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model(example_out):
    return embedder.load(example_out / "model")


@pytest.fixture(scope="module")
def corpus_rows(example_out):
    from embedder.features import load_features
    return load_features(example_out)[1]


def test_openai_client_gets_the_vectors_model_encode_gives(served, model):
    from openai import OpenAI

    client = OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    texts = ["Where can I fish by the river?", "Below the old mill, after six."]
    for encoder in ("seq2seq", "skipgram-birnn"):
        expected = model.encode(texts, encoder=encoder)
        default = client.embeddings.create(model=encoder, input=texts)  # the client asks for base64
        floats = client.embeddings.create(model=encoder, input=texts, encoding_format="float")
        for reply in (default, floats):
            got = np.array([d.embedding for d in sorted(reply.data, key=lambda d: d.index)], dtype=np.float32)
            np.testing.assert_allclose(got, expected, atol=1e-5)
            assert reply.model == encoder and reply.usage.prompt_tokens > 0
    one = client.embeddings.create(model="seq2seq", input=texts[0], encoding_format="float")
    np.testing.assert_allclose(one.data[0].embedding, model.encode([texts[0]])[0], atol=1e-5)


def test_embed_gives_vectors_and_order_scores_as_json_or_raw_float32(served, model):
    texts = ["Where can I fish by the river?", "river the by fish I can Where?"]
    r = served.post("/embed", {"texts": texts, "encoder": "skipgram-birnn"})
    assert r.status_code == 200
    body = r.json()
    V, O = model.features(texts, encoder="skipgram-birnn")
    np.testing.assert_allclose(body["embeddings"], V, atol=1e-5)
    np.testing.assert_allclose(body["order_scores"], O, atol=ORDER_ATOL)
    raw = served.post("/embed", {"texts": texts, "encoder": "skipgram-birnn"},
                      headers={"Accept": "application/octet-stream"})
    assert raw.headers["content-type"] == "application/octet-stream"
    rows, dim = map(int, raw.headers["x-shape"].split(","))
    X = np.frombuffer(raw.content, dtype="<f4").reshape(rows, dim)
    np.testing.assert_allclose(X, V, atol=1e-5)
    np.testing.assert_allclose(np.frombuffer(base64.b64decode(raw.headers["x-order-scores"]), "<f4"), O, atol=ORDER_ATOL)


def test_search_finds_a_corpus_question_and_its_answer(served, corpus_rows, model):
    q = corpus_rows[corpus_rows.role == "question"].iloc[3]
    answer = corpus_rows[(corpus_rows.dialogue == q.dialogue) & (corpus_rows.position == q.position + 1)].iloc[0]
    r = served.post("/search", {"text": q.text, "k": 3})
    hits = r.json()["hits"]
    assert hits[0]["id"] == q.id and hits[0]["score"] > 0.99 and hits[0]["text"] == q.text
    answers = served.post("/search", {"text": q.text, "k": 10, "role": "answer"}).json()["hits"]
    assert {h["role"] for h in answers} == {"answer"} and len(answers) == 10
    assert answer.id in [h["id"] for h in answers]
    by_vector = served.post("/search", {"vector": (3 * model.encode([q.text])[0]).tolist(), "k": 3}).json()["hits"]
    assert [h["id"] for h in by_vector] == [h["id"] for h in hits]


@pytest.mark.parametrize("path, body, status, words", [
    ("/v1/embeddings", {"input": ["hi"], "model": "bow"}, 400, "unknown encoder 'bow'"),
    ("/v1/embeddings", {"input": ""}, 422, "input: String should have at least 1 character"),
    ("/v1/embeddings", {"input": ["ok", "   "]}, 422, "input[1]: empty text"),
    ("/v1/embeddings", {"input": ["x"] * 2049}, 422, "input: List should have at most 2048 items"),
    ("/v1/embeddings", {"input": ["x" * 20001]}, 422, "input[0]: String should have at most 20000 characters"),
    ("/v1/embeddings", {"input": ["hi"], "dimensions": 12}, 400, "dimensions: 12"),
    ("/v1/embeddings", {"inputs": ["hi"]}, 422, "input: Field required"),
    ("/v1/embeddings", {"input": [[1, 2]]}, 422, "input[0]: Input should be a valid string"),
    ("/embed", {"texts": []}, 422, "texts: List should have at least 1 item"),
    ("/search", {"text": "where?", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ("/search", {"text": "where?", "k": 1001}, 422, "k: Input should be less than or equal to 1000"),
    ("/search", {"text": "where?", "vector": [0.1]}, 400, "either `text` or `vector`"),
    ("/search", {"vector": [0.1, 0.2]}, 400, "vector: 2 numbers"),
    ("/search", {"vector": [0.0] * 256}, 400, "not all zeros"),
    ("/search", {"text": "where?", "role": "speaker"}, 422, "role: Input should be 'question' or 'answer'"),
    ("/documents", {"documents": [{"text": "two\nlines"}]}, 400, "no line breaks"),
    ("/documents", {"documents": [{"text": "ok"}, {"text": " "}]}, 422, "documents[1].text: empty text"),
    ("/invocations", {"instance": ["hi"]}, 422, "instances"),
    ("/invocations", {"instances": [3]}, 422, "instances[0]"),
    ("/invocations", {"instances": ["fine", "  "]}, 422, "instances[1]: empty text"),
    ("/invocations", {"instances": ["fine", ""]}, 422, "instances[1]: String should have at least 1 character"),
    ("/invocations", {"instances": ["x" * 20001]}, 422, "instances[0]: String should have at most 20000"),
])
def test_bad_requests_get_a_4xx_that_says_why(served, path, body, status, words):
    r = served.post(path, body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]["message"]


def test_malformed_wrong_type_oversized_and_unknown_requests(served):
    r = httpx.post(served.url + "/v1/embeddings", content=b'{"input": ["hi"', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = httpx.post(served.url + "/embed", content=b'{"texts": ["hi"]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "expected application/json" in r.json()["error"]["message"]
    big = b'{"input": ["' + b"x" * (17 * 2**20) + b'"]}'
    r = httpx.post(served.url + "/v1/embeddings", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    chunked = httpx.post(served.url + "/v1/embeddings", content=iter([big[:2**20]] * 17),
                         headers={"content-type": "application/json"})
    assert chunked.status_code == 413  # no Content-Length: counted as it arrives
    assert httpx.get(served.url + "/nowhere").status_code == 404


def test_sagemaker_ping_and_invocations(served, model):
    ping = httpx.get(served.url + "/ping")
    assert ping.status_code == 200 and ping.content == b""
    texts = ["Where can I fish by the river?", "Below the old mill."]
    expected = model.encode(texts, encoder="skipgram-birnn")
    attr = {"X-Amzn-SageMaker-Custom-Attributes": "encoder=skipgram-birnn"}
    for body in ({"instances": texts}, {"instances": [{"data": t} for t in texts]}):
        r = served.post("/invocations", body, headers=attr)
        np.testing.assert_allclose([p["embedding"] for p in r.json()["predictions"]], expected, atol=1e-5)
    lines = "\n".join(json.dumps(t) for t in texts).encode()
    r = httpx.post(served.url + "/invocations", content=lines,
                   headers={**attr, "content-type": "application/jsonlines", "accept": "application/jsonlines"})
    assert r.headers["content-type"].startswith("application/jsonlines")
    got = [json.loads(line)["embedding"] for line in r.text.splitlines()]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    r = httpx.post(served.url + "/invocations", content=b"a,b", headers={"content-type": "text/csv"})
    assert r.status_code == 415


def test_health_and_prometheus_metrics(served):
    h = httpx.get(served.url + "/health").json()
    assert h["status"] == "ok" and h["encoders"] == {"seq2seq": 256, "skipgram-birnn": 256} and h["rows"] >= 344
    served.post("/v1/embeddings", {"input": ["hello"]})
    text = httpx.get(served.url + "/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {tuple(sorted(s.labels.items())): s.value for s in families["embed_requests"].samples
                if s.name == "embed_requests_total"}
    assert requests[(("method", "POST"), ("route", "/v1/embeddings"), ("status", "200"))] >= 1
    assert {"embed_request_seconds", "embed_batch_texts", "embed_queue_texts"} <= families.keys()
    assert any(s.value > 0 for s in families["embed_batch_texts"].samples if s.name == "embed_batch_texts_count")


def _batches(server: Server) -> tuple[float, float]:
    """(model calls, texts encoded) so far, from the server's own metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics").text
    batch = next(f for f in text_string_to_metric_families(text) if f.name == "embed_batch_texts")
    samples = {s.name: s.value for s in batch.samples}
    return samples["embed_batch_texts_count"], samples["embed_batch_texts_sum"]


def test_concurrent_single_text_requests_share_model_calls(served, model):
    texts = [f"Where is the stall number {i}?" for i in range(64)]
    calls_before, texts_before = _batches(served)
    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(lambda t: served.post("/v1/embeddings", {"input": t}), texts))
    assert all(r.status_code == 200 for r in replies)
    got = np.array([r.json()["data"][0]["embedding"] for r in replies])
    np.testing.assert_allclose(got, model.encode(texts), atol=1e-5)
    calls, encoded = _batches(served)
    assert encoded - texts_before == 64
    assert calls - calls_before < 64 / 1.5  # requests were gathered: fewer model calls than requests


def test_api_key_model_folder_sagemaker_port_and_overload(example_out, tmp_path):
    key = "s3cret"
    server = Server(example_out / "model", "--max-batch", "4", "--max-queue", "4", env={"EMBED_API_KEY": key},
                    sagemaker_port=True)
    try:
        assert httpx.get(server.url + "/health").status_code == 200  # open, for load balancers
        r = server.post("/v1/embeddings", {"input": "hi"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert server.post("/v1/embeddings", {"input": "hi"}, headers={"Authorization": "Bearer nope"}).status_code == 401
        auth = {"Authorization": f"Bearer {key}"}
        assert server.post("/v1/embeddings", {"input": "hi"}, headers=auth).status_code == 200
        assert server.post("/v1/embeddings", {"input": "hi"}, headers={"X-API-Key": key}).status_code == 200
        r = server.post("/search", {"text": "hi"}, headers=auth)
        assert r.status_code == 404 and "model only" in r.json()["error"]["message"]
        body = {"input": [f"text number {i} about the river bank" for i in range(4)]}
        with ThreadPoolExecutor(32) as pool:
            codes = list(pool.map(lambda _: server.post("/v1/embeddings", body, headers=auth).status_code, range(96)))
        assert set(codes) == {200, 429}, codes  # a bounded queue refuses the excess at once
    finally:
        server.stop()


def test_an_acknowledged_document_survives_sigkill(example_out, tmp_path):
    folder = tmp_path / "qa.embed"
    shutil.copytree(example_out, folder)
    server = Server(folder)
    text = "The zebra crossing on Mill Lane was painted blue last week."
    r = server.post("/documents", {"documents": [{"text": text, "role": "answer"}]})
    assert r.status_code == 200
    (new_id,) = r.json()["ids"]
    server.stop(signal.SIGKILL)  # right after the answer: no chance to checkpoint
    server = Server(folder)
    try:
        hits = server.post("/search", {"text": text, "k": 1}).json()["hits"]
        assert hits[0]["id"] == new_id and hits[0]["text"] == text
        assert server.post("/documents", {"documents": [{"text": "Is the lane open?"}]}).json()["ids"] == [new_id + 1]
    finally:
        # SIGTERM: a clean shutdown (uvicorn exits by the signal it handled) writes the rows out as a shard
        assert server.stop() in (0, -signal.SIGTERM) and "Traceback" not in server.output()
    from embedder.features import load_features

    X, meta = load_features(folder)
    assert list(meta.text.iloc[-2:]) == [text, "Is the lane open?"]
    assert list(meta.role.iloc[-2:]) == ["answer", "question"]
    assert (folder / "documents" / "wal.jsonl").stat().st_size == 0
    np.testing.assert_allclose(X[-2:, :256], embedder.load(folder / "model").encode(
        [text, "Is the lane open?"]), atol=1e-5)
    proc = run_embed("query", folder, text, "-k", "1", "--json")
    assert json.loads(proc.stdout)[0]["id"] == new_id


def test_serve_refuses_what_it_cannot_do_safely(example_out, tmp_path):
    r = run_embed("serve", example_out, "--host", "0.0.0.0", check=False)
    assert r.returncode == 1 and "not a loopback address, and no API key" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_embed("serve", tmp_path, check=False)
    assert r.returncode == 1 and "neither an `embed encode` output folder" in r.stderr
    damaged = tmp_path / "damaged.embed"
    shutil.copytree(example_out, damaged)
    (damaged / "documents").mkdir(exist_ok=True)
    (damaged / "documents" / "wal.jsonl").write_text('{"id": 999, "text": "no role"}\n')
    r = run_embed("serve", damaged, "--port", str(free_port()), check=False)
    assert r.returncode == 1 and "wal.jsonl:1: unreadable log entry" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = run_embed("serve", example_out, "--port", str(busy.getsockname()[1]), check=False)
    assert r.returncode == 1 and "cannot listen there" in r.stderr


def test_the_schema_holds_up_under_schemathesis(served):
    """Generated requests from the served OpenAPI schema: none may get a 5xx. Run against the
    two-process server with one model, where they also cross the fast path, the proxy and the
    hop to the model (the other servers' routes are the same code)."""
    if "--shared-model" not in served.args:
        pytest.skip("run against the two-process server with one model, which covers the same routes")
    proc = subprocess.run([str(Path(sys.executable).parent / "st"), "run", served.url + "/openapi.json",
                           "--checks", "not_a_server_error", "--max-examples", "10", "--seed", "1",
                           ],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_the_log_replays_what_was_acknowledged_and_drops_a_torn_last_line(example_out, tmp_path):
    from embedder.features import load_features
    from embedder.storage.documents import Document, Documents
    from embedder.storage.collection import Collection

    folder = tmp_path / "qa.embed"
    shutil.copytree(example_out, folder)
    c = Collection(folder)
    docs = Documents(c)
    rows = docs.prepare([Document("Is the ferry running today?"), Document("Only until noon.", dialogue=7)])
    feats = {n: c.model.features([r["text"] for r in rows], encoder=n) for n in c.encoders}
    ids = docs.add(rows, feats)
    with open(folder / "documents" / "wal.jsonl", "ab") as f:  # a write cut short by a crash
        f.write(b'{"id": 99999, "dialogue": 3, "pos')
    reopened = Documents(Collection(folder))  # as after a crash: no checkpoint was written
    assert reopened.replayed == 2 and reopened.next_id == ids[-1] + 1
    assert (folder / "documents" / "wal.jsonl").read_bytes().endswith(b"}\n")  # the torn line is gone
    hits = reopened.c.query(["Is the ferry running today?"], k=1)[0]
    assert hits[0].id == ids[0] and hits[0].role == "question"
    reopened.close()
    X, meta = load_features(folder)
    added = meta[meta.id.isin(ids)]
    assert list(added.text) == ["Is the ferry running today?", "Only until noon."]
    assert list(added.dialogue) == [meta.dialogue[~meta.id.isin(ids)].max() + 1, 7]  # a new dialogue, or the one named
    np.testing.assert_allclose(X[meta.id.isin(ids).to_numpy(), :256], feats["seq2seq"][0], atol=1e-6)


def test_the_fast_path_takes_only_what_the_schema_takes_as_it_is():
    """`/v1/embeddings` requests answered before FastAPI (service/fast.py) are exactly those the
    schema accepts without coercion, read the same; the rest go to the route and its messages."""
    from hypothesis import given, settings, strategies as st
    from pydantic import ValidationError

    from embedder.service import schemas as S
    from embedder.service.fast import plain_request

    text = st.one_of(st.text(max_size=8), st.sampled_from([" ", "\n\t", "x" * S.MAX_CHARS, "x" * (S.MAX_CHARS + 1)]))
    value = st.one_of(st.none(), st.booleans(), st.integers(-2, 300), st.floats(allow_nan=False), text,
                      st.lists(text, max_size=3), st.sampled_from(["float", "base64", "seq2seq"]))
    body = st.dictionaries(st.sampled_from(["input", "model", "encoding_format", "dimensions", "user", "extra"]), value)

    @settings(max_examples=600, deadline=None, derandomize=True)
    @given(body)
    def check(req):
        fast = plain_request(json.dumps(req).encode())
        try:
            parsed = S.EmbeddingsRequest.model_validate_json(json.dumps(req))
        except ValidationError:
            assert fast is None, req
            return
        if fast is not None:
            assert fast["texts"] == ([parsed.input] if isinstance(parsed.input, str) else parsed.input)
            assert (fast["model"], fast["encoding_format"], fast["dimensions"]) == (
                parsed.model, parsed.encoding_format, parsed.dimensions)

    check()
    assert plain_request(b'{"input": "hi", "model": "seq2seq"}') is not None  # the common shape is taken
    assert plain_request(b'{"input": ["hi", "there"], "encoding_format": "base64", "dimensions": 256}') is not None
    assert plain_request(b'{"input": "hi", "dimensions": true}') is None
    assert plain_request(b'{"input": "hi",}') is None


def test_fast_and_routed_embeddings_answer_alike(served):
    """The same request through the fast path and (with a field only the schema ignores) through
    FastAPI's route: the same bytes back, and the same refusal for an unknown encoder."""
    for body in ({"input": "Where can I fish?"}, {"input": ["a b", "c d e"], "model": "skipgram-birnn"},
                 {"input": "x", "encoding_format": "base64", "dimensions": 256}, {"input": "x", "model": "nope"},
                 {"input": "x", "dimensions": 3}):
        fast, routed = served.post("/v1/embeddings", body), served.post("/v1/embeddings", {**body, "extra": 1})
        assert fast.status_code == routed.status_code and fast.content == routed.content, body


def _children(pid: int) -> list[int]:
    kids = []
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
        except (OSError, IndexError):
            pass
    return kids


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _alive(pid: int) -> bool:
    """Running, not gone or a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _front(pid: int) -> int:
    """The front process among the server's children (the other is multiprocessing's tracker)."""
    (front,) = [k for k in _children(pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    return front


def test_several_processes_share_one_collection_and_end_with_the_server(example_out, tmp_path):
    folder = tmp_path / "qa.embed"
    shutil.copytree(example_out, folder)
    key = "s3cret"
    auth = {"Authorization": f"Bearer {key}"}
    server = Server(folder, "--processes", "2", env={"EMBED_API_KEY": key})
    front = _front(server.proc.pid)
    try:
        text = "The heron nests on the island below the weir every spring."
        r = server.post("/documents", {"documents": [{"text": text, "role": "answer"}]}, headers=auth)
        assert r.status_code == 200
        (new_id,) = r.json()["ids"]
        before = _cpu_ticks(front)
        for _ in range(40):  # a new connection each: the kernel hands them to both processes
            hits = server.post("/search", {"text": text, "k": 1}, headers=auth).json()["hits"]
            assert hits[0]["id"] == new_id  # added through one process, found through either
            assert server.post("/v1/embeddings", {"input": text}, headers=auth).status_code == 200
            assert server.post("/search", {"text": text}).status_code == 401  # the key holds in both
        assert _cpu_ticks(front) > before  # the front took a share
        assert httpx.get(server.url + "/health").json()["rows"] == 345
    finally:
        assert server.stop() in (0, -signal.SIGTERM) and "Traceback" not in server.output()
    assert not _alive(front)  # the parent waited for its front
    assert (folder / "documents" / "wal.jsonl").stat().st_size == 0  # written out as a shard at shutdown

    server = Server(folder, "--processes", "2")
    front = _front(server.proc.pid)
    server.stop(signal.SIGKILL)  # the parent killed outright: its front must not keep the port
    deadline = time.time() + 20
    while _alive(front) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(front)
    while True:  # the port is free again (the kernel may take a moment to drop the listener)
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", server.port))
                break
            except OSError:
                held = [line for line in Path("/proc/net/tcp").read_text().splitlines() if f":{server.port:04X} " in line]
                assert time.time() < deadline + 10, f"port {server.port} still held: {held}"
                time.sleep(0.2)


def test_a_fronts_batches_go_to_the_shared_model_and_its_refusals_come_back(model, tmp_path):
    """`--shared-model`'s two halves over a real Unix socket: a front's batches come back as the
    model's own vectors, order scores and piece counts; the first process's 429 comes back as
    the front's (its queue is what was full), and a socket with no model process behind it is
    a 503's one line, not a hang."""
    import asyncio

    from embedder.service.app import Service
    from embedder.service.batcher import MicroBatcher, Overloaded
    from embedder.service.processes import unix_socket
    from embedder.service.shared_model import ModelProcessError, RemoteBatcher, serve_model

    texts = ["Where can I fish by the river?", "Bring a permit.", "What time does the ferry leave on Sundays?"]

    async def run():
        path = tmp_path / "model.sock"
        # the first process: one model thread; at most 3 texts may wait behind a batch being encoded
        first = MicroBatcher(model, 4096, 0.0, 3, 1)
        first.start()
        server = await serve_model(unix_socket(path), first)
        front = RemoteBatcher(path, 1, 0.0, 8192, 2)  # a batch per request, two sent at once
        front.start()
        try:
            V, O, n = await front.features_each(texts, "seq2seq", order=True)
            ref_V, ref_O = model.features(texts, "seq2seq")
            np.testing.assert_allclose(V, ref_V, atol=1e-5)
            np.testing.assert_allclose(O, ref_O, atol=ORDER_ATOL)
            assert n.tolist() == [len(x) for x in model.tokens(texts, "seq2seq")]

            busy = asyncio.ensure_future(first.features(texts * 3000, "seq2seq"))  # the model thread is busy
            await asyncio.sleep(0.05)
            both = await asyncio.gather(front.features(texts[:2], "seq2seq"), front.features(texts[1:], "seq2seq"),
                                        return_exceptions=True)
            refused = [r for r in both if isinstance(r, Overloaded)]
            assert len(refused) == 1 and "limit is 3" in str(refused[0]), both
            assert (await busy)[0].shape == (9000, model.dim("seq2seq"))

            nobody = RemoteBatcher(tmp_path / "gone.sock", 1, 0.0, 8192, 1)
            nobody.start()
            with pytest.raises(ModelProcessError, match="did not answer"):
                await nobody.features(texts, "seq2seq")
            await nobody.stop()
        finally:
            await front.stop()
            server.close()
            await first.stop()
        svc = Service(model, None, None, None)
        svc.batcher = RemoteBatcher(tmp_path / "gone.sock", 1, 0.0, 8192, 1)
        svc.batcher.start()
        try:
            from embedder.service.app import ApiError

            with pytest.raises(ApiError) as e:
                await svc.features(texts, "seq2seq")
            assert e.value.status == 503 and "model process did not answer" in e.value.message
        finally:
            await svc.batcher.stop()

    asyncio.run(run())


def test_shared_model_needs_several_processes(example_out):
    proc = run_embed("serve", example_out, "--shared-model", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("set --processes 2 or more")
