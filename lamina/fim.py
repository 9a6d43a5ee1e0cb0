"""Fill-in-the-middle prompts: code before and after the cursor, through the model's FIM tokens.

Code models are trained to read ``[FIM_PRE] before [FIM_SUF] after [FIM_MID]`` and write what goes
between. The token ids come from the GGUF file (``tokenizer.ggml.fim_pre_token_id`` ...) or, as
llama.cpp finds them, from the token texts (``<|fim_prefix|>``, ``<fim-prefix>``, ``<PRE>`` ...).

Two shapes, each as its llama.cpp-side counterpart builds it:

- ``fim_prompt`` for ``Llama.create_completion(prompt, suffix=...)``: BOS (if the model adds one),
  ``[FIM_PRE] prompt [FIM_SUF] suffix [FIM_MID]`` (llama-cpp-python's layout);
- ``server_infill_prompt`` for ``/infill``, llama-server's ``format_prompt_infill``: the repo-level
  pattern (``[FIM_REP]myproject``, ``[FIM_SEP]`` + file name + text per ``input_extra`` chunk,
  ``[FIM_SEP]filename``) cut to what fits, then the FIM prompt with ``prompt`` after ``[FIM_PRE]...``
  prefix, prefix and suffix cut to fit a batch at 3:1.
"""

from __future__ import annotations

# llama-server's separator between extra chunks when the vocabulary has no FIM_SEP token
_CHUNK_SEPARATOR = "\n\n--- snippet ---\n\n"


class NoFimTokensError(ValueError):
    """The model has no fill-in-the-middle tokens."""


def fim_ids(tokenizer) -> tuple[int, int, int]:
    ids = tuple(tokenizer.vocab.ids[name] for name in ("fim_pre", "fim_suf", "fim_mid"))
    if min(ids) < 0:
        raise NoFimTokensError("this model has no fill-in-the-middle tokens (FIM prefix, suffix and middle)")
    return ids


def has_fim(tokenizer) -> bool:
    try:
        fim_ids(tokenizer)
    except NoFimTokensError:
        return False
    return True


def _plain(tokenizer, text: str) -> list[int]:
    return tokenizer.tokenize(text.encode("utf-8"), add_special=False, parse_special=False)


def fim_prompt(tokenizer, prefix: str, suffix: str) -> list[int]:
    """``Llama.create_completion(prefix, suffix=suffix)``'s prompt."""
    pre, suf, mid = fim_ids(tokenizer)
    bos = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id >= 0 else []
    return bos + [pre] + _plain(tokenizer, prefix) + [suf] + _plain(tokenizer, suffix) + [mid]


def server_infill_prompt(tokenizer, prefix: list[int], suffix: list[int], extra: list[dict], prompt: list[int],
                         *, n_batch: int, n_predict: int, n_ctx: int) -> list[int]:
    """llama-server's ``/infill`` prompt (``format_prompt_infill``, PSM order)."""
    pre, suf, mid = fim_ids(tokenizer)
    rep, sep = tokenizer.vocab.ids["fim_rep"], tokenizer.vocab.ids["fim_sep"]
    extra_tokens: list[int] = []
    if rep >= 0:
        extra_tokens += [rep] + _plain(tokenizer, "myproject\n")
    for chunk in extra:
        if sep >= 0:
            extra_tokens += [sep] + _plain(tokenizer, chunk.get("filename", "tmp") + "\n")
        else:
            extra_tokens += _plain(tokenizer, _CHUNK_SEPARATOR)
        extra_tokens += _plain(tokenizer, chunk["text"])
    if sep >= 0:
        extra_tokens += [sep] + _plain(tokenizer, "filename\n")
    n_prefix = min(len(prefix), 3 * (n_batch // 4))
    n_suffix = min(len(suffix), max(0, n_batch // 4 - (2 + len(prompt))))
    n_extra = min(max(0, n_ctx - n_batch - 2 * n_predict), len(extra_tokens))
    head = [pre] + prefix[len(prefix) - n_prefix:] + list(prompt)
    if tokenizer.add_bos and tokenizer.bos_id >= 0:
        head = [tokenizer.bos_id] + head
    taken_extra = extra_tokens[len(extra_tokens) - n_extra:] if n_extra else []
    return taken_extra + head + [suf] + suffix[:n_suffix] + [mid]
