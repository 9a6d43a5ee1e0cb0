"""Timing counters, printed in llama.cpp's ``llama_perf_*_print`` format."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class PerfCounters:
    t_load_ms: float = 0.0
    t_prompt_ms: float = 0.0  # batches of more than one token
    n_prompt: int = 0
    t_eval_ms: float = 0.0  # single-token steps (generation)
    n_eval: int = 0
    t_sample_ms: float = 0.0
    n_sample: int = 0
    t_start: float = 0.0

    def reset(self) -> None:
        load = self.t_load_ms
        self.__init__(t_load_ms=load, t_start=time.perf_counter())

    def add_decode(self, n_tokens: int, seconds: float) -> None:
        if n_tokens > 1:
            self.t_prompt_ms += seconds * 1e3
            self.n_prompt += n_tokens
        else:
            self.t_eval_ms += seconds * 1e3
            self.n_eval += n_tokens

    def add_sample(self, seconds: float) -> None:
        self.t_sample_ms += seconds * 1e3
        self.n_sample += 1

    def report(self) -> str:
        """The lines llama.cpp prints to standard error after a run."""

        def rate(ms: float, n: int) -> str:
            per = ms / n if n else float("nan")
            tps = 1e3 * n / ms if ms > 0 else float("nan")
            return f"({per:8.2f} ms per token, {tps:8.2f} tokens per second)"

        total = (time.perf_counter() - self.t_start) * 1e3 if self.t_start else self.t_prompt_ms + self.t_eval_ms
        return "\n".join([
            f"llama_perf_sampler_print:    sampling time = {self.t_sample_ms:10.2f} ms / {self.n_sample:5d} runs   "
            + rate(self.t_sample_ms, self.n_sample),
            f"llama_perf_context_print:        load time = {self.t_load_ms:10.2f} ms",
            f"llama_perf_context_print: prompt eval time = {self.t_prompt_ms:10.2f} ms / {self.n_prompt:5d} tokens "
            + rate(self.t_prompt_ms, self.n_prompt),
            f"llama_perf_context_print:        eval time = {self.t_eval_ms:10.2f} ms / {self.n_eval:5d} runs   "
            + rate(self.t_eval_ms, self.n_eval),
            f"llama_perf_context_print:       total time = {total:10.2f} ms / {self.n_prompt + self.n_eval:5d} tokens",
        ])
