"""Grammars and JSON schemas against llama.cpp's own test cases (tests/data/llamacpp_grammar_cases.json).

Strings are matched through the real matcher with a byte-level vocabulary (tests/grammar_support.py),
as llama.cpp's tests match them with no model. Where lamina departs from llama.cpp on purpose (a
schema keyword that cannot be enforced is refused, not dropped), the test says so and checks the
departure itself.
"""

from __future__ import annotations

import copy
import datetime
import decimal
import json
import random
import re
import time
import uuid
from pathlib import Path

import jsonschema
import pytest

from grammar_support import matches, mutations, sample
from lamina.grammar import GrammarError, LlamaGrammar, UnsupportedSchemaError, compile_gbnf, parse
from lamina.grammar.json_schema import compile_json_schema, llamacpp_meaning

CASES = json.loads((Path(__file__).parent / "data" / "llamacpp_grammar_cases.json").read_text())
GRAMMAR_CASES = [c for c in CASES["integration"] if c["kind"] == "grammar"]
SCHEMA_CASES = [c for c in CASES["integration"] if c["kind"] == "schema"]
# lamina refuses what it cannot enforce; llama.cpp's case ignores the keyword
REFUSED_ON_PURPOSE = {"required props": "uniqueItems", "unsupported regexp in a property": "pattern"}


def _ids(cases, key="description"):
    return [c[key] for c in cases]


# -- GBNF ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", GRAMMAR_CASES, ids=_ids(GRAMMAR_CASES))
def test_llamacpp_grammar_cases(case):
    compiled = compile_gbnf(case["text"])
    for s in case["passing"]:
        assert matches(compiled, s), f"should match: {s!r}"
    for s in case["failing"]:
        assert not matches(compiled, s), f"should not match: {s!r}"


@pytest.mark.parametrize("text", CASES["integration_refused"] + CASES["parser_failing"])
def test_grammars_llamacpp_refuses_are_refused(text):
    with pytest.raises(GrammarError):
        compile_gbnf(text)


@pytest.mark.parametrize("text", CASES["parser_parsing"])
def test_grammars_llamacpp_parses_load(text):
    compile_gbnf(text)


@pytest.mark.parametrize("name", sorted(CASES["grammars"]))
def test_llamacpp_grammar_files_load(name):
    compile_gbnf(CASES["grammars"][name])


def test_root_rule():
    with pytest.raises(GrammarError, match="no rule named 'root'"):
        compile_gbnf('rot ::= "a"')
    with pytest.raises(GrammarError, match="no rule named 'nonexistent'"):
        compile_gbnf('root ::= "foobar"', root="nonexistent")
    assert matches(compile_gbnf('foobar ::= "foobar"', root="foobar"), "foobar")


@pytest.mark.parametrize("text, message, line, column", [
    ('root ::= "a"\nx ::= [a-', "unterminated character class", 2, 7),
    ('root ::= "a" b\n', "undefined rule 'b'", 1, 14),
    ('root ::= "\\q"', "unknown escape", 1, 11),
    ('root ::= "a"{2,1}', "maximum below its minimum", 1, 13),
    ('root ::= * "a"', "expecting an item", 1, 10),
    ('root := "a"', "expecting ::=", 1, 6),
    ('root ::= "a" )', "expecting newline or end", 1, 14),
    ('root ::= <[12x]>', "expecting ']'", 1, 14),
    ('root ::= "\\uD800"', "not a Unicode character", 1, 11),
])
def test_parse_errors_name_line_and_column(text, message, line, column):
    with pytest.raises(GrammarError, match=re.escape(message)) as e:
        parse(text)
    assert (e.value.line, e.value.column) == (line, column)
    assert f"line {line}, column {column}" in str(e.value)


def test_gbnf_features():
    cases = [
        (r'root ::= "\x41\u00e9\U0001F600\t\n\\\""', ['Aé😀\t\n\\"'], ["Ae😀"]),
        ('root ::= [^a-c]+ "."', ["xyz.", "日本."], ["abc.", "."]),
        ('root ::= . . "!"', ["ab!", "\n\t!"], ["a!"]),
        ('root ::= "a"{3}', ["aaa"], ["aa", "aaaa"]),
        ('root ::= "a"{2,} "b"', ["aab", "aaaaab"], ["ab"]),
        ('root ::= ("ab" | "c"){1,2}  # comment', ["ab", "cab"], ["", "ababab"]),
        ('root ::= x? "y"\nx ::= "x"', ["y", "xy"], ["xxy"]),
        ('root ::= "a" (\n  "b" |\n  "c"\n)', ["ab", "ac"], ["a"]),
        ('root ::= [a-z]* "z"', ["z", "abz", "zzz"], ["ab"]),  # a lexer would swallow the last z
    ]
    for text, good, bad in cases:
        compiled = compile_gbnf(text)
        for s in good:
            assert matches(compiled, s), (text, s)
        for s in bad:
            assert not matches(compiled, s), (text, s)


def test_llguidance_lark_passes_through():
    compiled = compile_gbnf('%llguidance {}\nstart: "yes" | "no"')
    assert matches(compiled, "yes") and not matches(compiled, "maybe")


@pytest.mark.parametrize("text, words", [
    pytest.param("root ::= " + "(" * 60_000 + '"a"' + ")" * 60_000, "nested more than", id="60000 brackets"),
    pytest.param('root ::= "a"{100}{100}', "limit of 2000", id="repetition of repetition"),
    pytest.param('root ::= "a"' + "?" * 5000, "repetition operators", id="5000 stacked ?"),
    pytest.param('root ::= ' + ' '.join(f'a{i}' for i in range(30)) + '\n' + '\n'.join(
        f'a{i} ::= ("x" | "x")' for i in range(30)), None, id="2^30 ambiguous readings"),
    pytest.param("root ::= " + " | ".join(f'"{i}"' for i in range(20_000)), None, id="20000 alternatives"),
    pytest.param('root ::= x\nx ::= y\ny ::= x', "left-recursive", id="cycle of rules"),
])
def test_hostile_grammars_end_quickly(text, words):
    t0 = time.perf_counter()
    if words is None:
        compile_gbnf(text)
    else:
        with pytest.raises(GrammarError, match=words):
            compile_gbnf(text)
    assert time.perf_counter() - t0 < 10


# -- JSON schema -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", SCHEMA_CASES, ids=_ids(SCHEMA_CASES))
def test_llamacpp_schema_cases(case):
    schema = json.loads(case["text"])
    keyword = REFUSED_ON_PURPOSE.get(case["description"])
    if keyword is not None:
        with pytest.raises(UnsupportedSchemaError) as e:
            compile_json_schema(schema)
        assert e.value.keyword == keyword
        schema = _without(schema, keyword)  # the rest of the case still holds
    compiled = compile_json_schema(schema)
    for s in case["passing"]:
        assert matches(compiled, s), f"should match: {s!r}"
    for s in case["failing"]:
        assert not matches(compiled, s), f"should not match: {s!r}"


def _without(schema, keyword):
    schema = copy.deepcopy(schema)
    todo = [schema]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            node.pop(keyword, None)
            todo += list(node.values())
        elif isinstance(node, list):
            todo += node
    return schema


SCHEMA_TO_GRAMMAR = CASES["schema_to_grammar"]
# cases where llama.cpp's grammar is not what the schema says: what lamina accepts, what it refuses
LLAMACPP_IS_NOT_THE_SCHEMA = {
    # llama.cpp writes the quote unescaped ('"""', not JSON)
    "regexp quote": (['"\\""'], ['"""']),
    # llama.cpp drops an unanchored pattern (and one with \w) and accepts any string
    "unanchored regexp": (['"12"', '"ab12cd"'], ['"abc"', '""']),
    "regexp with unsupported shorthand": (['"123a"', '"123_"'], ['"123-"', '"12a"']),
    # llama.cpp names the rule of the property "" "root", so its grammar is an integer
    "optional props with empty name": (['{"": 1, "a": 2}', "{}", '{"x": 3}'], ["0", '{"a": "s"}']),
}
_BAD = object()
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_FORMATS = jsonschema.FormatChecker(formats=())
for _name, _check in (("date", datetime.date.fromisoformat), ("time", datetime.time.fromisoformat),
                      ("date-time", datetime.datetime.fromisoformat), ("uuid", uuid.UUID)):
    _FORMATS.checks(_name, raises=ValueError)(lambda x, f=_check: not isinstance(x, str) or f(x) is not None)


def _value(text: str):
    """The JSON value of ``text``, or _BAD if it is not strict JSON (no lone surrogates, no NaN)."""
    try:
        value = json.loads(text, parse_float=decimal.Decimal, parse_constant=lambda c: _BAD)
    except ValueError:
        return _BAD
    todo = [value]
    while todo:
        node = todo.pop()
        if node is _BAD:
            return _BAD
        if isinstance(node, str) and _LONE_SURROGATE.search(node):
            return _BAD
        if isinstance(node, dict):
            todo += list(node) + list(node.values())
        elif isinstance(node, list):
            todo += node
    return value


@pytest.mark.parametrize("case", SCHEMA_TO_GRAMMAR, ids=_ids(SCHEMA_TO_GRAMMAR, "name"))
def test_schemas_against_llamacpp_grammars(case):
    """Each schema of test-json-schema-to-grammar.cpp against the grammar llama.cpp makes of it.

    Strings are drawn at random from llama.cpp's expected grammar, and mutated. Every valid value
    llama.cpp's grammar produces is accepted (written compactly); everything lamina's grammar
    accepts is strict JSON that validates against the schema as llama.cpp reads it. Where
    llama.cpp's grammar is looser than JSON (lone surrogates, leading zeros, April 31st), lamina
    keeps to JSON.
    """
    schema = json.loads(case["schema"])
    if case["status"] == "FAILURE":
        with pytest.raises(GrammarError):
            compile_json_schema(schema)
        return
    if case["name"] in REFUSED_ON_PURPOSE:
        with pytest.raises(UnsupportedSchemaError):
            compile_json_schema(schema)
        return
    ours = compile_json_schema(schema)
    if case["name"] in LLAMACPP_IS_NOT_THE_SCHEMA:
        good, bad = LLAMACPP_IS_NOT_THE_SCHEMA[case["name"]]
        reference = compile_gbnf(case["expected_grammar"])
        assert any(matches(reference, s) for s in bad), "llama.cpp's grammar no longer differs here"
        assert all(matches(ours, s) for s in good) and not any(matches(ours, s) for s in bad)
        return
    meaning = llamacpp_meaning(schema)
    validator = jsonschema.Draft202012Validator(meaning, format_checker=_FORMATS)
    reference = parse(case["expected_grammar"])
    rng = random.Random(case["name"])
    checked = 0
    for _ in range(20):
        text = sample(reference, rng)
        value = _value(text)
        if value is not _BAD and validator.is_valid(value):
            compact = json.dumps(json.loads(text), ensure_ascii=False)
            if "Infinity" not in compact:  # a number too large for a float has no compact spelling here
                assert matches(ours, compact), f"valid JSON from llama.cpp's grammar refused: {compact!r}"
                checked += 1
        for candidate in [text] + mutations(text, rng, 3):
            if matches(ours, candidate):
                value = _value(candidate)
                assert value is not _BAD, f"accepted text that is not strict JSON: {candidate!r}"
                assert validator.is_valid(value), f"accepted JSON the schema does not allow: {candidate!r}"
    assert checked >= 5


def test_schema_features_beyond_llamacpp():
    person = {"type": "object", "properties": {
        "id": {"type": "string", "format": "uuid"}, "born": {"type": "string", "format": "date"},
        "score": {"type": "number", "minimum": 0, "maximum": 1}, "kind": {"const": "person"},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "minItems": 1, "maxItems": 2}},
        "required": ["id", "kind"], "$defs": {"tag": {"type": "string", "pattern": "^[a-z]{1,8}$"}}}
    compiled = compile_json_schema(person)
    assert matches(compiled, '{"id": "12345678-1234-1234-1234-1234567890ab", "kind": "person", "tags": ["ab"]}')
    assert not matches(compiled, '{"id": "12345678-1234-1234-1234-1234567890ab", "kind": "human"}')
    assert not matches(compiled, '{"id": "x", "kind": "person"}')
    assert not matches(compiled, '{"id": "12345678-1234-1234-1234-1234567890ab", "kind": "person", "tags": ["AB"]}')
    assert not matches(compiled, '{"id": "12345678-1234-1234-1234-1234567890ab", "kind": "person", "score": 2}')
    tree = {"type": "object", "properties": {"name": {"type": "string"},
                                             "children": {"type": "array", "items": {"$ref": "#"}}},
            "required": ["name"]}
    assert matches(compile_json_schema(tree), '{"name": "a", "children": [{"name": "b", "children": []}]}')


@pytest.mark.parametrize("schema, keyword, path", [
    ({"type": "array", "uniqueItems": True}, "uniqueItems", ""),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, "not", "/properties/a"),
    ({"if": {}, "then": {}}, "if", ""),
    ({"type": "string", "format": "credit-card"}, "format", ""),
    ({"$ref": "https://example.com/schema.json"}, "$ref", ""),
    ({"anyOf": [{"type": "string", "pattern": "^(?=x)x$"}]}, "pattern", "/anyOf/0"),
    ({"type": "object", "properties": {"a/b": {"contains": {}}}}, "contains", "/properties/a~1b"),
])
def test_unsupported_schema_keywords_are_named(schema, keyword, path):
    with pytest.raises(UnsupportedSchemaError) as e:
        compile_json_schema(schema)
    assert (e.value.keyword, e.value.path) == (keyword, path)
    assert repr(keyword) in str(e.value)


def _nested(depth, make):
    node = {"type": "string"}
    for _ in range(depth):
        node = make(node)
    return node


@pytest.mark.parametrize("schema, words", [
    pytest.param(_nested(60_000, lambda n: {"type": "array", "items": n}), "nested more than", id="60000 deep"),
    pytest.param('[' * 60_000 + ']' * 60_000, "not valid JSON|must be an object", id="60000 brackets"),
    pytest.param({"$ref": "#/$defs/missing"}, "points to nothing", id="dangling $ref"),
    pytest.param({"type": "integer", "minimum": 0, "maximum": 10 ** 400}, None, id="400-digit bound"),
    pytest.param({"type": "string", "minLength": 10 ** 12}, "", id="huge minLength"),
    pytest.param({"$ref": "#"}, "can match nothing", id="$ref to itself"),
    pytest.param({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
                 "can match nothing", id="$ref cycle"),
    pytest.param({"anyOf": [{"anyOf": [{"type": "string"}] * 50}] * 50}, None, id="2500 alternatives"),
])
def test_hostile_schemas_end_quickly(schema, words):
    t0 = time.perf_counter()
    if words is None:
        try:
            compile_json_schema(schema)
        except GrammarError:
            pass
    else:
        with pytest.raises(GrammarError, match=words or None):
            compile_json_schema(schema)
    assert time.perf_counter() - t0 < 10


def test_deeply_nested_generated_text_stays_bounded():
    """10,000 open brackets in a value under llama.cpp's json.gbnf: the matcher follows them in
    bounded time (llama.cpp's own parser stacks grew without bound here, #4218)."""
    from lamina.grammar import GrammarMatcher
    from lamina.grammar.vocabulary import byte_ids, byte_tokenizer

    m = GrammarMatcher(compile_gbnf(CASES["grammars"]["json.gbnf"]), byte_tokenizer(), 288)
    t0 = time.perf_counter()
    for t in byte_ids('{"a":' + "[" * 10_000):
        m.accept(t)
    assert not m.accepting and m.allows(byte_ids("]")[0]) and not m.allows(byte_ids("}")[0])
    assert time.perf_counter() - t0 < 20


def test_llama_grammar_constructors(tmp_path):
    g = LlamaGrammar.from_string('root ::= "a"')
    assert g.kind == "gbnf"
    path = tmp_path / "g.gbnf"
    path.write_text('root ::= "b"')
    assert LlamaGrammar.from_file(path).source == 'root ::= "b"'
    with pytest.raises(GrammarError, match="cannot read grammar file"):
        LlamaGrammar.from_file(tmp_path / "missing.gbnf")
    assert LlamaGrammar.from_json_schema({"type": "boolean"}).kind == "json_schema"
    assert LlamaGrammar.from_json_schema('{"type": "boolean"}').kind == "json_schema"
    with pytest.raises(GrammarError, match="line 1"):
        LlamaGrammar.from_string('root ::= "a')
