"""``lamina convert``: a Hugging Face checkpoint folder to GGUF, with ``convert_hf_to_gguf.py``'s command line.

    lamina convert MODEL_DIR [--outfile PATH] [--outtype f32|f16|bf16|q8_0|auto] [--vocab-only]
                   [--metadata FILE.json] [--model-name NAME] [--verbose]
    lamina convert --print-supported-models

The file written is byte for byte what llama.cpp's converter writes for the same folder. It is
written atomically, one tensor at a time. Quantize it further with ``lamina quantize``.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lamina convert",
        description="Convert a Hugging Face model folder (safetensors, config.json, tokenizer) to a GGUF file, "
                    "as llama.cpp's convert_hf_to_gguf.py does.")
    p.add_argument("model", nargs="?", help="folder holding config.json, the model's safetensors and its tokenizer")
    p.add_argument("--outfile", help="where to write; a folder, or a name in which {ftype} becomes the output type "
                                     "(default: a name made from the model's, in the model folder)")
    p.add_argument("--outtype", default="auto", choices=["f32", "f16", "bf16", "q8_0", "tq1_0", "tq2_0", "auto"],
                   help="type of the weights: f32, f16, bf16, q8_0, or auto (BF16 or F16 as the checkpoint "
                        "stores them; the default)")
    p.add_argument("--vocab-only", action="store_true", help="write only the tokenizer and metadata")
    p.add_argument("--metadata", help="JSON file of general.* keys that override what the model card says")
    p.add_argument("--model-name", help="the model's name (general.name)")
    p.add_argument("--verbose", action="store_true", help="say more about each step")
    p.add_argument("--print-supported-models", action="store_true", help="list the architectures lamina converts")
    p.add_argument("--use-temp-file", action="store_true", help="accepted for compatibility: lamina always streams")
    p.add_argument("--no-lazy", action="store_true", help="accepted for compatibility: lamina always streams")
    for flag in ("--bigendian", "--remote", "--mmproj", "--mistral-format"):
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in ("--split-max-tensors", "--split-max-size"):
        p.add_argument(flag, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from lamina.convert import ConvertError, convert
    from lamina.convert.architectures import CONVERTERS

    if args.print_supported_models:
        for cls in CONVERTERS:
            print(f"{cls.gguf_arch}: {', '.join(cls.hf_architectures)}")
        return 0
    refused = _refused(args)
    if refused:
        print(f"lamina convert: error: {refused}", file=sys.stderr)
        return 2
    if args.model is None:
        build_parser().error("the following arguments are required: model")
    log = (lambda line: print(f"INFO:lamina.convert:{line}", file=sys.stderr)) if args.verbose else None
    bar = _ProgressBar()
    try:
        path = convert(args.model, args.outfile, args.outtype, vocab_only=args.vocab_only, metadata=args.metadata,
                       model_name=args.model_name, log=log, progress=bar.update)
    except (ConvertError, OSError) as e:
        bar.close()
        print(f"lamina convert: error: {e}", file=sys.stderr)
        return 1
    bar.close()
    print(f"Model successfully exported to {path}", file=sys.stderr)
    return 0


def _refused(args) -> str | None:
    if args.outtype in ("tq1_0", "tq2_0"):
        return (f"--outtype {args.outtype}: ternary models come from ternary checkpoints (BitNet); convert to f16 "
                f"and use `lamina quantize MODEL.gguf OUT.gguf {args.outtype.upper()}` instead")
    if args.split_max_tensors or args.split_max_size:
        return "--split-max-tensors/--split-max-size: convert to one file, then split it with `lamina gguf-split`"
    for flag in ("bigendian", "remote", "mmproj", "mistral_format"):
        if getattr(args, flag):
            return f"--{flag.replace('_', '-')} is not supported by lamina convert"
    return None


class _ProgressBar:
    """tqdm's "Writing" bar over the bytes written, shown once writing starts."""

    def __init__(self):
        self._bar = None

    def update(self, done: int, total: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(desc="Writing", total=total, unit="byte", unit_scale=True, file=sys.stderr)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
