"""Collect the code that llama-cpp-python's users copy, from its 0.3.36 source distribution (run by hand):

    python3 tests/data/extract_llama_cpp_python_snippets.py PATH/TO/llama_cpp_python-0.3.36 \\
        > tests/data/llama_cpp_python_snippets.json

Kept verbatim: the README's Python blocks for completion, chat (with a JSON response format and
a schema), embeddings and the context size; the high-level API examples for completion,
streaming, embeddings and fill-in-the-middle; and, for saved state, the part of its
``tests/test_llama.py::test_real_llama`` that saves, generates and loads a state. The test
(tests/test_llama_cpp_python_snippets.py) swaps the import and the model path, nothing else.
"""
import json
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
readme = (root / "README.md").read_text()
blocks = re.findall(r"```python\n(.*?)```", readme, re.S)


def block(first_line_part: str, contains: str) -> str:
    found = [b for b in blocks if first_line_part in b.splitlines()[0] and contains in b]
    assert len(found) >= 1, (first_line_part, contains)
    return found[0]


snippets = {
    "readme_completion": block("from llama_cpp import Llama", "Name the planets"),
    "readme_chat": block("from llama_cpp import Llama", 'chat_format="llama-2"'),
    "readme_json_mode": block("from llama_cpp import Llama", '"type": "json_object",\n    },'),
    "readme_json_schema": block("from llama_cpp import Llama", '"schema"'),
    "readme_embeddings": block("import llama_cpp", "create_embedding"),
    "readme_context": block("llm = Llama(", "n_ctx=2048"),
}
for name in ("inference", "streaming", "embedding", "infill"):
    snippets[f"example_{name}"] = (root / "examples" / "high_level_api" / f"high_level_api_{name}.py").read_text()
test = (root / "tests" / "test_llama.py").read_text()
body = test[test.index("def test_real_llama(llama_cpp_model_path):"):test.index("def test_real_llama_repeated_prompt_cache")]
state = body[body.index("    model.set_seed(1337)"):].rstrip() + "\n"
# the function body, dedented (lines of a triple-quoted grammar start at column 0 and stay there)
snippets["test_state"] = "\n".join(line[4:] if line.startswith("    ") else line for line in state.splitlines()) + "\n"
json.dump({"_about": "verbatim from the llama-cpp-python 0.3.36 sdist (MIT), by "
                     "tests/data/extract_llama_cpp_python_snippets.py", "snippets": snippets}, sys.stdout, indent=1)
