"""Text completions in OpenAI's ``text_completion`` shape (what ``Llama.create_completion`` returns).

Streaming never cuts a multi-byte UTF-8 character in two and never shows text that
might turn out to be the start of a stop sequence.
"""

from __future__ import annotations

import sys
import time
import uuid
from typing import Iterator

import numpy as np

from lamina.generation import STOP_EOS, STOP_WORD, TextGeneration


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))).astype(np.float32)


def completion_tokens_for(llm, prompt: str | list[int]) -> list[int]:
    """Prompt tokens the way llama-cpp-python makes them: BOS if the model adds one, special tokens parsed."""
    if isinstance(prompt, list):
        return [int(t) for t in prompt]
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string or a list of token ids, not {type(prompt).__name__}")
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    if not tokens:
        bos = llm.token_bos()
        if bos is None or bos < 0:
            raise ValueError("the prompt is empty and this model has no BOS token to start from")
        tokens = [bos]
    return tokens


def run_completion(llm, prompt, *, suffix=None, max_tokens=16, logprobs=None, echo=False, stop=None,
                   stream=False, seed=None, model=None, stopping_criteria=None, sampling=None) -> Iterator[dict]:
    """Generate a completion; yields chunks when ``stream`` is set, else one final response dict."""
    completion_id = f"cmpl-{uuid.uuid4()}"
    created = int(time.time())
    model_name = model if model is not None else llm.model_path
    from lamina.fim import fim_prompt, has_fim

    # with a suffix, a model that has FIM tokens fills in the middle (else the suffix is appended)
    infill = suffix is not None and isinstance(prompt, str) and has_fim(llm.tokenizer_)
    prompt_tokens = fim_prompt(llm.tokenizer_, prompt, suffix) if infill else completion_tokens_for(llm, prompt)
    prompt_text = prompt if isinstance(prompt, str) else llm.detokenize(prompt_tokens).decode("utf-8", "ignore")
    n_ctx = llm.n_ctx()
    if len(prompt_tokens) >= n_ctx:
        raise ValueError(f"Requested tokens ({len(prompt_tokens)}) exceed context window of {n_ctx}")
    if max_tokens is None or max_tokens <= 0:
        max_tokens = n_ctx - len(prompt_tokens)
    max_tokens = min(int(max_tokens), n_ctx - len(prompt_tokens))
    if logprobs is not None and not llm._logits_all:
        raise ValueError("logprobs is not supported for models created with logits_all=False")
    stops = [s.encode("utf-8") for s in ([stop] if isinstance(stop, str) else (stop or []))]
    llm._next_seed(seed)
    if llm.verbose:
        llm.perf.reset()

    def chunk(text: str, finish_reason, lp=None) -> dict:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": model_name,
                "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish_reason}]}

    piece = lambda t: llm.tokenizer_.token_to_piece(t, special=False)  # noqa: E731
    gen = TextGeneration(llm.tokenizer_, max_tokens=max_tokens, stops=[s.decode() for s in stops])
    cache = getattr(llm, "cache", None)
    if cache is not None:
        _start_from_cache(llm, cache, prompt_tokens)
    emitted = 0  # characters of text shown in logprobs chunks
    if not gen.finished:
        for token in llm.generate(prompt_tokens, stopping_criteria=stopping_criteria, **(sampling or {})):
            visible = gen.add(token)
            if stream and logprobs is not None and gen.stop_type not in (STOP_EOS, STOP_WORD):
                start = len(prompt_tokens) + len(gen.tokens) - 1
                lp = _logprobs_for(llm, [token], [start - 1], logprobs, len(prompt_text) + emitted)
                gen.release_all()
                emitted = len(gen.text)
                yield chunk(piece(token).decode("utf-8", "ignore"), None, lp)
            elif stream and visible:
                yield chunk(visible.decode("utf-8", "ignore"), None)
            if gen.finished:
                break
    # the loop also ends when a stopping criterion ends the generation: llama-cpp-python's "stop"
    finish_reason = gen.finish_reason if gen.finished else "stop"
    if cache is not None:
        cache[prompt_tokens + gen.tokens] = llm.save_state()
    completion, text = gen.tokens, gen.text
    if llm.verbose:
        print(llm.perf.report(), file=sys.stderr)
    if stream:
        rest = gen.release_all()
        if rest:
            yield chunk(rest.decode("utf-8", "ignore"), None)
        yield chunk("", finish_reason)
        return
    text_str = text.decode("utf-8", "ignore")
    if echo:
        text_str = prompt_text + text_str
    if suffix is not None and not infill:
        text_str += suffix
    lp = None
    if logprobs is not None:
        if echo:
            skip_bos = 1 if prompt_tokens and prompt_tokens[0] == llm.token_bos() else 0
            shown = prompt_tokens[skip_bos:] + completion
            rows = list(range(skip_bos - 1, skip_bos - 1 + len(shown)))
            lp = _logprobs_for(llm, shown, rows, logprobs, 0)
            lp["token_logprobs"][0] = None
            lp["top_logprobs"][0] = None
        else:
            rows = list(range(len(prompt_tokens) - 1, len(prompt_tokens) - 1 + len(completion)))
            lp = _logprobs_for(llm, completion, rows, logprobs, len(prompt_text))
    response = chunk(text_str, finish_reason, lp)
    response["usage"] = {"prompt_tokens": len(prompt_tokens), "completion_tokens": len(completion),
                         "total_tokens": len(prompt_tokens) + len(completion)}
    yield response


def _start_from_cache(llm, cache, prompt_tokens: list[int]) -> None:
    """Load the cached state whose tokens start the prompt, if it reuses more than the KV cache does now."""
    from lamina.llama_cache import longest_prefix

    try:
        state = cache[prompt_tokens]
    except KeyError:
        return
    if longest_prefix(state.input_ids.tolist(), prompt_tokens) > longest_prefix(llm._input_ids.tolist(), prompt_tokens):
        llm.load_state(state)


def _logprobs_for(llm, tokens: list[int], rows: list[int], n_top: int, text_offset: int) -> dict:
    """OpenAI ``logprobs`` for ``tokens``, each predicted by the logits in ``llm.scores[row]``."""
    out = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
    offset = text_offset
    for token, row in zip(tokens, rows):
        token_str = llm.tokenizer_.token_to_piece(token).decode("utf-8", "ignore")
        if row < 0:
            lp_token, top = None, None
        else:
            lps = log_softmax(llm.scores[row])
            best = np.argsort(-lps)[: max(0, n_top)]
            top = {llm.tokenizer_.token_to_piece(int(i)).decode("utf-8", "ignore"): float(lps[i]) for i in best}
            lp_token = float(lps[token])
            top[token_str] = lp_token
        out["tokens"].append(token_str)
        out["text_offset"].append(offset)
        out["token_logprobs"].append(lp_token)
        out["top_logprobs"].append(top)
        offset += len(token_str)
    return out
