"""The collection's routes, passed from a front process to the one that holds the collection.

With several server processes (`embed serve --processes N`, `processes.py`) every process encodes
with a model of its own, but only one, the first, holds the collection: its indexes grow as
documents are added, and its write-ahead log has one writer, so an acknowledged document is
durable and searchable at once whichever process took the request. The others pass `/search`,
`/documents` and `/health` to it over a Unix socket in a private folder, after their own gate has
checked the key and the limits, and send its answer back as it is.
"""

from __future__ import annotations

import httpx

from .body import read_body

STORE_ROUTES = {"/search", "/documents", "/health"}
# what a route reads of a request, and what a client reads of the answer (hop-by-hop ones excluded)
REQUEST_HEADERS = ("content-type", "accept", "authorization", "x-api-key")
SKIP_ANSWER = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}


class ToStore:
    """Pure ASGI: requests for STORE_ROUTES go to the store's socket, everything else on."""

    def __init__(self, app, client, refuse):
        # client() -> the httpx client on the store's socket (`store_client`, made in the app's
        # lifespan, on the serving loop); refuse(status, message) -> a Response in the API's shape
        self.app, self.client, self.refuse = app, client, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in STORE_ROUTES:
            return await self.app(scope, receive, send)
        body = await read_body(receive)
        if body is None:  # the client went away
            return
        headers = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            if name in REQUEST_HEADERS:
                headers[name] = v.decode("latin-1")
        url = scope["path"] + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
        try:
            reply = await self.client().request(scope["method"], url, content=body, headers=headers)
        except httpx.TransportError as e:
            response = self.refuse(503, f"the collection's process is not answering ({type(e).__name__}); "
                                        "retry shortly")
            return await response(scope, receive, send)
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.multi_items()
               if k.lower() not in SKIP_ANSWER]
        out.append((b"content-length", str(len(reply.content)).encode()))
        await send({"type": "http.response.start", "status": reply.status_code, "headers": out})
        await send({"type": "http.response.body", "body": reply.content})


def store_client(socket_path: str) -> httpx.AsyncClient:
    """Keep-alive connections to the store; no timeout of its own (the store answers or fails)."""
    return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=socket_path), base_url="http://store",
                             timeout=None)
