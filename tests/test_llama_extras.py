"""Parts of llama-cpp-python's ``Llama`` beyond completions: processors, stopping criteria, tokenizer."""

from __future__ import annotations

import numpy as np
import pytest

from lamina import LlamaTokenizer, LogitsProcessorList, StoppingCriteriaList


def test_logits_processors_as_list_or_plain_list(llms):
    llm = llms("smollm2")
    the = llm.tokenize(b" the", add_bos=False)[0]
    free = llm.create_completion("Once upon a time", max_tokens=12, temperature=0, seed=1)
    assert the in llm.tokenize(free["choices"][0]["text"].encode(), add_bos=False)
    calls = []

    def ban_the(input_ids, scores):
        calls.append(len(input_ids))
        scores = scores.copy()
        scores[the] = -np.inf
        return scores

    for processors in ([ban_the], LogitsProcessorList([ban_the]), ban_the):
        out = llm.create_completion("Once upon a time", max_tokens=12, temperature=0, logits_processor=processors)
        assert the not in llm.tokenize(out["choices"][0]["text"].encode(), add_bos=False)
    assert calls and calls[1] == calls[0] + 1  # each step sees the tokens so far
    with pytest.raises(TypeError, match="logits_processor must be"):
        llm.create_completion("x", max_tokens=2, logits_processor=[1, 2])


def test_stopping_criteria_as_list(llms):
    llm = llms("smollm2")
    n_prompt = len(llm.tokenize(b"Once upon a time"))
    stop_at_4 = lambda input_ids, logits: len(input_ids) >= n_prompt + 4  # noqa: E731
    for criteria in ([stop_at_4], StoppingCriteriaList([stop_at_4])):
        out = llm.create_completion("Once upon a time", max_tokens=12, temperature=0, stopping_criteria=criteria)
        assert out["choices"][0]["finish_reason"] == "stop"
        # as in llama-cpp-python, the criterion sees the tokens evaluated so far; the token sampled
        # when it first holds (the fifth) is not kept
        assert out["usage"]["completion_tokens"] == 4


def test_tokenizer_object(llms, model_paths):
    llm = llms("smollm2")
    tok = llm.tokenizer()
    assert tok.encode("Hello world") == llm.tokenize(b"Hello world", special=True)
    assert tok.decode(tok.encode("Hello world", add_bos=False)) == "Hello world"
    assert LlamaTokenizer.from_ggml_file(str(model_paths["smollm2"])).encode("Hi", add_bos=False) == \
        llm.tokenize(b"Hi", add_bos=False)


def test_verbose_prints_llama_cpp_style_load_lines(model_paths, capsys):
    from lamina import Llama

    llm = Llama(str(model_paths["qwen2"]), n_ctx=128, verbose=True)
    err = capsys.readouterr().err
    assert "llama_model_loader: loaded meta data with 26 key-value pairs and 291 tensors" in err
    assert "print_info: file type   = Q4_K - Medium" in err and "print_info: n_layer          = 24" in err
    assert "print_info: model params     = 630.17 M" in err and "llama_context: n_ctx         = 128" in err
    llm("Hi", max_tokens=2)
    assert "llama_perf_context_print:        eval time" in capsys.readouterr().err
    Llama(str(model_paths["qwen2"]), n_ctx=128, verbose=False)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("logits_all", [False, True])
def test_scores_row_n_tokens_minus_one_holds_the_last_logits(model_paths, logits_all):
    from lamina import Llama

    llm = Llama(str(model_paths["smollm2"]), n_ctx=64, logits_all=logits_all, verbose=False)
    llm.eval(llm.tokenize(b"The capital of France is"))
    assert llm.scores.shape == (64, llm.n_vocab())
    assert np.array_equal(llm.scores[llm.n_tokens - 1], llm.logits())
    llm.eval([llm.tokenize(b" Paris", add_bos=False)[0]])
    assert np.array_equal(llm.scores[llm.n_tokens - 1], llm.logits())
    if not logits_all:
        assert not llm.scores.flags.writeable and llm.scores.base is not None  # one row, shown at every position


def test_metadata_is_what_llama_cpp_gives_llama_cpp_python(model_paths):
    """llama-cpp-python 0.3.36 reads metadata through llama_model_meta_val_str: llama.cpp keeps no
    array-valued key (llama_model_base::load_hparams skips them) and writes numbers with
    std::to_string (gguf_data_to_str), so floats have six decimals."""
    from lamina import Llama

    meta = Llama(str(model_paths["smollm2"]), vocab_only=True, verbose=False).metadata
    assert meta["llama.rope.freq_base"] == "100000.000000"
    assert meta["llama.attention.layer_norm_rms_epsilon"] == "0.000010"
    assert meta["llama.block_count"] == "30" and meta["tokenizer.ggml.add_bos_token"] == "false"
    assert meta["general.architecture"] == "llama"
    assert "tokenizer.ggml.tokens" not in meta and "tokenizer.ggml.merges" not in meta
