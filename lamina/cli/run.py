"""``lamina -m MODEL -p PROMPT -n N``: stream a completion to standard output, like llama.cpp's main.

The prompt is echoed, the continuation streamed as it is sampled, and llama.cpp's
timing summary printed to standard error at the end.
"""

from __future__ import annotations

import argparse
import sys
import time

from lamina.cli import subcommand_help
from lamina.cli.options import (
    add_interactive_options,
    add_model_options,
    add_sampling_options,
    grammar_from,
    process_escapes,
    resolve_model,
    sampler_chain_for,
    sampling_params_from,
    wants_interactive,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lamina",
        description="Run a GGUF language model on the CPU, like llama.cpp.",
        epilog=subcommand_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(p)
    g = p.add_argument_group("prompt and generation")
    src = g.add_mutually_exclusive_group()
    src.add_argument("-p", "--prompt", help="prompt to start generation with")
    src.add_argument("-f", "--file", help="a file containing the prompt")
    g.add_argument("-n", "--n-predict", type=int, default=-1,
                   help="number of tokens to predict (default: -1 = until end of generation or context full)")
    g.add_argument("-e", "--escape", dest="escape", action="store_true", default=True,
                   help="process escapes (\\n, \\t, \\', \\\", \\\\, \\xNN) in the prompt (default: on)")
    g.add_argument("--no-escape", dest="escape", action="store_false", help="do not process escape sequences")
    g.add_argument("--ignore-eos", action="store_true", help="ignore end-of-generation tokens and keep generating")
    g.add_argument("--no-display-prompt", action="store_true", help="do not echo the prompt")
    g.add_argument("--context-shift", action="store_true",
                   help="when the context fills, drop half of the tokens after --keep and continue")
    g.add_argument("--keep", type=int, default=0, help="tokens of the prompt to keep when shifting (-1 = all)")
    add_sampling_options(p)
    add_interactive_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_model(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if wants_interactive(args):
        from lamina.cli.chat import run_interactive

        return run_interactive(args)
    if args.prompt is None and args.file is None:
        args.prompt = ""
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                prompt = f.read().decode("utf-8", "replace")
        except OSError as e:
            print(f"error: cannot read prompt file {args.file}: {e.strerror}", file=sys.stderr)
            return 1
    else:
        prompt = args.prompt
    if args.escape:
        prompt = process_escapes(prompt)
    try:
        llm = load_llama(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    try:
        return generate_to_stdout(llm, prompt, args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        print(llm.perf.report(), file=sys.stderr)
        return 130


def load_llama(args):
    from lamina.llama import Llama

    return Llama(args.model, n_ctx=args.ctx_size, n_batch=args.batch_size, n_ubatch=args.ubatch_size,
                 n_threads=args.threads, seed=args.seed, verbose=False, fit_ctx=args.ctx_size == 0)


def generate_to_stdout(llm, prompt: str, args) -> int:
    from lamina.engine.kv_cache import ContextFullError
    from lamina.kernels import compile_notice
    from lamina.tokenizer import IncrementalDetokenizer

    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    n_ctx = llm.n_ctx()
    if len(tokens) > n_ctx - 4:
        print(f"error: prompt is too long ({len(tokens)} tokens, max {n_ctx - 4})", file=sys.stderr)
        return 1
    if not tokens:
        bos = llm.token_bos()
        if bos is None or bos < 0:
            print("error: the prompt is empty and the model has no BOS token", file=sys.stderr)
            return 1
        tokens = [bos]
    from lamina.grammar import GrammarError
    from lamina.sampling import SamplingError

    try:
        chain = sampler_chain_for(llm, sampling_params_from(args, n_ctx), grammar_from(args))
    except (SamplingError, GrammarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    chain.accept_many(tokens)  # llama.cpp's CLI lets the penalties see the prompt
    out = sys.stdout
    detok = IncrementalDetokenizer(llm.tokenizer_, special=False)
    llm.perf.reset()
    llm.eval(tokens)
    compile_notice.finish()  # a first run's "compiling kernels" line ends before the text starts
    if not args.no_display_prompt:
        out.write(llm.detokenize(tokens, special=False).decode("utf-8", "replace"))
        out.flush()
    n_keep = len(tokens) if args.keep < 0 else min(args.keep, len(tokens))
    generated = 0
    while args.n_predict < 0 or generated < args.n_predict:
        t0 = time.perf_counter()
        token = int(chain.sample(llm.logits()))
        chain.accept(token)
        llm.perf.add_sample(time.perf_counter() - t0)
        if llm.tokenizer_.is_eog(token) and not args.ignore_eos:
            break
        out.write(detok.feed([token]))
        out.flush()
        generated += 1
        if args.n_predict >= 0 and generated >= args.n_predict:
            break
        if llm.n_tokens + 1 > n_ctx:
            if not args.context_shift:
                out.write(detok.flush())
                print(f"\n\ncontext full ({n_ctx} tokens) and context shift is disabled: stopping "
                      f"(use -c to enlarge it or --context-shift)", file=sys.stderr)
                break
            llm.shift_context(n_keep)
        try:
            llm.eval([token])
        except ContextFullError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            break
    out.write(detok.flush())
    out.write("\n")
    out.flush()
    print(llm.perf.report(), file=sys.stderr)
    return 0
