"""The HTTP ceiling for `benchmarks/serve_load.py`: uvicorn with no model and no framework.

    python benchmarks/bare_server.py PORT [DIM]

Answers every POST with one fixed OpenAI-shaped embedding of DIM floats (written once at start)
and `GET /health` with 200, through the same `uvicorn.run` settings `embed serve` uses. Whatever
requests/s this reaches under the load generator is the most any server on uvicorn can answer on
this machine, before reading JSON, validating, batching or running a model.
"""

from __future__ import annotations

import json
import sys

import uvicorn


def make_app(dim: int):
    body = json.dumps({"object": "list", "model": "bare",
                       "data": [{"object": "embedding", "index": 0, "embedding": [0.0625] * dim}],
                       "usage": {"prompt_tokens": 8, "total_tokens": 8}}).encode()

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:  # read the whole request body, as any real server must
            message = await receive()
            more = message.get("more_body", False)
        answer = body if scope["method"] == "POST" else b""
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})

    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    dim = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    uvicorn.run(make_app(dim), host="127.0.0.1", port=port, log_level="warning", access_log=False)
