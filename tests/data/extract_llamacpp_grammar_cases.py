"""Write llamacpp_grammar_cases.json from llama.cpp's own grammar tests (run by hand, once).

    python3 tests/data/extract_llamacpp_grammar_cases.py LLAMA_CPP_TREE > tests/data/llamacpp_grammar_cases.json

LLAMA_CPP_TREE is the llama.cpp source of the reference build (``vendor/llama.cpp`` inside the
llama-cpp-python 0.3.36 source distribution). It reads the C++ string literals of:

- tests/test-grammar-integration.cpp: every ``test_grammar``/``test_schema`` call (description,
  grammar or schema, strings that must match, strings that must not) and the grammars its
  ``test_build_grammar_fails`` and missing-reference checks expect to be refused;
- tests/test-grammar-parser.cpp: the grammars of ``verify_failure`` (must not load) and of
  ``verify_parsing`` (must load);
- tests/test-json-schema-to-grammar.cpp: each case's status, name, schema and expected grammar.

Strings built with ``token(N)`` become lists mixing text and token ids, e.g. ``[10, "hi", 11]``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

_ESC = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "'": "'", "0": "\0", "a": "\a", "b": "\b",
        "f": "\f", "v": "\v", "?": "?"}


class Literals:
    """Reads C++ expressions made of string literals, ``token(N)`` and ``+``, from a position."""

    def __init__(self, src: str):
        self.src = src

    def skip(self, pos: int) -> int:
        src = self.src
        while pos < len(src):
            if src[pos].isspace():
                pos += 1
            elif src.startswith("//", pos):
                pos = src.index("\n", pos)
            elif src.startswith("/*", pos):
                pos = src.index("*/", pos) + 2
            else:
                break
        return pos

    def string(self, pos: int) -> tuple[list, int]:
        """One operand: a (raw) string literal or token(N); returns its parts."""
        src = self.src
        if src.startswith('R"', pos):
            delim_end = src.index("(", pos)
            delim = src[pos + 2:delim_end]
            close = src.index(")" + delim + '"', delim_end)
            return [src[delim_end + 1:close]], close + len(delim) + 2
        if src.startswith("token(", pos):
            close = src.index(")", pos)
            return [int(src[pos + 6:close])], close + 1
        if src.startswith("u8\"", pos):
            pos += 2
        if src[pos] != '"':
            raise ValueError(f"not a string at {src[pos:pos + 40]!r}")
        out, i = [], pos + 1
        while src[i] != '"':
            if src[i] == "\\":
                kind = src[i + 1]
                if kind == "x":
                    m = re.match(r"[0-9a-fA-F]+", src[i + 2:])
                    out.append(chr(int(m.group(0), 16)))
                    i += 2 + len(m.group(0))
                    continue
                if kind in "uU":
                    n = 4 if kind == "u" else 8
                    out.append(chr(int(src[i + 2:i + 2 + n], 16)))
                    i += 2 + n
                    continue
                out.append(_ESC[kind])
                i += 2
            else:
                out.append(src[i])
                i += 1
        return ["".join(out)], i + 1

    def expression(self, pos: int) -> tuple[list, int]:
        """Operands joined by ``+`` (and adjacent literals, which C++ concatenates)."""
        parts, pos = self.string(self.skip(pos))
        while True:
            nxt = self.skip(pos)
            if self.src.startswith("+", nxt):
                more, pos = self.string(self.skip(nxt + 1))
            elif self.src.startswith(('"', 'R"'), nxt):
                more, pos = self.string(nxt)
            else:
                return _merge(parts), nxt
            parts += more

    def string_list(self, pos: int) -> tuple[list, int]:
        pos = self.skip(pos)
        assert self.src[pos] == "{", self.src[pos:pos + 40]
        items, pos = [], self.skip(pos + 1)
        while self.src[pos] != "}":
            value, pos = self.expression(pos)
            items.append(value)
            pos = self.skip(pos)
            if self.src[pos] == ",":
                pos = self.skip(pos + 1)
        return items, pos + 1


def _merge(parts: list) -> list | str:
    merged: list = []
    for p in parts:
        if isinstance(p, str) and merged and isinstance(merged[-1], str):
            merged[-1] += p
        else:
            merged.append(p)
    return merged[0] if len(merged) == 1 and isinstance(merged[0], str) else merged


def _calls(src: str, name: str):
    for m in re.finditer(rf"(?<![\w]){name}\(", src):
        line_start = src.rfind("\n", 0, m.start()) + 1
        if src[line_start:m.start()].strip():  # a definition or a nested use, not a statement
            continue
        yield m.end()


def integration_cases(src: str) -> list[dict]:
    lit = Literals(src)
    cases = []
    for kind in ("test_grammar", "test_schema"):
        for pos in _calls(src, kind):
            desc, pos = lit.expression(pos)
            pos = lit.skip(pos) + 1  # ,
            text, pos = lit.expression(pos)
            pos = lit.skip(pos) + 1
            passing, pos = lit.string_list(pos)
            pos = lit.skip(pos) + 1
            failing, pos = lit.string_list(pos)
            cases.append({"kind": "grammar" if kind == "test_grammar" else "schema", "description": desc,
                          "text": text, "passing": passing, "failing": failing,
                          "line": src.count("\n", 0, pos) + 1})
    return sorted(cases, key=lambda c: c["line"])


def refused_integration_grammars(src: str) -> list[str]:
    """Grammars test-grammar-integration.cpp expects llama.cpp to refuse."""
    refused = []
    for fn in ("test_failure_missing_reference", "test_failure_left_recursion"):
        body = src[src.index(f"static void {fn}()"):]
        body = body[:body.index("\n}\n")]
        lit = Literals(body)
        for m in re.finditer(r"const std::string \w+\s*=", body):
            value, _ = lit.expression(m.end())
            refused.append(value)
    return refused


def parser_cases(src: str) -> tuple[list[str], list[str]]:
    lit = Literals(src)
    failing = [lit.expression(pos)[0] for pos in _calls(src, "verify_failure")]
    parsing = [lit.expression(pos)[0] for pos in _calls(src, "verify_parsing")]
    return failing, parsing


def schema_cases(src: str) -> list[dict]:
    lit = Literals(src)
    cases = []
    for m in re.finditer(r"test\(\{\s*(SUCCESS|FAILURE),", src):
        name, pos = lit.expression(m.end())
        schema, pos = lit.expression(lit.skip(pos) + 1)
        grammar, pos = lit.expression(lit.skip(pos) + 1)
        cases.append({"status": m.group(1), "name": name, "schema": schema, "expected_grammar": grammar})
    return cases


def main(tree: str) -> None:
    root = Path(tree)
    files = {name: (root / "tests" / name).read_text() for name in
             ("test-grammar-integration.cpp", "test-grammar-parser.cpp", "test-json-schema-to-grammar.cpp")}
    parser_failing, parser_parsing = parser_cases(files["test-grammar-parser.cpp"])
    out = {
        "_about": "Cases of llama.cpp's tests/test-grammar-integration.cpp, test-grammar-parser.cpp and "
                  "test-json-schema-to-grammar.cpp (MIT licence) at the reference build (llama-cpp-python "
                  "0.3.36's vendor/llama.cpp), read by tests/data/extract_llamacpp_grammar_cases.py. In strings, "
                  "an integer is a token id (llama.cpp's token(N)).",
        "sources": {name: hashlib.sha256(text.encode()).hexdigest() for name, text in files.items()},
        "integration": integration_cases(files["test-grammar-integration.cpp"]),
        "integration_refused": refused_integration_grammars(files["test-grammar-integration.cpp"]),
        "parser_failing": parser_failing,
        "parser_parsing": parser_parsing,
        "schema_to_grammar": schema_cases(files["test-json-schema-to-grammar.cpp"]),
        "grammars": {p.name: p.read_text() for p in sorted((root / "grammars").glob("*.gbnf"))},
    }
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
