"""``lamina convert`` writes what llama.cpp's ``convert_hf_to_gguf.py`` writes, byte for byte.

Two sets of references, both made by llama.cpp's converter (build 0c1e570), never by lamina:

* ../shared/refdata/convert: four tiny checkpoints (qwen3, llama with Llama 3 rope scaling,
  mixtral, granite) and what the converter wrote for each with --outtype f16, q8_0 and bf16.
  Those folders lack the ``chat_template.jinja`` the converter read beside them; the template is
  SmolLM2's, as the files say (it is checked against the shared tiny GGUF files here).
* tests/data/convert/expected.json: the cases of tests/convert_checkpoints.py (qwen2, qwen3moe,
  gemma3 with a SentencePiece tokenizer, olmo2, stablelm, starcoder2, mistral split in two files,
  llama with a model card and a metadata override, vocabulary only), converted by
  tests/data/make_convert_references.py.

A file that differs is reported key by key and tensor by tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

import convert_checkpoints as cc
from lamina.convert import ConvertError, convert
from lamina.gguf import read

SHARED_CASES = ["qwen3", "llama3scaled", "mixtral", "granite"]
OUTTYPES = ["f16", "q8_0", "bf16"]
EXPECTED = json.loads((cc.DATA / "expected.json").read_text())


def _differences(path: Path, expected: dict) -> list[str]:
    """What differs between a written file and a reference entry (empty when the bytes are equal)."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() == expected["file_sha256"]:
        return []
    problems = [f"file: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}; llama.cpp wrote "
                f"{expected['file_bytes']} bytes, {expected['file_sha256'][:16]}"]
    f = read(path)
    if list(f.metadata) != list(expected["metadata"]):
        problems.append(f"keys: {list(f.metadata)} != {list(expected['metadata'])}")
    for key, want in expected["metadata"].items():
        got = f.metadata.get(key)
        if isinstance(got, (list, tuple, np.ndarray)):
            got = len(got)
        elif isinstance(got, str):
            got = got[:200]
        if got != want and not (isinstance(want, float) and abs(got - want) < 1e-9):
            problems.append(f"{key}: {got!r:.80} != {want!r:.80}")
    if list(f.tensors) != list(expected["tensors"]):
        problems.append(f"tensor order: {list(f.tensors)} != {list(expected['tensors'])}")
    for name, (type_, shape, digest) in expected["tensors"].items():
        t = f.tensors.get(name)
        got = None if t is None else (t.type, list(t.shape), hashlib.sha256(t.data.tobytes()).hexdigest()[:16])
        if got != (type_, shape, digest):
            problems.append(f"tensor {name}: {got} != {(type_, shape, digest)}")
    return problems


@pytest.fixture(scope="module")
def shared_checkpoints(refdata, tmp_path_factory) -> dict[str, Path]:
    """The shared checkpoints in folders named as when llama.cpp converted them, with their chat template."""
    root = tmp_path_factory.mktemp("shared-checkpoints")
    folders = {}
    for case in SHARED_CASES:
        folder = root / f"hf-{case}"
        folder.mkdir()
        for item in (refdata / "convert" / case).iterdir():
            os.symlink(item, folder / item.name)
        (folder / "chat_template.jinja").write_text(cc.SMOLLM_TEMPLATE)
        folders[case] = folder
    return folders


def test_the_missing_chat_template_is_smollm2s(refdata):
    for case in SHARED_CASES:
        assert read(refdata / "tiny" / f"tiny-{case}.f16.gguf").metadata["tokenizer.chat_template"] == \
            cc.SMOLLM_TEMPLATE


@pytest.mark.parametrize("outtype", OUTTYPES)
@pytest.mark.parametrize("case", SHARED_CASES)
def test_shared_checkpoints_convert_to_llamacpps_bytes(refdata, shared_checkpoints, tmp_path, case, outtype):
    expected = json.loads((refdata / "convert" / "expected.json").read_text())[f"{case}.{outtype}"]
    out = convert(shared_checkpoints[case], tmp_path / "out.gguf", outtype)
    assert _differences(out, expected) == []


@pytest.fixture(scope="module")
def qwen2_vocab(model_paths):
    m = read(model_paths["qwen2"]).metadata
    return (list(m["tokenizer.ggml.tokens"]), [int(t) for t in m["tokenizer.ggml.token_type"]],
            list(m["tokenizer.ggml.merges"]))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, qwen2_vocab):
    root = tmp_path_factory.mktemp("checkpoints")
    made = {}

    def make(case: str) -> Path:
        if case not in made:
            made[case] = cc.make_checkpoint(case, root, qwen2_vocab)
        return made[case]

    return make


def test_the_tests_sentencepiece_model_is_the_one_llamacpp_converted():
    assert hashlib.sha256((cc.DATA / "tokenizer.model").read_bytes()).hexdigest() == \
        EXPECTED["tokenizer_model_sha256"]


CASE_OUTTYPES = [(case, t) for case, spec in cc.CASES.items() for t in spec["outtypes"]]


@pytest.mark.parametrize("case,outtype", CASE_OUTTYPES, ids=[f"{c}-{t}" for c, t in CASE_OUTTYPES])
def test_each_architecture_converts_to_llamacpps_bytes(checkpoints, tmp_path, case, outtype):
    folder = checkpoints(case)
    made = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.safetensors"))}
    assert made == EXPECTED[f"{case}.checkpoint"], "the checkpoint is not the one llama.cpp converted"
    options = {"metadata": folder / "metadata.json"} if cc.CASES[case].get("model_card") else {}
    if outtype == "vocab":
        out = convert(folder, tmp_path / "out.gguf", vocab_only=True, **options)
    else:
        out = convert(folder, tmp_path / "out.gguf", outtype, **options)
    assert _differences(out, EXPECTED[f"{case}.{outtype}"]) == []


def test_a_converted_model_gives_llamacpps_logits(refdata, shared_checkpoints, tmp_path):
    """The converted file runs in lamina with llama.cpp's logits for the tiny models' reference prompt."""
    from lamina.engine.batch import Batch
    from lamina.engine.context import Context
    from lamina.models import load_model

    for case in ("llama3scaled", "mixtral"):
        model = load_model(read(convert(shared_checkpoints[case], tmp_path / f"{case}.gguf", "f16")))
        ref = json.loads((refdata / "tiny" / f"{case}.greedy.jsonl").read_text().splitlines()[0])
        logits = Context(model, n_ctx=256).decode(Batch.for_sequence(ref["tokens"], 0))[-1]
        ids = [t for t, _ in ref["top64"]]
        np.testing.assert_allclose(logits[ids], [v for _, v in ref["top64"]], atol=1e-5)


def test_a_converted_model_quantizes_and_runs(shared_checkpoints, tmp_path):
    from lamina.cli import quantize as quantize_cli
    from lamina.engine.batch import Batch
    from lamina.engine.context import Context
    from lamina.models import load_model

    f16 = convert(shared_checkpoints["qwen3"], tmp_path / "qwen3-f16.gguf", "f16")
    q4 = tmp_path / "qwen3-q4_k_m.gguf"
    assert quantize_cli.main([str(f16), str(q4), "Q4_K_M"]) == 0
    f = read(q4)
    assert f.tensors["blk.0.ffn_gate.weight"].type in ("Q4_K", "Q5_0", "Q8_0")  # row length 64: fallback types
    logits = Context(load_model(f), n_ctx=64).decode(Batch.for_sequence([1, 2, 3], 0))[-1]
    assert logits.shape == (49152,) and np.isfinite(logits).all()


def test_default_file_name_follows_llamacpps_naming(shared_checkpoints):
    out = convert(shared_checkpoints["granite"], None, "q8_0")
    try:
        assert out == shared_checkpoints["granite"] / "Hf-Granite-3.2M-Q8_0.gguf"
    finally:
        out.unlink()


def test_outfile_templates_name_the_type(shared_checkpoints, tmp_path):
    out = convert(shared_checkpoints["qwen3"], tmp_path / "model-{ftype}.gguf")
    assert out == tmp_path / "model-f16.gguf"   # auto: the checkpoint is F32, so F16
    out = convert(shared_checkpoints["qwen3"], tmp_path, "bf16")
    assert out == tmp_path / "Hf-Qwen3-3.2M-BF16.gguf"


def test_no_weight_is_read_before_writing(shared_checkpoints, monkeypatch):
    """Planning decides every name, shape and type from the headers alone: weights stream while written."""
    from lamina.convert import plan_tensors
    from lamina.convert.architectures import converter_for
    from lamina.convert.checkpoint import CheckpointTensor, checkpoint_tensors, load_config

    def refuse(self):
        raise AssertionError(f"{self.name} was read while planning")

    monkeypatch.setattr(CheckpointTensor, "load", refuse)
    folder = shared_checkpoints["mixtral"]
    planned = plan_tensors(converter_for(folder, load_config(folder)), checkpoint_tensors(folder), "Q8_0")
    assert [t.name for t in planned][:3] == ["token_embd.weight", "blk.0.ffn_gate_exps.weight",
                                            "blk.0.ffn_down_exps.weight"]
    assert planned[1].shape == (4, 128, 64) and planned[1].type == "Q8_0"


def test_a_failed_conversion_leaves_no_file(shared_checkpoints, tmp_path, monkeypatch):
    import lamina.quants

    calls = []

    def fail_on_third(rows, type_):
        calls.append(type_)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return original(rows, type_)

    original = lamina.quants.quantize
    monkeypatch.setattr(lamina.quants, "quantize", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        convert(shared_checkpoints["qwen3"], tmp_path / "out.gguf", "q8_0")
    assert list(tmp_path.iterdir()) == []


# -- bad checkpoints: one clear error naming what and where ---------------------------------------------

def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    target.mkdir()
    for item in folder.iterdir():
        (target / item.name).write_bytes(item.read_bytes())
    return target


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ConvertError, match="no config.json"):
        convert(tmp_path, tmp_path / "out.gguf")


def test_an_unknown_architecture_is_named(shared_checkpoints, tmp_path):
    folder = _copy(shared_checkpoints["qwen3"], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConvertError, match="'FalconForCausalLM' is not one lamina converts"):
        convert(folder, tmp_path / "out.gguf")


def test_a_truncated_safetensors_file_is_refused(shared_checkpoints, tmp_path):
    folder = _copy(shared_checkpoints["qwen3"], tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(ConvertError, match="model.safetensors: not a valid safetensors file"):
        convert(folder, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_a_part_missing_from_a_sharded_checkpoint_is_named(checkpoints, tmp_path):
    folder = _copy(checkpoints("mistral"), tmp_path)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ConvertError, match="model-00002-of-00002.safetensors' is missing"):
        convert(folder, tmp_path / "out.gguf")


def test_an_index_that_disagrees_with_its_parts_is_refused(checkpoints, tmp_path):
    folder = _copy(checkpoints("mistral"), tmp_path)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00001-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ConvertError, match="missing from the parts: model.layers.9.mlp.up_proj.weight"):
        convert(folder, tmp_path / "out.gguf")


def test_a_tensor_with_no_place_in_the_model_is_named(tmp_path):
    folder = tmp_path / "hf-odd"
    folder.mkdir()
    spec = cc.CASES["olmo2"]
    cc._tokenizer_files("bpe", folder)
    (folder / "config.json").write_text(json.dumps(spec["config"]))
    cc._safetensors_file(folder / "model.safetensors", {"model.layers.0.mystery.weight": np.ones((4, 4), np.float32)},
                         "F32")
    with pytest.raises(ConvertError, match="'model.layers.0.mystery.weight' has no place in a olmo2 model"):
        convert(folder, tmp_path / "out.gguf")


def test_an_unknown_bpe_pre_tokenizer_is_refused(shared_checkpoints, tmp_path):
    folder = _copy(shared_checkpoints["qwen3"], tmp_path)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ConvertError, match="pre-tokenizer of this tokenizer.json is not one llama.cpp knows"):
        convert(folder, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_cli_converts_and_refuses_what_it_cannot_do(shared_checkpoints, tmp_path, capsys):
    from lamina.cli import main

    assert main(["convert", str(shared_checkpoints["qwen3"]), "--outfile", str(tmp_path / "q.gguf"),
                 "--outtype", "q8_0"]) == 0
    assert "Model successfully exported" in capsys.readouterr().err
    assert read(tmp_path / "q.gguf").metadata["general.file_type"] == 7
    assert main(["convert", str(shared_checkpoints["qwen3"]), "--outtype", "tq1_0"]) == 2
    assert "lamina quantize" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nowhere")]) == 1
    assert "not a folder" in capsys.readouterr().err
    assert main(["convert", "--print-supported-models"]) == 0
    assert "qwen3moe: Qwen3MoeForCausalLM" in capsys.readouterr().out


def test_stablelm_per_head_norms_are_stacked_one_per_head(checkpoints, tmp_path):
    """stablelm-2-12b's per-head q/k LayerNorms become one (heads, head_dim) tensor each. llama.cpp's
    converter means to write them but fails (it returns the stacked tensor from a generator without
    yielding it), so this is checked against the input itself."""
    from safetensors.numpy import load_file

    folder = _copy(checkpoints("stablelm"), tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["qk_layernorm"] = True
    (folder / "config.json").write_text(json.dumps(config))
    arrays = {k: v.astype(np.float32) for k, v in load_file(folder / "model.safetensors").items()}
    rng = np.random.default_rng(0)
    for b in range(cc.LAYERS):
        for which, heads in (("q_layernorm", cc.HEADS), ("k_layernorm", cc.KV_HEADS)):
            for h in range(heads):
                arrays[f"model.layers.{b}.self_attn.{which}.norms.{h}.weight"] = \
                    rng.standard_normal(cc.D).astype(np.float16).astype(np.float32)
    cc._safetensors_file(folder / "model.safetensors", arrays, "F16")
    f = read(convert(folder, tmp_path / "out.gguf", "f16"))
    for which, gguf_name, heads in (("q_layernorm", "attn_q_norm", cc.HEADS), ("k_layernorm", "attn_k_norm", cc.KV_HEADS)):
        t = f.tensors[f"blk.1.{gguf_name}.weight"]
        assert (t.type, t.shape) == ("F32", (cc.D, heads))
        expected = np.stack([arrays[f"model.layers.1.self_attn.{which}.norms.{h}.weight"] for h in range(heads)])
        np.testing.assert_array_equal(np.asarray(t.data), expected)
