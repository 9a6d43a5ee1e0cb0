"""``lamina embedding``: embeddings of prompts, like llama.cpp's ``llama-embedding``.

Each line of the prompt (``--embd-separator``, default a newline) is one text. The vectors are
the model's final hidden states pooled by ``--pooling`` (default: the model's own, else none),
normalized by ``--embd-normalize`` (default 2, euclidean), and printed as llama-embedding prints
them: ``embedding N: …`` lines and a cosine similarity matrix, or ``--embd-output-format json``
(OpenAI's list), ``json+`` (with the similarity matrix), ``array`` or ``raw``.
"""

from __future__ import annotations

import argparse
import sys

from lamina.cli.options import add_model_options, resolve_model


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina embedding", description=__doc__.split("\n\n")[0])
    add_model_options(p)
    p.add_argument("-p", "--prompt", default=None, help="the text(s) to embed")
    p.add_argument("-f", "--file", default=None, help="read the text(s) from this file")
    p.add_argument("--pooling", default=None, choices=["none", "mean", "cls", "last", "rank"],
                   help="how token vectors become one (default: the model's, else none)")
    p.add_argument("--embd-normalize", type=int, default=2,
                   help="-1 none, 0 max absolute (int16 range), 1 taxicab, 2 euclidean (default), >2 p-norm")
    p.add_argument("--embd-output-format", default="", choices=["", "json", "json+", "array", "raw"],
                   help="empty (default) for llama-embedding's text, json, json+ (with cosine similarities), "
                        "array, raw")
    p.add_argument("--embd-separator", default="\n", help="separates the texts in the prompt (default: newline)")
    return p


def _fmt(value: float, normalize: int, text: str) -> str:
    if text == "int":
        return f"{value:6.0f}" if normalize == 0 else f"{value:9.6f}"
    return f"{value:1.0f}" if normalize == 0 else f"{value:1.7f}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_model(args)
        if args.file is not None:
            with open(args.file, encoding="utf-8", errors="replace") as f:
                text = f.read()
        else:
            text = args.prompt if args.prompt is not None else ""
        from lamina.cli.options import process_escapes
        from lamina.embeddings import POOLING_NONE, cosine, normalize_like_llama_cpp
        from lamina.llama import Llama

        prompts = [p for p in process_escapes(text).split(process_escapes(args.embd_separator))]
        if not any(prompts):
            raise ValueError("nothing to embed: give -p TEXT or -f FILE")
        llm = Llama(args.model, n_ctx=args.ctx_size or 512, n_batch=args.batch_size, n_ubatch=args.ubatch_size,
                    n_threads=args.threads, embedding=True, pooling_type=args.pooling or -1, verbose=False,
                    n_seq_max=1)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    pooling = llm.pooling_type()
    rows = []
    try:
        for prompt in prompts:
            out = llm.embed(prompt)
            rows += out if pooling == POOLING_NONE else [out]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    norm = args.embd_normalize
    emb = [normalize_like_llama_cpp(r, norm) for r in rows]
    write = sys.stdout.write
    fmt = args.embd_output_format
    if fmt == "":
        write("\n")
        if pooling == POOLING_NONE:
            for j, v in enumerate(emb):
                head = "".join(_fmt(x, norm, "int") + " " for x in v[:3])
                tail = "".join(_fmt(x, norm, "int") + " " for x in v[-3:])
                write(f"embedding {j}: {head} ... {tail}\n")
        else:
            for j, v in enumerate(emb):
                shown = v[:16] if len(prompts) > 1 else v
                write(f"embedding {j}: " + "".join(_fmt(x, norm, "int") + " " for x in shown) + "\n")
            if len(prompts) > 1:
                write("\ncosine similarity matrix:\n\n")
                write("".join(f"{p[:6]:>6} " for p in prompts) + "\n")
                for i, a in enumerate(emb):
                    write("".join(f"{cosine(a, b):6.2f} " for b in emb) + prompts[i][:10] + "\n")
    elif fmt in ("json", "json+", "array"):
        vectors = ["[" + ",".join(_fmt(x, norm, "plain") for x in v) + "]" for v in emb]
        if fmt == "array":
            write("[" + ",".join(vectors) + "]\n")
        else:
            items = [f'    {{\n      "object": "embedding",\n      "index": {j},\n      "embedding": {v}\n    }}'
                     for j, v in enumerate(vectors)]
            write('{\n  "object": "list",\n  "data": [\n' + ",\n".join(items) + "\n  ]")
            if fmt == "json+" and len(prompts) > 1:
                sims = ["    [" + ", ".join(f"{cosine(a, b):6.2f}" for b in emb) + " ]" for a in emb]
                write(',\n  "cosineSimilarity": [\n' + ",\n".join(sims) + "\n  ]")
            write("\n}\n")
    else:  # raw
        for v in emb:
            write(" ".join(_fmt(x, norm, "plain") for x in v) + "\n")
    return 0
