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
           "compile_gbnf", "compile_lark", "request_grammar", "validate_compiled"]

LLGUIDANCE_PREFIX = "%llguidance"


def compile_gbnf(text: str, *, root: str = "root", token_id=None) -> str:
    """GBNF text as a compiled llguidance grammar (checked as llama.cpp checks it).

    Text that starts with ``%llguidance`` is Lark for llguidance itself, as in llama.cpp.
    ``token_id(text)`` resolves ``<|name|>`` tokens to ids (it needs the model's vocabulary).
    """
    if isinstance(text, str) and text.lstrip().startswith(LLGUIDANCE_PREFIX):
        return compile_lark(text)
    from .to_lark import to_lark

    return compile_lark(to_lark(parse(text, root), token_id))


def compile_lark(lark: str) -> str:
    import llguidance

    return validate_compiled(llguidance.LLMatcher.grammar_from_lark(lark))


def validate_compiled(compiled: str, llg_tokenizer=None) -> str:
    """``compiled`` if llguidance accepts it, else a GrammarError with its reason."""
    import llguidance

    from .matcher import parser_limits

    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(compiled, llg_tokenizer,
                                                                            limits=parser_limits())
    if is_error:
        raise GrammarError(f"the grammar was refused by the matcher: {messages[0] if messages else 'unknown error'}")
    return compiled


from .llama_grammar import LlamaGrammar, request_grammar  # noqa: E402  (needs compile_* above)
from .matcher import GrammarMatcher  # noqa: E402
