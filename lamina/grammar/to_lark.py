"""A checked GBNF grammar as the Lark text llguidance's matcher compiles.

GBNF matches character by character with no lexer; llguidance splits the work between a lexer
(terminals: regular expressions, matched greedily, longest first) and an Earley parser (rules).
Greedy lexing changes what a grammar accepts wherever a terminal could run on into what follows
it (``[a-z]* "z"`` would never match "abz"), so the translation keeps GBNF's meaning in two ways:

- a grammar whose root is regular (it reaches no recursion and no token) becomes one terminal, a
  single regular expression, which has no inner boundaries to cut at: exact and fastest;
- otherwise every rule is a parser rule whose terminals are single characters, so the lexer can
  never take more than one character at a time and the parser decides everything, as in GBNF.

Repetitions stay repetitions (``x*``, ``x{m,n}``): the Earley parser runs them in constant space,
where llama.cpp's right-recursive expansion of them would not. JSON schemas do not come through
here: llguidance compiles those itself, with lexemes it knows to be safe.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import GrammarError
from .gbnf import Chars, Choice, Grammar, Literal, Node, Repeat, RuleRef, Sequence, Token, nodes


def _regex_char(cp: int) -> str:
    c = chr(cp)
    return c if c.isascii() and c.isalnum() else f"\\x{{{cp:X}}}"


def _regex_class(chars: Chars) -> str:
    if chars.negated and not chars.ranges:
        return "(?s:.)"
    body = "".join(_regex_char(lo) if lo == hi else f"{_regex_char(lo)}-{_regex_char(hi)}"
                   for lo, hi in chars.ranges)
    if not body:
        return "[^\\x{0}-\\x{10FFFF}]"  # "[]" matches nothing, as in llama.cpp
    return f"[{'^' if chars.negated else ''}{body}]"


def _repeat_suffix(node: Repeat) -> str:
    if (node.min, node.max) == (0, None):
        return "*"
    if (node.min, node.max) == (1, None):
        return "+"
    if (node.min, node.max) == (0, 1):
        return "?"
    if node.max is None:
        return f"{{{node.min},}}"
    if node.max == node.min:
        return f"{{{node.min}}}"
    return f"{{{node.min},{node.max}}}"


def _references(node: Node, out: set[str]) -> bool:
    """Collect rule names used by ``node``; True if it uses a token."""
    if isinstance(node, RuleRef):
        out.add(node.name)
        return False
    if isinstance(node, Token):
        return True
    if isinstance(node, Repeat):
        return _references(node.item, out)
    if isinstance(node, Sequence):
        return any([_references(item, out) for item in node.items])
    if isinstance(node, Choice):
        return any([_references(option, out) for option in node.options])
    return False


def regular_rules(grammar: Grammar) -> set[str]:
    """Rules that can be one regular expression: no tokens, no path back to themselves."""
    uses: dict[str, set[str]] = {}
    has_token: set[str] = set()
    for name, body in grammar.rules.items():
        refs: set[str] = set()
        if _references(body, refs):
            has_token.add(name)
        uses[name] = refs
    regular: set[str] = set()
    state: dict[str, int] = {}  # 1 visiting, 2 decided
    for start in grammar.rules:
        if start in state:
            continue
        # iterative post-order walk; a rule met while still being visited is on a cycle
        stack = [(start, iter(sorted(uses[start])))]
        state[start] = 1
        cyclic: set[str] = set()
        while stack:
            name, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                state[name] = 2
                if name not in has_token and name not in cyclic and uses[name] <= regular:
                    regular.add(name)
            elif state.get(nxt) == 1:
                for frame, _ in reversed(stack):
                    cyclic.add(frame)
                    if frame == nxt:
                        break
            elif nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(sorted(uses[nxt]))))
    return regular


# one name, one /regex/ (written with no spaces, see _regex_char), one token, or ""
_ATOM = re.compile(r'\w+|/\S*/|<\[\^?\d+\]>|""')


class _Writer:
    """Writes one rule per GBNF rule, and one more for each group and each repeated item, so that
    no Lark rule nests parentheses (llguidance refuses grammars nested a few dozen deep)."""

    def __init__(self, grammar: Grammar, token_id: Callable[[str], int] | None):
        self.grammar = grammar
        self.token_id = token_id
        self.as_terminal = grammar.root in regular_rules(grammar)
        self.prefix = "T" if self.as_terminal else "r"
        self.names = {name: f"{self.prefix}{i}" for i, name in enumerate(grammar.rules)}
        self.extra: list[str] = []

    def hoisted(self, body: str) -> str:
        """A new rule (or terminal) whose body is ``body``; returns its name."""
        name = f"{self.prefix}{'G' if self.as_terminal else 'g'}{len(self.extra)}"
        self.extra.append(f"{name}: {body}")
        return name

    def expr(self, node: Node, top: bool = False) -> str:
        """``node`` as Lark: a terminal expression, or a parser rule made of one-character terminals."""
        if isinstance(node, RuleRef):
            return self.names[node.name]
        if isinstance(node, Token):
            return self.token(node)
        if isinstance(node, Chars):
            return f"/{_regex_class(node)}/"
        if isinstance(node, Literal):
            if self.as_terminal:
                return f"/{''.join(_regex_char(ord(c)) for c in node.text)}/" if node.text else '""'
            return " ".join(f"/{_regex_char(ord(c))}/" for c in node.text) or '""'
        if isinstance(node, Repeat):
            inner = self.expr(node.item)
            atom = inner if _ATOM.fullmatch(inner) else self.hoisted(inner)
            return f"{atom}{_repeat_suffix(node)}"
        if isinstance(node, Sequence):
            return " ".join(self.expr(item) for item in node.items) or '""'
        if isinstance(node, Choice):
            body = " | ".join(self.expr(option) for option in node.options)
            return body if top or len(node.options) == 1 else self.hoisted(body)
        raise AssertionError(node)

    def token(self, node: Token) -> str:
        token_id = node.id
        if token_id is None:
            if self.token_id is None:
                raise GrammarError(f"the token {node.text} needs a model's vocabulary to be looked up")
            token_id = self.token_id(node.text)
        return f"<[^{token_id}]>" if node.negated else f"<[{token_id}]>"

    def write(self) -> str:
        lines = [f"start: {self.names[self.grammar.root]}"]
        used = _reachable(self.grammar)
        lines += [f"{self.names[name]}: {self.expr(body, top=True)}" for name, body in self.grammar.rules.items()
                  if name in used]
        return "\n".join(lines + self.extra) + "\n"


def _reachable(grammar: Grammar) -> set[str]:
    seen = {grammar.root}
    todo = [grammar.root]
    while todo:
        refs: set[str] = set()
        _references(grammar.rules[todo.pop()], refs)
        todo += [r for r in refs if r not in seen]
        seen |= refs
    return seen


def names_tokens(grammar: Grammar) -> bool:
    """Whether the grammar uses any token (``<[id]>``, ``<|name|>``, ``!<...>``)."""
    return any(isinstance(n, Token) for n in nodes(grammar))


def to_lark(grammar: Grammar, token_id: Callable[[str], int] | None = None) -> str:
    """Lark text with the same language as ``grammar``; ``token_id`` looks up ``<|text|>`` tokens."""
    return _Writer(grammar, token_id).write()
