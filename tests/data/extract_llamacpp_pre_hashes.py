"""Write lamina/convert/bpe_pre_tokenizers.json from llama.cpp's converter (run by hand, once).

    python3 tests/data/extract_llamacpp_pre_hashes.py LLAMA_CPP_TREE > lamina/convert/bpe_pre_tokenizers.json

LLAMA_CPP_TREE is the llama.cpp source of the reference build (``vendor/llama.cpp`` inside the
llama-cpp-python 0.3.36 source distribution). ``get_vocab_base_pre`` in ``conversion/base.py``
names a BPE tokenizer's pre-tokenizer (``tokenizer.ggml.pre``) by the sha256 of the token ids
its Hugging Face tokenizer gives for a check text; this reads that table (hash, name, and the
model it came from) and the check text itself. Where a hash is listed twice the later name
wins, as in the converter.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path


def main() -> None:
    source = (Path(sys.argv[1]) / "conversion" / "base.py").read_text(encoding="utf-8")
    body = source[source.index("Marker: Start get_vocab_base_pre"):source.index("Marker: End get_vocab_base_pre")]
    check_text = ast.literal_eval(re.search(r"chktxt = ('.*')\n", body).group(1))
    table = {}
    for match in re.finditer(r'if chkhsh == "([0-9a-f]{64})":\n((?:\s*#.*\n)*)\s*res = "([^"]+)"', body):
        digest, comments, name = match.groups()
        ref = re.search(r"ref:\s*(\S+)", comments)
        table[digest] = {"pre": name, "ref": ref.group(1) if ref else None}
    json.dump({"check_text": check_text, "hashes": table}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
