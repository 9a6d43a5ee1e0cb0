"""``lamina gguf-split``: split a GGUF model into parts, or merge the parts, as llama-gguf-split does.

    lamina gguf-split [--split] [--split-max-tensors N | --split-max-size N(M|G)] [--no-tensor-first-split] IN OUT_PREFIX
    lamina gguf-split --merge IN-00001-of-0000N.gguf OUT.gguf

The files are byte for byte llama-gguf-split's; each is written atomically, and a split that
fails part-way leaves no parts behind.
"""

from __future__ import annotations

import argparse
import re
import sys


def size_in_bytes(text: str) -> int:
    """llama-gguf-split's ``N(M|G)``: decimal megabytes or gigabytes."""
    m = re.fullmatch(r"(\d+)([MG])", text.strip())
    if not m or int(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: write a positive whole number and M or G "
                                         "(decimal megabytes or gigabytes), e.g. 500M or 2G")
    return int(m.group(1)) * (1000 ** 2 if m.group(2) == "M" else 1000 ** 3)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina gguf-split", description="Split a GGUF model into parts, or merge them.")
    op = p.add_mutually_exclusive_group()
    op.add_argument("--split", action="store_true", help="split IN into parts OUT-0000i-of-0000N.gguf (default)")
    op.add_argument("--merge", action="store_true", help="merge the parts starting at IN into the file OUT")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--split-max-tensors", type=int, default=None, help="tensors per part (default: 128)")
    limit.add_argument("--split-max-size", type=size_in_bytes, default=None, help="bytes of tensors per part, N(M|G)")
    p.add_argument("--no-tensor-first-split", action="store_true", help="the first part holds metadata only")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    return p


def main(argv: list[str] | None = None) -> int:
    from lamina import gguf
    from lamina.gguf import split as splitting

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.merge:
            if args.dry_run:
                f = gguf.read(args.input)
                print(f"would merge {len(f.parts)} parts, {len(f.tensors)} tensors, into {args.output}")
                return 0
            n = splitting.merge(args.input, args.output)
            print(f"gguf_merge: {args.output} merged from {args.input} with {n} tensors", file=sys.stderr)
            return 0
        f = gguf.read_one(args.input)
        if splitting.split_count(f) > 1:
            raise gguf.GGUFError("already split; merge it first (--merge)", args.input)
        limits = dict(max_tensors=args.split_max_tensors, max_bytes=args.split_max_size,
                      no_tensor_first_split=args.no_tensor_first_split)
        parts = splitting.plan(list(f.tensors.values()), **limits)
        print(f"n_split: {len(parts)}")
        for i, tensors in enumerate(parts):
            size = sum(t.n_bytes for t in tensors)
            print(f"split {i + 1:05d}: n_tensors = {len(tensors)}, total_size = {size // 1000 // 1000}M")
        if args.dry_run:
            return 0
        for path in splitting.split(f, args.output, **limits):
            print(f"Writing file {path} ... done")
        return 0
    except (gguf.GGUFError, ValueError, OSError) as e:
        print(f"lamina gguf-split: error: {e}", file=sys.stderr)
        return 1
