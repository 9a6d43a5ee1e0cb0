"""The HTTP routes of ``lamina serve``: llama-server's, with its request fields and answer shapes.

Every route reads its body through :func:`read_body` (size limit, read timeout, strict
JSON), refuses what it cannot honour with a :class:`ServerError`, and hands completions to
the engine thread. Streams are Server-Sent Events (``data: {...}``; OpenAI routes end with
``data: [DONE]``); a stream that fails ends with ``data: {"error": {...}}``. When the client
goes away its tasks are cancelled, which frees their slots before the next decode step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import AsyncIterator

from fastapi import FastAPI, Request
from starlette.requests import ClientDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lamina.chat.completion import chat_prompt_tokens
from lamina.chat.tools import ToolCallStream, tool_deltas, tool_format, tool_grammar
from lamina.fim import has_fim, server_infill_prompt
from lamina.grammar import GrammarError

from . import protocol, responses, slot_files, webui
from .errors import ServerError, invalid_request, not_supported
from .metrics import prometheus_text
from .protocol import CompletionRequest
from .responses import Choice
from .slots import GENERATING
from .state import ServerState
from .tasks import CompletionTask, ErrorEvent, FinalEvent

log = logging.getLogger("lamina.server")



def error_response(e: ServerError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


async def read_body(request: Request, state: ServerState) -> dict:
    """The request's JSON object (see :func:`read_body_bytes` for the limits)."""
    return protocol.parse_json(await read_body_bytes(request, state.config.body_limit, state.config.timeout))


async def read_body_bytes(request: Request, limit: int, timeout: float) -> bytes:
    """The request body: at most ``limit`` bytes (413), read within ``timeout`` seconds (408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServerError(f"the request body has {declared} bytes; at most {limit} are accepted",
                          "invalid_request_error", status=413)
    chunks, size = [], 0

    async def receive_all():
        nonlocal size
        async for chunk in request.stream():  # ClientDisconnect if the client hangs up (nothing is answered)
            size += len(chunk)
            if size > limit:
                raise ServerError(f"the request body is larger than {limit} bytes", "invalid_request_error",
                                  status=413)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), timeout)
    except ClientDisconnect:
        raise ServerError("the client closed the connection before sending the whole body", "invalid_request_error",
                          status=400) from None
    except asyncio.TimeoutError:
        raise ServerError(f"the request body did not arrive within {timeout:g} s",
                          "invalid_request_error", status=408) from None
    return b"".join(chunks)


class KeyMiddleware:
    """Checks API keys before a route runs (pure ASGI, so streaming and disconnects pass untouched)."""

    def __init__(self, app, state: ServerState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            from starlette.datastructures import Headers

            try:
                self.state.config.keys.check(scope["method"], scope["path"], Headers(scope=scope))
            except ServerError as e:
                await error_response(e)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(state: ServerState) -> FastAPI:
    app = FastAPI(title="lamina", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(KeyMiddleware, state=state)
    cfg = state.config

    @app.exception_handler(ServerError)
    async def on_server_error(request: Request, e: ServerError):
        return error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, e: StarletteHTTPException):
        kind = {404: "not_found_error", 405: "invalid_request_error"}.get(e.status_code, "invalid_request_error")
        message = "File Not Found" if e.status_code == 404 else str(e.detail)
        return error_response(ServerError(message, kind, status=e.status_code))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, e: Exception):
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(ServerError(f"internal server error: {type(e).__name__}: {e}", "server_error"))

    # -- health, models, props -------------------------------------------------------------------------
    @app.get("/health")
    @app.get("/v1/health")
    async def health():
        state.require_ready()
        return {"status": "ok"}

    @app.get("/models")
    @app.get("/v1/models")
    async def models():
        state.require_ready()
        llm = state.llm
        entry = {"id": cfg.model_id, "object": "model", "created": int(state.loaded_at), "owned_by": "llamacpp",
                 "meta": {"vocab_type": state.vocab_type, "n_vocab": llm.n_vocab(), "n_ctx_train": llm._model.n_ctx_train, "n_embd": llm.n_embd(),
                          "size": state.model_size}}
        return {"models": [{"name": cfg.model_id, "model": cfg.model_id, "modified_at": "", "size": state.model_size,
                            "type": "model", "capabilities": ["completion"]}],
                "object": "list", "data": [entry]}

    @app.get("/props")
    async def props():
        engine = state.require_ready()
        tok = state.llm.tokenizer_
        return {
            "default_generation_settings": {
                "id": 0, "id_task": -1, "n_ctx": engine.n_ctx_slot, "speculative": False, "is_processing": False,
                "params": responses.generation_settings(default_task(state), False)},
            "total_slots": len(engine.slots), "model_alias": cfg.model_id, "model_path": cfg.model,
            "modalities": {"vision": False, "audio": False}, "chat_template": state.template.source or
            state.template.kind, "bos_token": tok.token_text(tok.bos_id) if tok.bos_id >= 0 else "",
            "eos_token": tok.token_text(tok.eos_id) if tok.eos_id >= 0 else "", "build_info": "lamina 0.1.0",
            "webui": cfg.webui, "is_sleeping": False,
        }

    @app.post("/props")
    async def set_props(request: Request):
        state.require_ready()
        await read_body(request, state)
        raise not_supported("this server does not change its properties at run time; restart it with other flags")

    # -- tokens and templates --------------------------------------------------------------------------------
    @app.post("/tokenize")
    async def tokenize(request: Request):
        state.require_ready()
        body = await read_body(request, state)
        content = body.get("content")
        tok = state.llm.tokenizer_
        if isinstance(content, str):
            if len(content) > protocol.MAX_PROMPT_CHARS:
                raise invalid_request(f"'content' has {len(content)} characters; at most "
                                      f"{protocol.MAX_PROMPT_CHARS} are accepted")
            ids = tok.tokenize(content.encode("utf-8", "surrogatepass"),
                               add_special=protocol.get_bool(body, "add_special", False),
                               parse_special=protocol.get_bool(body, "parse_special", True))
        elif isinstance(content, list):
            ids = protocol.prompt_tokens(content, tok, add_special=protocol.get_bool(body, "add_special", False))
            protocol.check_token_ids(ids, tok.n_vocab, "'content'")
        else:
            raise invalid_request("'content' must be a string")
        if not protocol.get_bool(body, "with_pieces", False):
            return {"tokens": ids}
        pieces = []
        for t in ids:
            raw = tok.token_to_piece(t, special=True)
            try:
                piece = raw.decode("utf-8")
            except UnicodeDecodeError:
                piece = list(raw)
            pieces.append({"id": t, "piece": piece})
        return {"tokens": pieces}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        state.require_ready()
        body = await read_body(request, state)
        tokens = body.get("tokens", [])
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise invalid_request("'tokens' must be an array of token ids")
        protocol.check_token_ids(tokens, state.llm.n_vocab(), "'tokens'")
        return {"content": responses.text(state.llm.tokenizer_.detokenize(tokens, special=True))}

    @app.post("/apply-template")
    async def apply_template(request: Request):
        state.require_ready()
        body = await read_body(request, state)
        return {"prompt": render_chat(state, body, protocol.tools_of(body))[0]}

    # -- completions -------------------------------------------------------------------------------------------
    @app.post("/completion")
    @app.post("/completions")
    async def completion(request: Request):
        engine = state.require_ready()
        body = await read_body(request, state)
        prompts = protocol.prompts_of(body, state.llm.tokenizer_)
        req = build_request(state, body, prompts, oai=False)
        return await answer(request, state, engine, req, "native", several=len(req.tasks) > 1)

    @app.post("/v1/completions")
    async def oai_completion(request: Request):
        engine = state.require_ready()
        body = await read_body(request, state)
        prompts = protocol.prompts_of(body, state.llm.tokenizer_)
        return await answer(request, state, engine, build_request(state, body, prompts, oai=True), "text")

    @app.post("/chat/completions")
    @app.post("/v1/chat/completions")
    async def oai_chat(request: Request):
        engine = state.require_ready()
        body = await read_body(request, state)
        protocol.refuse_unsupported(body)
        tools = protocol.tools_of(body)
        fmt = tool_format(state.template.source) if tools is not None else None
        _, tokens = render_chat(state, body, tools)
        tool_grammar_ = None
        if tools is not None:
            try:
                tool_grammar_ = tool_grammar(tools, fmt, state.llm.tokenizer_)
            except GrammarError as e:
                raise invalid_request(f"tools: {e}") from None
        req = build_request(state, body, [tokens], oai=True, tool_grammar=tool_grammar_)
        if tools is not None:
            req.tool_format, req.tool_names = fmt, tuple(tools.names)
        return await answer(request, state, engine, req, "chat")

    @app.post("/infill")
    async def infill(request: Request):
        engine = state.require_ready()
        body = await read_body(request, state)
        tok = state.llm.tokenizer_
        if not has_fim(tok):
            raise not_supported("Infill is not supported by this model: it has no FIM prefix, suffix and middle tokens")
        prefix, suffix, extra, middle = protocol.infill_parts(body, tok)
        tokens = server_infill_prompt(tok, prefix, suffix, extra, middle, n_batch=cfg.n_batch,
                                      n_predict=cfg.n_predict, n_ctx=engine.n_ctx_slot)
        rest = {k: v for k, v in body.items() if k not in protocol.INFILL_FIELDS}
        return await answer(request, state, engine, build_request(state, rest, [tokens], oai=False), "native")

    @app.post("/embedding")
    @app.post("/embeddings")
    async def native_embedding(request: Request):
        engine = state.require_ready()
        body = await read_body(request, state)
        texts = protocol.embedding_inputs(body, "content" if "content" in body else "input")
        rows, _ = await embeddings_of(state, engine, texts, protocol.embd_normalize(body))
        return JSONResponse([{"index": i, "embedding": r} for i, r in enumerate(rows)])

    @app.post("/v1/embeddings")
    async def oai_embeddings(request: Request):
        engine = state.require_ready()
        body = await read_body(request, state)
        if state.llm.embedding and state.llm.pooling_type() == 0:
            raise invalid_request("pooling type 'none' is not OAI compatible: start the server with --pooling "
                                  "mean, cls or last")
        texts = protocol.embedding_inputs(body, "input")
        rows, n = await embeddings_of(state, engine, texts, 2)
        return JSONResponse({"object": "list", "model": body.get("model") or cfg.model_id,
                             "data": [{"object": "embedding", "index": i, "embedding": r[0]}
                                      for i, r in enumerate(rows)],
                             "usage": {"prompt_tokens": n, "total_tokens": n}})

    @app.post("/rerank")
    @app.post("/reranking")
    @app.post("/v1/rerank")
    @app.post("/v1/reranking")
    async def rerank(request: Request):
        engine = state.require_ready()
        body = await read_body(request, state)
        query, documents, top_n, tei = protocol.rerank_inputs(body)
        scores, n = await rerank_scores(state, engine, query, documents)
        return JSONResponse(responses.rerank(body, cfg.model_id, scores, documents, tei=tei, top_n=top_n,
                                             n_tokens=n))

    # -- slots and metrics ------------------------------------------------------------------------------------
    @app.get("/slots")
    async def slots(request: Request):
        engine = state.require_ready()
        if not cfg.slots_endpoint:
            raise not_supported("this server does not expose /slots: start it without --no-slots")
        show_text = bool(cfg.keys.admin_keys) and cfg.keys.is_admin(request.headers)
        # read on the engine thread, between two steps, so no slot changes while it is described
        return await asyncio.wrap_future(engine.call(lambda: [slot_json(state, s, show_text) for s in engine.slots]))

    @app.post("/slots/{slot_id}")
    async def slot_action(slot_id: str, request: Request, action: str = ""):
        engine = state.require_ready()
        if not (slot_id.isascii() and slot_id.isdigit() and len(slot_id) <= 6):
            raise invalid_request(f"slot id {slot_id[:20]!r} is not a slot number")
        sid = int(slot_id)
        body = await read_body(request, state) if action in ("save", "restore") else {}
        if action == "erase":
            n = await asyncio.wrap_future(engine.call(lambda: engine.erase_slot(sid)))
            return {"id_slot": sid, "n_erased": n}
        if action not in ("save", "restore"):
            raise invalid_request(f"unknown slot action {action!r}: use ?action=save, restore or erase")
        if not cfg.slot_save_path:
            raise not_supported("this server does not save slots: start it with --slot-save-path FOLDER")
        filename = body.get("filename")
        path = slot_files.slot_path(cfg.slot_save_path, filename)
        t0 = time.perf_counter()
        if action == "save":
            tokens, keys, values = await asyncio.wrap_future(engine.call(lambda: engine.slot_state(sid)))
            n_bytes = await asyncio.to_thread(slot_files.save, path, state.fingerprint, tokens, keys, values)
            return {"id_slot": sid, "filename": filename, "n_saved": len(tokens), "n_written": n_bytes,
                    "timings": {"save_ms": (time.perf_counter() - t0) * 1e3}}
        tokens, keys, values, n_bytes = await asyncio.to_thread(slot_files.load, path, state.fingerprint,
                                                                len(engine.ctx.kv.k))
        await asyncio.wrap_future(engine.call(lambda: engine.load_slot_state(sid, tokens, keys, values)))
        return {"id_slot": sid, "filename": filename, "n_restored": len(tokens), "n_read": n_bytes,
                "timings": {"restore_ms": (time.perf_counter() - t0) * 1e3}}

    @app.get("/metrics")
    async def metrics():
        engine = state.require_ready()
        if not cfg.metrics:
            raise not_supported("this server does not expose /metrics: start it with --metrics")
        text = await asyncio.wrap_future(engine.call(lambda: prometheus_text(engine)))  # counters: engine thread
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.get("/")
    async def index():
        if not cfg.webui:
            raise ServerError("File Not Found (the web page is off: the server was started with --no-webui)",
                              "not_found_error")
        return webui.page_file("index.html")

    @app.get("/webui/{name}")
    async def page_file(name: str):
        response = webui.page_file(name) if cfg.webui else None
        if response is None:
            raise ServerError("File Not Found", "not_found_error")
        return response

    return app


async def embeddings_of(state: ServerState, engine, texts: list[str], normalize: int) -> tuple[list, int]:
    """Each text's embedding rows (one row when pooled, one per token with pooling none) and the
    tokens evaluated, computed on the engine's thread between its steps (only a server started
    with --embedding has them; it runs no completions, so its cache is free)."""
    from lamina.embeddings import POOLING_NONE, normalize_like_llama_cpp

    if not state.llm.embedding:
        raise not_supported("This server does not support embeddings. Start it with `--embedding`")
    pooled = state.llm.pooling_type() != POOLING_NONE

    def compute():
        out, total = [], 0
        for text in texts:
            v, n = state.llm.embed(text, return_count=True)
            out.append([normalize_like_llama_cpp(r, normalize).tolist() for r in ([v] if pooled else v)])
            total += n
        return out, total

    try:
        return await asyncio.wrap_future(engine.call(compute))
    except ValueError as e:
        raise invalid_request(str(e)) from None


async def rerank_scores(state: ServerState, engine, query: str, documents: list[str]) -> tuple[list[float], int]:
    """Each document's score against the query (the reranker's first output), and the tokens
    evaluated; each pair is its own batch, as llama-server evaluates each in a slot of its own."""
    from lamina.embeddings import POOLING_RANK, RERANK_TEMPLATE_KEY, rerank_tokens

    llm = state.llm
    if not llm.embedding or llm.pooling_type() != POOLING_RANK:
        raise not_supported("This server does not support reranking. Start it with `--reranking`")
    template = llm.gguf.get_str(RERANK_TEMPLATE_KEY, None)
    pairs = [rerank_tokens(llm.tokenizer_, query, d, template) for d in documents]
    for tokens in pairs:
        engine.check_prompt(tokens)

    def compute():
        return [float(llm.embed_tokens([tokens])[0][0]) for tokens in pairs]

    try:
        scores = await asyncio.wrap_future(engine.call(compute))
    except ValueError as e:
        raise invalid_request(str(e)) from None
    return scores, sum(len(t) for t in pairs)


def default_task(state: ServerState) -> CompletionTask:
    return CompletionTask(prompt_tokens=[], params=state.config.sampling, n_predict=state.config.n_predict)


def build_request(state: ServerState, body: dict, prompts: list[list[int]], *, oai: bool,
                  tool_grammar=None) -> CompletionRequest:
    if state.config.embedding:
        raise not_supported("This server does not support completions. Start it without `--embedding`")
    engine = state.engine
    for p in prompts:
        engine.check_prompt(p)
    return protocol.completion_tasks(body, prompts, state.config.sampling, n_ctx=engine.n_ctx_slot,
                                     tokenizer=state.llm.tokenizer_, n_predict_default=state.config.n_predict,
                                     oai=oai, tool_grammar=tool_grammar, default_grammar=state.config.grammar)


def render_chat(state: ServerState, body: dict, tools=None) -> tuple[str, list[int]]:
    """The chat prompt as text and as tokens (see ``protocol.chat_prompt_parts``)."""
    parts = protocol.chat_prompt_parts(state.template, body, tools)
    tok = state.llm.tokenizer_
    tokens = chat_prompt_tokens(tok, parts, add_bos=tok.add_bos)
    return "".join(p for p, _ in parts), tokens


def slot_json(state: ServerState, slot, show_text: bool) -> dict:
    task = slot.task if not slot.idle else default_task(state)
    gen = getattr(slot, "generation", None)
    out = {"id": slot.id, "id_task": slot.handle.id_task if slot.handle else -1, "n_ctx": slot.n_ctx,
           "speculative": False, "is_processing": not slot.idle, "state": slot.state,
           "n_cached_tokens": len(slot.cache_tokens),
           "params": responses.generation_settings(task, False),
           "next_token": {"has_next_token": slot.state == GENERATING, "has_new_line": bool(gen and b"\n" in gen.text),
                          "n_remain": -1 if not gen or gen.max_tokens < 0 else gen.max_tokens - len(gen.tokens),
                          "n_decoded": len(gen.tokens) if gen and not slot.idle else 0,
                          "stopping_word": gen.stopping_word if gen else ""}}
    if show_text:  # prompts and answers are the users' own: only an admin key sees them
        out["prompt"] = responses.text(state.llm.tokenizer_.detokenize(slot.cache_tokens, special=True))
        out["generated"] = responses.text(gen.text) if gen and not slot.idle else ""
    return out


# -- running a request ---------------------------------------------------------------------------------------------
async def answer(request: Request, state: ServerState, engine, req: CompletionRequest, kind: str,
                 several: bool = False) -> Response:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    handles = []
    try:
        for task in req.tasks:
            handles.append(engine.submit(task, loop, events))
    except ServerError:
        for h in handles:
            h.cancel()
        raise
    choices = [Choice(t) for t in req.tasks]
    model = req.model or state.config.model_id
    if req.stream:
        return StreamingResponse(stream(request, state, handles, events, choices, req, kind, model),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        answered = await collect(request, events, choices)
    finally:
        for h in handles:
            if not h.done:
                h.cancel()
    if not answered:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it, the log shows it
    tok = state.llm.tokenizer_
    if kind == "native":
        finals = [responses.native_final(tok, c, model=model, stream=False) for c in choices]
        return JSONResponse(finals if several else finals[0])
    envelope = dict(cid=responses.completion_id("cmpl" if kind == "text" else "chatcmpl"), model=model,
                    created=responses.now(), top_logprobs=req.top_logprobs)
    if kind == "text":
        return JSONResponse(responses.text_completion_final(tok, choices, **envelope))
    return JSONResponse(responses.chat_final(tok, choices, tool_format=req.tool_format, tool_names=req.tool_names,
                                             **envelope))


CLIENT_GONE = object()


def watch_for_hang_up(request: Request, events: asyncio.Queue) -> asyncio.Task:
    """A task that puts ``CLIENT_GONE`` on ``events`` when the client closes its connection.

    The request body has been read by then, so the next ASGI message can only be
    ``http.disconnect``; waiting for it (rather than polling between token events, which
    arrive faster than any poll interval) notices the hang-up within one event-loop turn.
    """

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        events.put_nowait((-1, CLIENT_GONE))

    return asyncio.create_task(watch())


async def collect(request: Request, events: asyncio.Queue, choices: list[Choice]) -> bool:
    """Wait for every task's end; False when the client hung up first (the caller cancels the tasks)."""
    watcher = watch_for_hang_up(request, events)
    try:
        left = len(choices)
        while left:
            index, event = await events.get()
            if event is CLIENT_GONE:
                log.info("client gone before its answer: cancelling %d task(s)", left)
                return False
            if isinstance(event, ErrorEvent):
                raise event.error
            if isinstance(event, FinalEvent):
                choices[index].result = event.result
                left -= 1
            else:
                choices[index].add(event)
        return True
    finally:
        watcher.cancel()


def sse(data) -> bytes:
    return b"data: " + json.dumps(data, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n\n"


async def stream(request: Request, state: ServerState, handles, events: asyncio.Queue, choices: list[Choice],
                 req: CompletionRequest, kind: str, model: str) -> AsyncIterator[bytes]:
    tok = state.llm.tokenizer_
    obj = "text_completion" if kind == "text" else "chat.completion.chunk"
    envelope = dict(cid=responses.completion_id("cmpl" if kind == "text" else "chatcmpl"), model=model,
                    created=responses.now())
    tool_streams = {}
    if kind == "chat" and req.tool_format is not None:
        tool_streams = {i: ToolCallStream(req.tool_format, req.tool_names) for i in range(len(choices))}
    try:
        if kind == "chat":
            for c in choices:
                yield sse(responses.chat_chunk(tok, c, {"role": "assistant", "content": None}, **envelope))
        left = len(handles)
        while left:
            index, event = await events.get()
            c = choices[index]
            if isinstance(event, ErrorEvent):
                yield sse(event.error.body())
                return
            if isinstance(event, FinalEvent):
                c.result = event.result
                left -= 1
                if kind == "native":
                    yield sse(responses.native_final(tok, c, model=model, stream=True))
                elif kind == "text":
                    yield sse(responses.text_completion_chunk(tok, c, None, top_logprobs=req.top_logprobs,
                                                              **envelope))
                else:
                    reason = c.result.finish_reason
                    if index in tool_streams:
                        rest, calls = tool_streams[index].finish()
                        for delta in tool_deltas(rest, calls):
                            yield sse(responses.chat_chunk(tok, c, delta, **envelope))
                        reason = "tool_calls" if calls and reason == "stop" else reason
                    yield sse(responses.chat_chunk(tok, c, {}, finish_reason=reason, **envelope))
                continue
            c.add(event)
            if not event.text and not event.probs:
                continue  # held back (a partial character or the start of a stop string)
            if kind == "native":
                yield sse(responses.native_chunk(tok, c, event))
            elif kind == "text":
                yield sse(responses.text_completion_chunk(tok, c, event, top_logprobs=req.top_logprobs, **envelope))
            else:
                shown = responses.text(event.text)
                if index in tool_streams:
                    shown = tool_streams[index].feed(shown)
                    if not shown and not event.probs:
                        continue
                yield sse(responses.chat_chunk(tok, c, {"content": shown}, event=event,
                                               top_logprobs=req.top_logprobs, **envelope))
        if kind != "native":
            if req.include_usage:
                yield sse(responses.usage_chunk(choices, obj=obj, **envelope))
            yield b"data: [DONE]\n\n"
    finally:  # the client may have gone: free the slots at once
        for h in handles:
            if not h.done:
                h.cancel()
