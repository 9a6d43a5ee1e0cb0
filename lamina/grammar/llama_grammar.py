"""``LlamaGrammar``: llama-cpp-python's grammar object, and the one place a request's grammar is made.

``LlamaGrammar.from_string`` / ``from_file`` take GBNF, ``from_json_schema`` a schema, as in
llama-cpp-python; each checks its input at once, so a bad grammar fails where it is written, not
at the first token. The compiled form depends on the model's vocabulary (``<|im_end|>`` is an id
only there), so it is made per tokenizer, once, and each generation gets a fresh matcher.
"""

from __future__ import annotations

import json
import os
import weakref

from .errors import GrammarError
from .matcher import GrammarMatcher
from .vocabulary import matcher_tokenizer

GBNF, JSON_SCHEMA, LARK = "gbnf", "json_schema", "lark"
RESPONSE_FORMAT_TYPES = ("text", "json_object", "json_schema")  # OpenAI's response_format types


class LlamaGrammar:
    """A grammar to constrain generation with: GBNF text, a JSON schema, or llguidance's Lark."""

    def __init__(self, source: str, kind: str = GBNF, root: str = "root"):
        if kind not in (GBNF, JSON_SCHEMA, LARK):
            raise GrammarError(f"unknown grammar kind {kind!r}")
        self.source, self.kind, self.root = source, kind, root
        self._compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> compiled
        self._check()

    def _check(self) -> None:
        if self.kind == LARK:  # llguidance's own syntax, made by lamina (tool calls), tokens as ids
            from . import compile_lark

            self._vocabulary_free = compile_lark(self.source)
            return
        if self.kind == JSON_SCHEMA:
            from .json_schema import compile_json_schema

            self._vocabulary_free = compile_json_schema(self.source)
            return
        from . import LLGUIDANCE_PREFIX, compile_gbnf, compile_lark
        from .gbnf import parse

        if self.source.lstrip().startswith(LLGUIDANCE_PREFIX):
            self._vocabulary_free = compile_lark(self.source)
            return
        grammar = parse(self.source, self.root)
        # <|name|> tokens are ids only in a vocabulary; anything else compiles once, now
        self._vocabulary_free = None if _names_token_text(grammar) else compile_gbnf(self.source, root=self.root)

    # llama-cpp-python's constructors
    @classmethod
    def from_string(cls, grammar: str, verbose: bool = True) -> "LlamaGrammar":
        return cls(grammar, GBNF)

    @classmethod
    def from_file(cls, file: str | os.PathLike, verbose: bool = True) -> "LlamaGrammar":
        try:
            with open(file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise GrammarError(f"cannot read grammar file {os.fspath(file)!r}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise GrammarError(f"grammar file {os.fspath(file)!r} is not UTF-8 text: {e}") from None
        return cls(text, GBNF)

    @classmethod
    def from_json_schema(cls, json_schema: str | dict, verbose: bool = True) -> "LlamaGrammar":
        text = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
        return cls(text, JSON_SCHEMA)

    def compiled_for(self, tokenizer) -> str:
        """The llguidance grammar for this model's vocabulary (made once per tokenizer)."""
        if self._vocabulary_free is not None:
            return self._vocabulary_free
        if tokenizer not in self._compiled:
            from . import compile_gbnf

            self._compiled[tokenizer] = compile_gbnf(self.source, root=self.root,
                                                     token_id=lambda text: token_id_of(tokenizer, text))
        return self._compiled[tokenizer]

    def matcher(self, tokenizer, n_vocab: int | None = None) -> GrammarMatcher:
        """A fresh matcher for one generation."""
        return GrammarMatcher(self.compiled_for(tokenizer), matcher_tokenizer(tokenizer),
                              n_vocab if n_vocab is not None else tokenizer.n_vocab)

    def __repr__(self) -> str:
        return f"LlamaGrammar(kind={self.kind!r}, {len(self.source)} characters)"


def as_grammar(grammar) -> LlamaGrammar:
    """A ``LlamaGrammar`` as given, or GBNF text made into one (checked before anything runs)."""
    if isinstance(grammar, LlamaGrammar):
        return grammar
    if isinstance(grammar, str):
        return LlamaGrammar.from_string(grammar)
    raise TypeError(f"grammar must be a LlamaGrammar or GBNF text, not {type(grammar).__name__}")


def _names_token_text(grammar) -> bool:
    """Whether a grammar spells a token by its text (``<|im_end|>``) rather than its id."""
    from .gbnf import Token, nodes

    return any(isinstance(n, Token) and n.text is not None for n in nodes(grammar))


def token_id_of(tokenizer, text: str) -> int:
    """The id of ``<|name|>`` in this vocabulary; it must be exactly one token, as llama.cpp requires."""
    ids = tokenizer.tokenize(text, add_special=False, parse_special=True)
    if len(ids) != 1:
        raise GrammarError(f"invalid token {text!r}: this model's vocabulary makes it {len(ids)} tokens, "
                           "not one")
    return ids[0]


def request_grammar(*, grammar: str | None = None, json_schema=None, response_format=None) -> LlamaGrammar | None:
    """The grammar a request asks for (llama-server's ``grammar``, ``json_schema`` and
    ``response_format``), or None. Asking for two at once is an error."""
    asked = []
    if grammar:
        asked.append(("grammar", LlamaGrammar(grammar, GBNF)))
    if json_schema is not None:
        asked.append(("json_schema", LlamaGrammar.from_json_schema(json_schema)))
    if response_format is not None:
        made = grammar_for_response_format(response_format)
        if made is not None:
            asked.append(("response_format", made))
    if len(asked) > 1:
        raise GrammarError(f"give only one of {', '.join(name for name, _ in asked)}")
    return asked[0][1] if asked else None


def grammar_for_response_format(response_format) -> LlamaGrammar | None:
    """OpenAI's ``response_format``: ``text``, ``json_object`` (with an optional ``schema``, as
    llama-server accepts) or ``json_schema`` (``{"json_schema": {"schema": ...}}``)."""
    if not isinstance(response_format, dict):
        raise GrammarError("response_format must be an object")
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return LlamaGrammar.from_json_schema(response_format.get("schema") or {"type": "object"})
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise GrammarError("response_format json_schema needs a json_schema object with a schema")
        schema = spec.get("schema", {})
        if not isinstance(schema, (dict, bool)):
            raise GrammarError("response_format json_schema.schema must be a JSON schema object")
        return LlamaGrammar.from_json_schema(schema)
    raise GrammarError(f"response_format type {kind!r} is not one of {', '.join(RESPONSE_FORMAT_TYPES)}")
