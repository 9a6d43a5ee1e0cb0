"""Ask the reference llama-server's /infill for greedy middles (run by hand):

    python3 tests/data/make_llamacpp_infill.py PATH/TO/llama-server > tests/data/llamacpp_infill.json
"""
import json
import sys

import httpx

from lamina.testing.server_process import ServerProcess
from lamina.testing.models import model_path
PEER = sys.argv[1]  # the llama-server binary of the reference build (see ../shared/docs/PEERS.md)
FLAGS = ["-m", str(model_path("qwen2")), "-c", "2048", "-np", "1", "-t", "2"]
CASES = [
    {"input_prefix": "def add(a, b):\n    return ", "input_suffix": "\n\nprint(add(1, 2))\n"},
    {"input_prefix": "import math\n\ndef circle_area(r):\n", "input_suffix": "\n    return area\n",
     "prompt": "    area"},
    {"input_prefix": "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n",
     "input_suffix": "\n\n    def pop(self):\n        return self.items.pop()\n",
     "input_extra": [{"filename": "util.py", "text": "def helper():\n    pass\n"}]},
]
srv = ServerProcess(FLAGS, command=(PEER,)).wait_ready()
out = {"_about": "llama-server (llama.cpp 0c1e570, the llama-cpp-python 0.3.36 sdist's tree) /infill answers, greedy, "
                 "made by hand with these flags and bodies (n_predict 24, temperature 0, return_tokens)",
       "server_flags": ["-c", "2048", "-np", "1", "-t", "2"], "model": "qwen2", "cases": []}
try:
    for case in CASES:
        body = {**case, "n_predict": 24, "temperature": 0, "return_tokens": True, "cache_prompt": False}
        r = httpx.post(srv.url + "/infill", json=body, timeout=300).json()
        out["cases"].append({"body": body, "content": r["content"], "tokens": r["tokens"],
                             "tokens_evaluated": r["tokens_evaluated"]})
        print(repr(r["content"]), r["tokens_evaluated"], file=sys.stderr)
finally:
    srv.stop()
json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
