"""Render llama.cpp's collected model templates with the reference llama-server (run by hand):

    python3 tests/data/make_llamacpp_templates.py PATH/TO/llama-server PATH/TO/llama.cpp/models/templates \\
        | gzip -9 > tests/data/llamacpp_templates.json.gz

For every ``*.jinja`` file in llama.cpp's ``models/templates/`` (the reference build's tree) one
llama-server starts with ``--jinja --chat-template-file FILE`` on smollm2 (whose bos/eos tokens the
templates see, as ``/props`` tells them), and ``/apply-template`` renders the three conversations below. The answer, or
the server's error, is stored with the template's source, so the test needs neither the server
nor the llama.cpp tree. The date the templates saw (``strftime_now``) is recorded as well.
"""
import datetime
import json
import pathlib
import sys

import httpx

from lamina.testing.models import model_path
from lamina.testing.server_process import ServerProcess

PEER = sys.argv[1]
TEMPLATES = pathlib.Path(sys.argv[2])
FLAGS = ["-m", str(model_path("smollm2")), "-c", "512", "-np", "1", "-t", "2", "--jinja"]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city name"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}

CONVERSATIONS = {
    "plain": {"messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Hello, who are you?"},
    ]},
    "multi_turn": {"messages": [
        {"role": "system", "content": "You are a terse calculator."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "2+2 equals 4."},
        {"role": "user", "content": "And 3+3?"},
    ]},
    "tool_call": {"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call12345", "content": "{\"temperature\": 18, \"unit\": \"celsius\"}"},
    ]},
    "tool_results_answered": {"tools": [WEATHER_TOOL], "messages": [
        {"role": "system", "content": "You answer about the weather."},
        {"role": "user", "content": "Weather in Paris and Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call00001", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}},
            {"id": "call00002", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"location\": \"Oslo\", \"unit\": \"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call00001", "content": "{\"temperature\": 18}"},
        {"role": "tool", "tool_call_id": "call00002", "content": "cloudy, 4 degrees"},
        {"role": "assistant", "content": "Paris is 18 degrees; Oslo is cloudy at 4."},
        {"role": "user", "content": "Thanks!"},
    ]},
    "content_parts": {"messages": [
        {"role": "user", "content": [{"type": "text", "text": "First part."}, {"type": "text", "text": "Second part."}]},
    ]},
    "prefill": {"messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "A colour I like is"},
    ]},
    "thinking_off": {"chat_template_kwargs": {"enable_thinking": False}, "messages": [
        {"role": "user", "content": "Think about 7*6."},
    ]},
}

out = {"_about": "llama-server (llama.cpp 0c1e570, the llama-cpp-python 0.3.36 sdist's tree) /apply-template "
                 "answers for each template of its models/templates/, made by hand with "
                 "tests/data/make_llamacpp_templates.py on smollm2 with these flags",
       "server_flags": FLAGS[2:], "model": "smollm2", "date": datetime.date.today().isoformat(),
       "conversations": CONVERSATIONS, "templates": {}}
for path in sorted(TEMPLATES.glob("*.jinja")):
    source = path.read_text(encoding="utf-8")
    srv = ServerProcess([*FLAGS, "--chat-template-file", str(path)], command=(PEER,))
    entry = {"source": source, "renders": {}}
    try:
        try:
            srv.wait_ready(timeout=60)
        except (RuntimeError, TimeoutError) as e:
            entry["load_error"] = str(e).splitlines()[-1][:500] if str(e) else "did not start"
            print(path.name, "LOAD ERROR", entry["load_error"], file=sys.stderr)
        else:
            props = httpx.get(srv.url + "/props", timeout=60).json()
            out["bos_token"], out["eos_token"] = props["bos_token"], props["eos_token"]
            for name, body in CONVERSATIONS.items():
                r = httpx.post(srv.url + "/apply-template", json=body, timeout=60)
                data = r.json()
                if r.status_code == 200:
                    entry["renders"][name] = {"prompt": data["prompt"]}
                else:
                    entry["renders"][name] = {"status": r.status_code, "error": data.get("error", data)}
                print(path.name, name, r.status_code, file=sys.stderr)
    finally:
        srv.stop()
    out["templates"][path.name] = entry
json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
