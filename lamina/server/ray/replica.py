"""One replica: a whole ``lamina serve`` (model, slots, continuous batching) inside a Ray Serve replica actor.

The replica builds its server configuration from the same flags ``lamina serve`` parses, loads
the model from the file on its own node (memory-mapped there), and answers requests through
``lamina serve``'s own app (``lamina.server.app.create_app``), so routes, validation,
scheduling and answer shapes are the single server's, not a copy. Loading happens in the
constructor: Ray Serve counts the replica as running, and routes to it, only once it returns.

Ray Serve calls :meth:`check_health` every few seconds; it asks the app's ``/health``, which
fails once the engine thread has stopped. A replica that fails it, or whose process dies, is
replaced by Ray Serve.
"""

from __future__ import annotations

import argparse
import logging
import os

import ray
from ray import serve

from .forwarding import ForwardedRequest, ResponseHead, call_app, collect

log = logging.getLogger("lamina.server")


class LaminaReplica:
    def __init__(self, args: argparse.Namespace):
        from lamina.server.app import create_app
        from lamina.server.cli import config_from
        from lamina.server.state import ServerState

        self.state = ServerState(config_from(args))
        self.state.load()
        if self.state.error is not None:
            raise RuntimeError(f"lamina replica: could not load {args.model}: {self.state.error}") from self.state.error
        self.app = create_app(self.state)
        self.replica_id = serve.get_replica_context().replica_id.unique_id

    async def handle(self, request: ForwardedRequest):
        """Answer one request: a :class:`ResponseHead`, then the body (streamed as lamina writes it)."""
        async for part in call_app(self.app, request, self.replica_id):
            yield part

    async def call(self, request: ForwardedRequest) -> tuple[ResponseHead, bytes]:
        """Answer one request whole (for the routes the ingress gathers from every replica)."""
        return await collect(self.app, request, self.replica_id)

    async def check_health(self) -> None:
        head, body = await self.call(ForwardedRequest("GET", "/health"))
        if head.status != 200:
            raise RuntimeError(f"lamina replica {self.replica_id}: /health answered {head.status}: "
                               f"{body.decode('utf-8', 'replace')}")

    def describe(self) -> dict:
        """Where this replica runs (for operators and tests): its id, process, node and lamina's location."""
        import lamina

        return {"replica": self.replica_id, "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id(),
                "lamina": lamina.__file__, "model": self.state.config.model, "slots": self.state.config.n_parallel}

    def __del__(self):
        state = getattr(self, "state", None)
        if state is not None:
            state.stop()  # in-flight streams end with an error event; the process is about to go
