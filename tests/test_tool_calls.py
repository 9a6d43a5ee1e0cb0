"""Tool calls: requests checked, each family's calls read back, forced calls constrained, on real models.

The families' output formats are the ones their chat templates teach (Qwen 2.5's template, in the
qwen2 test model, shows Hermes' ``<tool_call>`` form); strings below are written in those formats.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from grammar_support import matches
from lamina.chat.completion import ChatCompletionError
from lamina.chat.tools import (GENERIC, HERMES, LLAMA3, MISTRAL, ToolCallError, ToolCallStream, parse_tool_calls,
                               tool_format, tool_grammar, tool_request)
from lamina.grammar import UnsupportedSchemaError

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 32},
                                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 32}},
                   "required": ["zone"]}}}
# string lengths are bounded so that a small model sampling at temperature 0.8 cannot ramble past max_tokens
TOOLS = [WEATHER, TIME]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


class TextOnlyTokenizer:
    """No special tokens: markers like <tool_call> are plain text (as in the byte-level test vocabulary)."""

    def tokenize(self, text, add_special=False, parse_special=False):
        return list(text.encode())

    def token_to_piece(self, token, special=False):
        return bytes([token])


# -- requests ----------------------------------------------------------------------------------------

def test_requests():
    assert tool_request(None, None) is None
    assert tool_request(TOOLS, "none") is None
    r = tool_request(TOOLS, {"type": "function", "function": {"name": "get_time"}}, True)
    assert r.choice == "get_time" and r.parallel and [t["function"]["name"] for t in r.callable_tools()] == ["get_time"]
    legacy = tool_request(functions=[WEATHER["function"]], function_call={"name": "get_weather"})
    assert legacy.choice == "get_weather"
    for args, words in [((TOOLS, "sometimes"), "is not one of"), ((None, "required"), "needs tools"),
                        ((TOOLS, {"type": "function", "function": {"name": "nope"}}), "not among the tools"),
                        (([{"type": "function"}], "auto"), r"tools\[0\]"), ((TOOLS, "auto", "yes"), "true or false")]:
        with pytest.raises(ToolCallError, match=words):
            tool_request(*args)


def test_format_detection():
    assert tool_format("{% for t in tools %}<tool_call>{{ t }}</tool_call>{% endfor %}") == HERMES
    assert tool_format("[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS][TOOL_CALLS]") == MISTRAL
    assert tool_format("<|start_header_id|>ipython<|end_header_id|>") == LLAMA3
    assert tool_format("{{ messages }}") == GENERIC and tool_format(None) == GENERIC


# -- reading calls back ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, text, content, calls", [
    (HERMES, 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
     "Let me check.", [("get_weather", {"city": "Paris"})]),
    (HERMES, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>\n<tool_call>\n'
             '{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>', None,
     [("get_weather", {"city": "A"}), ("get_time", {"zone": "UTC"})]),
    (HERMES, '{"name": "get_time", "arguments": {"zone": "CET"}}', None, [("get_time", {"zone": "CET"})]),
    (HERMES, '{"name": "unknown", "arguments": {}}', '{"name": "unknown", "arguments": {}}', []),
    (HERMES, "It is sunny.", "It is sunny.", []),
    (LLAMA3, '{"name": "get_weather", "parameters": {"city": "Oslo"}}', None, [("get_weather", {"city": "Oslo"})]),
    (LLAMA3, '<|python_tag|>{"name": "get_time", "parameters": {"zone": "UTC"}}', None,
     [("get_time", {"zone": "UTC"})]),
    (MISTRAL, '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome"}}]', None,
     [("get_weather", {"city": "Rome"})]),
    (GENERIC, '{"tool_call": {"name": "get_weather", "arguments": {"city": "Lima"}}}', None,
     [("get_weather", {"city": "Lima"})]),
    (GENERIC, '{"tool_calls": [{"name": "get_time", "arguments": {"zone": "UTC"}}]}', None,
     [("get_time", {"zone": "UTC"})]),
    (GENERIC, '{"response": "Hello!"}', "Hello!", []),
    (GENERIC, '{"response": "cut sho', '{"response": "cut sho', []),
    (GENERIC, '{"name": "get_time", "arguments": {"zone": "UTC"}}', None, [("get_time", {"zone": "UTC"})]),
    (GENERIC, '{"name": "unknown", "arguments": {}}', '{"name": "unknown", "arguments": {}}', []),
    (GENERIC, "It is sunny.", "It is sunny.", []),
])
def test_parse_tool_calls(fmt, text, content, calls):
    got_content, got_calls = parse_tool_calls(text, fmt, ["get_weather", "get_time"])
    assert got_content == content
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in got_calls] == calls
    assert all(c["type"] == "function" and c["id"].startswith("call_") for c in got_calls)
    assert len({c["id"] for c in got_calls}) == len(got_calls)


def test_streaming_holds_back_what_may_become_a_call():
    stream = ToolCallStream(HERMES, ["get_weather"])
    shown = "".join(stream.feed(p) for p in ["Let me ", "check.", "\n<tool", "_call>\n", '{"name": "get_weather", ',
                                             '"arguments": {"city": "Paris"}}', "\n</tool_call>"])
    assert shown == "Let me check.\n"
    rest, calls = stream.finish()
    assert rest == "" and calls[0]["function"]["name"] == "get_weather"
    plain = ToolCallStream(HERMES, ["get_weather"])
    assert "".join(plain.feed(p) for p in ["It is ", "sunny <", "3"]) == "It is sunny <3"
    assert plain.finish() == ("", [])
    generic = ToolCallStream(GENERIC, [])
    assert generic.feed('{"response": "Hi"}') == "" and generic.finish() == ("Hi", [])
    free = ToolCallStream(GENERIC, ["get_time"])
    assert "".join(free.feed(p) for p in ["It is ", "noon."]) == "It is noon." and free.finish() == ("", [])


# -- forced calls: the grammar ----------------------------------------------------------------------

@pytest.mark.parametrize("fmt, good, bad", [
    (HERMES, ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'],
     ['<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>',
      '<tool_call>\n{"name": "get_news", "arguments": {"city": "Paris"}}\n</tool_call>', "Sure!"]),
    (LLAMA3, ['{"name": "get_time", "parameters": {"zone": "UTC"}}'],
     ['{"name": "get_time", "parameters": {"zone": 5}}', '{"name": "get_time"}']),
    (MISTRAL, ['[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}}]'],
     ['[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Rome", "unit": "kelvin"}}]',
      '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "A"}}, {"name": "get_time", "arguments": '
      '{"zone": "B"}}]']),
    (GENERIC, ['{"tool_call": {"name": "get_weather", "arguments": {"city": "Lima"}}}'],
     ['{"response": "Hello"}', '{"tool_call": {"name": "get_weather", "arguments": {"town": "Lima"}}}']),
])
def test_required_calls_are_forced_and_typed(fmt, good, bad):
    grammar = tool_grammar(tool_request(TOOLS, "required"), fmt, TextOnlyTokenizer())
    compiled = grammar.compiled_for(TextOnlyTokenizer())
    for s in good:
        assert matches(compiled, s), s
    for s in bad:
        assert not matches(compiled, s), s


def test_named_and_parallel_calls():
    tok = TextOnlyTokenizer()
    named = tool_grammar(tool_request(TOOLS, {"type": "function", "function": {"name": "get_time"}}), HERMES, tok)
    assert matches(named.compiled_for(tok), '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>')
    assert not matches(named.compiled_for(tok),
                       '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>')
    two = ('<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>\n'
           '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>')
    assert matches(tool_grammar(tool_request(TOOLS, "required", True), HERMES, tok).compiled_for(tok), two)
    assert not matches(tool_grammar(tool_request(TOOLS, "required", False), HERMES, tok).compiled_for(tok), two)
    # auto: a generic answer is free (the template, as in llama.cpp, is all the model is told)
    assert tool_grammar(tool_request(TOOLS, "auto"), GENERIC, tok) is None
    assert tool_grammar(tool_request(TOOLS, "auto"), HERMES, tok) is None  # markers are text: read afterwards


class SpecialMarkers(TextOnlyTokenizer):
    """<tool_call>, </tool_call> and [TOOL_CALLS] are tokens of their own: the byte vocabulary's special ids 5, 6, 7."""

    ids = {"<tool_call>": 5, "</tool_call>": 6, "[TOOL_CALLS]": 7}

    def tokenize(self, text, add_special=False, parse_special=False):
        return [self.ids[text]] if parse_special and text in self.ids else super().tokenize(text)

    def token_to_piece(self, token, special=False):
        return {v: k.encode() for k, v in self.ids.items()}.get(token) or super().token_to_piece(token)


def test_auto_calls_are_typed_where_the_marker_is_a_token():
    tok = SpecialMarkers()
    hermes = tool_grammar(tool_request(TOOLS, "auto"), HERMES, tok).compiled_for(tok)
    assert matches(hermes, "It is sunny.")  # free text stays free
    assert matches(hermes, ["Let me check.\n", 5, '\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n', 6])
    assert not matches(hermes, [5, '\n{"name": "get_news", "arguments": {}}\n', 6])        # no such tool
    assert not matches(hermes, [5, '\n{"name": "get_weather", "arguments": {"town": 1}}\n', 6])  # bad arguments
    mistral = tool_grammar(tool_request(TOOLS, "auto"), MISTRAL, tok).compiled_for(tok)
    assert matches(mistral, "plain") and matches(mistral, [7, '[{"name": "get_time", "arguments": {"zone": "UTC"}}]'])
    assert not matches(mistral, [7, '[{"name": "x", "arguments": {}}]'])


def test_unenforceable_parameters_are_refused():
    bad = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
        "x": {"type": "array", "uniqueItems": True}}}}}
    with pytest.raises(UnsupportedSchemaError, match="uniqueItems"):
        tool_grammar(tool_request([bad], "required"), HERMES, TextOnlyTokenizer())


# -- real models ---------------------------------------------------------------------------------------

def _check_calls(message, names):
    assert message["tool_calls"], message
    for call in message["tool_calls"]:
        name = call["function"]["name"]
        assert name in names
        jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[name])


@pytest.mark.parametrize("name", ["qwen2", "smollm2", "gemma3"])
def test_forced_calls_on_real_models(llms, name):
    llm = llms(name)
    question = [{"role": "user", "content": "What is the weather in Paris, and the time in Tokyo?"}]
    for choice, names in (("required", {"get_weather", "get_time"}),
                          ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})):
        for seed in range(2):
            r = llm.create_chat_completion(question, tools=TOOLS, tool_choice=choice, temperature=0.8, seed=seed,
                                           max_tokens=120)
            assert r["choices"][0]["finish_reason"] == "tool_calls"
            _check_calls(r["choices"][0]["message"], names)


def test_parallel_calls_on_qwen(llms):
    """Each Hermes call is a block of its own, so the calls made before max_tokens are all read."""
    question = [{"role": "user", "content": "What is the weather in Paris, and the time in Tokyo?"}]
    r = llms("qwen2").create_chat_completion(question, tools=TOOLS, tool_choice="required", parallel_tool_calls=True,
                                             temperature=0, max_tokens=200)
    _check_calls(r["choices"][0]["message"], {"get_weather", "get_time"})


def test_qwen_calls_by_itself_and_reads_the_result(llms):
    llm = llms("qwen2")
    question = [{"role": "user", "content": "What's the weather in Paris?"}]
    r = llm.create_chat_completion(question, tools=[WEATHER], temperature=0, max_tokens=80)
    message = r["choices"][0]["message"]
    assert r["choices"][0]["finish_reason"] == "tool_calls" and message["content"] is None
    _check_calls(message, {"get_weather"})
    chunks = list(llm.create_chat_completion(question, tools=[WEATHER], temperature=0, max_tokens=80, stream=True))
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant"} and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    streamed = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [c["function"] for c in streamed] == [c["function"] for c in message["tool_calls"]]
    assert not any("content" in d for d in deltas)
    history = question + [message, {"role": "tool", "tool_call_id": message["tool_calls"][0]["id"],
                                    "content": json.dumps({"temperature_c": 18, "sky": "cloudy"})}]
    after = llm.create_chat_completion(history, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=40)
    assert after["choices"][0]["message"]["content"] and "tool_calls" not in after["choices"][0]["message"]


def test_tools_and_a_grammar_together_are_refused(llms):
    with pytest.raises(ChatCompletionError, match="not both"):
        llms("smollm2").create_chat_completion([{"role": "user", "content": "x"}], tools=TOOLS,
                                               response_format={"type": "json_object"})
