"""An HTTP request carried from the ingress to a replica, and run there through ``lamina serve``'s own app.

The replica does not listen on a port: it runs the request through the same ASGI app
(routes, validation, engine, answer shapes) as ``lamina serve``, in its own process, and
hands the answer back as a stream: a :class:`ResponseHead`, then body bytes. Ray carries
both between the processes, so a Server-Sent Events stream reaches the ingress event by
event.

When the ingress gives up on a request (its client hung up, Ray cancelled the call), the
app is told the client disconnected, exactly as uvicorn tells it, and lamina cancels the
request's tasks and frees its slot before the next decode step.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

#: connection-level headers, which belong to one hop and are never forwarded (RFC 9110, 7.6.1)
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
                        b"upgrade", b"host"})


_RUNNING: set[asyncio.Future] = set()


@dataclass
class ForwardedRequest:
    """What the replica needs to answer an HTTP request; ``routing_key`` is read by the router only."""

    method: str
    path: str
    query_string: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    client: tuple[str, int] | None = None
    routing_key: str | None = None

    @classmethod
    def from_scope(cls, scope: dict, body: bytes, routing_key: str | None = None) -> ForwardedRequest:
        headers = [(k, v) for k, v in scope.get("headers", ()) if k.lower() not in HOP_BY_HOP]
        client = tuple(scope["client"]) if scope.get("client") else None
        return cls(scope["method"], scope["path"], scope.get("query_string", b""), headers, body, client, routing_key)

    def scope(self) -> dict:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                "method": self.method, "scheme": "http", "path": self.path, "raw_path": self.path.encode(),
                "query_string": self.query_string, "root_path": "", "headers": self.headers, "client": self.client,
                "server": ("lamina-replica", 0)}


@dataclass
class ResponseHead:
    """The status and headers of a replica's answer, and which replica gave it."""

    status: int
    headers: list[tuple[bytes, bytes]]
    replica: str

    @property
    def is_event_stream(self) -> bool:
        return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in self.headers)


async def call_app(app, request: ForwardedRequest, replica: str) -> AsyncIterator[ResponseHead | bytes]:
    """Run ``request`` through the ASGI ``app``: yields the head, then the body in pieces.

    Body pieces produced while the previous one was being handed over are joined, so a
    busy stream costs one Ray message per batch of tokens, not one per token.
    """
    pending: collections.deque = collections.deque()  # the app's ASGI messages; None once it has returned
    arrived = asyncio.Event()
    gone = asyncio.Event()
    body_sent = False

    async def receive() -> dict:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        pending.append(message)
        arrived.set()

    def finished(_) -> None:
        pending.append(None)
        arrived.set()

    task = asyncio.ensure_future(app(request.scope(), receive, send))
    _RUNNING.add(task)  # the loop keeps only a weak reference, and the app outlives this generator on a hang-up
    task.add_done_callback(_RUNNING.discard)
    task.add_done_callback(finished)
    try:
        started = False
        while True:
            while not pending:
                arrived.clear()
                await arrived.wait()
            message = pending.popleft()
            if message is None:
                task.result()  # the app's own exception, if it raised one
                if not started:
                    raise RuntimeError(f"lamina's app answered {request.method} {request.path} with no response")
                return
            if message["type"] == "http.response.start":
                started = True
                yield ResponseHead(message["status"], [(bytes(k), bytes(v)) for k, v in message.get("headers", ())],
                                   replica)
                continue
            pieces, more = [message.get("body", b"")], message.get("more_body", False)
            while more and pending and pending[0] is not None and pending[0]["type"] == "http.response.body":
                message = pending.popleft()
                pieces.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = b"".join(pieces)
            if body:
                yield body
            if not more:
                return
    finally:
        gone.set()  # as a hang-up: lamina cancels whatever this request still has queued or running


async def collect(app, request: ForwardedRequest, replica: str) -> tuple[ResponseHead, bytes]:
    """The whole answer at once (health checks, and the routes the ingress gathers from every replica)."""
    head, body = None, []
    async for part in call_app(app, request, replica):
        if isinstance(part, ResponseHead):
            head = part
        else:
            body.append(part)
    return head, b"".join(body)
