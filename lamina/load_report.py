"""The lines llama.cpp prints to stderr when it loads a model (``Llama(..., verbose=True)``).

The same facts under llama.cpp's prefixes (``llama_model_loader``, ``print_info``,
``llama_context``, ``llama_kv_cache``), so logs that are read by people (or grepped by scripts)
read the same. ``lamina info`` shows the same facts laid out for reading.
"""

from __future__ import annotations

VOCAB_TYPE = {"llama": "SPM", "gpt2": "BPE", "bert": "WPM", "t5": "UGM", "rwkv": "RWKV"}


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.2f} MiB"


def load_lines(llm) -> list[str]:
    from lamina.cli.info import summarize

    f = llm.gguf
    s = summarize(f)
    tok = llm.tokenizer_
    lines = [
        f"llama_model_loader: loaded meta data with {len(f.fields)} key-value pairs and {len(f.tensors)} tensors "
        f"from {llm.model_path} (version GGUF V{f.version}{' (latest)' if f.version == 3 else ''})",
        f"print_info: file format = GGUF V{f.version}{' (latest)' if f.version == 3 else ''}",
        f"print_info: file type   = {s['file_type_name']}",
        f"print_info: file size   = {_mib(s['file_size'])} ({s['bits_per_weight']:.2f} BPW)"
        if s["bits_per_weight"] else f"print_info: file size   = {_mib(s['file_size'])}",
        f"print_info: arch             = {s['architecture']}",
        f"print_info: vocab_only       = {int(llm._ctx is None)}",
    ]
    for label, key in (("n_ctx_train", "context_length"), ("n_embd", "embedding_length"),
                       ("n_layer", "block_count"), ("n_head", "head_count"), ("n_head_kv", "head_count_kv"),
                       ("n_ff", "feed_forward_length"), ("n_expert", "expert_count"),
                       ("n_expert_used", "expert_used_count")):
        if s[key] is not None:
            lines.append(f"print_info: {label:<16} = {s[key]}")
    n = s["parameters"]
    lines.append(f"print_info: model params     = {n / 1e9:.2f} B" if n >= 1e9 else
                 f"print_info: model params     = {n / 1e6:.2f} M")
    if s["name"]:
        lines.append(f"print_info: general.name     = {s['name']}")
    lines.append(f"print_info: vocab type       = {VOCAB_TYPE.get(s['tokenizer_model'] or '', s['tokenizer_model'])}")
    lines.append(f"print_info: n_vocab          = {tok.n_vocab}")
    for label, token_id in (("BOS", tok.bos_id), ("EOS", tok.eos_id), ("EOT", tok.eot_id), ("UNK", tok.unk_id),
                            ("PAD", tok.pad_id)):
        if token_id >= 0:
            lines.append(f"print_info: {label} token        = {token_id} '{tok.token_text(token_id)}'")
    if llm._ctx is not None:
        kv = llm._ctx.kv
        lines += [f"llama_context: n_ctx         = {llm.n_ctx()}",
                  f"llama_context: n_batch       = {llm.n_batch}",
                  f"llama_context: n_threads     = {llm.n_threads} (n_threads_batch = {llm.n_threads_batch})",
                  f"llama_kv_cache: size = {_mib(kv.nbytes)} ({kv.n_ctx_seq} cells, {len(kv.k)} layers, "
                  f"{len(kv.seq_len)}/{len(kv.seq_len)} seqs), K (f16), V (f16)"]
    return lines
