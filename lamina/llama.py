"""``lamina.Llama``: llama-cpp-python's ``Llama`` class, so existing code runs by changing an import.

    from lamina import Llama          # instead of: from llama_cpp import Llama
    llm = Llama("model.gguf", n_ctx=2048)
    print(llm("The capital of France is", max_tokens=16)["choices"][0]["text"])

The class holds one sequence's state (``input_ids``, ``n_tokens``, ``scores``) over an
engine :class:`~lamina.engine.context.Context`; completions and chat completions are
built on :meth:`generate`.
"""

from __future__ import annotations

import os
import random
import sys
import time
from typing import Iterator, Sequence

import numpy as np

from lamina import gguf
from lamina.engine.batch import Batch
from lamina.engine.perf import PerfCounters
from lamina.processors import as_logits_processor, as_stopping_criteria

LLAMA_DEFAULT_SEED = 0xFFFFFFFF
FIT_MIN_CTX = 4096  # llama.cpp's fit_params_min_ctx


def default_threads() -> int:
    """Physical cores (llama.cpp's default), or the logical count where that cannot be told."""
    try:
        cores = set()
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                    cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return os.cpu_count() or 1


class Llama:
    """A loaded model with one context, in llama-cpp-python's shape."""

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, additional_files: list[str] | None = None,
                        local_dir: str | None = None, local_dir_use_symlinks=None, cache_dir: str | None = None,
                        **kwargs) -> "Llama":
        """A model from the Hugging Face Hub, as llama-cpp-python's ``Llama.from_pretrained``.

        ``filename`` may be a glob (``"*Q4_K_M.gguf"``) that must match one file; a split model's
        other parts come along. Files go to the Hub cache (``cache_dir``, else ``HF_HUB_CACHE``...)
        or to ``local_dir``, are checked against the Hub's sha256, and ``kwargs`` reach ``Llama``.
        ``local_dir_use_symlinks`` is accepted and ignored, as by current ``huggingface_hub``.
        """
        from lamina.hub import pretrained

        path = pretrained(repo_id, filename, local_dir=local_dir, cache_dir=cache_dir,
                          token=kwargs.pop("hf_token", None), additional_files=additional_files)
        return cls(model_path=str(path), **kwargs)

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 512,
        n_batch: int = 512,
        n_ubatch: int = 512,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        seed: int = LLAMA_DEFAULT_SEED,
        logits_all: bool = False,
        vocab_only: bool = False,
        last_n_tokens_size: int = 64,
        chat_format: str | None = None,
        chat_template: str | None = None,
        n_seq_max: int = 1,
        fit_ctx: bool = False,
        embedding: bool = False,
        pooling_type: int | str = -1,
        verbose: bool = True,
        **kwargs,
    ):
        t0 = time.perf_counter()
        self.model_path = os.fspath(model_path)
        self.verbose = verbose
        self.embedding = embedding
        self._seed = seed
        self.cache = None  # a LlamaRAMCache/LlamaDiskCache after set_cache
        self._logits_all = logits_all
        self.last_n_tokens_size = last_n_tokens_size
        self.chat_format = chat_format
        self.chat_template = chat_template
        self.perf = PerfCounters()
        self.gguf = gguf.read(self.model_path)
        from lamina.tokenizer import Tokenizer

        self.tokenizer_ = Tokenizer.from_gguf(self.gguf)
        if embedding:
            from lamina.embeddings import pooling_of

            self._pooling = pooling_of(pooling_type, self.gguf, self.gguf.get_str("general.architecture", ""))
        self._model = None
        self._ctx = None
        self.n_threads = n_threads or default_threads()
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.n_batch = max(1, int(n_batch))
        self.n_tokens = 0
        if vocab_only:
            self._n_ctx = 0
            self.input_ids = np.zeros(0, dtype=np.intc)
        else:
            from lamina.kernels import set_num_threads
            from lamina.models import load_model

            set_num_threads(self.n_threads)
            self._model = load_model(self.gguf)
            if self._model.n_vocab != self.tokenizer_.n_vocab:
                raise gguf.GGUFError(f"the output layer has {self._model.n_vocab} rows but the vocabulary has "
                                     f"{self.tokenizer_.n_vocab} tokens", self.model_path)
            self._n_ctx = int(n_ctx) if n_ctx and n_ctx > 0 else self._model.n_ctx_train
            self._ctx = self._make_context(n_ubatch, n_seq_max, fit_ctx)
            if embedding:
                from lamina.embeddings import check_pooling

                check_pooling(self._pooling, self._model)
            self.input_ids = np.zeros(self._n_ctx, dtype=np.intc)
        self._scores: np.ndarray | None = None  # with logits_all: allocated on first use (n_ctx × n_vocab)
        self._last_row: np.ndarray | None = None  # without: the one row of logits there is
        self._last_logits: np.ndarray | None = None
        self.perf.t_load_ms = (time.perf_counter() - t0) * 1e3
        self.perf.reset()
        if verbose:
            from lamina.load_report import load_lines

            print("\n".join(load_lines(self)), file=sys.stderr)
        if verbose and kwargs:
            print(f"lamina: ignoring unsupported Llama arguments: {', '.join(sorted(kwargs))}", file=sys.stderr)

    def _make_context(self, n_ubatch: int, n_seq_max: int, fit: bool):
        """The engine context; with ``fit``, a context whose KV cache does not fit in memory is halved
        (down to 4096 tokens, as llama.cpp's parameter fitting does) instead of refused."""
        from lamina.engine.context import Context
        from lamina.engine.kv_cache import KVCacheMemoryError

        while True:
            try:
                return Context(self._model, self._n_ctx * n_seq_max, self.n_batch, n_ubatch, n_seq_max)
            except KVCacheMemoryError:
                if not fit or self._n_ctx // 2 < FIT_MIN_CTX:
                    raise
                self._n_ctx //= 2
                print(f"lamina: the KV cache does not fit in memory: context reduced to {self._n_ctx}",
                      file=sys.stderr)

    # -- model facts ---------------------------------------------------------------------------
    def n_ctx(self) -> int:
        return self._n_ctx

    def n_vocab(self) -> int:
        return self.tokenizer_.n_vocab

    def n_embd(self) -> int:
        return self._model.n_embd if self._model else self.gguf.get_int(f"{self._arch()}.embedding_length", 0)

    def token_bos(self) -> int:
        return self.tokenizer_.bos_id

    def token_eos(self) -> int:
        return self.tokenizer_.eos_id

    def tokenizer(self):
        """llama-cpp-python's ``LlamaTokenizer`` for this model (``encode``/``decode``, ``tokenize``/``detokenize``)."""
        from lamina.llama_tokenizer import LlamaTokenizer

        return LlamaTokenizer(self)

    def token_nl(self) -> int:
        ids = self.tokenizer_.tokenize(b"\n", add_special=False, parse_special=False)
        return ids[-1] if ids else -1

    def _arch(self) -> str:
        return self.gguf.get_str("general.architecture", "")

    @property
    def metadata(self) -> dict[str, str]:
        """Every metadata value as a string, as llama.cpp's ``llama_model_meta_val_str`` gives it
        to llama-cpp-python: numbers as C++'s ``std::to_string`` writes them (``0.000010``), and
        no array-valued keys (llama.cpp leaves those out of a model's metadata)."""
        if not hasattr(self, "_metadata"):
            self._metadata = {k: _meta_str(v) for k, v in self.gguf.metadata.items()
                              if not isinstance(v, (list, tuple, np.ndarray))}
        return self._metadata

    # -- tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: bytes, add_bos: bool = True, special: bool = False) -> list[int]:
        return self.tokenizer_.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        """Bytes of ``tokens``; with ``prev_tokens`` they are treated as continuing that text."""
        if prev_tokens:
            return b"".join(self.tokenizer_.token_to_piece(int(t), special=special) for t in tokens)
        return self.tokenizer_.detokenize(list(tokens), special=special)

    # -- evaluation -------------------------------------------------------------------------------
    @property
    def scores(self) -> np.ndarray:
        """Logits per position, ``(n_ctx, n_vocab)``, laid out as llama-cpp-python lays them out:
        row ``n_tokens - 1`` holds the logits after the last evaluated token.

        With ``logits_all`` every evaluated row is filled. Without it only the last logits are
        kept, and every row of this read-only view shows them: one row of memory, however long
        the context (a full array would grow by ``n_vocab`` floats with each generated token)."""
        if self._logits_all:
            if self._scores is None:
                self._scores = np.zeros((self._n_ctx, self.n_vocab()), dtype=np.float32)
            return self._scores
        row = self._last_row_buffer()
        view = np.lib.stride_tricks.as_strided(row, shape=(max(1, self._n_ctx), row.shape[0]),
                                               strides=(0, row.strides[0]))
        view.flags.writeable = False
        return view

    def _last_row_buffer(self) -> np.ndarray:
        if self._last_row is None:
            self._last_row = np.zeros(self.n_vocab(), dtype=np.float32)
        return self._last_row

    @property
    def _input_ids(self) -> np.ndarray:
        return self.input_ids[: self.n_tokens]

    def reset(self) -> None:
        """Forget the evaluated tokens (the KV cache is overwritten from position 0)."""
        self.n_tokens = 0

    def _require_model(self) -> None:
        if self._ctx is None:
            raise RuntimeError("this Llama was loaded with vocab_only=True: it can tokenize but not evaluate")

    def eval(self, tokens: Sequence[int]) -> None:
        """Evaluate ``tokens`` after the ``n_tokens`` already evaluated, ``n_batch`` at a time."""
        self._require_model()
        tokens = np.asarray(list(tokens), dtype=np.int64)
        if self.n_tokens + len(tokens) > self._n_ctx:
            from lamina.engine.kv_cache import ContextFullError

            raise ContextFullError(f"evaluating {len(tokens)} more tokens after {self.n_tokens} would exceed the "
                                   f"context of {self._n_ctx} tokens")
        bad = (tokens < 0) | (tokens >= self.n_vocab())
        if bad.any():
            from lamina.engine.context import InvalidTokenError

            raise InvalidTokenError(f"token id {int(tokens[bad][0])} is outside the vocabulary (0..{self.n_vocab() - 1})")
        self._ctx.truncate(0, self.n_tokens)
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            n_past = self.n_tokens
            t0 = time.perf_counter()
            logits = self._ctx.decode(Batch.for_sequence(chunk, n_past, 0, logits_all=self._logits_all))
            self.perf.add_decode(len(chunk), time.perf_counter() - t0)
            self.input_ids[n_past : n_past + len(chunk)] = chunk
            if self._logits_all:
                self.scores[n_past : n_past + len(chunk)] = logits
                self._last_logits = self.scores[n_past + len(chunk) - 1]
            else:
                self._last_logits = self._last_row_buffer()
                self._last_logits[:] = logits[-1]
            self.n_tokens += len(chunk)

    def shift_context(self, n_keep: int) -> int:
        """Make room by dropping half of the tokens after the first ``n_keep`` (llama.cpp's context shift).

        Returns how many tokens were discarded.
        """
        n_keep = max(0, min(n_keep, self.n_tokens - 2))
        n_discard = (self.n_tokens - n_keep) // 2
        if n_discard <= 0:
            return 0
        self._ctx.shift(0, n_keep, n_discard)
        kept = self.input_ids[n_keep + n_discard : self.n_tokens].copy()
        self.input_ids[n_keep : n_keep + len(kept)] = kept
        self.n_tokens -= n_discard
        return n_discard

    def logits(self) -> np.ndarray:
        """The logits after the last evaluated token."""
        if self._last_logits is None:
            raise RuntimeError("no tokens have been evaluated yet")
        return self._last_logits

    # -- embeddings ---------------------------------------------------------------------------------
    def pooling_type(self) -> int:
        """llama.cpp's pooling type in use (0 none, 1 mean, 2 cls, 3 last)."""
        if not self.embedding:
            raise RuntimeError("this Llama was not created with embedding=True")
        return self._pooling

    def embed(self, input: str | list[str], normalize: bool = False, truncate: bool = True,
              return_count: bool = False):
        """Embeddings of a text or a list of texts, as llama-cpp-python's ``embed``: one vector per
        text (pooled; for a reranker, its scores), or with pooling NONE one per token. Texts are
        tokenized as ``tokenize(text)`` does, cut to ``n_batch`` tokens when ``truncate``. An encoder
        (BERT family) evaluates several texts together, as separate sequences of one batch of up to
        ``n_batch`` tokens; a decoder evaluates each text through the KV cache, so the evaluated
        tokens are forgotten (``n_tokens`` becomes 0)."""
        from lamina.embeddings import normalized

        pooling = self.pooling_type()
        self._require_model()
        texts = input if isinstance(input, list) else [input]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed takes a string or a list of strings")
        token_lists = [self._embedding_tokens(self.tokenize(text.encode("utf-8")), truncate) for text in texts]
        vectors = [(normalized(v) if normalize else v).tolist() for v in self.embed_tokens(token_lists, pooling)]
        out = vectors if isinstance(input, list) else vectors[0]
        total = sum(len(t) for t in token_lists)
        return (out, total) if return_count else out

    def _embedding_tokens(self, tokens: list[int], truncate: bool) -> list[int]:
        if truncate:
            tokens = tokens[: self.n_batch]
        elif len(tokens) > self.n_batch:
            raise ValueError(f"the text has {len(tokens)} tokens, more than n_batch ({self.n_batch}); "
                             "pass truncate=True or a larger n_batch")
        if not tokens:
            raise ValueError("cannot embed an empty text (it has no tokens)")
        return tokens

    def embed_tokens(self, token_lists: list[list[int]], pooling: int | None = None) -> list[np.ndarray]:
        """Each token list's pooled vector (see :meth:`embed`), with the Llama's pooling by default."""
        from lamina.embeddings import encode, encoder_batches, pool

        pooling = self.pooling_type() if pooling is None else pooling
        self._require_model()
        self.n_tokens = 0
        if getattr(self._model, "causal", True):
            out = []
            for tokens in token_lists:
                self._ctx.truncate(0, 0)
                hidden = self._ctx.decode(Batch.for_sequence(tokens, 0, 0, logits_all=True), embeddings=True)
                self._ctx.truncate(0, 0)
                out.append(pool(hidden, pooling, self._model))
            return out
        out = []
        for batch, sequences in encoder_batches(token_lists, self.n_batch, self._model.n_vocab):
            out += encode(self._model, batch, sequences, pooling)
        return out

    def create_embedding(self, input: str | list[str], model: str | None = None) -> dict:
        """OpenAI's embeddings response: ``{"object": "list", "data": [...], "model", "usage"}``. With
        pooling NONE each ``embedding`` is the list of the text's token vectors, as llama-cpp-python
        gives it."""
        texts = input if isinstance(input, list) else [input]
        vectors, total = self.embed(texts, return_count=True)
        return {"object": "list",
                "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
                "model": model if model is not None else self.model_path,
                "usage": {"prompt_tokens": total, "total_tokens": total}}

    # -- saved state and prompt caches ---------------------------------------------------------------
    def save_state(self):
        """A ``LlamaState``: the evaluated tokens, the logits after them, their KV cache and the seed."""
        from lamina.llama_cache import LlamaState, pack_kv

        self._require_model()
        n = self.n_tokens
        data = pack_kv(self._state_id(), *self._ctx.kv.export_seq(0, n))
        last = (self._last_logits.copy() if n and self._last_logits is not None
                else np.zeros(self.n_vocab(), np.float32))[None, :]
        return LlamaState(input_ids=self.input_ids[:n].copy(), scores=last, n_tokens=n, llama_state=data,
                          llama_state_size=len(data), seed=self._seed)

    def load_state(self, state) -> None:
        """Put back a ``save_state()``: what is generated next is what would have been."""
        from lamina.llama_cache import unpack_kv

        self._require_model()
        n = int(state.n_tokens)
        keys, values = unpack_kv(state.llama_state, self._state_id(), len(self._ctx.kv.k))
        if keys and keys[0].shape[1] != n:
            raise ValueError(f"the state says {n} tokens but holds keys for {keys[0].shape[1]}")
        self._ctx.kv.import_seq(0, keys, values)
        self.input_ids[:n] = state.input_ids[:n]
        self.n_tokens = n
        last = np.asarray(state.scores, np.float32)[-1]
        if self._logits_all:
            self.scores[n - 1] = last
            self._last_logits = self.scores[n - 1]
        else:
            self._last_logits = self._last_row_buffer()
            self._last_logits[:] = last
        self._seed = int(state.seed)

    def _state_id(self) -> str:
        return f"{os.path.basename(self.model_path)}:{self.n_vocab()}:{len(self._ctx.kv.k)}"

    def set_cache(self, cache) -> None:
        """Keep completions' states in ``cache`` (``LlamaRAMCache``/``LlamaDiskCache``; None: none)."""
        self.cache = cache

    # -- sampling and generation ------------------------------------------------------------------
    def set_seed(self, seed: int) -> None:
        self._seed = seed

    def _sampler(self, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, temp=0.80, repeat_penalty=1.0,
                 frequency_penalty=0.0, presence_penalty=0.0, mirostat_mode=0, mirostat_tau=5.0,
                 mirostat_eta=0.1, logit_bias=None, grammar=None, **_ignored):
        from lamina.sampling import SamplerChain, SamplingParams

        # llama-cpp-python's chain: penalties, then top-k, typical, top-p, min-p, temperature and the draw
        params = SamplingParams.from_options(
            seed=self._seed, temp=temp, top_k=top_k, top_p=top_p, min_p=min_p, typ_p=typical_p,
            penalty_last_n=self.last_n_tokens_size, penalty_repeat=repeat_penalty, penalty_freq=frequency_penalty,
            penalty_present=presence_penalty, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
            mirostat_eta=mirostat_eta, logit_bias=dict(logit_bias or {}),
            samplers=["penalties", "top_k", "typ_p", "top_p", "min_p", "temperature"],
        )
        matcher = None
        if grammar is not None:
            from lamina.grammar import as_grammar

            matcher = as_grammar(grammar).matcher(self.tokenizer_, self.n_vocab())
        # llama-cpp-python's grammar sampler sits after the penalties: the mask comes before the draw
        return SamplerChain(params, self.n_vocab(), grammar=matcher, grammar_first=True)

    def sample(self, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, typical_p: float = 1.0,
               temp: float = 0.80, repeat_penalty: float = 1.0, frequency_penalty: float = 0.0,
               presence_penalty: float = 0.0, mirostat_mode: int = 0, mirostat_eta: float = 0.1,
               mirostat_tau: float = 5.0, logits_processor=None, grammar=None, **kwargs) -> int:
        """Sample one token from the logits after the last evaluated token.

        As in llama-cpp-python, ``grammar`` is applied from its start at each call (the grammar's
        state lives in a generation: use ``generate``/``create_completion`` to follow it)."""
        chain = self._sampler(top_k, top_p, min_p, typical_p, temp, repeat_penalty, frequency_penalty,
                              presence_penalty, mirostat_mode, mirostat_tau, mirostat_eta, grammar=grammar)
        return self._sample_with(chain, logits_processor)

    def _sample_with(self, chain, logits_processor=None) -> int:
        t0 = time.perf_counter()
        logits_processor = as_logits_processor(logits_processor)
        logits = self.logits()
        if logits_processor is not None:
            logits = np.asarray(logits_processor(self._input_ids, logits.copy()), dtype=np.float32)
        token = int(chain.sample(logits))
        chain.accept(token)
        self.perf.add_sample(time.perf_counter() - t0)
        return token

    def generate(self, tokens: Sequence[int], top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 typical_p: float = 1.0, temp: float = 0.80, repeat_penalty: float = 1.0, reset: bool = True,
                 frequency_penalty: float = 0.0, presence_penalty: float = 0.0, mirostat_mode: int = 0,
                 mirostat_tau: float = 5.0, mirostat_eta: float = 0.1, logits_processor=None,
                 stopping_criteria=None, logit_bias=None, grammar=None, **kwargs) -> Iterator[int]:
        """Yield sampled tokens after ``tokens`` forever (the caller stops).

        Tokens already evaluated as a prefix of ``tokens`` are reused from the KV cache.
        """
        self._require_model()
        logits_processor = as_logits_processor(logits_processor)
        stopping_criteria = as_stopping_criteria(stopping_criteria)
        chain = self._sampler(top_k, top_p, min_p, typical_p, temp, repeat_penalty, frequency_penalty,
                              presence_penalty, mirostat_mode, mirostat_tau, mirostat_eta, logit_bias, grammar)
        tokens = [int(t) for t in tokens]
        if reset:
            prefix = 0
            for a, b in zip(self._input_ids, tokens):
                if a != b:
                    break
                prefix += 1
            # keep at least one token to evaluate so there are fresh logits to sample from
            self.n_tokens = max(0, min(prefix, len(tokens) - 1))
            tokens = tokens[self.n_tokens:]
        # as in llama-cpp-python, the penalties see the generated tokens, not the prompt
        while True:
            self.eval(tokens)
            token = self._sample_with(chain, logits_processor)
            if stopping_criteria is not None and stopping_criteria(self._input_ids, self.logits()):
                return
            extra = yield token
            tokens = [token] + (list(extra) if extra else [])

    # -- OpenAI-shaped completions ---------------------------------------------------------------
    def create_completion(self, prompt: str | list[int], suffix: str | None = None, max_tokens: int | None = 16,
                          temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05,
                          typical_p: float = 1.0, logprobs: int | None = None, echo: bool = False,
                          stop: str | list[str] | None = None, frequency_penalty: float = 0.0,
                          presence_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40,
                          stream: bool = False, seed: int | None = None, mirostat_mode: int = 0,
                          mirostat_tau: float = 5.0, mirostat_eta: float = 0.1, model: str | None = None,
                          stopping_criteria=None, logits_processor=None, logit_bias=None, grammar=None, **kwargs):
        """A text completion as an OpenAI ``text_completion`` dict, or an iterator of chunks with ``stream=True``.

        ``grammar`` (a :class:`lamina.LlamaGrammar`, or GBNF text) constrains every generated token."""
        from lamina.completion import run_completion
        from lamina.grammar import as_grammar

        chunks = run_completion(
            self, prompt, suffix=suffix, max_tokens=max_tokens, logprobs=logprobs, echo=echo, stop=stop,
            stream=stream, seed=seed, model=model, stopping_criteria=stopping_criteria,
            sampling=dict(temp=temperature, top_p=top_p, min_p=min_p, typical_p=typical_p, top_k=top_k,
                          frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                          repeat_penalty=repeat_penalty, mirostat_mode=mirostat_mode, mirostat_tau=mirostat_tau,
                          mirostat_eta=mirostat_eta, logits_processor=logits_processor, logit_bias=logit_bias,
                          grammar=as_grammar(grammar) if grammar is not None else None),
        )
        return chunks if stream else next(chunks)

    def __call__(self, prompt: str | list[int], **kwargs):
        return self.create_completion(prompt, **kwargs)

    def create_chat_completion(self, messages: list[dict], **kwargs):
        """An OpenAI ``chat.completion`` dict (or a stream of ``chat.completion.chunk`` dicts with ``stream=True``),
        the prompt rendered with the model's chat template (or ``chat_format`` / ``chat_template``)."""
        from lamina.chat.completion import create_chat_completion

        return create_chat_completion(self, messages, **kwargs)

    def _next_seed(self, seed: int | None) -> None:
        # llama-cpp-python: an explicit seed is used as is; otherwise one is drawn from the Llama's seed.
        self.set_seed(seed if seed is not None else random.Random(self._seed).randint(0, 2**32))

    def close(self) -> None:
        self._ctx = None
        self._model = None

    def __enter__(self) -> "Llama":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _meta_str(value) -> str:
    """llama.cpp's gguf_kv_to_str for a scalar: std::to_string of numbers ("%f" for floats)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        return "%f" % float(value)
    return str(value)
