"""Saved state and prompt caches (llama-cpp-python's save_state/load_state, LlamaRAMCache, LlamaDiskCache)."""

from __future__ import annotations

import numpy as np
import pytest

from lamina import Llama, LlamaDiskCache, LlamaRAMCache

PROMPT = "The history of the printing press begins in Germany, where"


def sampled(llm, n: int, seed: int) -> list[int]:
    """n tokens drawn at temperature 0.8 after what the Llama has evaluated."""
    llm.set_seed(seed)
    tokens = llm.generate(list(llm._input_ids), temp=0.8)
    return [next(tokens) for _ in range(n)]


def decode_sizes(llm) -> list[int]:
    """Spy on the Llama's decode calls: the number of tokens each evaluates."""
    sizes = []
    decode = llm._ctx.decode

    def spy(batch):
        sizes.append(len(batch))
        return decode(batch)

    llm._ctx.decode = spy
    return sizes


def test_load_state_reproduces_what_follows(model_paths):
    llm = Llama(str(model_paths["qwen2"]), n_ctx=256, verbose=False)
    llm.eval(llm.tokenize(PROMPT.encode()))
    state = llm.save_state()
    assert state.n_tokens == len(state.input_ids) and state.llama_state_size == len(state.llama_state)
    first = sampled(llm, 12, seed=7)
    llm.reset()
    llm.eval(llm.tokenize(b"Something else entirely, to overwrite the cache"))
    llm.load_state(state)
    assert llm.n_tokens == state.n_tokens and np.array_equal(llm.logits(), state.scores[-1])
    assert sampled(llm, 12, seed=7) == first
    other = Llama(str(model_paths["smollm2"]), n_ctx=256, verbose=False)
    with pytest.raises(ValueError, match="another model"):
        other.load_state(state)


def test_ram_cache_reuses_prompts_and_forgets_the_oldest(model_paths):
    plain = Llama(str(model_paths["smollm2"]), n_ctx=256, verbose=False)
    expected = plain(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"]
    llm = Llama(str(model_paths["smollm2"]), n_ctx=256, verbose=False)
    cache = LlamaRAMCache(capacity_bytes=1 << 30)
    llm.set_cache(cache)
    assert llm(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"] == expected
    llm(" a different text", max_tokens=4, temperature=0)  # the KV cache no longer holds PROMPT
    sizes = decode_sizes(llm)
    assert llm(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"] == expected
    assert sizes[0] == 1  # the prompt came from the cache: only its last token was evaluated again
    assert len(cache.cache_state) == 2 and cache.cache_size > 0
    small = LlamaRAMCache(capacity_bytes=cache.cache_size // 2)
    for key, state in cache.cache_state.items():
        small[key] = state
    assert len(small.cache_state) == 1  # over capacity: the least recently used went


def test_disk_cache_survives_a_restart(model_paths, tmp_path):
    first = Llama(str(model_paths["smollm2"]), n_ctx=256, verbose=False)
    first.set_cache(LlamaDiskCache(str(tmp_path / "cache")))
    expected = first(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"]
    first.close()
    (tmp_path / "cache" / "damaged.npz").write_bytes(b"not an archive")
    again = Llama(str(model_paths["smollm2"]), n_ctx=256, verbose=False)
    again.set_cache(LlamaDiskCache(str(tmp_path / "cache")))
    sizes = decode_sizes(again)
    assert again(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"] == expected
    assert sizes[0] == 1
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and "damaged.npz" in files  # one state, written atomically: no temporary file left
