"""``lamina perplexity -m MODEL -f FILE -c 512``: llama-perplexity's measurement and output.

Three modes, as in llama-perplexity: plain perplexity; ``--kl-divergence-base FILE``
(perplexity, also saving the model's log-probabilities to FILE); and
``--kl-divergence-base FILE --kl-divergence`` (evaluate FILE's tokens with another model
and print how far its predictions are from the saved ones).
"""

from __future__ import annotations

import argparse
import sys
import time

from lamina.cli.options import add_model_options, resolve_model

DEFAULT_CTX = 512

_KLD_EPILOG = """\
KL-divergence against a base model (e.g. the F16 file) takes two runs:
  lamina perplexity -m base-f16.gguf -f text.txt -c 512 --kl-divergence-base base.kld
  lamina perplexity -m model-q4_k_m.gguf --kl-divergence-base base.kld --kl-divergence
The second run reads the tokens and n_ctx from the file (-f is not needed; -c, if given,
must match). The file has the layout of llama-perplexity's --kl-divergence-base file
("_logits_" magic, then n_ctx, n_vocab, n_chunk, the tokens and every scored token's
log-probabilities in 16 bits per vocabulary entry, encoded as llama-perplexity encodes
them), so files from either tool are meant to work with the other. It is large: about
2 * n_vocab bytes per scored token (smollm2 on a 7.5k-token text at -c 512: 351 MB).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lamina perplexity", epilog=_KLD_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Perplexity of a model on a text file, computed as llama-perplexity does;\n"
                                            "or the KL-divergence of a model's predictions from a base model's.")
    add_model_options(p, ctx_default=DEFAULT_CTX)
    p.set_defaults(ctx_size=None)  # None: not given (the KL-divergence pass then takes the file's n_ctx)
    p.add_argument("-f", "--file", default=None, help="text file to score (not needed with --kl-divergence)")
    p.add_argument("--chunks", type=int, default=-1, help="maximum number of chunks to process (default: all)")
    g = p.add_argument_group("KL-divergence")
    g.add_argument("--kl-divergence-base", metavar="FILE", default=None,
                   help="without --kl-divergence: save the model's log-probabilities to FILE; "
                        "with it: read the base model's log-probabilities from FILE")
    g.add_argument("--kl-divergence", action="store_true",
                   help="compare this model with the base model whose log-probabilities are in "
                        "--kl-divergence-base FILE (prints PPL ratio, KLD statistics, same top token, Δp)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resolve_model(args)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.kl_divergence:
        if not args.kl_divergence_base:
            print("error: --kl-divergence needs --kl-divergence-base FILE, the base model's log-probabilities "
                  "(made by a run without --kl-divergence)", file=sys.stderr)
            return 1
        return _kl_divergence_main(args)
    if args.file is None:
        print("error: the text to score is missing: give -f FILE", file=sys.stderr)
        return 1
    return _perplexity_main(args)


def _load(args, n_ctx: int):
    from lamina.llama import Llama

    n_seq = max(1, args.batch_size // n_ctx)
    llm = Llama(args.model, n_ctx=n_ctx, n_batch=n_seq * n_ctx, n_ubatch=args.ubatch_size,
                n_threads=args.threads, verbose=False, n_seq_max=n_seq)
    return llm, n_seq


def _bos(llm) -> int | None:
    return llm.token_bos() if llm.tokenizer_.add_bos else None


def _eta_printer(name: str, n_chunk: int, n_seq: int, t0: float):
    """Prints llama-perplexity's "seconds per pass - ETA" line once the first batch of chunks is done."""
    def first_pass_done() -> None:
        took = time.perf_counter() - t0
        seconds = int(took * n_chunk / n_seq)
        hours = f"{seconds // 3600} hours " if seconds >= 3600 else ""
        print(f"{name}: {took:.2f} seconds per pass - ETA {hours}{seconds % 3600 / 60:.2f} minutes",
              file=sys.stderr)
    return first_pass_done


def _perplexity_main(args) -> int:
    from lamina.kl_divergence import save_base_log_probs
    from lamina.perplexity import PerplexityError, chunk_count, perplexity

    n_ctx = DEFAULT_CTX if args.ctx_size is None else args.ctx_size
    if n_ctx <= 0:
        print("error: perplexity needs a positive context size (-c)", file=sys.stderr)
        return 1
    try:
        with open(args.file, "rb") as f:
            text = f.read()
        llm, n_seq = _load(args, n_ctx)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    tokens = llm.tokenize(text, add_bos=True, special=False)
    print(f"perplexity: tokenizing the input took {(time.perf_counter() - t0) * 1e3:.2f} ms ({len(tokens)} tokens)",
          file=sys.stderr)
    n_chunk = chunk_count(len(tokens), n_ctx, args.chunks)
    if args.kl_divergence_base:
        print(f"perplexity: saving all log-probabilities to {args.kl_divergence_base}", file=sys.stderr)
    print(f"perplexity: calculating perplexity over {n_chunk} chunks, n_ctx={n_ctx}, batch_size={n_seq * n_ctx}, "
          f"n_seq={n_seq}", file=sys.stderr)
    t0 = time.perf_counter()
    first_pass_done = _eta_printer("perplexity", n_chunk, n_seq, t0)

    def progress(chunk: int, ppl: float) -> None:
        if chunk == 1:
            first_pass_done()
        print(f"[{chunk}]{ppl:.4f},", end="", flush=True)

    try:
        if args.kl_divergence_base:
            result = save_base_log_probs(llm._ctx, tokens, n_ctx, _bos(llm), llm.n_vocab(), args.kl_divergence_base,
                                         args.chunks, progress)
        else:
            result = perplexity(llm._ctx, tokens, n_ctx, _bos(llm), args.chunks, progress)
    except PerplexityError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"\nerror: cannot write {args.kl_divergence_base}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted" + (f": {args.kl_divergence_base} was not written" if args.kl_divergence_base else ""),
              file=sys.stderr)
        return 130
    print()
    print(f"Final estimate: PPL = {result.ppl:.4f} +/- {result.uncertainty:.5f}")
    print(f"perplexity: {result.n_chunks} chunks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


_TABLE_HEADER = ("chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              "
                 "Δp RMS            Same top p")


def _chunk_row(chunk: int, s) -> str:
    """One line of llama-perplexity's running KL-divergence table."""
    ppl, ratio, kld, rms, top = s.ppl(), s.log_ppl_ratio(), s.kld(), s.p_diff_rms(), s.same_top()
    return (f"{chunk:4d}    {ppl.value:9.4f} ± {ppl.uncertainty:9.4f}"
            f"    {ratio.value:10.5f} ± {ratio.uncertainty:10.5f}"
            f"    {kld.value:10.5f} ± {kld.uncertainty:10.5f}"
            f"    {100 * rms.value:6.3f} ± {100 * rms.uncertainty:6.3f} %"
            f"    {100 * top.value:6.3f} ± {100 * top.uncertainty:6.3f} %")


def format_statistics(s) -> str:
    """llama-perplexity's final KL-divergence report for the statistics ``s`` (a lamina.kl_divergence.KLDivergence)."""
    from lamina.kl_divergence import median, percentile

    ppl, base, ratio, log_ratio, diff = s.ppl(), s.ppl_base(), s.ppl_ratio(), s.log_ppl_ratio(), s.ppl_difference()
    kld, p_diff, rms, top = s.kld(), s.p_diff(), s.p_diff_rms(), s.same_top()
    klds, p_diffs = s.kld_values(), s.p_diff_values()
    lines = [
        "====== Perplexity statistics ======",
        f"Mean PPL(Q)                   : {ppl.value:10.6f} ± {ppl.uncertainty:10.6f}",
        f"Mean PPL(base)                : {base.value:10.6f} ± {base.uncertainty:10.6f}",
        f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * s.log_ppl_correlation():6.2f}%",
        f"Mean ln(PPL(Q)/PPL(base))     : {log_ratio.value:10.6f} ± {log_ratio.uncertainty:10.6f}",
        f"Mean PPL(Q)/PPL(base)         : {ratio.value:10.6f} ± {ratio.uncertainty:10.6f}",
        f"Mean PPL(Q)-PPL(base)         : {diff.value:10.6f} ± {diff.uncertainty:10.6f}",
        "",
        "====== KL divergence statistics ======",
        f"Mean    KLD: {kld.value:10.6f} ± {kld.uncertainty:10.6f}",
        f"Maximum KLD: {klds[-1]:10.6f}",
    ]
    for label, fraction in (("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900)):
        lines.append(f"{label}   KLD: {percentile(klds, fraction):10.6f}")
    lines.append(f"Median  KLD: {median(klds):10.6f}")
    for label, fraction in ((("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010), (" 0.1%", 0.001))):
        lines.append(f"{label}   KLD: {percentile(klds, fraction):10.6f}")
    lines += [f"Minimum KLD: {klds[0]:10.6f}", "",
              "====== Token probability statistics ======",
              f"Mean    Δp: {100 * p_diff.value:6.3f} ± {100 * p_diff.uncertainty:5.3f} %",
              f"Maximum Δp: {100 * p_diffs[-1]:6.3f}%"]
    for label, fraction in (("99.9%", 0.999), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900), ("75.0%", 0.750)):
        lines.append(f"{label}   Δp: {100 * percentile(p_diffs, fraction):6.3f}%")
    lines.append(f"Median  Δp: {100 * median(p_diffs):6.3f}%")
    for label, fraction in (("25.0%", 0.250), ("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010), (" 0.1%", 0.001)):
        lines.append(f"{label}   Δp: {100 * percentile(p_diffs, fraction):6.3f}%")
    lines += [f"Minimum Δp: {100 * p_diffs[0]:6.3f}%",
              f"RMS Δp    : {100 * rms.value:6.3f} ± {100 * rms.uncertainty:5.3f} %",
              f"Same top p: {100 * top.value:6.3f} ± {100 * top.uncertainty:5.3f} %"]
    return "\n".join(lines)


def _kl_divergence_main(args) -> int:
    from lamina.kl_divergence import check_base_fits, kl_divergence
    from lamina.log_prob_file import LogProbFileError, LogProbReader
    from lamina.perplexity import PerplexityError

    if args.file is not None:
        print("kl_divergence: note: -f is not used: the tokens come from the --kl-divergence-base file",
              file=sys.stderr)
    try:
        reader = LogProbReader(args.kl_divergence_base)
    except LogProbFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    with reader:
        h = reader.header
        try:
            check_base_fits(reader, n_ctx=args.ctx_size)
            llm, n_seq = _load(args, h.n_ctx)
            check_base_fits(reader, n_vocab=llm.n_vocab())
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        n_chunk = h.n_chunk if args.chunks < 0 else min(args.chunks, h.n_chunk)
        print(f"kl_divergence: computing over {n_chunk} chunks, n_ctx={h.n_ctx}, batch_size={n_seq * h.n_ctx}, "
              f"n_seq={n_seq}", file=sys.stderr)
        t0 = time.perf_counter()
        first_pass_done = _eta_printer("kl_divergence", n_chunk, n_seq, t0)

        def progress(chunk: int, stats) -> None:
            if chunk == 1:
                first_pass_done()
                print()
                print(_TABLE_HEADER)
            print(_chunk_row(chunk, stats), flush=True)

        try:
            stats = kl_divergence(llm._ctx, reader, _bos(llm), args.chunks, progress)
        except (LogProbFileError, PerplexityError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    print()
    if stats.count < 100:
        print(f"kl_divergence: only {stats.count} tokens scored: too few for the summary statistics "
              f"(llama-perplexity needs 100)", file=sys.stderr)
    else:
        print(format_statistics(stats))
    print(f"kl_divergence: {n_chunk} chunks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0
