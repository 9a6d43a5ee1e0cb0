"""``lamina info MODEL.gguf``: what a GGUF file holds, without loading its weights.

The summary answers what a llama.cpp user asks first (architecture, size,
quantization mix, context length, vocabulary, chat template); ``--metadata`` lists
every key, ``--tensors`` the tensor index, and ``--json`` gives all of it to
machines. Long arrays and strings are abbreviated as gguf-dump abbreviates them.
Only the header is read, so it takes a fraction of a second on any model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

import numpy as np

from lamina.gguf import GGUFError, GGUFFile, ValueType, file_type_name, ggml_type, guess_file_type, read

SHOWN_ELEMENTS = 6  # array elements shown before "...", as gguf-dump shows them
SHOWN_STRING = 60  # characters of a string value shown in text mode

TOKENIZER_KINDS = {
    "llama": "SentencePiece",
    "gpt2": "byte-level BPE",
    "bert": "WordPiece",
    "t5": "Unigram",
    "rwkv": "RWKV",
    "plamo2": "PLaMo-2",
    "none": "no vocabulary",
}


# -- facts -----------------------------------------------------------------------------------------

def summarize(f: GGUFFile) -> dict[str, Any]:
    """The facts ``lamina info`` shows, as plain values (the ``summary`` object of ``--json``).

    Wrong-typed well-known keys raise :class:`GGUFError` (the file is malformed for
    every loader that would read them).
    """
    arch = f.get_str("general.architecture")
    n_params = sum(t.n_elements for t in f.tensors.values())
    n_bytes = sum(t.n_bytes for t in f.tensors.values())
    mix: dict[str, dict[str, int]] = {}
    for t in f.tensors.values():
        row = mix.setdefault(t.type, {"tensors": 0, "parameters": 0, "bytes": 0})
        row["tensors"] += 1
        row["parameters"] += t.n_elements
        row["bytes"] += t.n_bytes
    mix = dict(sorted(mix.items(), key=lambda kv: (-kv[1]["tensors"], kv[0])))

    file_type = f.get_int("general.file_type")
    guessed = file_type is None
    if guessed:
        file_type = guess_file_type({t.name: t.type for t in f.tensors.values()})

    def hparam(suffix: str):
        if arch is None:
            return None
        key = f"{arch}.{suffix}"
        field = f.fields.get(key)
        if field is not None and field.type == ValueType.ARRAY:  # per-layer values (e.g. OpenELM heads)
            return [int(v) for v in f.get_array(key, element="int")]
        return f.get_int(key)

    tokens = f.get_array("tokenizer.ggml.tokens", element="string")
    template = f.get_str("tokenizer.chat_template")
    named_templates = sorted(k[len("tokenizer.chat_template."):] for k in f.fields
                             if k.startswith("tokenizer.chat_template."))
    return {
        "architecture": arch,
        "name": f.get_str("general.name"),
        "size_label": f.get_str("general.size_label"),
        "parameters": n_params,
        "file_size": f.file_size,
        "tensor_bytes": n_bytes,
        "bits_per_weight": 8.0 * n_bytes / n_params if n_params else None,
        "file_type": file_type,
        "file_type_name": file_type_name(file_type),
        "file_type_guessed": guessed,
        "quantization_mix": mix,
        "context_length": hparam("context_length"),
        "embedding_length": hparam("embedding_length"),
        "feed_forward_length": hparam("feed_forward_length"),
        "block_count": hparam("block_count"),
        "head_count": hparam("attention.head_count"),
        "head_count_kv": hparam("attention.head_count_kv"),
        "expert_count": hparam("expert_count"),
        "expert_used_count": hparam("expert_used_count"),
        "vocab_size": len(tokens) if tokens is not None else hparam("vocab_size"),
        "tokenizer_model": f.get_str("tokenizer.ggml.model"),
        "tokenizer_pre": f.get_str("tokenizer.ggml.pre"),
        "chat_template": template is not None,
        "chat_template_chars": None if template is None else len(template),
        "named_chat_templates": named_templates,
    }


# -- text ------------------------------------------------------------------------------------------

def human_count(n: int) -> str:
    """A parameter count as model names give it: 135M, 1.5B, 7B."""
    if n >= 10**9:
        return f"{n / 1e9:.1f}".rstrip("0").rstrip(".") + "B"
    if n >= 10**6:
        return f"{round(n / 1e6)}M"
    if n >= 10**3:
        return f"{round(n / 1e3)}K"
    return str(n)


def human_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def printable(text: str) -> str:
    """Text from the file, made safe for a terminal: control characters and undecodable bytes escaped.

    A hostile file could otherwise put terminal escape sequences in a model name.
    Bytes that were not UTF-8 come back from the reader as surrogate escapes (U+DC80-U+DCFF).
    """
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif 0xDC80 <= ord(c) <= 0xDCFF:
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _count_or_layers(value) -> str:
    if isinstance(value, list):
        if value and all(v == value[0] for v in value):
            return f"{value[0]} (every layer)"
        return abbreviate_list(value) + " (per layer)"
    return str(value)


def format_summary(path: str, f: GGUFFile, s: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = [
        ("file", printable(path)),
        ("format", f"GGUF v{f.version}, {len(f.fields)} metadata keys, {len(f.tensors)} tensors, "
                   f"alignment {f.alignment}"),
        ("architecture", printable(s["architecture"] or "(not set)")),
    ]
    if s["name"] is not None:
        label = f" (size label {printable(s['size_label'])})" if s["size_label"] else ""
        rows.append(("model name", printable(s["name"]) + label))
    rows.append(("parameters", f"{human_count(s['parameters'])} ({s['parameters']:,})"))
    rows.append(("file size", f"{human_bytes(s['file_size'])} ({s['file_size']:,} bytes)"))
    ftype = f"{s['file_type_name']} ({'guessed from the tensors' if s['file_type_guessed'] else 'general.file_type'}" \
            f" = {s['file_type']})"
    rows.append(("file type", ftype))
    if s["bits_per_weight"] is not None:
        rows.append(("tensor data", f"{human_bytes(s['tensor_bytes'])}, {s['bits_per_weight']:.2f} bits per weight"))
    for label, key in [("context length", "context_length"), ("embedding", "embedding_length"),
                       ("feed-forward", "feed_forward_length"), ("layers", "block_count")]:
        if s[key] is not None:
            rows.append((label, _count_or_layers(s[key])))
    if s["head_count"] is not None:
        kv = "" if s["head_count_kv"] is None else f", key/value heads {_count_or_layers(s['head_count_kv'])}"
        rows.append(("attention heads", _count_or_layers(s["head_count"]) + kv))
    if s["expert_count"]:
        rows.append(("experts", f"{s['expert_count']} ({s['expert_used_count']} used per token)"))
    model = s["tokenizer_model"]
    if s["vocab_size"] is not None or model is not None:
        kind = "no tokenizer" if model is None else \
            f"{TOKENIZER_KINDS.get(model, 'unknown kind')} (tokenizer.ggml.model {printable(model)!r}"
        if model is not None:
            kind += f", pre-tokenizer {printable(s['tokenizer_pre'])!r})" if s["tokenizer_pre"] else ")"
        size = "?" if s["vocab_size"] is None else f"{s['vocab_size']:,}"
        rows.append(("vocabulary", f"{size} tokens, {kind}"))
    if s["chat_template"]:
        template = f"yes ({s['chat_template_chars']:,} characters)"
    else:
        template = "no"
    if s["named_chat_templates"]:
        template += "; named: " + ", ".join(printable(n) for n in s["named_chat_templates"])
    rows.append(("chat template", template))

    width = max(len(label) for label, _ in rows) + 2
    lines = [f"{label:<{width}}{value}" for label, value in rows]
    mix = s["quantization_mix"]
    if mix:
        lines.append("")
        lines.append("quantization mix:")
        header = f"  {'type':<8}{'tensors':>8}{'parameters':>14}{'size':>14}{'bits/weight':>13}"
        lines.append(header)
        for name, row in mix.items():
            bpw = ggml_type(name).bits_per_weight
            lines.append(f"  {name:<8}{row['tensors']:>8}{row['parameters']:>14,}{human_bytes(row['bytes']):>14}"
                         f"{bpw:>13.2f}")
        total_bpw = "" if s["bits_per_weight"] is None else f"{s['bits_per_weight']:>13.2f}"
        lines.append(f"  {'total':<8}{len(f.tensors):>8}{s['parameters']:>14,}{human_bytes(s['tensor_bytes']):>14}"
                     f"{total_bpw}")
    return "\n".join(lines)


def abbreviate_list(values) -> str:
    """``[a, b, c, d, e, f, ...]`` as gguf-dump prints a long array."""
    shown = [_text_value(v) for v in list(values[:SHOWN_ELEMENTS])]
    more = ", ..." if len(values) > SHOWN_ELEMENTS else ""
    return "[" + ", ".join(shown) + more + "]"


def _text_value(v) -> str:
    if isinstance(v, str):
        text = v if len(v) <= SHOWN_STRING else v[: SHOWN_STRING - 3] + "..."
        return printable(repr(text))
    if isinstance(v, np.generic):
        v = v.item()
    return repr(v)


def format_metadata(f: GGUFFile) -> str:
    lines = [f"{len(f.fields)} metadata keys:"]
    for key, field in f.fields.items():
        if field.type == ValueType.ARRAY:
            kind = f"[{field.element_type.name}]"
            value = abbreviate_list(field.value) + f" ({len(field.value):,} elements)"
        else:
            kind = field.type.name
            value = _text_value(field.value)
        lines.append(f"  {kind:<10} {printable(key)} = {value}")
    return "\n".join(lines)


def format_tensors(f: GGUFFile) -> str:
    tensors = list(f.tensors.values())
    shapes = [" x ".join(str(d) for d in t.shape) for t in tensors]
    name_w = max([len(printable(t.name)) for t in tensors] + [4])
    shape_w = max([len(s) for s in shapes] + [5])
    lines = [f"{len(tensors)} tensors (shape in ggml order, row length first):",
             f"  {'#':>5}  {'name':<{name_w}}  {'shape':<{shape_w}}  {'type':<7}{'elements':>13}{'size':>13}"]
    for i, (t, shape) in enumerate(zip(tensors, shapes), 1):
        lines.append(f"  {i:>5}  {printable(t.name):<{name_w}}  {shape:<{shape_w}}  {t.type:<7}"
                     f"{t.n_elements:>13,}{human_bytes(t.n_bytes):>13}")
    return "\n".join(lines)


# -- JSON ------------------------------------------------------------------------------------------

def _json_scalar(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN or Infinity
    return v


def metadata_json(f: GGUFFile, full_arrays: bool = False) -> dict[str, Any]:
    out = {}
    for key, field in f.fields.items():
        entry: dict[str, Any] = {"type": field.type.name, "offset": f.field_offsets[key]}
        if field.type == ValueType.ARRAY:
            entry["element_type"] = field.element_type.name
            entry["count"] = len(field.value)
            values = field.value if full_arrays else field.value[:SHOWN_ELEMENTS]
            entry["value"] = [_json_scalar(v) for v in list(values)]
            if len(values) < len(field.value):
                entry["abbreviated"] = True
        else:
            entry["value"] = _json_scalar(field.value)
        out[key] = entry
    return out


def tensors_json(f: GGUFFile) -> list[dict[str, Any]]:
    return [{"name": t.name, "shape": list(t.shape), "type": t.type, "offset": t.offset,
             "elements": t.n_elements, "bytes": t.n_bytes} for t in f.tensors.values()]


def as_json(path: str, f: GGUFFile, s: dict[str, Any], tensors: bool, full_arrays: bool) -> str:
    doc = {"file": path, "version": f.version, "file_size": f.file_size, "alignment": f.alignment,
           "data_offset": f.data_offset, "summary": {k: _json_scalar(v) for k, v in s.items()},
           "metadata": metadata_json(f, full_arrays)}
    if tensors:
        doc["tensors"] = tensors_json(f)
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=1)
    # Bytes that are not UTF-8 are kept as lone surrogates; this writes them as JSON \udcXX escapes.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- command ---------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina info", description="Summarize a GGUF model file (reads only its header).")
    p.add_argument("model", nargs="?", help="path to a .gguf file")
    p.add_argument("--system", action="store_true",
                   help="describe this machine instead: the kernel family that runs here and why, the CPU, the "
                        "kernel cache")
    p.add_argument("--tensors", action="store_true", help="also list every tensor (name, shape, type, size)")
    p.add_argument("--metadata", action="store_true", help="also list every metadata key and value")
    p.add_argument("--json", action="store_true", help="print JSON: summary, all metadata (and tensors with --tensors)")
    p.add_argument("--full-arrays", action="store_true", help="with --json: do not abbreviate long arrays")
    return p


def system_text() -> str:
    """``lamina info --system``: the kernel family, the CPU's name and features, the compiled-kernel cache."""
    from llvmlite import binding
    from numba import config

    from lamina.cli import version_text
    from lamina.kernels import family

    features = binding.get_host_cpu_features()
    shown = [f for f in ("avx512f", "avx512bw", "avx512vl", "avx512vnni", "avxvnni", "avx2", "fma", "f16c", "neon",
                         "dotprod", "i8mm") if features.get(f)]
    cache = config.CACHE_DIR
    cached = sum(len(files) for _, _, files in os.walk(cache)) if os.path.isdir(cache) else 0
    return "\n".join([version_text(),
                      f"cpu              {binding.get_host_cpu_name()} ({', '.join(shown) or 'no SIMD features lamina uses'})",
                      f"numba target     {family.CURRENT.cpu_name or 'this CPU'}",
                      f"kernel cache     {cache} ({cached} files)",
                      "families         avx512-vnni, avx512, avx2, generic (LAMINA_KERNELS=... chooses one)"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.system:
        print(system_text())
        return 0
    if args.model is None:
        build_parser().error("the following arguments are required: model (or --system)")
    try:
        f = read(args.model)
        summary = summarize(f)
        if args.json:
            out = as_json(args.model, f, summary, args.tensors, args.full_arrays)
        else:
            parts = [format_summary(args.model, f, summary)]
            if args.metadata:
                parts.append(format_metadata(f))
            if args.tensors:
                parts.append(format_tensors(f))
            out = "\n\n".join(parts)
    except GGUFError as e:
        print(f"lamina info: error: {e}", file=sys.stderr)
        return 1
    try:
        print(out)
        sys.stdout.flush()
    except BrokenPipeError:  # `lamina info --tensors m.gguf | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
