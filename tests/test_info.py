"""``lamina info``: its numbers are checked against facts independent of its own code where possible
(shared/models.json, the tensor shapes themselves, known model sizes), and bad files end in a
clear message and exit code 1, never a traceback.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from lamina.cli.info import human_bytes, human_count, main
from lamina.gguf import MetadataValue, NewTensor, ValueType, read, write
from lamina.testing.models import MODEL_NAMES, load_recipes

# What is known about each model from outside lamina: sizes as published, llama.cpp's file-type names.
EXPECTED = {
    "smollm2": dict(params="135M", file_type="Q4_1", layers=30, vocab=49152, embedding=576, heads="9, key/value heads 3",
                    context=8192, tokenizer=("gpt2", "smollm"), chat_template=True),
    "qwen2": dict(params="630M", file_type="Q4_K - Medium", layers=24, vocab=151936, embedding=896,
                  heads="14, key/value heads 2", context=32768, tokenizer=("gpt2", "qwen2"), chat_template=True),
    "gemma3": dict(params="268M", file_type="Q4_K - Medium", layers=18, vocab=262144, embedding=640,
                   heads="4, key/value heads 1", context=32768, tokenizer=("llama", "default"), chat_template=False),
}


def run_info(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def summary_rows(text: str) -> dict[str, str]:
    rows = {}
    for line in text.split("\n\n")[0].splitlines():
        label, _, value = re.split(r"(\s{2,})", line, maxsplit=1)
        rows[label] = value
    return rows


def mix_rows(text: str) -> dict[str, list[str]]:
    block = text.split("quantization mix:\n")[1].split("\n\n")[0].splitlines()[1:]
    return {cols[0]: cols[1:] for cols in (line.split() for line in block)}


@pytest.fixture(scope="module")
def recipes():
    return load_recipes()


def test_summary_of_real_models(model_name, model_path, recipes, capsys):
    recipe = recipes[MODEL_NAMES[model_name]]
    expected = EXPECTED[model_name]
    code, out, err = run_info(capsys, model_path)
    assert code == 0 and err == ""
    rows = summary_rows(out)
    f = read(model_path)
    tensors = list(f.tensors.values())

    assert rows["architecture"] == recipe["architecture"]
    assert rows["file size"].endswith(f"({recipe['gguf_bytes']:,} bytes)")
    assert rows["format"].startswith("GGUF v3, ")
    total = sum(t.n_elements for t in tensors)
    assert rows["parameters"] == f"{expected['params']} ({total:,})"
    assert rows["file type"].startswith(expected["file_type"] + " (general.file_type = ")

    # Hyperparameters, cross-checked against the tensors themselves.
    layers = {int(m.group(1)) for t in tensors if (m := re.match(r"blk\.(\d+)\.", t.name))}
    assert int(rows["layers"]) == expected["layers"] == len(layers) == max(layers) + 1
    embd = f.tensors["token_embd.weight"].shape
    assert int(rows["embedding"]) == expected["embedding"] == embd[0]
    model, pre = expected["tokenizer"]
    assert rows["vocabulary"].startswith(f"{expected['vocab']:,} tokens, ")
    assert expected["vocab"] == embd[1]
    assert f"tokenizer.ggml.model '{model}', pre-tokenizer '{pre}'" in rows["vocabulary"]
    assert rows["attention heads"] == expected["heads"]
    assert int(rows["context length"]) == expected["context"]
    assert rows["chat template"].startswith("yes (") == expected["chat_template"]

    # The quantization mix: the same types as the recipe lists, counts as the tensors say.
    mix = mix_rows(out)
    total_row = mix.pop("total")
    assert set(mix) == set(recipe["quant_types"])
    counts = Counter(t.type for t in tensors)
    assert {k: int(v[0]) for k, v in mix.items()} == counts
    for name, cols in mix.items():
        assert int(cols[1].replace(",", "")) == sum(t.n_elements for t in tensors if t.type == name)
    assert int(total_row[0]) == len(tensors) and int(total_row[1].replace(",", "")) == total
    bpw = 8 * sum(t.n_bytes for t in tensors) / total
    assert float(total_row[-1]) == pytest.approx(bpw, abs=0.005)
    assert rows["tensor data"].endswith(f"{bpw:.2f} bits per weight")


def test_tensor_table(capsys, model_paths):
    path = model_paths["smollm2"]
    code, out, _ = run_info(capsys, path, "--tensors")
    assert code == 0
    table = out.split("272 tensors (shape in ggml order, row length first):\n")[1].splitlines()[1:]
    f = read(path)
    assert len(table) == len(f.tensors) == 272
    for line, t in zip(table, f.tensors.values()):
        cols = line.split()
        assert cols[1] == t.name
        assert " x ".join(map(str, t.shape)) in line
        assert t.type in cols and f"{t.n_elements:,}" in cols
    first = table[0].split()
    assert first[:5] == ["1", "token_embd.weight", "576", "x", "49152"] and first[5] == "Q8_0"
    assert table[0].endswith(human_bytes(49152 * 576 // 32 * 34))


def test_metadata_listing_abbreviates_long_arrays(capsys, model_paths):
    code, out, _ = run_info(capsys, model_paths["smollm2"], "--metadata")
    assert code == 0
    listing = out.split("33 metadata keys:\n")[1].split("\n\n")[0].splitlines()
    assert len(listing) == 33
    tokens = next(line for line in listing if " tokenizer.ggml.tokens = " in line)
    assert tokens.strip() == ("[STRING]   tokenizer.ggml.tokens = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', "
                              "'<repo_name>', '<reponame>', '<file_sep>', ...] (49,152 elements)")
    template = next(line for line in listing if " tokenizer.chat_template = " in line)
    assert template.endswith("...'") and len(template.split(" = ", 1)[1]) == 62  # 57 characters, "...", quotes
    assert "  UINT32     llama.block_count = 30" in listing


def test_json(capsys, model_paths):
    path = model_paths["smollm2"]
    code, out, _ = run_info(capsys, path, "--json")
    assert code == 0
    doc = json.loads(out)
    f = read(path)
    assert list(doc["metadata"]) == list(f.fields)
    assert "tensors" not in doc
    tokens = doc["metadata"]["tokenizer.ggml.tokens"]
    assert tokens == {"type": "ARRAY", "offset": f.field_offsets["tokenizer.ggml.tokens"], "element_type": "STRING",
                      "count": 49152, "value": f.metadata["tokenizer.ggml.tokens"][:6], "abbreviated": True}
    assert doc["metadata"]["llama.block_count"] == {"type": "UINT32", "offset": f.field_offsets["llama.block_count"],
                                                    "value": 30}
    assert doc["metadata"]["general.languages"]["value"] == ["en"]
    assert "abbreviated" not in doc["metadata"]["general.languages"]
    assert doc["metadata"]["tokenizer.chat_template"]["value"] == f.metadata["tokenizer.chat_template"]  # in full
    s = doc["summary"]
    assert (s["block_count"], s["vocab_size"], s["parameters"]) == (30, 49152, sum(t.n_elements for t in f))
    assert {k: v["tensors"] for k, v in s["quantization_mix"].items()} == Counter(t.type for t in f)
    assert s["file_type_name"] == "Q4_1" and s["chat_template"] is True
    assert (doc["version"], doc["file_size"], doc["alignment"]) == (3, f.file_size, 32)


def test_json_with_tensors_and_full_arrays(capsys, model_paths):
    path = model_paths["smollm2"]
    code, out, _ = run_info(capsys, path, "--json", "--tensors", "--full-arrays")
    doc = json.loads(out)
    f = read(path)
    assert [t["name"] for t in doc["tensors"]] == list(f.tensors)
    first = doc["tensors"][0]
    assert first == {"name": "token_embd.weight", "shape": [576, 49152], "type": "Q8_0", "offset": 0,
                     "elements": 576 * 49152, "bytes": 49152 * 612}
    assert doc["metadata"]["tokenizer.ggml.tokens"]["value"] == f.metadata["tokenizer.ggml.tokens"]
    assert doc["metadata"]["tokenizer.ggml.token_type"]["value"] == f.metadata["tokenizer.ggml.token_type"].tolist()


@pytest.mark.parametrize("n,text", [(134_515_008, "135M"), (494_032_768, "494M"), (268_098_176, "268M"),
                                    (1_543_714_304, "1.5B"), (7_000_000_000, "7B"), (3_200, "3K"), (12, "12")])
def test_parameter_counts_read_like_model_names(n, text):
    assert human_count(n) == text


def test_tiny_models_of_every_architecture(refdata, capsys):
    for path in sorted((refdata / "tiny").glob("*.gguf")):
        code, out, err = run_info(capsys, path)
        assert code == 0 and err == "", path
        rows = summary_rows(out)
        f = read(path)
        assert rows["architecture"] == f.metadata["general.architecture"]
        assert rows["file type"].startswith("F16 ")
        assert int(rows["layers"]) == f.metadata[f"{rows['architecture']}.block_count"]
        if "moe" in path.name or "mixtral" in path.name:
            n = f.metadata[f"{rows['architecture']}.expert_count"]
            assert rows["experts"].startswith(f"{n} (")


# -- bad files -------------------------------------------------------------------------------------

def test_truncated_model(tmp_path, capsys, model_paths):
    bad = tmp_path / "cut.gguf"
    with open(model_paths["smollm2"], "rb") as src:
        bad.write_bytes(src.read(5000))
    code, out, err = run_info(capsys, bad)
    assert code == 1 and out == ""
    assert err.startswith(f"lamina info: error: {bad}: byte ") and "Traceback" not in err


@pytest.mark.parametrize("content,fragment", [(b"", "empty"), (b"GGUF\x07\0\0\0" + bytes(16), "version 7"),
                                              (b"<html>not a model</html>", "not a GGUF file")])
def test_not_a_model(tmp_path, capsys, content, fragment):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    code, out, err = run_info(capsys, bad)
    assert code == 1 and out == "" and fragment in err and str(bad) in err


def test_missing_file_and_directory(tmp_path, capsys):
    code, _, err = run_info(capsys, tmp_path / "nope.gguf")
    assert code == 1 and "cannot open" in err
    code, _, err = run_info(capsys, tmp_path)
    assert code == 1 and "not a regular file" in err


def test_metadata_of_the_wrong_type(tmp_path, capsys):
    path = tmp_path / "wrong.gguf"
    write(path, {"general.architecture": "llama", "llama.block_count": "thirty"}, [])
    code, out, err = run_info(capsys, path)
    assert code == 1 and out == ""
    assert "'llama.block_count' should be an integer but is STRING" in err and "byte " in err


def test_no_traceback_from_the_console_command(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\0\0\0" + b"\xff" * 16 + bytes(20))
    done = subprocess.run([sys.executable, "-c", "import sys; from lamina.cli import main; sys.exit(main())",
                           "info", str(bad)], capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert "Traceback" not in done.stderr and "key-value count 18446744073709551615 is impossible" in done.stderr


def test_hostile_strings_are_escaped(tmp_path, capsys):
    path = tmp_path / "hostile.gguf"
    raw_name = b"evil\x1b[2J\xff\nname"
    write(path, {"general.architecture": "llama", "general.name": raw_name.decode("utf-8", "surrogateescape"),
                 "general.weird": MetadataValue(float("nan"), ValueType.FLOAT32)},
          [NewTensor("w\x07", (2,), "F32", np.zeros(2, "<f4"))])
    code, out, _ = run_info(capsys, path, "--tensors", "--metadata")
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert summary_rows(out)["model name"] == "evil\\x1b[2J\\xff\\nname"
    code, out, _ = run_info(capsys, path, "--json")
    doc = json.loads(out)  # strict JSON: no NaN, no undecodable bytes
    assert doc["metadata"]["general.name"]["value"].encode("utf-8", "surrogateescape") == raw_name
    assert doc["metadata"]["general.weird"]["value"] == "nan"


def test_file_type_guessed_when_missing(tmp_path, capsys):
    path = tmp_path / "noftype.gguf"
    write(path, {"general.architecture": "llama"},
          [NewTensor(f"blk.{i}.w", (32,), "Q8_0", np.zeros(34, np.uint8)) for i in range(3)]
          + [NewTensor("norm", (4,), "F32", np.zeros(4, "<f4"))])
    code, out, _ = run_info(capsys, path)
    assert code == 0
    assert summary_rows(out)["file type"] == "Q8_0 (guessed from the tensors = 7)"
    assert summary_rows(out)["chat template"] == "no" and "vocabulary" not in summary_rows(out)
