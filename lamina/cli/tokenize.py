"""``lamina tokenize``: show how a model tokenizes text, like llama.cpp's ``llama-tokenize``.

    lamina tokenize -m model.gguf -p "Hello world"
    lamina tokenize -m model.gguf -f prompt.txt --ids
    cat prompt.txt | lamina tokenize -m model.gguf --stdin --show-count

Each token prints as ``%6d -> 'piece'`` (pieces of control tokens shown), or with ``--ids``
all ids as one Python-style list. Only the vocabulary is read from the model file.
"""

from __future__ import annotations

import argparse
import sys

from lamina.cli.options import add_hub_options, resolve_model
from lamina.gguf import GGUFError

PROG = "lamina tokenize"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Tokenize text with a GGUF model's vocabulary, "
                                "printing each token's id and piece (like llama-tokenize).")
    p.add_argument("-m", "--model", default=None, help="path to a GGUF model file (only its vocabulary is read)")
    add_hub_options(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", help="text to tokenize")
    src.add_argument("-f", "--file", help="file whose bytes are tokenized")
    src.add_argument("--stdin", action="store_true", help="read the text from standard input")
    p.add_argument("--ids", action="store_true", help="print only the ids, as a Python list: [1, 2, 3]")
    p.add_argument("--no-bos", action="store_true", help="do not add the BOS (or other special) tokens "
                   "the model asks for")
    p.add_argument("--no-parse-special", action="store_true",
                   help="treat the text of control tokens such as <|im_start|> as plain text")
    p.add_argument("--show-count", action="store_true", help="print the number of tokens at the end")
    p.add_argument("--escape", action="store_true", help=r"process escapes (\n, \t, \\ ...) in the text")
    p.add_argument("--log-disable", action="store_true", help="accepted for llama-tokenize compatibility")
    return p


def process_escapes(text: bytes) -> bytes:
    r"""llama.cpp's ``string_process_escapes``: \n \r \t \' \" \\ \xHH."""
    simple = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("'"): b"'", ord('"'): b'"',
              ord("\\"): b"\\"}
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == ord("\\") and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in simple:
                out += simple[nxt]
                i += 2
                continue
            if nxt == ord("x") and _is_hex(text[i + 2:i + 4]):
                out.append(int(text[i + 2:i + 4], 16))
                i += 4
                continue
            out += text[i:i + 2]
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(chr(b) in "0123456789abcdefABCDEF" for b in pair)


def read_text(args, parser: argparse.ArgumentParser) -> bytes:
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                text = f.read()
        except OSError as e:
            raise SystemExit(f"error: could not open file '{args.file}' for reading: {e.strerror or e}")
    elif args.stdin:
        text = sys.stdin.buffer.read()
    elif args.prompt is not None:
        text = args.prompt.encode("utf-8", "surrogateescape")
    else:
        parser.error("must specify one of: --stdin, --file or --prompt")
    return process_escapes(text) if args.escape else text


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        resolve_model(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        text = read_text(args, parser)
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 1
        raise

    from lamina.gguf import read  # noqa: PLC0415 - keep `--help` fast
    from lamina.tokenizer import Tokenizer  # noqa: PLC0415

    try:
        tok = Tokenizer.from_gguf(read(args.model))
    except GGUFError as e:
        print(f"error: could not load the vocabulary: {e}", file=sys.stderr)
        return 1

    add_special = tok.add_bos and not args.no_bos  # llama-tokenize passes this as add_special
    ids = tok.tokenize(text, add_special=add_special, parse_special=not args.no_parse_special)

    out = sys.stdout.buffer
    if args.ids:
        out.write(("[" + ", ".join(map(str, ids)) + "]\n").encode())
    else:
        for token_id in ids:
            piece = tok.token_to_piece(token_id, special=True)
            out.write(f"{token_id:6d} -> '".encode() + piece + b"'\n")
    if args.show_count:
        out.write(f"Total number of tokens: {len(ids)}\n".encode())
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
