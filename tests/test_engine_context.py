"""The engine's context: batching, several sequences per batch, KV cache bounds and errors."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.engine.batch import Batch
from lamina.engine.context import Context, InvalidTokenError
from lamina.engine.kv_cache import ContextFullError, KVCache, KVCacheMemoryError, LayerKVShape
from lamina.gguf import read
from lamina.models import load_model

# A tiny float16 llama (shared/refdata/tiny) keeps these checks tight: with 8-bit activation
# rounding, a quantized model's logits move by up to ~1 between batch shapes (llama.cpp's too),
# because a last-bit difference in a sum can flip a rounding decision.
SAME = dict(atol=2e-3, rtol=0)

PROMPT_A = [504, 3575, 282, 4649, 314, 7042, 30, 198]
PROMPT_B = [1, 9690, 198, 2683, 359, 253, 5356, 5646]


@pytest.fixture(scope="module")
def tiny_llama(refdata):
    """The tiny llama: SmolLM2's vocabulary and architecture, 2 layers of random float16 weights."""
    return load_model(read(refdata / "tiny" / "tiny-llama3scaled.f16.gguf"))


def test_micro_batches_give_the_same_logits_as_one_batch(tiny_llama):
    whole = Context(tiny_llama, 64, n_batch=64, n_ubatch=64).decode(Batch.for_sequence(PROMPT_A, 0, logits_all=True))
    pieces = Context(tiny_llama, 64, n_batch=64, n_ubatch=3).decode(Batch.for_sequence(PROMPT_A, 0, logits_all=True))
    np.testing.assert_allclose(pieces, whole, **SAME)


def test_incremental_decoding_matches_the_batch(tiny_llama):
    ctx = Context(tiny_llama, 64)
    last = None
    for pos, tok in enumerate(PROMPT_A):
        last = ctx.decode(Batch.for_sequence([tok], pos))[-1]
    whole = Context(tiny_llama, 64).decode(Batch.for_sequence(PROMPT_A, 0))[-1]
    np.testing.assert_allclose(last, whole, **SAME)
    assert ctx.seq_len(0) == len(PROMPT_A)


def test_two_sequences_in_one_batch_are_independent(tiny_llama):
    alone_a = Context(tiny_llama, 64).decode(Batch.for_sequence(PROMPT_A, 0))[-1]
    alone_b = Context(tiny_llama, 64).decode(Batch.for_sequence(PROMPT_B, 0))[-1]
    ctx = Context(tiny_llama, 128, n_seq_max=2)
    a, b = Batch.for_sequence(PROMPT_A, 0, 0), Batch.for_sequence(PROMPT_B, 0, 1)
    # interleave the two sequences' tokens in one batch
    order = np.argsort(np.concatenate([np.arange(len(a)) * 2, np.arange(len(b)) * 2 + 1]), kind="stable")
    mixed = Batch(*(np.concatenate([getattr(a, f), getattr(b, f)])[order]
                    for f in ("tokens", "positions", "seq_ids", "output")))
    logits = ctx.decode(mixed)
    assert logits.shape == (2, tiny_llama.n_vocab)
    out_seq = mixed.seq_ids[mixed.output]
    np.testing.assert_allclose(logits[out_seq == 0][0], alone_a, **SAME)
    np.testing.assert_allclose(logits[out_seq == 1][0], alone_b, **SAME)
    # continuing one sequence does not disturb the other
    ctx.decode(Batch.for_sequence([42], len(PROMPT_A), 0))
    assert ctx.seq_len(0) == len(PROMPT_A) + 1 and ctx.seq_len(1) == len(PROMPT_B)


def test_exceeding_the_context_is_a_clear_error_and_changes_nothing(tiny_llama):
    ctx = Context(tiny_llama, 8)
    ctx.decode(Batch.for_sequence(PROMPT_A[:6], 0))
    with pytest.raises(ContextFullError, match="context holds 8"):
        ctx.decode(Batch.for_sequence(PROMPT_A[:3], 6))
    assert ctx.seq_len(0) == 6


@pytest.mark.parametrize("bad", [-1, 49152, 2**31 - 1])
def test_token_ids_outside_the_vocabulary_are_refused(tiny_llama, bad):
    ctx = Context(tiny_llama, 16)
    with pytest.raises(InvalidTokenError, match=str(bad)):
        ctx.decode(Batch(np.array([1, bad], dtype=np.int64), np.arange(2, dtype=np.int32),
                         np.zeros(2, dtype=np.int32), np.array([False, True])))
    assert ctx.seq_len(0) == 0


def test_positions_must_continue_the_sequence(tiny_llama):
    ctx = Context(tiny_llama, 16)
    with pytest.raises(ValueError, match="consecutively"):
        ctx.decode(Batch.for_sequence([1, 2], 5))


def test_kv_cache_too_large_is_refused_before_allocating():
    shapes = [LayerKVShape(8, 128, 128)] * 80
    with pytest.raises(KVCacheMemoryError, match="MiB"):
        KVCache(shapes, n_ctx_seq=10_000_000)


def test_context_shift_moves_and_rerotates_the_cached_keys(tiny_llama):
    """After dropping a middle span, layer 0's cache (which depends on each token alone, not on
    its context) must equal a fresh evaluation of the remaining tokens at their new positions."""
    tokens = PROMPT_A + PROMPT_B
    ctx = Context(tiny_llama, 32)
    ctx.decode(Batch.for_sequence(tokens, 0))
    ctx.shift(0, n_keep=2, n_discard=4)
    remaining = tokens[:2] + tokens[6:]
    assert ctx.seq_len(0) == len(remaining)
    fresh = Context(tiny_llama, 32)
    fresh.decode(Batch.for_sequence(remaining, 0))
    n = len(remaining)
    keys, fresh_keys = ctx.kv.keys(0, 0, n).astype(np.float32), fresh.kv.keys(0, 0, n).astype(np.float32)
    np.testing.assert_allclose(keys, fresh_keys, atol=0.02 * np.abs(fresh_keys).max())
    np.testing.assert_array_equal(ctx.kv.values(0, 0, n), fresh.kv.values(0, 0, n))
    # and decoding continues at the shifted position
    assert ctx.decode(Batch.for_sequence([42], n)).shape == (1, tiny_llama.n_vocab)
