"""Write tests/data/convert/expected.json: what llama.cpp's converter writes for tests/convert_checkpoints.py's cases.

Run by hand, once, in a Python environment that has llama.cpp's converter's requirements
(torch, transformers 5, sentencepiece, safetensors, pyyaml); never by the tests:

    python tests/data/make_convert_references.py LLAMA_CPP_TREE QWEN2_GGUF

LLAMA_CPP_TREE is the llama.cpp source of the reference build (``vendor/llama.cpp`` in the
llama-cpp-python 0.3.36 source distribution); QWEN2_GGUF the Qwen2.5-Coder-0.5B test model
(``lamina-fetch-test-models`` puts it in ~/.cache/lamina/models), whose vocabulary the qwen2 case
uses. For each case it

1. trains the small SentencePiece model the SentencePiece cases share, if
   tests/data/convert/tokenizer.model is not there yet (512 pieces, byte fallback, no
   normalization as Llama's and Gemma's, trained on ../shared/refdata/text/GPL-3.txt);
2. writes the checkpoint with tests/convert_checkpoints.py and checks its tensor names and
   shapes against the model transformers builds from the same config.json;
3. runs ``convert_hf_to_gguf.py`` for each output type the case lists ("vocab" is --vocab-only;
   a case with a model card also gets --metadata), and records the file's sha256 and size, its
   metadata (strings cut at 200 characters, arrays as their lengths) and each tensor's type,
   shape and sha256 prefix, in the format of ../shared/refdata/convert/expected.json.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import convert_checkpoints as cc  # noqa: E402


def train_tokenizer() -> None:
    target = cc.DATA / "tokenizer.model"
    if target.exists():
        return
    import sentencepiece as spm

    cc.DATA.mkdir(parents=True, exist_ok=True)
    text = HERE.parents[1].parent / "shared" / "refdata" / "text" / "GPL-3.txt"
    with tempfile.TemporaryDirectory() as tmp:
        spm.SentencePieceTrainer.train(
            input=str(text), model_prefix=f"{tmp}/m", vocab_size=cc.SPM_VOCAB, model_type="bpe", byte_fallback=True,
            pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>",
            unk_piece="<unk>", user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"],
            num_threads=1, character_coverage=1.0, normalization_rule_name="identity")
        Path(f"{tmp}/m.model").replace(target)


def check_against_transformers(case: str, folder: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    expected = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("mlp.experts.gate_up_proj"):  # transformers 5 fuses experts; checkpoints list them one by one
            n_experts, two_ff, hidden = tensor.shape
            prefix = name.removesuffix("gate_up_proj")
            for e in range(n_experts):
                expected[f"{prefix}{e}.gate_proj.weight"] = (two_ff // 2, hidden)
                expected[f"{prefix}{e}.up_proj.weight"] = (two_ff // 2, hidden)
        elif name.endswith("mlp.experts.down_proj"):
            n_experts, hidden, ff = tensor.shape
            prefix = name.removesuffix("down_proj")
            for e in range(n_experts):
                expected[f"{prefix}{e}.down_proj.weight"] = (hidden, ff)
        else:
            expected[name] = tuple(tensor.shape)
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    ours = {name: tuple(shape) for name, shape in cc.CASES[case]["tensors"]}
    if ours != expected:
        raise SystemExit(f"{case}: tensors differ from transformers'\n  only ours: {sorted(set(ours) - set(expected))}"
                         f"\n  only transformers': {sorted(set(expected) - set(ours))}\n  shapes: "
                         f"{[(n, ours[n], expected[n]) for n in ours if n in expected and ours[n] != expected[n]]}")


def qwen2_vocab(path: Path) -> tuple[list, list, list]:
    from gguf import GGUFReader

    fields = GGUFReader(path).fields

    def strings(key):
        field = fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    types = [int(fields["tokenizer.ggml.token_type"].parts[i][0]) for i in fields["tokenizer.ggml.token_type"].data]
    return strings("tokenizer.ggml.tokens"), types, strings("tokenizer.ggml.merges")


def describe(path: Path) -> dict:
    from gguf import GGUFReader, GGUFValueType

    data = path.read_bytes()
    reader = GGUFReader(path)
    metadata = {}
    for field in reader.fields.values():
        if field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            metadata[field.name] = len(field.data)
        elif kind == GGUFValueType.STRING:
            metadata[field.name] = bytes(field.parts[field.data[0]]).decode("utf-8")[:200]
        else:
            metadata[field.name] = field.parts[field.data[0]].tolist()[0]
    tensors = {t.name: [t.tensor_type.name, [int(d) for d in t.shape],
                        hashlib.sha256(bytes(t.data.tobytes())).hexdigest()[:16]] for t in reader.tensors}
    return {"file_sha256": hashlib.sha256(data).hexdigest(), "file_bytes": len(data), "metadata": metadata,
            "tensors": tensors}


def main() -> None:
    tree = Path(sys.argv[1]).resolve()
    sys.path.insert(0, str(tree / "gguf-py"))
    vocab = qwen2_vocab(Path(sys.argv[2]))
    train_tokenizer()
    results = {"tokenizer_model_sha256": hashlib.sha256((cc.DATA / "tokenizer.model").read_bytes()).hexdigest()}
    with tempfile.TemporaryDirectory() as tmp:
        for case, spec in cc.CASES.items():
            folder = cc.make_checkpoint(case, Path(tmp), vocab)
            check_against_transformers(case, folder)
            results[f"{case}.checkpoint"] = {
                p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}
            for outtype in spec["outtypes"]:
                out = Path(tmp) / f"{case}.{outtype}.gguf"
                command = [sys.executable, str(tree / "convert_hf_to_gguf.py"), str(folder), "--outfile", str(out)]
                command += ["--vocab-only"] if outtype == "vocab" else ["--outtype", outtype]
                if spec.get("model_card"):
                    command += ["--metadata", str(folder / "metadata.json")]
                subprocess.run(command, check=True, capture_output=True)
                results[f"{case}.{outtype}"] = describe(out)
                print(case, outtype, results[f"{case}.{outtype}"]["file_sha256"][:16], flush=True)
    with open(cc.DATA / "expected.json", "w") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
