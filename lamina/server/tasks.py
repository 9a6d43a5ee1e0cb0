"""What passes between the HTTP side and the engine thread: a validated request, and its events.

A route turns a request into a :class:`CompletionTask` (prompt tokens, sampling settings,
limits) and hands it to the engine, which answers through the task's :class:`TaskHandle`:
a :class:`TokenEvent` per sampled token, then one :class:`FinalEvent` or :class:`ErrorEvent`.
The handle is safe to fill from the engine thread and to read from an asyncio loop (or from
a plain thread, when no loop is given).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from lamina.sampling import SamplingParams

from .errors import ServerError


@dataclass
class CompletionTask:
    """One completion, as the engine runs it."""

    prompt_tokens: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    n_predict: int = -1                 # -1: until an end-of-generation token or the context is full
    stops: tuple[str, ...] = ()
    n_probs: int = 0                    # top candidates reported with each token
    post_sampling_probs: bool = False
    cache_prompt: bool = True           # reuse the longest cached prefix of a slot
    id_slot: int = -1                   # -1: the engine picks
    n_keep: int = 0                     # prompt tokens kept by a context shift (-1: all)
    return_tokens: bool = False
    t_max_predict_ms: float = 0.0       # 0: no time limit on generation
    index: int = 0                      # the choice index, for requests of several completions
    grammar: Any = None                 # a lamina.grammar.LlamaGrammar every generated token must fit


@dataclass
class TokenProbability:
    token: int
    logprob: float


@dataclass
class TokenEvent:
    """A sampled token and the text it made safe to show (may be empty: held back)."""

    token: int
    text: bytes
    probs: list[TokenProbability] | None = None  # the sampled token first, then the top candidates
    logprob: float | None = None
    id_slot: int = -1


@dataclass
class Timings:
    """llama-server's ``timings``: prompt processing and generation times of one completion."""

    cache_n: int = 0
    prompt_n: int = 0
    prompt_ms: float = 0.0
    predicted_n: int = 0
    predicted_ms: float = 0.0

    def as_dict(self) -> dict:
        per = lambda ms, n: ms / n if n else 0.0  # noqa: E731
        rate = lambda ms, n: 1e3 * n / ms if ms > 0 else 0.0  # noqa: E731
        return {
            "cache_n": self.cache_n,
            "prompt_n": self.prompt_n,
            "prompt_ms": self.prompt_ms,
            "prompt_per_token_ms": per(self.prompt_ms, self.prompt_n),
            "prompt_per_second": rate(self.prompt_ms, self.prompt_n),
            "predicted_n": self.predicted_n,
            "predicted_ms": self.predicted_ms,
            "predicted_per_token_ms": per(self.predicted_ms, self.predicted_n),
            "predicted_per_second": rate(self.predicted_ms, self.predicted_n),
        }


@dataclass
class CompletionResult:
    """A finished completion."""

    text: bytes
    tokens: list[int]
    stop_type: str                      # "eos", "word" or "limit"
    stopping_word: str
    n_prompt: int
    n_cached: int                       # prompt tokens reused from the slot's cache
    n_ctx_tokens: int                   # tokens in the slot's cache at the end
    truncated: bool
    timings: Timings
    id_slot: int
    index: int = 0

    @property
    def finish_reason(self) -> str:
        return "stop" if self.stop_type in ("eos", "word") else "length"


@dataclass
class FinalEvent:
    result: CompletionResult


@dataclass
class ErrorEvent:
    error: ServerError


class TaskHandle:
    """The engine's answer to one task, read as events; ``cancel`` frees its slot at the next step.

    Events go into ``events`` as ``(task.index, event)``; the several tasks of one request
    (``n`` choices, several prompts) share one queue. It is an ``asyncio.Queue`` filled
    through ``loop`` when one is given (the HTTP side), else a ``queue.Queue``.
    """

    def __init__(self, task: CompletionTask, loop: asyncio.AbstractEventLoop | None = None, events=None):
        self.task = task
        self._loop = loop
        if events is None:
            events = asyncio.Queue() if loop is not None else queue.Queue()
        self.events = events
        self._cancelled = threading.Event()
        self.done = False
        self.id_task = -1
        self.on_cancel = None  # set by the engine: wakes its thread

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        if not self._cancelled.is_set():
            self._cancelled.set()
            if self.on_cancel is not None:
                self.on_cancel()

    def push(self, event) -> None:
        """From the engine thread."""
        if isinstance(event, (FinalEvent, ErrorEvent)):
            self.done = True
        item = (self.task.index, event)
        if self._loop is None:
            self.events.put(item)
        else:
            try:
                self._loop.call_soon_threadsafe(self.events.put_nowait, item)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass
