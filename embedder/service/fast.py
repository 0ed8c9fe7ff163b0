"""The fast path for `POST /v1/embeddings`, the route that carries online traffic.

FastAPI spends most of a one-text request's Python on routing, dependency resolution and pydantic
validation, more than the JSON and the hand-off to the model threads together. This ASGI layer,
between the gate and FastAPI, takes the request shape that nearly all traffic has (a JSON object
with a text or a list of texts and the optional `model`, `encoding_format`, `dimensions`, `user`),
checks it by hand against the same limits as the schema, and answers it with the route's own code
(`embeddings_response`). Anything else (malformed JSON, a wrong type, an empty or overlong text,
an unknown field) is handed on untouched to the FastAPI route, so every refusal keeps its exact
message and status, and the OpenAPI schema is still the route's.
"""

from __future__ import annotations

import orjson

from . import schemas as S
from .body import read_body, replaying

PATH = "/v1/embeddings"
FIELDS = {"input", "model", "encoding_format", "dimensions", "user"}
FORMATS = ("float", "base64")


def plain_request(body: bytes) -> dict | None:
    """The request's fields if it is one the schema would take as it is, else None (FastAPI decides)."""
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(req) is not dict or not req.keys() <= FIELDS or "input" not in req:
        return None
    texts = req["input"]
    if type(texts) is str:
        texts = [texts]
    elif type(texts) is not list or not 1 <= len(texts) <= S.MAX_INPUTS:
        return None
    for t in texts:
        if type(t) is not str or not 1 <= len(t) <= S.MAX_CHARS or t.isspace():
            return None
    model, fmt, dims, user = (req.get(k) for k in ("model", "encoding_format", "dimensions", "user"))
    if (model is not None and type(model) is not str) or (user is not None and type(user) is not str):
        return None
    if fmt is not None and fmt not in FORMATS:
        return None
    if dims is not None and (type(dims) is not int or dims < 1):
        return None
    return {"texts": texts, "model": model, "encoding_format": fmt or "float", "dimensions": dims}


class FastEmbeddings:
    """Pure ASGI: plain `POST /v1/embeddings` requests answered here, the rest passed on."""

    def __init__(self, app, answer):
        self.app, self.answer = app, answer  # answer(**plain_request(...)) -> Response, refusals included

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:  # the client went away
            return
        req = plain_request(body)
        if req is None:
            return await self.app(scope, replaying(body, receive), send)
        response = await self.answer(**req)
        await response(scope, receive, send)
