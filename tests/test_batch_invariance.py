"""Several sequences decoded together get the tokens each gets alone: llama.cpp's, to the token.

The server decodes one token of every busy slot in one pass. llama.cpp's kernels sum in an
order that depends on how many rows they multiply, so without care a request's text would
depend on who else is being served. Under :func:`lamina.kernels.rows_computed_alone` each
row gets the arithmetic of a batch of one; these tests decode all of llama.cpp's reference
prompts for a model side by side, step by step, and require llama.cpp's own greedy
continuations (made one prompt at a time, shared/refdata/llamacpp).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_greedy_reference
from lamina.engine.batch import Batch
from lamina.engine.context import Context
from lamina.gguf import read
from lamina.kernels import rows_alone, rows_computed_alone
from lamina.kernels.attention import attention, attention_one_query_each
from lamina.kernels.linear import set_num_threads
from lamina.models import load_model

REFERENCE_N_CTX = 4096  # as llama.cpp made the references: a 4096-token context, 2 threads


def greedy_side_by_side(model, prompts: list[list[int]], n_tokens: int) -> list[list[int]]:
    """Greedy continuations of ``prompts``, each prompt prefilled on its own, then one decode step
    for all of them together per token."""
    n = len(prompts)  # each sequence gets a cache as large as the reference's, each prompt one micro-batch
    ctx = Context(model, n_ctx=REFERENCE_N_CTX * n, n_batch=REFERENCE_N_CTX, n_ubatch=REFERENCE_N_CTX, n_seq_max=n)
    last = [int(np.argmax(ctx.decode(Batch.for_sequence(p, 0, seq))[-1])) for seq, p in enumerate(prompts)]
    generated = [[t] for t in last]
    for step in range(1, n_tokens):
        batch = Batch(np.array(last, np.int32), np.array([len(p) + step - 1 for p in prompts], np.int32),
                      np.arange(n, dtype=np.int32), np.ones(n, bool))
        with rows_computed_alone():
            logits = ctx.decode(batch)
        last = [int(np.argmax(row)) for row in logits]
        for seq, t in enumerate(last):
            generated[seq].append(t)
    return generated


def test_prompts_decoded_together_give_llamacpps_greedy_tokens(model_paths, refdata, model_name):
    refs = load_greedy_reference(refdata, model_name)
    model = load_model(read(model_paths[model_name]))
    set_num_threads(2)
    n_tokens = min(len(r["greedy"]) for r in refs)
    together = greedy_side_by_side(model, [r["tokens"] for r in refs], n_tokens)
    for ref, tokens in zip(refs, together):
        assert tokens == ref["greedy"][:n_tokens], f"{model_name}: {ref['prompt'][:40]!r}"


@pytest.mark.parametrize("window,softcap", [(0, 0.0), (128, 0.0), (0, 30.0)])
def test_one_launch_for_all_sequences_equals_one_query_at_a_time(window, softcap):
    # a decode step's attention, all sequences at once, against ggml's kernels for each query alone
    # (positions below and above 512 cells, where one query's keys are split across the threads)
    rng = np.random.default_rng(1)
    n_seq, n_head, n_kv_head, d, n_cells = 4, 6, 2, 64, 1024
    keys = rng.standard_normal((n_seq, n_kv_head, n_cells, d)).astype(np.float16)
    values = rng.standard_normal((n_seq, n_kv_head, n_cells, d)).astype(np.float16)
    seqs, positions = np.array([2, 0, 3, 1]), np.array([700, 5, 300, 1000])
    q = rng.standard_normal((n_seq, n_head, d)).astype(np.float32)
    together = attention_one_query_each(q, keys, values, seqs, positions, 0.125, window, softcap, n_threads=2)
    for row, (seq, pos) in enumerate(zip(seqs, positions)):
        alone = attention(q[row:row + 1], keys[seq], values[seq], positions[row:row + 1], 0.125, window, softcap,
                          n_threads=2)
        assert np.array_equal(together[row], alone[0]), f"row {row} (position {pos})"


def test_the_mode_is_scoped_to_its_block():
    assert not rows_alone()
    with rows_computed_alone():
        assert rows_alone()
        with rows_computed_alone():
            assert rows_alone()
        assert rows_alone()
    assert not rows_alone()
    with pytest.raises(KeyError), rows_computed_alone():
        raise KeyError("the mode ends even when the block fails")
    assert not rows_alone()
