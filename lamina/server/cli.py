"""``lamina serve -m MODEL``: llama-server's command line, flags and ``LLAMA_ARG_*`` variables included.

Every flag can also be set from the environment variable llama-server reads for it
(``LLAMA_ARG_PORT=9000``, ``LLAMA_API_KEY=...``); a flag on the command line wins over
its variable. Boolean variables take ``1/true/on/enabled`` or ``0/false/off/disabled``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading

from lamina.cli.options import (add_model_options, add_sampling_options, grammar_from, resolve_model,
                                sampling_params_from)
from lamina.server.ray.options import add_ray_options, ray_plan

# variable -> (flag when true or the flag taking the value, flag when false)
ENV_FLAGS = {
    "LLAMA_ARG_MODEL": ("-m", None), "LLAMA_ARG_HOST": ("--host", None), "LLAMA_ARG_PORT": ("--port", None),
    "LLAMA_ARG_CTX_SIZE": ("-c", None), "LLAMA_ARG_N_PARALLEL": ("-np", None), "LLAMA_ARG_THREADS": ("-t", None),
    "LLAMA_ARG_BATCH": ("-b", None), "LLAMA_ARG_UBATCH": ("-ub", None), "LLAMA_ARG_N_PREDICT": ("-n", None),
    "LLAMA_ARG_TEMPERATURE": ("--temp", None), "LLAMA_ARG_TOP_K": ("--top-k", None),
    "LLAMA_ARG_TOP_P": ("--top-p", None), "LLAMA_ARG_MIN_P": ("--min-p", None),
    "LLAMA_ARG_REPEAT_PENALTY": ("--repeat-penalty", None), "LLAMA_ARG_PRESENCE_PENALTY": ("--presence-penalty", None),
    "LLAMA_ARG_FREQUENCY_PENALTY": ("--frequency-penalty", None),
    "LLAMA_API_KEY": ("--api-key", None), "LLAMA_ARG_API_KEY_FILE": ("--api-key-file", None),
    "LAMINA_ADMIN_KEY": ("--admin-key", None),
    "LLAMA_ARG_ENDPOINT_METRICS": ("--metrics", "--no-metrics"), "LLAMA_ARG_ENDPOINT_SLOTS": ("--slots", "--no-slots"),
    "LLAMA_ARG_CHAT_TEMPLATE": ("--chat-template", None), "LLAMA_ARG_CHAT_TEMPLATE_FILE": ("--chat-template-file", None),
    "LLAMA_ARG_JINJA": ("--jinja", "--no-jinja"), "LLAMA_ARG_CONTEXT_SHIFT": ("--context-shift", "--no-context-shift"),
    "LLAMA_ARG_CACHE_REUSE": ("--cache-reuse", None), "LLAMA_ARG_ALIAS": ("-a", None),
    "LLAMA_ARG_TIMEOUT": ("--timeout", None), "LLAMA_ARG_THREADS_HTTP": ("--threads-http", None),
    "LLAMA_ARG_UI": ("--webui", "--no-webui"), "LLAMA_ARG_OFFLINE": ("--offline", None),
    "LLAMA_ARG_EMBEDDINGS": ("--embedding", None), "LLAMA_ARG_RERANKING": ("--reranking", None),
}
TRUTHY, FALSEY = {"1", "true", "on", "enabled"}, {"0", "false", "off", "disabled"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina serve", description="Serve a GGUF model over HTTP: llama-server's "
                                "routes and the OpenAI API, several requests decoded together.")
    add_model_options(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    g.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    g.add_argument("-np", "--parallel", type=int, default=4,
                   help="number of slots: requests decoded together (default: 4); -c is split between them")
    g.add_argument("-n", "--n-predict", "--predict", type=int, default=-1,
                   help="default tokens to predict per request (default: -1 = until the end or the context is full)")
    g.add_argument("-a", "--alias", default=None, help="model name reported by the API (default: the model path)")
    g.add_argument("--api-key", action="append", default=[],
                   help="API key(s), comma separated, needed by every route but /health and /v1/models")
    g.add_argument("--api-key-file", default=None, help="file with one API key per line")
    g.add_argument("--admin-key", action="append", default=[],
                   help="key(s) for the admin routes (/slots, slot actions, /metrics, POST /props); with one, API "
                        "keys no longer open them and /slots shows prompt text to admins only")
    g.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=False,
                   help="expose Prometheus metrics at /metrics (default: off)")
    g.add_argument("--slots", action=argparse.BooleanOptionalAction, default=True,
                   help="expose the slots' state at /slots (default: on)")
    g.add_argument("--slot-save-path", default=None, help="folder where POST /slots/ID?action=save writes slot files")
    g.add_argument("--chat-template", default=None, help="built-in chat template name or Jinja source")
    g.add_argument("--chat-template-file", default=None, help="file holding a Jinja chat template")
    g.add_argument("--jinja", action=argparse.BooleanOptionalAction, default=True,
                   help="run the model's Jinja chat template (default: on; --no-jinja uses llama.cpp's built-in formats)")
    g.add_argument("--context-shift", action=argparse.BooleanOptionalAction, default=False,
                   help="when a slot's context fills during generation, drop half of it and go on (default: off)")
    g.add_argument("--cache-reuse", type=int, default=0,
                   help="accepted for llama-server's command lines; lamina reuses the longest cached prefix")
    g.add_argument("-to", "--timeout", type=float, default=600, help="seconds to read a request body (default: 600)")
    g.add_argument("--header-timeout", type=float, default=10,
                   help="seconds a client has to send its request headers (default: 10)")
    g.add_argument("--threads-http", type=int, default=-1,
                   help="accepted for llama-server's command lines (lamina's HTTP side is one asyncio loop)")
    g.add_argument("--queue-max", type=int, default=64,
                   help="requests that may wait for a free slot; more get 503 with Retry-After (default: 64)")
    g.add_argument("--max-body", type=int, default=32 << 20, help="largest request body in bytes (default: 32 MiB)")
    g.add_argument("--webui", action=argparse.BooleanOptionalAction, default=True, help="serve the web page at /")
    g.add_argument("--offline", action="store_true", help="never use the network (lamina only reads local files)")
    g.add_argument("--embedding", "--embeddings", action="store_true",
                   help="serve embeddings only (/embedding, /v1/embeddings); completions are refused, as in llama-server")
    g.add_argument("--pooling", default=None, choices=["none", "mean", "cls", "last", "rank"],
                   help="how --embedding pools token vectors (default: the model's, else none)")
    g.add_argument("--reranking", "--rerank", action="store_true",
                   help="serve a reranker's /rerank (--embedding with --pooling rank), as llama-server does")
    g.add_argument("-v", "--verbose", action="store_true", help="log every request")
    add_sampling_options(p)
    add_ray_options(p)
    return p


def argv_with_environment(argv: list[str], environ=os.environ) -> list[str]:
    """``LLAMA_ARG_*`` variables as flags placed before ``argv``, so the command line overrides them."""
    extra: list[str] = []
    for name, (flag, off_flag) in ENV_FLAGS.items():
        value = environ.get(name)
        if value is None:
            continue
        takes_value = off_flag is None and name not in ("LLAMA_ARG_OFFLINE", "LLAMA_ARG_EMBEDDINGS")
        if takes_value:
            extra += [flag, value]
        elif value.lower() in TRUTHY:
            extra.append(flag)
        elif value.lower() in FALSEY:
            if off_flag:
                extra.append(off_flag)
        else:
            raise SystemExit(f"lamina serve: error: {name}={value!r} is not a boolean (use 1/0, true/false, on/off)")
    return extra + argv


def key_policy_from(args):
    """The API and admin keys of ``--api-key``, ``--api-key-file`` and ``--admin-key``."""
    from .auth import KeyPolicy, read_key_file

    keys = [k.strip() for item in args.api_key for k in item.split(",") if k.strip()]
    if args.api_key_file:
        keys += read_key_file(args.api_key_file)
    admin = [k.strip() for item in args.admin_key for k in item.split(",") if k.strip()]
    return KeyPolicy(tuple(keys), tuple(admin))


def config_from(args):
    from lamina import gguf

    from .state import ServerConfig, _training_context

    if args.parallel < 1:
        raise ValueError(f"--parallel must be at least 1, got {args.parallel}")
    if args.slot_save_path and not os.path.isdir(args.slot_save_path):
        raise ValueError(f"--slot-save-path {args.slot_save_path!r} is not a folder")
    gguf.read(args.model)  # a clear error now, not from the loading thread
    n_ctx = args.ctx_size if args.ctx_size > 0 else _training_context(args.model)
    return ServerConfig(
        model=args.model, alias=args.alias, n_ctx=n_ctx, n_parallel=args.parallel, n_batch=args.batch_size,
        n_ubatch=args.ubatch_size, n_threads=args.threads, n_predict=args.n_predict,
        sampling=sampling_params_from(args, max(1, n_ctx // args.parallel)),
        keys=key_policy_from(args), metrics=args.metrics, slots_endpoint=args.slots,
        slot_save_path=args.slot_save_path, chat_template=args.chat_template,
        chat_template_file=args.chat_template_file, use_jinja=args.jinja, context_shift=args.context_shift,
        cache_reuse=args.cache_reuse, timeout=args.timeout, header_timeout=args.header_timeout,
        queue_max=args.queue_max, body_limit=args.max_body, webui=args.webui,
        embedding=args.embedding or args.reranking, pooling="rank" if args.reranking else args.pooling,
        grammar=grammar_from(args))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv_with_environment(argv))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("lamina.server").setLevel(logging.INFO)
    try:
        resolve_model(args)
        config = config_from(args)
        plan = ray_plan(args)
    except (OSError, ValueError) as e:
        print(f"lamina serve: error: {e}", file=sys.stderr)
        return 1
    if args.host not in ("127.0.0.1", "localhost", "::1") and not config.keys.api_keys:
        print(f"lamina serve: warning: listening on {args.host} without --api-key: anyone who can reach this "
              "address can use the model", file=sys.stderr)
    if plan is not None:
        from lamina.server.ray.cli import serve_on_ray

        return serve_on_ray(args, plan)
    return serve(config, args.host, args.port, verbose=args.verbose)


def serve(config, host: str, port: int, verbose: bool = False) -> int:
    import uvicorn

    from .app import create_app
    from .http import Server, protocol_with_header_timeout
    from .state import ServerState

    state = ServerState(config)
    app = create_app(state)
    uv_config = uvicorn.Config(app, host=host, port=port, http=protocol_with_header_timeout(config.header_timeout),
                               log_level="info" if verbose else "warning", access_log=verbose,
                               timeout_graceful_shutdown=3, timeout_keep_alive=5, lifespan="off")
    server = Server(uv_config, on_exit=state.stop)
    threading.Thread(target=state.load, name="lamina-load", daemon=True).start()
    print(f"lamina serve: listening on http://{host}:{port} (loading {config.model}, {config.n_parallel} slots)",
          file=sys.stderr, flush=True)
    server.run()
    state.stop()
    return 0
