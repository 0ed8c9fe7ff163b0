"""The FastAPI application behind `embed serve`.

Routes speak the shapes clients already have: OpenAI's `/v1/embeddings` (so the official client
and anything built on it work unchanged), SageMaker's `/ping` + `/invocations` (so the same server
backs an endpoint), and this project's own `/embed`, `/search` and `/documents`. Every model call
goes through the micro-batcher; every refusal is a 4xx with one line saying why, in OpenAI's
error shape.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import hmac
import json
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import EmbedderError
from ..memory import frozen_heap
from ..storage.manifest import MANIFEST as OUTPUT_MANIFEST, read as read_manifest
from ..version import __version__
from . import schemas as S
from .batcher import MicroBatcher, Overloaded
from .body import replaying
from .fast import FastEmbeddings
from .proxy import ToStore, store_client
from .shared_model import ModelProcessError, RemoteBatcher, serve_model
from .metrics import Metrics

if TYPE_CHECKING:  # torch and the storage stage load only with the torch runtime (`open_target`)
    import socket

    from ..encoders.model import Model
    from ..onnx import OnnxModel
    from ..storage.collection import Collection
    from ..storage.documents import Documents

RUNTIMES = ("torch", "onnx")
CPU_SERVE_BATCH = 16   # `device.CPU.serve_batch`, for the runtime that must not import torch (a test keeps them equal)


@dataclass
class Limits:
    """How much the server takes in at once. Beyond these a request is refused with a 4xx, never
    queued (texts per request, characters per text and k are fixed in the schema: `schemas.MAX_*`)."""
    max_body: int = 16 * 2**20       # bytes per request body
    max_batch: int = 0               # texts gathered into one model call (a bigger request is one call; 0: the device's)
    max_wait_ms: float = 2.0         # how long a batch waits to fill
    max_queue: int = 8192            # texts waiting for the model before new work gets 429
    workers: int = 2                 # model calls at once (threads; each gets cores / workers torch threads)
    processes: int = 1               # server processes (`processes.py`); the cores are shared among all
    shared_model: bool = False       # with processes > 1: one model, in the first, encodes for all (`shared_model.py`)

    def batch_for(self, device: str, runtime: str = "torch") -> int:
        """`max_batch`, or where it is 0 the device's choice (`device.Numerics.serve_batch`); the
        ONNX runtime runs on the CPU and without torch, so it takes the CPU's without asking."""
        if self.max_batch:
            return self.max_batch
        if runtime != "torch":
            return CPU_SERVE_BATCH
        from .. import device as dev  # imports torch

        return dev.numerics(device).serve_batch


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers


def error_response(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "code": code}}, status_code=status,
                        headers=headers)


ERRORS = {s: {"model": S.ErrorResponse} for s in (400, 401, 403, 404, 413, 415, 422, 429)}
OPEN_PATHS = {"/health", "/ping", "/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"}
JSON_ROUTES = {"/v1/embeddings", "/embed", "/search", "/documents"}
ROUTES = JSON_ROUTES | {"/invocations", "/health", "/ping", "/metrics"}


def open_target(path: str | Path, model_path: str | Path | None = None, device: str = "auto",
                runtime: str = "torch", threads: int | None = None,
                collection: bool = True) -> tuple[Model | OnnxModel, Optional[Collection]]:
    """An `embed encode` output folder (vectors, search and documents) or a model folder (vectors
    only); `model_path` overrides the model an output folder names (it must be the same model).
    With the onnx runtime, an `embed export onnx` folder (vectors only), and torch is never imported.
    `collection=False`: an output folder's model alone (a front process's, `proxy.py`)."""
    p = Path(path)
    if runtime not in RUNTIMES:
        raise EmbedderError(f"--runtime {runtime!r}: expected one of {', '.join(RUNTIMES)}")
    if runtime == "onnx":
        if model_path is not None:
            raise EmbedderError("--runtime onnx serves an `embed export onnx` folder by itself; drop --model")
        from ..onnx import OnnxModel

        return OnnxModel(p, threads=threads), None
    from ..encoders.model import MANIFEST as MODEL_MANIFEST, load
    from ..storage.collection import Collection

    if (p / OUTPUT_MANIFEST).exists():
        if not collection:
            ref = model_path or read_manifest(p).get("model", "model")
            return load(ref if Path(ref).is_absolute() else p / ref, device=device), None
        model = load(model_path, device=device) if model_path else None
        collection = Collection(p, device=device, model=model)
        return collection.model, collection
    if (p / MODEL_MANIFEST).exists():
        return load(model_path or p, device=device), None
    if not p.exists():
        raise EmbedderError(f"{p}: no such folder")
    raise EmbedderError(f"{p}: neither an `embed encode` output folder ({OUTPUT_MANIFEST}) "
                        f"nor a model folder ({MODEL_MANIFEST})")


class Service:
    """What the routes share: the model, the collection (if any) and its documents, the batcher."""

    def __init__(self, model: Model | OnnxModel, collection: Collection | None, limits: Limits, api_key: str | None):
        self.model, self.collection, self.limits, self.api_key = model, collection, limits, api_key
        self.metrics = Metrics()
        self.documents: Documents | None = None
        self.batcher: MicroBatcher | None = None
        self.read_only: str | None = None
        self.names = list(collection.encoders if collection else model.encoders)  # encoders served
        self.store_client = None  # a front process's client on the collection's process (`proxy.py`)

    # -- checks ---------------------------------------------------------------------------------
    def encoder(self, name: str | None, field: str) -> str:
        names = self.names
        if name is None:
            return names[0]
        if name not in names:
            raise ApiError(400, f"{field}: unknown encoder {name!r} (this server has: {', '.join(names)})",
                           code="model_not_found")
        return name

    def texts(self, texts: list, field: str) -> list[str]:
        """The schema's text limits, for the routes that parse their own bodies (SageMaker's)."""
        try:
            return TEXTS.validate_python(texts)
        except ValidationError as e:
            raise ApiError(422, validation_message(e.errors(), field), code="invalid_field") from None

    def need_collection(self) -> Collection:
        if self.collection is None:
            raise ApiError(404, "this server holds a model only; serve an `embed encode` output folder "
                                "to search or add documents", code="no_collection")
        return self.collection

    async def features(self, texts: list[str], encoder: str, order: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
        try:
            return await self.batcher.features(texts, encoder, order)
        except Overloaded as e:
            raise ApiError(429, f"overloaded: {e}; retry shortly", "rate_limit_error",
                           headers={"Retry-After": "1"}) from None
        except ModelProcessError as e:  # --shared-model: the first process failed this front's batch
            raise ApiError(503, str(e), "server_error", headers={"Retry-After": "1"}) from None

    def rows(self) -> int | None:
        if self.collection is None:
            return None
        if self.documents is not None:
            return self.documents.total
        return int(self.collection.manifest.get("rows", 0))


def validation_message(errors: list[dict], field: str = "") -> str:
    """One line for pydantic's errors. A field that takes a text or a list of texts fails once per
    shape; the failure that says something (not "should be a valid list") is the one to show."""
    if not errors:
        return "invalid request"

    def where(err: dict) -> str:
        out = field
        for part in err.get("loc", ()):
            if isinstance(part, int):
                out += f"[{part}]"
            elif part != "body" and not any(c in part for c in "[]-"):  # pydantic's union-member tags
                out += ("." if out else "") + part
        return out or "body"

    telling = [e for e in errors if not str(e.get("type", "")).endswith("_type")] or errors
    best = max(telling, key=lambda e: len(e.get("loc", ())))
    return f"{where(best)}: {str(best['msg']).removeprefix('Value error, ')}"


def json_response(body: dict) -> Response:
    """JSON with numpy float32 vectors written as the shortest decimals that read back to the same
    float32 (orjson), several times faster than `json` on Python floats."""
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def create_app(path: str | Path, model: str | Path | None = None, device: str = "auto",
               api_key: str | None = None, limits: Limits | None = None, runtime: str = "torch",
               store: str | None = None, encode_socket: socket.socket | None = None,
               model_socket: str | None = None) -> FastAPI:
    """The service over an output folder (or a model folder, or with `runtime="onnx"` an ONNX
    export folder); the model loads here, before any port is bound, so a bad folder fails at once
    with its one line. `store`: the Unix socket of the process that holds the output folder's
    collection; this one is then a front that encodes for itself and passes the collection's
    routes there (`proxy.py`). With `--shared-model` (`shared_model.py`) the first process also
    encodes for the others on `encode_socket` (a listening Unix socket), and a front sends its
    batches to `model_socket`, the path of that socket, holding its model on the CPU only for
    what the routes read of it (encoder names and widths)."""
    limits = limits or Limits()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    encoding_processes = 1 if limits.shared_model else limits.processes
    threads = max(1, cores // (limits.workers * encoding_processes))
    m, collection = open_target(path, model, "cpu" if model_socket else device, runtime, threads=threads,
                                collection=store is None)
    svc = Service(m, collection, limits, api_key)
    if store is not None:
        svc.names = list(read_manifest(Path(path)).get("encoders", {}))
    if collection is not None:
        from ..storage.documents import Documents

        collection.warm()  # indexes loaded and vector files read ahead before the first request

        try:
            svc.documents = Documents(collection)  # replays the log: what was acknowledged is back
        except OSError as e:  # a read-only mount (SageMaker's model folder): search on, additions off
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            svc.read_only = f"{collection.path} is not writable ({e.strerror}); documents cannot be added"

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lim = svc.limits
        share = lim.workers * encoding_processes
        if share > 1 and runtime == "torch" and not model_socket:  # torch's threads shared among model threads and processes (onnx: per session)
            import torch

            torch.set_num_threads(max(1, torch.get_num_threads() // share))
        if store is not None:
            svc.store_client = store_client(store)
        batch = (lim.batch_for(device, runtime), lim.max_wait_ms / 1000, lim.max_queue, lim.workers)
        if model_socket:
            svc.batcher = RemoteBatcher(model_socket, *batch, on_queue=svc.metrics.queue.set)
        else:
            svc.batcher = MicroBatcher(m, *batch, on_batch=svc.metrics.batch.observe, on_queue=svc.metrics.queue.set)
        svc.batcher.start()
        model_server = None
        if encode_socket is not None:
            model_server = await serve_model(encode_socket, svc.batcher)
        with frozen_heap():  # the model and the modules live as long as the server
            yield
        if model_server is not None:
            model_server.close()
        await svc.batcher.stop()
        if svc.store_client is not None:
            await svc.store_client.aclose()
        if svc.documents is not None:
            await asyncio.to_thread(svc.documents.close)

    app = FastAPI(title="embedder", version=__version__, lifespan=lifespan,
                  description="Utterance vectors and nearest neighbours from an embedder model "
                              "(OpenAI-compatible embeddings, SageMaker's container contract).")
    app.state.service = svc

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_response(e.status, e.message, e.type, e.code, e.headers)

    @app.exception_handler(EmbedderError)
    async def _embedder_error(request: Request, e: EmbedderError):
        return error_response(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError):
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            first = next(err for err in errors if err.get("type") == "json_invalid")
            return error_response(400, f"malformed JSON: {first.get('ctx', {}).get('error', first['msg'])}",
                                  code="malformed_json")
        return error_response(422, validation_message(errors), code="invalid_field")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), headers=getattr(e, "headers", None))

    # -- OpenAI-compatible ------------------------------------------------------------------------
    async def embeddings_response(texts: list[str], model: str | None, encoding_format: str,
                                  dimensions: int | None) -> Response:
        encoder = svc.encoder(model, "model")
        dim = m.dim(encoder)
        if dimensions is not None and dimensions != dim:
            raise ApiError(400, f"dimensions: {dimensions}; encoder {encoder!r} gives {dim}")
        V, _, n = await svc.features(texts, encoder)
        if encoding_format == "base64":
            vectors = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in V]
        else:
            vectors = list(V)
        body = {"object": "list", "model": encoder, "usage": {"prompt_tokens": n, "total_tokens": n},
                "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]}
        return json_response(body)

    async def plain_embeddings(**req) -> Response:
        """The fast path's answer (`fast.py`): the route's, refusals in the same shape."""
        try:
            return await embeddings_response(**req)
        except ApiError as e:
            return error_response(e.status, e.message, e.type, e.code, e.headers)
        except EmbedderError as e:
            return error_response(400, str(e))

    app.add_middleware(FastEmbeddings, answer=plain_embeddings)
    if store is not None:
        app.add_middleware(ToStore, client=lambda: svc.store_client, refuse=error_response)
    app.add_middleware(Gate, service=svc)  # outermost: the key, limits and metrics hold for the fast path too

    @app.post("/v1/embeddings", response_model=S.EmbeddingsResponse, responses=ERRORS, tags=["embeddings"])
    async def embeddings(req: S.EmbeddingsRequest):
        """Vectors in OpenAI's shape: the official client and its kin work unchanged."""
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        return await embeddings_response(texts, req.model, req.encoding_format, req.dimensions)

    # -- this project's own ---------------------------------------------------------------------
    @app.post("/embed", response_model=S.EmbedResponse, responses={
        **ERRORS, 200: {"content": {"application/octet-stream": {}},
                        "description": "JSON, or with `Accept: application/octet-stream` the vectors as "
                                       "little-endian float32 bytes, shape in `X-Shape: rows,dim`, order "
                                       "scores as base64 float32 in `X-Order-Scores`."}}, tags=["embeddings"])
    async def embed(req: S.EmbedRequest, request: Request):
        """Vectors and word-order scores for texts."""
        encoder = svc.encoder(req.encoder, "encoder")
        V, O, _ = await svc.features(req.texts, encoder, order=True)
        if "application/octet-stream" in request.headers.get("accept", ""):
            return Response(V.astype("<f4").tobytes(), media_type="application/octet-stream", headers={
                "X-Shape": f"{V.shape[0]},{V.shape[1]}", "X-Encoder": encoder,
                "X-Order-Scores": base64.b64encode(O.astype("<f4").tobytes()).decode("ascii")})
        body = {"encoder": encoder, "dim": int(V.shape[1]), "embeddings": V,
                "order_scores": [None if np.isnan(o) else float(o) for o in O]}
        return json_response(body)

    @app.post("/search", response_model=S.SearchResponse, responses=ERRORS,
              tags=["search"])
    async def search(req: S.SearchRequest):
        """The k nearest utterances of the collection to a text or a vector."""
        c = svc.need_collection()
        encoder = svc.encoder(req.encoder, "encoder")
        if (req.text is None) == (req.vector is None):
            raise ApiError(400, "give either `text` or `vector`, not both or neither")
        if req.text is not None:
            Q, _, _ = await svc.features([req.text], encoder)
        else:
            Q = np.asarray(req.vector, dtype=np.float64)[None, :]
            dim = m.dim(encoder)
            if Q.shape[1] != dim:
                raise ApiError(400, f"vector: {Q.shape[1]} numbers; encoder {encoder!r} has dimension {dim}")
            norm = np.linalg.norm(Q)
            if not np.isfinite(Q).all() or not np.isfinite(norm) or norm == 0:
                raise ApiError(400, "vector: must be finite and not all zeros")
            Q = (Q / norm).astype(np.float32)
        hits = await asyncio.to_thread(_search, svc, c, Q, req.k, encoder, req.role)
        return {"encoder": encoder, "hits": [h.__dict__ for h in hits]}

    @app.post("/documents", response_model=S.DocumentsResponse, responses=ERRORS,
              tags=["search"])
    async def documents(req: S.DocumentsRequest):
        """Add utterances to the collection: searchable at once, answered only once durable (written
        to a write-ahead log and fsynced), kept across restarts."""
        svc.need_collection()
        docs = svc.documents
        if docs is None:
            raise ApiError(403, svc.read_only or "documents cannot be added", code="read_only")
        from ..storage.documents import Document

        rows = docs.prepare([Document(d.text, d.role, d.dialogue) for d in req.documents])
        texts = [r["text"] for r in rows]
        feats = {}
        for name in docs.names:
            feats[name] = (await svc.features(texts, name, order=True))[:2]
        ids = await asyncio.to_thread(docs.add, rows, feats)
        return {"ids": ids, "rows": docs.total}

    # -- operations ---------------------------------------------------------------------------
    @app.get("/health", response_model=S.Health, tags=["operations"])
    async def health():
        """Up, and what it serves."""
        return {"status": "ok", "encoders": {n: m.dim(n) for n in svc.names},
                "model_fingerprint": m.fingerprint, "rows": svc.rows()}

    @app.get("/metrics", tags=["operations"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
    async def metrics():
        """Requests, latency, batch sizes and queue depth, for Prometheus."""
        body, content_type = svc.metrics.render()
        return Response(body, media_type=content_type)

    # -- SageMaker's container contract -----------------------------------------------------------
    @app.get("/ping", tags=["sagemaker"], response_class=Response, responses={200: {"description": "Healthy (empty body)."}})
    async def ping():
        """SageMaker's health check."""
        return Response(status_code=200)

    @app.post("/invocations", tags=["sagemaker"], response_model=S.InvocationsResponse,
              responses={**ERRORS, 200: {"content": {"application/jsonlines": {}}}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": INSTANCES_SCHEMA,
                                       "example": {"instances": ["Where can I fish by the river?"]}}}}})
    async def invocations(request: Request):
        """SageMaker's inference route: `{"instances": [text | {"data": text}, ...]}` as JSON, or one
        instance per line as `application/jsonlines`; the encoder is `encoder=NAME` in
        `X-Amzn-SageMaker-Custom-Attributes` (default: the first)."""
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        texts = _instances(body, kind)
        encoder = svc.encoder(_custom_attribute(request, "encoder"), "X-Amzn-SageMaker-Custom-Attributes encoder")
        texts = svc.texts(texts, "instances")
        V, _, _ = await svc.features(texts, encoder)
        if request.headers.get("accept", "").split(";")[0].strip().lower() in JSONLINES:
            lines = b"".join(orjson.dumps({"embedding": v}, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for v in V)
            return Response(lines, media_type="application/jsonlines")
        return json_response({"predictions": [{"embedding": v} for v in V]})

    return app


TEXTS = TypeAdapter(S.Texts)
JSONLINES = {"application/jsonlines", "application/jsonl", "application/x-jsonlines"}
INSTANCES_SCHEMA = {"type": "object", "required": ["instances"], "properties": {"instances": {
    "type": "array", "items": {"anyOf": [{"type": "string"}, {
        "type": "object", "required": ["data"], "properties": {"data": {"type": "string"}}}]}}}}


def _instances(body: bytes, kind: str) -> list[str]:
    """The texts of a SageMaker request body; anything else is a 4xx naming what is wrong."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "body: not UTF-8") from None
    try:
        if kind in JSONLINES:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif kind == "application/json":
            obj = json.loads(text)
            if not isinstance(obj, dict) or not isinstance(obj.get("instances"), list):
                raise ApiError(422, 'body: expected {"instances": [...]}')
            items = obj["instances"]
        else:
            raise ApiError(415, f"content type {kind or 'none'!r}: expected application/json or application/jsonlines",
                           code="unsupported_media_type")
    except json.JSONDecodeError as e:
        raise ApiError(400, f"malformed JSON: {e}", code="malformed_json") from None
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and isinstance(item.get("data"), str):
            item = item["data"]
        if not isinstance(item, str):
            raise ApiError(422, f"instances[{i}]: expected a text or {{\"data\": text}}")
        texts.append(item)
    return texts


def _custom_attribute(request: Request, key: str) -> str | None:
    for part in request.headers.get("x-amzn-sagemaker-custom-attributes", "").split(","):
        k, _, v = part.partition("=")
        if k.strip() == key and v.strip():
            return v.strip()
    return None


def _search(svc: Service, c: Collection, Q: np.ndarray, k: int, encoder: str, role: str | None):
    """A search, never while the index grows (the document store's lock guards both)."""
    with svc.documents.lock if svc.documents else contextlib.nullcontext():
        return c.search(Q, k, encoder, role)[0]


def _from_front(scope) -> bool:
    """A request on a Unix socket: the store's, where only this server's front processes connect
    (its folder is the parent's private one, `processes.py`)."""
    server = scope.get("server")
    return server is not None and server[1] is None


class Gate:
    """Pure ASGI middleware in front of every route: the API key, the body-size limit, the content
    type of JSON routes, and the request metrics (status and latency per route)."""

    def __init__(self, app, service: Service):
        self.app, self.svc = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        route = path if path in ROUTES else "other"
        started = time.perf_counter()
        sent = {"status": 500, "started": False}

        async def send_(message):
            if message["type"] == "http.response.start":
                sent["status"], sent["started"] = message["status"], True
            await send(message)

        if _from_front(scope):  # counted, checked and limited by the front that passed it on
            return await self.app(scope, receive, send)
        try:
            refusal = self._check(scope)
            if refusal is None and not any(k == b"content-length" for k, _ in scope["headers"]):
                receive, refusal = await self._buffer(receive)
            if refusal is not None:
                await refusal(scope, receive, send_)
                return
            await self.app(scope, receive, send_)
        finally:
            self.svc.metrics.request(route, method, sent["status"], time.perf_counter() - started)

    def _check(self, scope) -> Response | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.svc.api_key
        if key and scope["path"] not in OPEN_PATHS:
            given = headers.get("x-api-key") or ""
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), key.encode()):
                return error_response(401, "missing or wrong API key (send `Authorization: Bearer KEY`)",
                                      "authentication_error", "invalid_api_key",
                                      headers={"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.svc.limits.max_body:
            return error_response(413, f"body: {length} bytes; at most {self.svc.limits.max_body}",
                                  code="body_too_large")
        if scope["method"] == "POST" and scope["path"] in JSON_ROUTES:
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return error_response(415, f"content type {kind or 'none'!r}: expected application/json",
                                      code="unsupported_media_type")
        return None

    async def _buffer(self, receive):
        """A body sent without a Content-Length (chunked) is read here, up to the limit, so an
        oversized one is refused with 413 before any route parses it."""
        chunks, seen, limit = [], 0, self.svc.limits.max_body
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return receive, None
            seen += len(message.get("body", b""))
            if seen > limit:
                return receive, error_response(413, f"body: larger than {limit} bytes", code="body_too_large")
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return replaying(b"".join(chunks), receive), None
