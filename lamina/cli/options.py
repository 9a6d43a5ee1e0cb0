"""Command-line options shared by the commands, spelled as llama.cpp spells them."""

from __future__ import annotations

import argparse
import re


def add_model_options(p: argparse.ArgumentParser, ctx_default: int = 0) -> None:
    g = p.add_argument_group("model and context")
    g.add_argument("-m", "--model", default=None, help="path to a GGUF model file")
    add_hub_options(g)
    g.add_argument("-c", "--ctx-size", type=int, default=ctx_default,
                   help=f"size of the prompt context (default: {ctx_default}, 0 = the model's training context, "
                        "halved down to 4096 if its KV cache does not fit in memory; the cache is allocated "
                        "lazily, so only the tokens used cost memory)")
    g.add_argument("-b", "--batch-size", type=int, default=2048, help="logical maximum batch size (default: 2048)")
    g.add_argument("-ub", "--ubatch-size", type=int, default=512, help="physical maximum batch size (default: 512)")
    g.add_argument("-t", "--threads", type=int, default=None,
                   help="number of threads for every parallel region (default: physical cores)")


def add_hub_options(g) -> None:
    """llama.cpp's ``-hf`` flags: a model from the Hugging Face Hub instead of ``-m``."""
    g.add_argument("-hf", "-hfr", "--hf-repo", dest="hf_repo", default=None, metavar="USER/REPO[:QUANT]",
                   help="download (or take from the cache) a model from the Hugging Face Hub; QUANT picks the file "
                        "by its tag, e.g. Q8_0 (default: Q4_K_M, then Q8_0, then the first GGUF file)")
    g.add_argument("-hff", "--hf-file", dest="hf_file", default=None,
                   help="the file of the -hf repository to use, instead of choosing by QUANT")
    g.add_argument("-hft", "--hf-token", dest="hf_token", default=None,
                   help="Hugging Face access token (default: the HF_TOKEN environment variable)")


def resolve_model(args) -> None:
    """Set ``args.model`` from ``-hf`` (downloading into the Hub cache as needed).

    Raises ``lamina.hub.HubError`` (an OSError) with one line when the model cannot be had, and
    ValueError when neither or both of ``-m`` and ``-hf`` are given."""
    hf_repo = getattr(args, "hf_repo", None)
    given = args.model if not isinstance(args.model, list) else (args.model or None)
    if hf_repo and given:
        raise ValueError("give -m FILE or -hf USER/REPO, not both")
    if hf_repo:
        from lamina.hub import resolve

        path = str(resolve(hf_repo, args.hf_file, args.hf_token))
        args.model = [path] if isinstance(args.model, list) else path
    elif not given:
        raise ValueError("no model: give -m FILE or -hf USER/REPO[:QUANT]")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    """llama.cpp's sampling flags with its defaults (common/common.h)."""
    g = p.add_argument_group("sampling")
    g.add_argument("-s", "--seed", type=int, default=-1, help="random seed (default: -1 = random)")
    g.add_argument("--temp", type=float, default=0.8, help="temperature (default: 0.8; 0 = greedy)")
    g.add_argument("--top-k", type=int, default=40, help="top-k sampling (default: 40, 0 = disabled)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p sampling (default: 0.95, 1.0 = disabled)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p sampling (default: 0.05, 0.0 = disabled)")
    g.add_argument("--typical", type=float, default=1.0, help="locally typical sampling p (default: 1.0 = disabled)")
    g.add_argument("--top-nsigma", type=float, default=-1.0, help="top-n-sigma sampling (default: -1 = disabled)")
    g.add_argument("--xtc-probability", type=float, default=0.0, help="XTC probability (default: 0.0 = disabled)")
    g.add_argument("--xtc-threshold", type=float, default=0.1, help="XTC threshold (default: 0.1)")
    g.add_argument("--repeat-last-n", type=int, default=64,
                   help="last n tokens to penalize (default: 64, 0 = disabled, -1 = context size)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty (default: 1.0 = disabled)")
    g.add_argument("--presence-penalty", type=float, default=0.0, help="presence penalty (default: 0.0 = disabled)")
    g.add_argument("--frequency-penalty", type=float, default=0.0, help="frequency penalty (default: 0.0 = disabled)")
    g.add_argument("--dry-multiplier", type=float, default=0.0, help="DRY multiplier (default: 0.0 = disabled)")
    g.add_argument("--dry-base", type=float, default=1.75, help="DRY base (default: 1.75)")
    g.add_argument("--dry-allowed-length", type=int, default=2, help="DRY allowed length (default: 2)")
    g.add_argument("--dry-penalty-last-n", type=int, default=-1, help="DRY look-back (default: -1 = context size)")
    g.add_argument("--dry-sequence-breaker", action="append", default=None,
                   help="add a DRY sequence breaker (default: \\n : \" *); 'none' clears them")
    g.add_argument("--dynatemp-range", type=float, default=0.0, help="dynamic temperature range (default: 0.0)")
    g.add_argument("--dynatemp-exp", type=float, default=1.0, help="dynamic temperature exponent (default: 1.0)")
    g.add_argument("--mirostat", type=int, default=0, choices=[0, 1, 2],
                   help="mirostat sampling (default: 0 = off, 1 = v1, 2 = v2)")
    g.add_argument("--mirostat-lr", type=float, default=0.1, help="mirostat learning rate eta (default: 0.1)")
    g.add_argument("--mirostat-ent", type=float, default=5.0, help="mirostat target entropy tau (default: 5.0)")
    g.add_argument("--samplers", default=None,
                   help="samplers in order, separated by ';' (default: penalties;dry;top_n_sigma;top_k;typ_p;top_p;"
                        "min_p;xtc;temperature)")
    g.add_argument("--sampling-seq", default=None, help="samplers as letters (default: edskypmxt)")
    g.add_argument("-l", "--logit-bias", action="append", default=[],
                   help="TOKEN_ID(+/-)BIAS, e.g. 15043+1 or 15043-inf (repeatable)")
    g.add_argument("--grammar", default=None, help="GBNF grammar that every generated token must fit")
    g.add_argument("--grammar-file", default=None, help="file to read the GBNF grammar from")
    g.add_argument("-j", "--json-schema", default=None,
                   help="JSON schema the output must match, e.g. '{}' for any JSON value")
    g.add_argument("-jf", "--json-schema-file", default=None, help="file to read the JSON schema from")


def grammar_from(args):
    """The grammar the flags ask for (a ``LlamaGrammar``), or None; raises GrammarError."""
    from lamina.grammar import GrammarError, LlamaGrammar

    given = [name for name in ("grammar", "grammar_file", "json_schema", "json_schema_file")
             if getattr(args, name, None) is not None]
    if len(given) > 1:
        raise GrammarError("give only one of " + ", ".join("--" + n.replace("_", "-") for n in given))
    if args.grammar is not None:
        return LlamaGrammar.from_string(args.grammar)
    if args.grammar_file is not None:
        return LlamaGrammar.from_file(args.grammar_file)
    if args.json_schema is not None:
        return LlamaGrammar.from_json_schema(args.json_schema)
    if args.json_schema_file is not None:
        try:
            with open(args.json_schema_file, encoding="utf-8") as f:
                return LlamaGrammar.from_json_schema(f.read())
        except OSError as e:
            raise GrammarError(f"cannot read JSON schema file {args.json_schema_file!r}: {e.strerror}") from None
    return None


def sampling_params_from(args, n_ctx: int) -> "SamplingParams":
    """Build lamina's SamplingParams from the parsed llama.cpp-style flags (-1 look-backs mean ``n_ctx``)."""
    from lamina.sampling import SamplingParams, parse_sampler_names, parse_sampling_seq

    options = dict(
        seed=args.seed, temp=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p, typ_p=args.typical,
        top_n_sigma=args.top_nsigma, xtc_probability=args.xtc_probability, xtc_threshold=args.xtc_threshold,
        penalty_last_n=n_ctx if args.repeat_last_n == -1 else args.repeat_last_n, penalty_repeat=args.repeat_penalty,
        penalty_present=args.presence_penalty, penalty_freq=args.frequency_penalty,
        dry_multiplier=args.dry_multiplier, dry_base=args.dry_base, dry_allowed_length=args.dry_allowed_length,
        dry_penalty_last_n=n_ctx if args.dry_penalty_last_n == -1 else args.dry_penalty_last_n, dynatemp_range=args.dynatemp_range,
        dynatemp_exp=args.dynatemp_exp, mirostat=args.mirostat, mirostat_eta=args.mirostat_lr,
        mirostat_tau=args.mirostat_ent, logit_bias=parse_logit_bias(args.logit_bias),
        ignore_eos=bool(getattr(args, "ignore_eos", False)),
    )
    if args.dry_sequence_breaker is not None:
        options["dry_sequence_breakers"] = [] if args.dry_sequence_breaker == ["none"] else [
            process_escapes(s) for s in args.dry_sequence_breaker]
    if args.samplers:
        options["samplers"] = parse_sampler_names(args.samplers)
    elif args.sampling_seq:
        options["samplers"] = parse_sampling_seq(args.sampling_seq)
    return SamplingParams.from_options(**options)


def sampler_chain_for(llm, params, grammar=None) -> "SamplerChain":
    """A sampler chain for ``llm``'s vocabulary (DRY gets the token texts it needs to find breakers),
    constrained by ``grammar`` (a ``LlamaGrammar``) as llama.cpp's common sampler constrains it."""
    from lamina.sampling import SamplerChain

    tok = llm.tokenizer_
    extra = {}
    if params.dry_multiplier > 0:
        extra = dict(token_pieces=tok.all_pieces,
                     tokenize=lambda b: tok.tokenize(b, add_special=False, parse_special=False))
    matcher = grammar.matcher(tok, tok.n_vocab) if grammar is not None else None
    return SamplerChain(params, tok.n_vocab, eog_tokens=tok.eog_ids, grammar=matcher, **extra)


def parse_logit_bias(items: list[str]) -> dict[int, float]:
    """llama.cpp's ``-l TOKEN_ID(+/-)BIAS`` values."""
    bias = {}
    for item in items:
        m = re.fullmatch(r"\s*(\d+)\s*([+-])\s*(inf|[0-9.]+(?:e[+-]?\d+)?)\s*", item, re.IGNORECASE)
        if not m:
            raise argparse.ArgumentTypeError(f"invalid logit bias {item!r}: expected TOKEN_ID+BIAS or TOKEN_ID-BIAS")
        value = float(m.group(3))
        bias[int(m.group(1))] = value if m.group(2) == "+" else -value
    return bias


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "'": "'", '"': '"', "\\": "\\", "a": "\a", "b": "\b",
            "f": "\f", "v": "\v", "?": "?"}


def process_escapes(text: str) -> str:
    r"""llama.cpp's ``string_process_escapes``: \n \r \t \' \" \\ \a \b \f \v \? and \xNN; others kept as is."""
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
                out.append(chr(int(text[i + 2:i + 4], 16)))
                i += 4
                continue
        out.append(c)
        i += 1
    return "".join(out)


def add_interactive_options(p: argparse.ArgumentParser) -> None:
    """Flags of llama.cpp's interactive and conversation modes (the seed's ``--interactive --color -ins``)."""
    g = p.add_argument_group("interactive and chat")
    g.add_argument("-i", "--interactive", action="store_true",
                   help="interactive completion: type text that continues the document, no chat template")
    g.add_argument("-cnv", "--conversation", action="store_true",
                   help="chat with the model using its chat template")
    g.add_argument("-ins", "--instruct", action="store_true", help="old spelling of --conversation")
    g.add_argument("-sys", "--system-prompt", default=None, help="system prompt for conversation mode")
    g.add_argument("--color", action="store_true", help="colour prompt, user input and generated text apart")
    g.add_argument("-r", "--reverse-prompt", action="append", default=[],
                   help="stop generating and hand control back when this text appears (repeatable)")
    g.add_argument("--in-prefix", default="",
                   help="text inserted before each user input (turns the chat template off, as in llama.cpp)")
    g.add_argument("--in-suffix", default="",
                   help="text inserted after each user input (turns the chat template off, as in llama.cpp)")
    g.add_argument("--in-prefix-bos", action="store_true", help="prefix each user input with the BOS token")
    g.add_argument("--chat-template", default=None,
                   help="built-in chat template name (chatml, llama2, llama3, mistral-v7, gemma, phi3, zephyr, vicuna, ...) "
                        "or a Jinja template string")
    g.add_argument("--chat-template-file", default=None, help="file holding a Jinja chat template")
    g.add_argument("-mli", "--multiline-input", action="store_true",
                   help="multi-line input: Enter starts a new line; end a line with '\\' (or press Ctrl-D) to send "
                        "(without it, Enter sends and a line ending in '\\' continues)")


def wants_interactive(args) -> bool:
    return bool(getattr(args, "interactive", False) or getattr(args, "conversation", False)
                or getattr(args, "instruct", False))
