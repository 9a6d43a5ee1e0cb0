"""What the server is configured with, and the model it loads in the background.

The HTTP side starts at once; :meth:`ServerState.load` opens the model on another thread,
so ``/health`` (and every other route) answers 503 ``unavailable_error`` until it is ready,
as llama-server does while loading.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lamina.sampling import SamplingParams

from .auth import KeyPolicy
from .errors import ServerError, unavailable

log = logging.getLogger("lamina.server")


@dataclass
class ServerConfig:
    model: str
    alias: str | None = None
    n_ctx: int = 0                      # all slots together, as llama-server's -c (0: the training context)
    n_parallel: int = 4
    n_batch: int = 2048
    n_ubatch: int = 512
    n_threads: int | None = None
    n_predict: int = -1
    sampling: SamplingParams = field(default_factory=SamplingParams)
    grammar: Any = None  # --grammar/-j: the LlamaGrammar of requests that ask for none
    keys: KeyPolicy = field(default_factory=KeyPolicy)
    metrics: bool = False
    slots_endpoint: bool = True
    slot_save_path: str | None = None
    chat_template: str | None = None
    chat_template_file: str | None = None
    use_jinja: bool = True
    context_shift: bool = False
    cache_reuse: int = 0
    timeout: float = 600.0              # seconds to read a request body
    header_timeout: float = 10.0        # seconds for a client to send its request headers
    queue_max: int = 64
    body_limit: int = 32 << 20
    webui: bool = True
    embedding: bool = False
    pooling: str | None = None

    @property
    def model_id(self) -> str:
        return self.alias or self.model


class ServerState:
    """The loaded model, its engine and chat template, shared by every route."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.llm = None
        self.engine = None
        self.template = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.loaded_at = 0.0
        self.model_size = 0
        self.fingerprint = ""   # names the model in saved slot files
        self.vocab_type = 0     # llama.cpp's enum: 1 SPM, 2 BPE, 3 WPM, 4 UGM, 5 RWKV

    def require_ready(self):
        if self.error is not None:
            raise ServerError(f"the model failed to load: {self.error}", "server_error")
        if not self.ready.is_set():
            raise unavailable("Loading model", retry_after=1)
        if not self.engine.alive:
            raise unavailable("the server is shutting down")
        return self.engine

    def load(self) -> None:
        """Open the model and start the engine (on a background thread; errors are kept for the routes)."""
        try:
            self._load()
            self.ready.set()
            log.info("model loaded: %s, %d slots of %d tokens", self.config.model, self.config.n_parallel,
                     self.engine.n_ctx_slot)
        except BaseException as e:  # noqa: BLE001 (reported by every route, and in the log)
            self.error = e
            log.error("could not load %s: %s", self.config.model, e)

    def _load(self) -> None:
        from lamina import Llama
        from lamina.chat.templates import load_chat_template, read_model_chat_template
        from lamina.cli.options import sampler_chain_for
        from lamina.grammar.vocabulary import matcher_tokenizer

        from .engine import Engine

        c = self.config
        n_ctx = c.n_ctx if c.n_ctx > 0 else _training_context(c.model)
        n_ctx_slot = max(1, n_ctx // c.n_parallel)
        llm = Llama(c.model, n_ctx=n_ctx_slot, n_batch=c.n_batch, n_ubatch=c.n_ubatch, n_threads=c.n_threads,
                    n_seq_max=c.n_parallel, fit_ctx=c.n_ctx <= 0, verbose=False, embedding=c.embedding,
                    pooling_type=c.pooling or -1)
        tok = llm.tokenizer_
        matcher_tokenizer(tok)  # the grammar matcher's view of the vocabulary, made once (about 1 s for 152k)
        self.template = load_chat_template(
            model_template=read_model_chat_template(llm.gguf), template=c.chat_template,
            template_file=c.chat_template_file, use_jinja=c.use_jinja,
            bos_token=tok.token_text(tok.bos_id) if tok.bos_id >= 0 else "",
            eos_token=tok.token_text(tok.eos_id) if tok.eos_id >= 0 else "",
            add_bos=tok.add_bos, add_eos=tok.add_eos, model_name=os.path.basename(c.model),
            fallback_to_builtin=c.chat_template is None and c.chat_template_file is None)
        self.llm = llm
        self.model_size = os.path.getsize(c.model)
        self.fingerprint = f"{os.path.basename(c.model)}:{self.model_size}"
        self.vocab_type = VOCAB_TYPES.get(llm.gguf.get_str("tokenizer.ggml.model", ""), 0)
        self.loaded_at = time.time()
        self.engine = Engine(llm, queue_max=c.queue_max, context_shift=c.context_shift, n_predict_max=c.n_predict,
                             chain_for=lambda params, grammar=None: sampler_chain_for(llm, params, grammar))
        self.engine.start()

    def stop(self) -> None:
        """Stop the engine without waiting: unfinished streams get an error event and end."""
        if self.engine is not None:
            self.engine.stop(timeout=0)


VOCAB_TYPES = {"llama": 1, "gpt2": 2, "bert": 3, "t5": 4, "rwkv": 5}


def _training_context(path: str) -> int:
    """``-c 0``: the model's training context, split between the slots."""
    from lamina import gguf

    f = gguf.read(path)
    arch = f.get_str("general.architecture", "")
    return int(f.get_int(f"{arch}.context_length", 4096))
