"""A slot: one of the server's parallel sequences, with its KV-cache stream and its current task.

A slot remembers the tokens its cache holds after a task ends, so the next task whose
prompt starts the same way reuses them (``cache_prompt``). It also keeps the logits that
followed its last prompt: a prompt sent again in full (regenerate, a retried request) then
samples from those exact logits instead of evaluating its last token a second time, which
would give other bits (one token evaluated alone is not summed as it was inside the prompt).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from lamina.generation import STOP_LIMIT, TextGeneration

from .tasks import CompletionResult, FinalEvent, TaskHandle, Timings, TokenEvent, TokenProbability

IDLE, PROMPT, GENERATING = "idle", "prompt", "generating"


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass
class PromptLogits:
    """The logits after a slot's last prompt, valid while its cache starts with that prompt."""

    tokens: list[int]
    logits: np.ndarray


class Slot:
    def __init__(self, slot_id: int, n_ctx: int):
        self.id = slot_id
        self.n_ctx = n_ctx
        self.cache_tokens: list[int] = []     # what the KV stream holds, position by position
        self.prompt_logits: PromptLogits | None = None
        self.state = IDLE
        self.handle: TaskHandle | None = None
        self.t_last_used = 0.0
        self.n_decoded_total = 0

    # -- taking a task ------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return self.state == IDLE

    def similarity(self, prompt: list[int]) -> float:
        """How much of ``prompt`` this slot's cache already holds (0..1)."""
        if not prompt or not self.cache_tokens:
            return 0.0
        return common_prefix(self.cache_tokens, prompt) / len(prompt)

    def same_conversation(self, prompt: list[int]) -> bool:
        """Whether the cache holds a prefix of ``prompt`` (its next turn) or ``prompt`` whole (sent again)."""
        n = common_prefix(self.cache_tokens, prompt)
        return n > 0 and n in (len(self.cache_tokens), len(prompt))

    def start(self, handle: TaskHandle, chain, tokenizer) -> None:
        """Take ``handle``'s task: keep the reusable prefix of the cache, set up sampling."""
        task = handle.task
        prompt = task.prompt_tokens
        self.handle = handle
        self.task = task
        self.chain = chain
        self.generation = TextGeneration(tokenizer, max_tokens=task.n_predict, stops=task.stops,
                                         ignore_eos=task.params.ignore_eos)
        n_past = common_prefix(self.cache_tokens, prompt) if task.cache_prompt else 0
        saved = self.prompt_logits
        self.ready_logits = None
        if n_past == len(prompt):
            if saved is not None and saved.tokens == prompt:
                self.ready_logits = saved.logits
            else:
                n_past -= 1  # evaluate the last prompt token again, for its logits
        if saved is not None and n_past < len(saved.tokens):
            self.prompt_logits = None  # its prompt is about to be overwritten
        self.n_past = n_past
        self.n_cached = n_past
        self.cache_tokens = self.cache_tokens[:n_past]
        self.pending_token: int | None = None
        self.truncated = False
        self.state = PROMPT
        self.t_start = time.perf_counter()
        self.t_first = None
        self.n_prompt_evaluated = 0

    @property
    def prompt_left(self) -> int:
        return len(self.task.prompt_tokens) - self.n_past

    # -- results --------------------------------------------------------------------------------
    def prompt_done(self, logits: np.ndarray) -> None:
        """The prompt is in the cache and ``logits`` follow it: remember them, sample the first token."""
        self.prompt_logits = PromptLogits(list(self.task.prompt_tokens), logits.copy())
        self.chain.accept_many(self.task.prompt_tokens)  # as llama-server: penalties see the prompt
        self.t_first = time.perf_counter()
        self.state = GENERATING
        if self.generation.finished:  # n_predict 0: the prompt is cached, nothing is generated
            self.finish()
        else:
            self.sample(logits)

    def sample(self, logits: np.ndarray) -> None:
        token = int(self.chain.sample(logits))
        self.chain.accept(token)
        probs = self._probabilities(logits, token) if self.task.n_probs > 0 else None
        text = self.generation.add(token)
        self.handle.push(TokenEvent(token, text, probs, id_slot=self.id))
        deadline = self.task.t_max_predict_ms > 0 and (time.perf_counter() - self.t_first) * 1e3 >= \
            self.task.t_max_predict_ms
        if self.generation.finished:
            self.finish()
        elif deadline:
            self.generation.stop_type = STOP_LIMIT
            self.finish()
        else:
            self.pending_token = token

    def _probabilities(self, logits: np.ndarray, token: int) -> list[TokenProbability]:
        """The sampled token's log-probability, then the ``n_probs`` most likely tokens'."""
        if self.task.post_sampling_probs:
            ids, p = self.chain.candidate_probabilities()
            lp = dict(zip(ids.tolist(), np.log(np.maximum(p, 1e-45)).tolist()))
            top = [TokenProbability(t, lp[t]) for t in ids[: self.task.n_probs].tolist()]
            return [TokenProbability(token, lp.get(token, float("-inf")))] + top
        x = logits.astype(np.float64)
        m = x.max()
        logz = m + np.log(np.exp(x - m).sum())
        n = min(self.task.n_probs, len(x))
        best = np.argpartition(-x, n - 1)[:n]
        best = best[np.argsort(-x[best], kind="stable")]
        return [TokenProbability(token, float(x[token] - logz))] + [TokenProbability(int(t), float(x[t] - logz))
                                                                   for t in best]

    def evaluated(self, tokens: list[int]) -> None:
        """``tokens`` are now in the cache after what it held."""
        self.cache_tokens.extend(tokens)
        self.n_past += len(tokens)

    def finish(self) -> None:
        gen = self.generation
        gen_tail = gen.release_all()
        if gen_tail:
            self.handle.push(TokenEvent(-1, gen_tail, id_slot=self.id))
        now = time.perf_counter()
        t_first = self.t_first or now
        timings = Timings(cache_n=self.n_cached, prompt_n=len(self.task.prompt_tokens) - self.n_cached,
                          prompt_ms=(t_first - self.t_start) * 1e3, predicted_n=len(gen.tokens),
                          predicted_ms=(now - t_first) * 1e3)
        self.handle.push(FinalEvent(CompletionResult(
            # as llama-server, the end-of-generation token counts among the generated ones
            text=gen.text, tokens=list(gen.tokens) + ([gen.end_token] if gen.end_token is not None else []),
            stop_type=gen.stop_type, stopping_word=gen.stopping_word,
            n_prompt=len(self.task.prompt_tokens), n_cached=self.n_cached, n_ctx_tokens=self.n_past,
            truncated=self.truncated, timings=timings, id_slot=self.id, index=self.task.index)))
        self.n_decoded_total += len(gen.tokens)
        self.release()

    def release(self) -> None:
        """Back to idle; the cache keeps what was evaluated, for the next prompt that starts the same way."""
        self.state = IDLE
        self.handle = None
        self.pending_token = None
        self.t_last_used = time.perf_counter()

    def forget(self) -> None:
        """Drop the cache's contents (slot erase, restore, or an engine error)."""
        self.cache_tokens = []
        self.prompt_logits = None
