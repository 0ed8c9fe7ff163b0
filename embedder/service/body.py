"""Request bodies in pure ASGI: read whole, and handed on to the next app as if unread.

The layers in front of FastAPI (the gate's size check, the fast path, the proxy to the
collection's process) each need the body before deciding what to do with the request.
"""

from __future__ import annotations


async def read_body(receive) -> bytes | None:
    """The whole request body, or None when the client went away before sending it all."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(body: bytes, receive):
    """A `receive` that gives `body` once, then whatever the client sends next (a disconnect)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
