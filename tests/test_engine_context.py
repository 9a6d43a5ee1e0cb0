"""The engine's context: batching, several sequences per batch, KV cache bounds and errors."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.engine.batch import Batch
from lamina.engine.context import Context, InvalidTokenError
from lamina.engine.kv_cache import ContextFullError, KVCache, KVCacheMemoryError, LayerKVShape
from lamina.gguf import read
from lamina.models import load_model

# Different batch shapes sum in different orders inside the matrix products; after 30 layers
# that moves logits (of magnitude ~15) by up to about 0.01.
SAME = dict(atol=0.03, rtol=0)

PROMPT_A = [504, 3575, 282, 4649, 314, 7042, 30, 198]
PROMPT_B = [1, 9690, 198, 2683, 359, 253, 5356, 5646]


@pytest.fixture(scope="module")
def smollm2(model_paths):
    return load_model(read(model_paths["smollm2"]))


def test_micro_batches_give_the_same_logits_as_one_batch(smollm2):
    whole = Context(smollm2, 64, n_batch=64, n_ubatch=64).decode(Batch.for_sequence(PROMPT_A, 0, logits_all=True))
    pieces = Context(smollm2, 64, n_batch=64, n_ubatch=3).decode(Batch.for_sequence(PROMPT_A, 0, logits_all=True))
    np.testing.assert_allclose(pieces, whole, **SAME)


def test_incremental_decoding_matches_the_batch(smollm2):
    ctx = Context(smollm2, 64)
    last = None
    for pos, tok in enumerate(PROMPT_A):
        last = ctx.decode(Batch.for_sequence([tok], pos))[-1]
    whole = Context(smollm2, 64).decode(Batch.for_sequence(PROMPT_A, 0))[-1]
    np.testing.assert_allclose(last, whole, **SAME)
    assert ctx.seq_len(0) == len(PROMPT_A)


def test_two_sequences_in_one_batch_are_independent(smollm2):
    alone_a = Context(smollm2, 64).decode(Batch.for_sequence(PROMPT_A, 0))[-1]
    alone_b = Context(smollm2, 64).decode(Batch.for_sequence(PROMPT_B, 0))[-1]
    ctx = Context(smollm2, 128, n_seq_max=2)
    a, b = Batch.for_sequence(PROMPT_A, 0, 0), Batch.for_sequence(PROMPT_B, 0, 1)
    # interleave the two sequences' tokens in one batch
    order = np.argsort(np.concatenate([np.arange(len(a)) * 2, np.arange(len(b)) * 2 + 1]), kind="stable")
    mixed = Batch(*(np.concatenate([getattr(a, f), getattr(b, f)])[order]
                    for f in ("tokens", "positions", "seq_ids", "output")))
    logits = ctx.decode(mixed)
    assert logits.shape == (2, smollm2.n_vocab)
    out_seq = mixed.seq_ids[mixed.output]
    np.testing.assert_allclose(logits[out_seq == 0][0], alone_a, **SAME)
    np.testing.assert_allclose(logits[out_seq == 1][0], alone_b, **SAME)
    # continuing one sequence does not disturb the other
    ctx.decode(Batch.for_sequence([42], len(PROMPT_A), 0))
    assert ctx.seq_len(0) == len(PROMPT_A) + 1 and ctx.seq_len(1) == len(PROMPT_B)


def test_exceeding_the_context_is_a_clear_error_and_changes_nothing(smollm2):
    ctx = Context(smollm2, 8)
    ctx.decode(Batch.for_sequence(PROMPT_A[:6], 0))
    with pytest.raises(ContextFullError, match="context holds 8"):
        ctx.decode(Batch.for_sequence(PROMPT_A[:3], 6))
    assert ctx.seq_len(0) == 6


@pytest.mark.parametrize("bad", [-1, 49152, 2**31 - 1])
def test_token_ids_outside_the_vocabulary_are_refused(smollm2, bad):
    ctx = Context(smollm2, 16)
    with pytest.raises(InvalidTokenError, match=str(bad)):
        ctx.decode(Batch(np.array([1, bad], dtype=np.int64), np.arange(2, dtype=np.int32),
                         np.zeros(2, dtype=np.int32), np.array([False, True])))
    assert ctx.seq_len(0) == 0


def test_positions_must_continue_the_sequence(smollm2):
    ctx = Context(smollm2, 16)
    with pytest.raises(ValueError, match="consecutively"):
        ctx.decode(Batch.for_sequence([1, 2], 5))


def test_kv_cache_too_large_is_refused_before_allocating():
    shapes = [LayerKVShape(8, 128, 128)] * 80
    with pytest.raises(KVCacheMemoryError, match="MiB"):
        KVCache(shapes, n_ctx_seq=10_000_000)


def test_context_shift_moves_and_rerotates_the_cached_keys(smollm2):
    """After dropping a middle span, layer 0's cache (which depends on each token alone, not on
    its context) must equal a fresh evaluation of the remaining tokens at their new positions."""
    tokens = PROMPT_A + PROMPT_B
    ctx = Context(smollm2, 32)
    ctx.decode(Batch.for_sequence(tokens, 0))
    ctx.shift(0, n_keep=2, n_discard=4)
    remaining = tokens[:2] + tokens[6:]
    assert ctx.seq_len(0) == len(remaining)
    fresh = Context(smollm2, 32)
    fresh.decode(Batch.for_sequence(remaining, 0))
    n = len(remaining)
    keys, fresh_keys = ctx.kv.keys(0, 0, n).astype(np.float32), fresh.kv.keys(0, 0, n).astype(np.float32)
    np.testing.assert_allclose(keys, fresh_keys, atol=0.02 * np.abs(fresh_keys).max())
    np.testing.assert_array_equal(ctx.kv.values(0, 0, n), fresh.kv.values(0, 0, n))
    # and decoding continues at the shifted position
    assert ctx.decode(Batch.for_sequence([42], n)).shape == (1, smollm2.n_vocab)
