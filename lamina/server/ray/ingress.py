"""The ingress: where clients connect, in front of the replicas; it holds no model.

Every request passes Ray Serve's HTTP proxy, then this deployment, which

* checks API keys and admin keys (``lamina serve``'s ``KeyPolicy``), so a request without
  the right key never reaches a replica;
* reads the body within ``--max-body`` and ``--timeout``;
* forwards the request to a replica chosen by the router (``router.py``), with the
  routing key that lets it pick the replica whose slots hold the prompt's prefix;
* streams the replica's answer back as it comes (Server-Sent Events included), naming the
  replica in an ``X-Lamina-Replica`` header; when the client goes away, Ray Serve cancels
  the call and the replica frees the slot;
* answers ``/health``, ``/metrics`` and ``/slots`` for the whole service, from every replica.

A replica that dies takes its requests in flight with it: they end with a 503 (an SSE
``error`` event if the stream had begun) that says to retry, while Ray Serve starts a
replacement and the router sends new requests to the replicas still running.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ray.exceptions import RayActorError
from ray.serve.exceptions import DeploymentUnavailableError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from lamina.server.app import error_response, read_body_bytes, sse
from lamina.server.auth import KeyPolicy
from lamina.server.errors import ServerError, not_supported, unavailable

from .aggregate import merge_metrics, merge_slots
from .forwarding import ForwardedRequest, ResponseHead
from .router import running_replicas
from .routing import parse_body, routing_key

log = logging.getLogger("lamina.server")

REPLICA_DEPLOYMENT = "LaminaReplica"
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
#: seconds the ingress waits for every replica's part of /metrics and /slots, and of /health (answered at once,
#: 503 while no replica is up: load balancers poll it)
GATHER_TIMEOUT = 30.0
HEALTH_TIMEOUT = 1.5


@dataclass(frozen=True)
class IngressSettings:
    """What the ingress enforces: the same flags ``lamina serve`` reads, for the whole service."""

    keys: KeyPolicy
    body_limit: int
    timeout: float
    app_name: str


def no_replica() -> ServerError:
    return unavailable("no lamina replica is running at the moment (Ray Serve is starting one)", retry_after=1)


def unexpected(e: BaseException) -> ServerError:
    return ServerError(f"internal server error: {type(e).__name__}: {e}", "server_error")


def replica_lost(e: BaseException) -> ServerError:
    return unavailable(f"the replica serving this request stopped before it was answered ({type(e).__name__}); "
                       "the request is lost: send it again (Ray Serve is replacing the replica, and the others "
                       "are answering)", retry_after=1)


class LaminaIngress:
    """The ingress deployment's class (wrapped by ``serve.ingress`` in ``app.py``)."""

    def __init__(self, replicas, settings: IngressSettings):
        self.replicas = replicas
        self.streaming = replicas.options(stream=True, method_name="handle")
        self.settings = settings

    def __serve_build_asgi_app__(self) -> Starlette:
        async def on_server_error(request: Request, e: ServerError) -> Response:
            return error_response(e)

        async def on_unexpected(request: Request, e: Exception) -> Response:
            log.error("unexpected error in %s %s: %s", request.method, request.url.path, e, exc_info=e)
            return error_response(unexpected(e))

        return Starlette(routes=[Route("/{path:path}", self.dispatch, methods=METHODS)],
                         exception_handlers={ServerError: on_server_error, Exception: on_unexpected})

    async def dispatch(self, request: Request) -> Response:
        scope = request.scope
        path, method = "/" + request.path_params["path"], request.method
        self.settings.keys.check(method, path, request.headers)
        if method == "GET" and path in ("/health", "/v1/health"):
            return await self.health()
        if method == "GET" and path == "/metrics":
            return await self.metrics(request, path)
        if method == "GET" and path == "/slots":
            return await self.slots(request, path)
        if path.startswith("/slots/"):
            raise not_supported("slot actions (save, restore, erase) address one server's slots; behind --ray "
                                "each replica has its own, so they are not offered")
        body = b"" if method in ("GET", "HEAD", "OPTIONS") else await read_body_bytes(
            request, self.settings.body_limit, self.settings.timeout)
        data = parse_body(body)
        forwarded = ForwardedRequest.from_scope({**scope, "path": path}, body, routing_key(path, data))
        if running_replicas(self.settings.app_name, REPLICA_DEPLOYMENT) == 0:
            raise no_replica()
        if isinstance(data, dict) and data.get("stream") is True:
            return await self.forward_stream(forwarded)
        return await self.forward(forwarded)

    # -- one replica answers ---------------------------------------------------------------------------------------
    async def forward(self, request: ForwardedRequest) -> Response:
        """A whole answer, in one call (one Ray message back instead of a stream's head and pieces)."""
        call = self.replicas.call.remote(request)
        try:
            head, body = await call
        except RayActorError as e:
            raise replica_lost(e) from None
        except BaseException:
            call.cancel()  # the client went away: the replica frees the slot
            raise
        return passed_on(head, body)

    async def forward_stream(self, request: ForwardedRequest) -> Response:
        """A streamed answer: the head as soon as the replica starts it, then the pieces as they come."""
        stream = self.streaming.remote(request)
        try:
            head = await stream.__anext__()
        except RayActorError as e:
            stream.cancel()
            raise replica_lost(e) from None
        except BaseException:
            stream.cancel()
            raise
        response = StreamingResponse(relay(stream, head), status_code=head.status)
        response.raw_headers = [*head.headers, (b"x-lamina-replica", head.replica.encode())]
        return response

    # -- every replica answers ---------------------------------------------------------------------------------------
    async def gather(self, request: ForwardedRequest, timeout: float = GATHER_TIMEOUT
                     ) -> list[tuple[ResponseHead, bytes]]:
        """Each running replica's whole answer to ``request`` (503 when none is running)."""
        try:
            answers = await self.replicas.broadcast("call", request).results_async(
                timeout_s=timeout, return_exceptions=True)
        except (DeploymentUnavailableError, TimeoutError):
            answers = []
        answers = [a for a in answers if isinstance(a, tuple)]
        if not answers:
            raise no_replica()
        return answers

    async def health(self) -> Response:
        if running_replicas(self.settings.app_name, REPLICA_DEPLOYMENT) == 0:
            raise no_replica()
        answers = await self.gather(ForwardedRequest("GET", "/health"), HEALTH_TIMEOUT)
        if not any(head.status == 200 for head, _ in answers):
            raise unavailable(f"none of the {len(answers)} replicas is ready", retry_after=1)
        return JSONResponse({"status": "ok"})

    async def metrics(self, request: Request, path: str) -> Response:
        answers = await self.gather(ForwardedRequest.from_scope({**request.scope, "path": path}, b""))
        refused = first_refusal(answers)
        if refused is not None:
            return refused
        text = merge_metrics([body.decode("utf-8") for _, body in answers])
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    async def slots(self, request: Request, path: str) -> Response:
        answers = await self.gather(ForwardedRequest.from_scope({**request.scope, "path": path}, b""))
        refused = first_refusal(answers)
        if refused is not None:
            return refused
        return JSONResponse(merge_slots([(head.replica, body) for head, body in answers]))


def passed_on(head: ResponseHead, body: bytes) -> Response:
    """A replica's whole answer as the client gets it, naming the replica."""
    response = Response(body, status_code=head.status)
    response.raw_headers = [*head.headers, (b"x-lamina-replica", head.replica.encode())]
    return response


def first_refusal(answers: list[tuple[ResponseHead, bytes]]) -> Response | None:
    """A replica's error answer, passed on as it is (they run the same flags, so they refuse alike)."""
    for head, body in answers:
        if head.status != 200:
            return passed_on(head, body)
    return None


async def relay(stream, head: ResponseHead):
    """The replica's body as it arrives; if the replica dies mid-answer, an SSE stream ends with a 503 event."""
    done = False
    try:
        async for chunk in stream:
            yield chunk
        done = True
    except Exception as e:  # noqa: BLE001 (the status line has gone: the stream's last event says what happened)
        lost = isinstance(e, RayActorError)
        log.warning("replica %s %s in the middle of an answer: %s", head.replica, "stopped" if lost else "failed", e)
        if head.is_event_stream:
            yield sse((replica_lost(e) if lost else unexpected(e)).body())
    finally:
        if not done:
            stream.cancel()  # the client went away (or the replica did): stop the replica's work on it


def settings_from(args, app_name: str) -> IngressSettings:
    from lamina.server.cli import key_policy_from

    return IngressSettings(keys=key_policy_from(args), body_limit=args.max_body, timeout=args.timeout,
                           app_name=app_name)

