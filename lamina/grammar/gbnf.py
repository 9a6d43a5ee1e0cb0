"""GBNF, read as llama.cpp's ``llama_grammar_parser`` reads it.

The syntax: ``name ::= alternatives`` rules, one per line (an alternative may continue on the
next line after ``|`` or inside parentheses); ``"literals"`` and ``[character classes]`` with
the escapes ``\\x`` ``\\u`` ``\\U`` ``\\t`` ``\\r`` ``\\n`` ``\\\\`` ``\\"`` ``\\[`` ``\\]``
``\\-``; ``[^negated]`` classes; ``.`` (any character); grouping; ``*`` ``+`` ``?`` ``{m}``
``{m,}`` ``{m,n}``; ``#`` comments; and tokens: ``<[id]>``, ``<|text|>`` (the one token that
text is) and ``!<...>`` (any token but that one).

The result is a :class:`Grammar`: named rules whose bodies keep their repetitions as written
(the matcher handles ``x*`` far better than the right-recursive rules llama.cpp expands it to).
llama.cpp's checks are kept exactly, because they decide which grammars load at all: every
referenced rule must be defined, the root must exist, no rule may be left-recursive (judged on
the rules llama.cpp would expand, with its notion of a rule that may be empty), a repetition may
not ask for more than 2000 copies, nor a nested repetition for more than 2000 copies of the rules
it repeats, and ``{m,n}`` with n above 2000 means ``{m,}``. Errors name the line and column.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import GrammarError

MAX_REPETITION_THRESHOLD = 2000  # llama.cpp's bound on copies made by one repetition
MAX_NESTING = 100                # groups in groups, or x???...: deeper is refused rather than recursed into


@dataclass(frozen=True)
class Chars:
    """One character from ``ranges`` (inclusive code point pairs), or, if ``negated``, any other."""
    ranges: tuple[tuple[int, int], ...]
    negated: bool = False


ANY_CHAR = Chars((), negated=True)


@dataclass(frozen=True)
class Literal:
    text: str


@dataclass(frozen=True)
class RuleRef:
    name: str


@dataclass(frozen=True)
class Token:
    """One vocabulary token by id (``<[id]>``) or by its text (``<|im_end|>``); ``negated``: any other."""
    id: int | None
    text: str | None
    negated: bool = False


@dataclass(frozen=True)
class Repeat:
    item: "Node"
    min: int
    max: int | None  # None: no upper bound


@dataclass(frozen=True)
class Sequence:
    items: tuple["Node", ...]


@dataclass(frozen=True)
class Choice:
    options: tuple[Sequence, ...]


Node = Chars | Literal | RuleRef | Token | Repeat | Sequence | Choice


@dataclass
class Grammar:
    """Rules by name, in the order they were defined; ``root`` names the start rule."""
    rules: dict[str, Choice]
    root: str = "root"


def nodes(grammar: Grammar):
    """Every node of every rule's body (depth first)."""
    todo: list[Node] = list(grammar.rules.values())
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, Choice):
            todo += node.options
        elif isinstance(node, Sequence):
            todo += node.items
        elif isinstance(node, Repeat):
            todo.append(node.item)


def _is_word_char(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c == "-"


_SIMPLE_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "[": "[", "]": "]", "-": "-"}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class _Parser:
    """A recursive-descent reader over the text, one method per llama.cpp parse function."""

    def __init__(self, src: str):
        if "\x00" in src:
            at = src.index("\x00")
            raise GrammarError("the grammar contains a NUL character", *_line_col(src, at))
        self.src = src
        self.rules: dict[str, Choice] = {}
        # llama.cpp's symbol table: every name seen (defined or referenced) and every rule it
        # generates for groups and repetitions; its growth is what bounds nested repetitions
        self.symbols: dict[str, int] = {}
        self.referenced: dict[str, int] = {}  # name -> where it was first referenced
        self.depth = 0

    def error(self, message: str, pos: int) -> GrammarError:
        return GrammarError(message, *_line_col(self.src, pos))

    def at(self, pos: int) -> str:
        return self.src[pos] if pos < len(self.src) else ""

    def space(self, pos: int, newline_ok: bool) -> int:
        src = self.src
        while pos < len(src):
            c = src[pos]
            if c == "#":
                while pos < len(src) and src[pos] not in "\r\n":
                    pos += 1
            elif c in " \t" or (newline_ok and c in "\r\n"):
                pos += 1
            else:
                break
        return pos

    def name(self, pos: int) -> int:
        end = pos
        while end < len(self.src) and _is_word_char(self.src[end]):
            end += 1
        if end == pos:
            raise self.error("expecting a rule name", pos)
        return end

    def integer(self, pos: int) -> tuple[int, int]:
        end = pos
        while end < len(self.src) and "0" <= self.src[end] <= "9":
            end += 1
        if end == pos:
            raise self.error("expecting an integer", pos)
        return int(self.src[pos:end]), end

    def char(self, pos: int) -> tuple[int, int]:
        """One (possibly escaped) character: its code point and the position after it."""
        c = self.at(pos)
        if not c:
            raise self.error("unexpected end of input", pos)
        if c != "\\":
            return ord(c), pos + 1
        kind = self.at(pos + 1)
        if kind in _HEX_ESCAPES:
            size = _HEX_ESCAPES[kind]
            digits = self.src[pos + 2:pos + 2 + size]
            if len(digits) != size or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise self.error(f"expecting {size} hex digits after \\{kind}", pos)
            value = int(digits, 16)
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                raise self.error(f"\\{kind}{digits} is not a Unicode character", pos)
            return value, pos + 2 + size
        if kind in _SIMPLE_ESCAPES:
            return ord(_SIMPLE_ESCAPES[kind]), pos + 2
        raise self.error(f"unknown escape \\{kind}" if kind else "unexpected end of input", pos)

    def symbol(self, name: str) -> None:
        self.symbols.setdefault(name, len(self.symbols))

    def generated_symbol(self, base: str) -> None:
        self.symbols[f"{base}_{len(self.symbols)}"] = len(self.symbols)

    def parse(self) -> Grammar:
        pos = self.space(0, True)
        while pos < len(self.src):
            pos = self.rule(pos)
        for name, where in self.referenced.items():
            if name not in self.rules:
                raise self.error(f"undefined rule {name!r}", where)
        return Grammar(self.rules)

    def rule(self, pos: int) -> int:
        end = self.name(pos)
        name = self.src[pos:end]
        self.symbol(name)
        pos = self.space(end, False)
        if self.src[pos:pos + 3] != "::=":
            raise self.error("expecting ::=", pos)
        pos = self.space(pos + 3, True)
        body, pos = self.alternates(pos, name, nested=False)
        self.rules[name] = body  # a later definition replaces an earlier one, as in llama.cpp
        c = self.at(pos)
        if c == "\r":
            pos += 2 if self.at(pos + 1) == "\n" else 1
        elif c == "\n":
            pos += 1
        elif c:
            raise self.error("expecting newline or end", pos)
        return self.space(pos, True)

    def alternates(self, pos: int, rule_name: str, nested: bool) -> tuple[Choice, int]:
        options = []
        seq, pos = self.sequence(pos, rule_name, nested)
        options.append(seq)
        while self.at(pos) == "|":
            pos = self.space(pos + 1, True)
            seq, pos = self.sequence(pos, rule_name, nested)
            options.append(seq)
        return Choice(tuple(options)), pos

    def sequence(self, pos: int, rule_name: str, nested: bool) -> tuple[Sequence, int]:
        items: list[Node] = []
        n_prev_rules = 1  # llama.cpp's count of the rules the last item stands for
        while pos < len(self.src):
            c = self.src[pos]
            start = pos
            if c == '"':
                pos += 1
                text = []
                while self.at(pos) != '"':
                    if not self.at(pos):
                        raise self.error("unterminated string literal", start)
                    cp, pos = self.char(pos)
                    text.append(chr(cp))
                items.append(Literal("".join(text)))
                n_prev_rules = 1
                pos = self.space(pos + 1, nested)
            elif c == "[":
                pos += 1
                negated = self.at(pos) == "^"
                if negated:
                    pos += 1
                ranges = []
                while self.at(pos) != "]":
                    if not self.at(pos):
                        raise self.error("unterminated character class", start)
                    lo, pos = self.char(pos)
                    hi = lo
                    if self.at(pos) == "-" and self.at(pos + 1) != "]":
                        if not self.at(pos + 1):
                            raise self.error("unterminated character class", start)
                        hi, pos = self.char(pos + 1)
                    ranges.append((lo, hi))
                items.append(Chars(tuple(ranges), negated))
                n_prev_rules = 1
                pos = self.space(pos + 1, nested)
            elif c == "<" or c == "!":
                token, pos = self.token(pos)
                items.append(token)
                n_prev_rules = 1
                pos = self.space(pos, nested)
            elif _is_word_char(c):
                end = self.name(pos)
                name = self.src[pos:end]
                self.symbol(name)
                self.referenced.setdefault(name, pos)
                items.append(RuleRef(name))
                n_prev_rules = 1
                pos = self.space(end, nested)
            elif c == "(":
                if self.depth >= MAX_NESTING:
                    raise self.error(f"groups nested more than {MAX_NESTING} deep", pos)
                pos = self.space(pos + 1, True)
                before = len(self.symbols)
                self.generated_symbol(rule_name)
                self.depth += 1
                group, pos = self.alternates(pos, rule_name, nested=True)
                self.depth -= 1
                n_prev_rules = max(1, len(self.symbols) - before)
                if self.at(pos) != ")":
                    raise self.error("expecting ')' to close the group opened", start) if not self.at(pos) \
                        else self.error("expecting ')'", pos)
                items.append(group)
                pos = self.space(pos + 1, nested)
            elif c == ".":
                items.append(ANY_CHAR)
                n_prev_rules = 1
                pos = self.space(pos + 1, nested)
            elif c in "*+?{":
                if c == "{":
                    lo, hi, pos = self.braces(pos, nested)
                else:
                    lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
                    pos = self.space(pos + 1, nested)
                if not items:
                    raise self.error(f"expecting an item before {c!r}", start)
                n_prev_rules = self.repetition_count(n_prev_rules, lo, hi, start, rule_name)
                items[-1] = Repeat(items[-1], lo, hi)
                if _repeat_depth(items[-1]) > MAX_NESTING:
                    raise self.error(f"more than {MAX_NESTING} repetition operators on one item", start)
            else:
                break
        return Sequence(tuple(items)), pos

    def braces(self, pos: int, nested: bool) -> tuple[int, int | None, int]:
        start = pos
        pos = self.space(pos + 1, nested)
        if not "0" <= self.at(pos) <= "9":
            raise self.error("expecting an integer after '{'", pos)
        lo, pos = self.integer(pos)
        pos = self.space(pos, nested)
        hi: int | None
        if self.at(pos) == "}":
            hi = lo
        elif self.at(pos) == ",":
            pos = self.space(pos + 1, nested)
            hi = None
            if "0" <= self.at(pos) <= "9":
                hi, pos = self.integer(pos)
                pos = self.space(pos, nested)
            if self.at(pos) != "}":
                raise self.error("expecting '}'", pos)
        else:
            raise self.error("expecting ',' or '}'", pos)
        pos = self.space(pos + 1, nested)
        if lo > MAX_REPETITION_THRESHOLD:
            raise self.error(f"{lo} repetitions exceed the limit of {MAX_REPETITION_THRESHOLD}", start)
        if hi is not None and hi > MAX_REPETITION_THRESHOLD:
            hi = None  # llama.cpp reads a huge upper bound as no bound
        if hi is not None and hi < lo:
            raise self.error(f"repetition {{{lo},{hi}}} has its maximum below its minimum", start)
        return lo, hi, pos

    def repetition_count(self, n_prev_rules: int, lo: int, hi: int | None, pos: int, rule_name: str) -> int:
        """llama.cpp's guard against repetitions of repetitions, and the rules it would generate."""
        total = hi if hi is not None and hi > 0 else lo if lo > 0 else 1
        if n_prev_rules * total > MAX_REPETITION_THRESHOLD:
            raise self.error(f"this repetition would copy {n_prev_rules * total} rules, more than the limit of "
                             f"{MAX_REPETITION_THRESHOLD}: reduce the repetition counts or the rule's complexity", pos)
        for _ in range(1 if hi is None else hi - lo):
            self.generated_symbol(rule_name)
        return n_prev_rules * total

    def token(self, pos: int) -> tuple[Token, int]:
        start = pos
        negated = self.at(pos) == "!"
        if negated:
            pos += 1
        if self.at(pos) != "<":
            raise self.error("expecting '<' after '!'", pos)
        pos += 1
        if self.at(pos) == "[":
            value, pos = self.integer(pos + 1)
            if value > 0xFFFFFFFF:
                raise self.error("token id is too big", start)
            if self.at(pos) != "]":
                raise self.error("expecting ']'", pos)
            if self.at(pos + 1) != ">":
                raise self.error("expecting '>'", pos + 1)
            return Token(value, None, negated), pos + 2
        end = self.src.find(">", pos)
        if end < 0:
            raise self.error("expecting '>' to close the token", start)
        return Token(None, self.src[pos - 1:end + 1], negated), end + 1


def _repeat_depth(node: Node) -> int:
    depth = 0
    while isinstance(node, Repeat):
        node, depth = node.item, depth + 1
    return depth


def _line_col(src: str, pos: int) -> tuple[int, int]:
    line = src.count("\n", 0, pos) + 1
    return line, pos - (src.rfind("\n", 0, pos) + 1) + 1


def parse(text: str, root: str = "root") -> Grammar:
    """Read GBNF ``text`` and check it as llama.cpp does before it builds a grammar from it."""
    if not isinstance(text, str):
        raise GrammarError(f"a grammar must be text, got {type(text).__name__}")
    grammar = _Parser(text).parse()
    if not grammar.rules:
        raise GrammarError("the grammar defines no rules")
    if root not in grammar.rules:
        raise GrammarError(f"the grammar has no rule named {root!r} to start from")
    grammar.root = root
    recursive = left_recursive_rule(grammar)
    if recursive is not None:
        raise GrammarError(f"rule {recursive!r} is left-recursive (it can reach itself before matching "
                           "anything); rewrite it with repetition, e.g. x ::= item+")
    return grammar


# -- left recursion, judged as llama.cpp judges it ----------------------------------------------

def _expanded_rules(grammar: Grammar) -> tuple[list[str], list[list[list[int | None]]]]:
    """The rules llama.cpp builds: each alternative a list of rule ids (None: a terminal).

    Groups become rules of their own; ``S{m,n}`` becomes m copies of S and a chain of optional
    rules (``S' ::= S S' |``), which is what llama.cpp's left-recursion check walks.
    """
    names = list(grammar.rules)
    ids = {n: i for i, n in enumerate(names)}
    rules: list[list[list[int | None]]] = [[] for _ in names]

    def new_rule(label: str, alternatives) -> int:
        names.append(label)
        rules.append(alternatives)
        return len(rules) - 1

    def flatten(node: Node, out: list[int | None]) -> None:
        if isinstance(node, RuleRef):
            out.append(ids[node.name])
        elif isinstance(node, Literal):
            out.extend([None] * len(node.text))
        elif isinstance(node, (Chars, Token)):
            out.append(None)
        elif isinstance(node, Sequence):
            for item in node.items:
                flatten(item, out)
        elif isinstance(node, Choice):
            out.append(new_rule("group", choice(node)))
        elif isinstance(node, Repeat):
            body: list[int | None] = []
            flatten(node.item, body)
            for _ in range(node.min):
                out.extend(body)
            if node.max is None:
                rid = new_rule("star", [])
                rules[rid] = [body + [rid], []]
                out.append(rid)
            elif node.max > node.min:
                last = new_rule("opt", [list(body), []])
                for _ in range(node.max - node.min - 1):
                    last = new_rule("opt", [body + [last], []])
                out.append(last)

    def choice(node: Choice) -> list[list[int | None]]:
        alts = []
        for option in node.options:
            seq: list[int | None] = []
            flatten(option, seq)
            alts.append(seq)
        return alts

    for name, body in grammar.rules.items():
        rules[ids[name]] = choice(body)
    return names, rules


def left_recursive_rule(grammar: Grammar) -> str | None:
    """The name of a left-recursive rule, or None.

    A rule "may be empty" exactly when one of its own alternatives is empty (llama.cpp does not
    look further); a reference counts as leftmost while everything before it may be empty.
    Depth-first with three colours, so a large grammar is walked once.
    """
    names, rules = _expanded_rules(grammar)
    may_be_empty = [any(len(alt) == 0 for alt in alts) for alts in rules]
    leftmost: list[list[int]] = []
    for alts in rules:
        refs = []
        for alt in alts:
            for element in alt:
                if element is None:
                    break
                refs.append(element)
                if not may_be_empty[element]:
                    break
        leftmost.append(refs)
    state = [0] * len(rules)  # 0 unseen, 1 on the current path, 2 done
    for start in range(len(rules)):
        if state[start]:
            continue
        stack = [(start, iter(leftmost[start]))]
        state[start] = 1
        while stack:
            rule, edges = stack[-1]
            nxt = next(edges, None)
            if nxt is None:
                state[rule] = 2
                stack.pop()
            elif state[nxt] == 1:
                return _named_rule(names, nxt, stack)
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(leftmost[nxt])))
    return None


def _named_rule(names: list[str], rule: int, stack) -> str:
    """A user-visible rule on the cycle (generated rules have no name of their own)."""
    on_path = [r for r, _ in stack]
    cycle = on_path[on_path.index(rule):]
    for r in cycle:
        if names[r] not in ("group", "star", "opt"):
            return names[r]
    return names[rule]
