"""Code written for llama-cpp-python runs on lamina with only the import swapped.

``tests/data/llama_cpp_python_snippets.json`` holds, verbatim, the Python blocks of llama-cpp-python
0.3.36's README for completion, chat, JSON output and embeddings, its high-level API examples
(completion, streaming, embeddings, fill-in-the-middle) and the saved-state part of its own
``test_real_llama`` (see ``tests/data/extract_llama_cpp_python_snippets.py``). Each runs here with
``llama_cpp`` replaced by ``lamina`` and the model path by a real model's; nothing else changes.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

SNIPPETS = json.loads((Path(__file__).parent / "data" / "llama_cpp_python_snippets.json").read_text())["snippets"]
# which model each runs on: a chat model for text, a code model for fill-in-the-middle
MODELS = {"example_infill": "qwen2"}


def swapped(source: str, model: str) -> str:
    source = source.replace("from llama_cpp import", "from lamina import")
    source = source.replace("import llama_cpp\n", "import lamina as llama_cpp\n")
    source = re.sub(r'model_path="[^"]*"', f"model_path={model!r}", source)
    return re.sub(r'("--model", type=str, default=)"[^"]*"', rf"\1{model!r}", source)


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_runs_with_the_import_swapped(name, model_paths, monkeypatch, capsys):
    model = str(model_paths[MODELS.get(name, "smollm2")])
    source = swapped(SNIPPETS[name], model)
    assert "llama_cpp import" not in source and model in source or name == "test_state"
    monkeypatch.setattr(sys, "argv", [f"{name}.py"])
    namespace: dict = {"__name__": "__main__"}
    if name in ("readme_context", "test_state"):  # fragments: the README/test had made these
        from lamina import Llama, LlamaGrammar
        import lamina as llama_cpp

        namespace.update(Llama=Llama, llama_cpp=llama_cpp, LlamaGrammar=LlamaGrammar)
        if name == "test_state":
            namespace["model"] = Llama(model, n_ctx=2048, verbose=False)
    exec(compile(source, f"<llama-cpp-python {name}>", "exec"), namespace)
    printed = capsys.readouterr().out
    if name.startswith("example_") and name != "example_infill":
        assert printed.strip().startswith("{")
    if name == "example_streaming":
        chunks = [json.loads(c) for c in re.split(r"\n(?=\{)", printed.strip())]
        assert all(c["object"] == "text_completion" for c in chunks) and len(chunks) > 1
    if name == "readme_embeddings":
        assert len(namespace["embeddings"]["data"]) == 2
