"""Structured output: GBNF grammars and JSON schemas, enforced at every sampled token.

A grammar is read and checked here (``gbnf``), translated for llguidance's matcher
(``to_lark``), and compiled once per request; a ``GrammarMatcher`` then follows one sequence,
telling the sampler chain which tokens may come next. JSON schemas go to llguidance's own
compiler after lamina's checks (``json_schema``), which refuse what cannot be enforced.
"""

from __future__ import annotations

from .errors import GrammarError, UnsupportedSchemaError
from .gbnf import Grammar, parse

__all__ = ["GrammarError", "UnsupportedSchemaError", "Grammar", "LlamaGrammar", "GrammarMatcher", "parse",
           "RESPONSE_FORMAT_TYPES", "as_grammar", "compile_gbnf", "compile_lark", "request_grammar",
           "validate_compiled"]

LLGUIDANCE_PREFIX = "%llguidance"


def compile_gbnf(text: str, *, root: str = "root", token_id=None) -> str:
    """GBNF text as a compiled llguidance grammar (checked as llama.cpp checks it).

    Text that starts with ``%llguidance`` is Lark for llguidance itself, as in llama.cpp.
    ``token_id(text)`` resolves ``<|name|>`` tokens to ids (it needs the model's vocabulary).
    """
    if isinstance(text, str) and text.lstrip().startswith(LLGUIDANCE_PREFIX):
        return compile_lark(text)
    from .to_lark import names_tokens, to_lark

    grammar = parse(text, root)
    return compile_lark(to_lark(grammar, token_id), probe=not names_tokens(grammar))


def compile_lark(lark: str, probe: bool | None = None) -> str:
    """Lark text for llguidance, compiled and checked; ``probe`` (default: when no ``<...>`` token
    appears in it) checks that it can match something at all."""
    import llguidance

    if probe is None:
        probe = "<" not in lark
    return validate_compiled(llguidance.LLMatcher.grammar_from_lark(lark), probe=probe)


def validate_compiled(compiled: str, llg_tokenizer=None, probe: bool = True) -> str:
    """``compiled`` if llguidance accepts it and it can match something, else a GrammarError.

    A grammar that matches nothing at all (a ``$ref`` cycle that never reaches a value, a rule
    that only refers to itself) would leave generation no token to choose; it is caught here, on
    a vocabulary of bytes and token ids, before any model runs."""
    import llguidance

    from .matcher import GrammarMatcher, parser_limits
    from .vocabulary import N_SPECIAL_BYTES_VOCAB, byte_tokenizer

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(compiled, llg_tokenizer,
                                                                            limits=parser_limits())
    if is_error:
        raise GrammarError(f"the grammar was refused by the matcher: {messages[0] if messages else 'unknown error'}")
    if probe:  # (a grammar naming token ids may name ids past the byte vocabulary: not probed)
        matcher = GrammarMatcher(compiled, byte_tokenizer(), N_SPECIAL_BYTES_VOCAB + 256)
        try:
            empty = not matcher.accepting and not matcher.mask().any()
        except GrammarError:
            empty = True
        if empty:
            raise GrammarError("the grammar can match nothing (does a rule or $ref only lead back to itself?)")
    return compiled


from .llama_grammar import RESPONSE_FORMAT_TYPES, LlamaGrammar, as_grammar, request_grammar  # noqa: E402
from .matcher import GrammarMatcher  # noqa: E402
