"""Constrained generation on the three real models: what comes out parses and validates.

The schemas cover nested objects, arrays with bounds, enums, optional fields and ``$ref``;
sampling is random (temperature 0.8, a seed per output), so the grammar, not luck, keeps each
output valid. 17 outputs per model, 51 in all.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from grammar_support import byte_tokenizer, token_ids
from lamina import LlamaGrammar
from lamina.grammar import compile_gbnf
from lamina.grammar.matcher import GrammarMatcher
from test_grammar import CASES

SCHEMAS = [
    {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 16},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16},
                                                     "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["city", "zip"]}},
     "required": ["name", "address"]},
    {"type": "array", "items": {"type": "integer", "minimum": -50, "maximum": 50}, "minItems": 2, "maxItems": 4},
    {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                      "size": {"enum": ["S", "M", "L"]},
                                      "note": {"type": "string", "maxLength": 12}},
     "required": ["colour", "size"]},
    {"type": "object", "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"},
                                                                             "y": {"type": "integer"}},
                                           "required": ["x", "y"]}},
     "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
     "required": ["from", "to"]},
    {"type": "object", "properties": {"ok": {"type": "boolean"}, "count": {"type": "integer", "minimum": 0,
                                                                          "maximum": 9},
                                      "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                                               "maxItems": 2}},
     "required": ["ok"]},
]
OUTPUTS_PER_MODEL = 17


@pytest.mark.parametrize("name", ["smollm2", "qwen2", "gemma3"])
def test_json_outputs_parse_and_validate(llms, name):
    llm = llms(name)
    for i in range(OUTPUTS_PER_MODEL):
        schema = SCHEMAS[i % len(SCHEMAS)]
        reply = llm.create_chat_completion(
            [{"role": "user", "content": "Reply with a JSON value for this schema: " + json.dumps(schema)}],
            response_format={"type": "json_schema", "json_schema": {"schema": schema}},
            temperature=0.8, seed=i, max_tokens=200)
        text = reply["choices"][0]["message"]["content"]
        assert reply["choices"][0]["finish_reason"] == "stop", (name, i, text)
        jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("name", ["smollm2", "qwen2", "gemma3"])
def test_true_or_false(llms, name):
    llm = llms(name)
    grammar = LlamaGrammar.from_string('root ::= "true" | "false"')
    for seed in range(3):
        out = llm.create_completion("Is the sea salty? Answer:", max_tokens=16, temperature=1.0, seed=seed,
                                    grammar=grammar)
        assert out["choices"][0]["text"] in ("true", "false")
        assert out["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("file", sorted(CASES["grammars"]))
def test_llamacpp_grammar_files_constrain_generation(llms, file):
    llm = llms("smollm2")
    text = CASES["grammars"][file]
    out = llm.create_completion("Here is an example:\n", max_tokens=24, temperature=0.8, seed=1,
                                grammar=LlamaGrammar.from_string(text))
    generated = out["choices"][0]["text"]
    assert generated
    # every byte of what came out fits the grammar (checked again, character by character)
    check = GrammarMatcher(compile_gbnf(text), byte_tokenizer(), 288)
    for t in token_ids(generated):
        assert check.allows(t), (file, generated)
        check.accept(t)
    if out["choices"][0]["finish_reason"] == "stop":
        assert check.accepting


def test_grammar_with_a_named_token(llms):
    llm = llms("qwen2")
    grammar = LlamaGrammar.from_string('root ::= "yes" <|im_end|> | "no" <|im_end|>')
    out = llm.create_completion("Reply yes or no:", max_tokens=8, temperature=0, grammar=grammar)
    assert out["choices"][0]["text"] in ("yes", "no") and out["choices"][0]["finish_reason"] == "stop"
    with pytest.raises(Exception, match="invalid token"):
        llm.create_completion("x", max_tokens=2, grammar=LlamaGrammar.from_string("root ::= <|no such token|>"))
