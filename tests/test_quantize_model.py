"""The quantize pipeline on the tiny models: streaming layout, importance matrices, mixture switches,
float conversions and refusals (the smollm2 comparisons with llama-quantize are in test_quantize_cli.py)."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

import lamina.gguf as lg
import lamina.quants as Q
from lamina.cli import quantize as cli
from lamina.quants.imatrix import ImatrixError, read_imatrix
from lamina.quants.mix import parse_target
from lamina.quants.model_quantize import QuantizeError, QuantizeRequest, quantize_model
from lamina.testing.models import shared_dir

TINY = shared_dir() / "refdata" / "tiny"


def tiny(arch: str):
    return TINY / f"tiny-{arch}.f16.gguf"


def _values(t) -> np.ndarray:
    return Q.dequantize(np.asarray(t.data).view(np.uint8), t.type, tuple(reversed(t.shape)))


def _types(path) -> dict[str, str]:
    with lg.read(path) as f:
        return {name: t.type for name, t in f.tensors.items()}


def test_streamed_file_is_what_lamina_gguf_write_writes(tmp_path):
    out = tmp_path / "q8.gguf"
    report = quantize_model(QuantizeRequest(str(tiny("qwen3")), str(out), parse_target("Q8_0")))
    expected = tmp_path / "expected.gguf"
    with lg.read(tiny("qwen3")) as src:
        tensors = []
        for t in report.tensors:
            c = t.choice
            info = src.tensors[c.name]
            data = np.asarray(info.data).view(np.uint8) if c.new_type == c.current_type else \
                Q.quantize(_values(info).reshape(-1, c.shape[0]), c.new_type)
            tensors.append(lg.NewTensor(c.name, t.out_shape, c.new_type, data))
        lg.write(expected, report.metadata, tensors)
    assert out.read_bytes() == expected.read_bytes()
    reader = gguf.GGUFReader(out)  # llama.cpp's own Python reader accepts it
    assert len(reader.tensors) == len(report.tensors)


def _write_gguf_imatrix(path, entries, counts, datasets=("calibration.txt",), chunk_count=7):
    tensors = []
    for name, sums in entries.items():
        tensors.append(lg.tensor_from_array(f"{name}.in_sum2", sums.astype(np.float32)))
        tensors.append(lg.tensor_from_array(f"{name}.counts", counts[name].astype(np.float32).reshape(-1, 1)))
    lg.write(path, {"general.type": "imatrix", "imatrix.datasets": list(datasets),
                    "imatrix.chunk_count": chunk_count, "imatrix.chunk_size": 512}, tensors)


def _mixtral_imatrix(rng):
    entries, counts = {}, {}
    with lg.read(tiny("mixtral")) as f:
        for name, t in f.tensors.items():
            if len(t.shape) < 2 or "norm" in name or "gate_inp" in name:
                continue
            n_expert = t.shape[2] if len(t.shape) > 2 else 1
            entries[name] = rng.uniform(0.1, 10.0, (n_expert, t.shape[0]))
            counts[name] = rng.integers(1, 50, n_expert).astype(np.float64)
            if n_expert > 1:
                counts[name][1] = 0  # an expert that saw no tokens gets weights of 1
    return entries, counts


def test_imatrix_weights_reach_every_tensor_and_expert(tmp_path, capsys):
    rng = np.random.default_rng(3)
    entries, counts = _mixtral_imatrix(rng)
    imat = tmp_path / "mixtral.imatrix.gguf"
    _write_gguf_imatrix(imat, entries, counts)
    out = tmp_path / "q4.gguf"
    assert cli.main(["--imatrix", str(imat), str(tiny("mixtral")), str(out), "Q4_0", "2"]) == 0
    assert f"loaded {len(entries)} importance matrix entries" in capsys.readouterr().out
    with lg.read(tiny("mixtral")) as src, lg.read(out) as result:
        md = result.fields
        assert list(md)[-6:] == ["general.quantization_version", "general.file_type", "quantize.imatrix.file",
                                 "quantize.imatrix.dataset", "quantize.imatrix.entries_count",
                                 "quantize.imatrix.chunks_count"]
        assert md["quantize.imatrix.file"].value == str(imat)
        assert md["quantize.imatrix.dataset"].value == "calibration.txt"
        assert (md["quantize.imatrix.entries_count"].value, md["quantize.imatrix.entries_count"].type) == \
               (len(entries), lg.ValueType.UINT32)
        assert md["quantize.imatrix.chunks_count"].value == 7
        checked = 0
        for name, t in result.tensors.items():
            if t.type == src.tensors[name].type:
                continue
            values = _values(src.tensors[name])
            n = t.shape[0]
            experts = values.reshape(-1, values.shape[-2] if values.ndim > 1 else 1, n)
            raw = np.asarray(t.data).reshape(experts.shape[0], experts.shape[1], -1)
            for e in range(experts.shape[0]):
                weights = None
                if name in entries:
                    c = counts[name][e]
                    weights = (entries[name][e].astype(np.float32) / np.float32(c)) if c > 0 else np.ones(n, np.float32)
                expected = Q.quantize(experts[e], t.type, weights).reshape(experts.shape[1], -1)
                assert np.array_equal(raw[e], expected), (name, e)
                if weights is not None:
                    checked += 1
        assert checked >= len(entries)


def test_legacy_imatrix_format_reads_like_gguf(tmp_path):
    rng = np.random.default_rng(4)
    sums = {"blk.0.attn_q.weight": rng.uniform(0, 5, 64).astype(np.float32),
            "blk.1.ffn_down.weight": rng.uniform(0, 5, 128).astype(np.float32)}
    ncall = 12
    raw = struct.pack("<i", len(sums))
    for name, s in sums.items():
        raw += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", ncall, s.size) + s.tobytes()
    raw += struct.pack("<i", 9) + struct.pack("<i", 8) + b"wiki.txt"
    path = tmp_path / "old.dat"
    path.write_bytes(raw)
    m = read_imatrix(path)
    assert m.is_legacy and m.chunk_count == 9 and m.datasets == ["wiki.txt"]
    for name, s in sums.items():
        np.testing.assert_array_equal(m.weights[name], s / np.float32(ncall))


@pytest.mark.parametrize("content,message", [
    (b"", "truncated"),
    (b"\x05\x00\x00\x00", "not an imatrix file"),
    (b"\x01\x00\x00\x00\x04\x00\x00\x00abcd\x01\x00\x00\x00\x10\x00\x00\x00\x00" + bytes(12), "number of values"),
    (b"\x00\x00\x00\x00", "no data"),
])
def test_bad_imatrix_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.dat"
    path.write_bytes(content)
    with pytest.raises(ImatrixError, match=message):
        read_imatrix(path)


def test_imatrix_with_nan_or_wrong_size_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(5)
    entries, counts = _mixtral_imatrix(rng)
    entries["blk.0.attn_q.weight"][0, 3] = np.nan
    imat = tmp_path / "nan.imatrix.gguf"
    _write_gguf_imatrix(imat, entries, counts)
    out = tmp_path / "out.gguf"
    assert cli.main(["--imatrix", str(imat), str(tiny("mixtral")), str(out), "Q4_0"]) == 1
    assert "non-finite value nan" in capsys.readouterr().err and not out.exists()

    entries, counts = _mixtral_imatrix(rng)
    entries["blk.0.attn_q.weight"] = rng.uniform(0.1, 1, (1, 32))
    _write_gguf_imatrix(imat, entries, counts)
    assert cli.main(["--imatrix", str(imat), str(tiny("mixtral")), str(out), "Q4_0"]) == 1
    assert "imatrix size 32 is different from tensor size 64 for blk.0.attn_q.weight" in capsys.readouterr().err
    assert not out.exists()


def _wide_llama(path, rng):
    """A 1-layer llama whose rows are 256 long, so the k- and i-quants do not fall back to 32-blocks."""
    md = {"general.architecture": "llama", "llama.block_count": 1, "llama.attention.head_count": 4,
          "llama.attention.head_count_kv": 4}
    shapes = {"token_embd.weight": (64, 256), "blk.0.attn_q.weight": (256, 256), "blk.0.attn_v.weight": (256, 256),
              "blk.0.ffn_down.weight": (256, 512), "blk.0.attn_norm.weight": (256,)}
    tensors = [lg.tensor_from_array(name, rng.standard_normal(shape).astype(np.float32),
                                    "F32" if len(shape) == 1 else "F16") for name, shape in shapes.items()]
    lg.write(path, md, tensors)
    return path


@pytest.mark.parametrize("target", ["Q2_K_S", "IQ2_XXS", "IQ1_S"])
def test_very_low_bit_types_need_an_imatrix(tmp_path, capsys, target):
    src = _wide_llama(tmp_path / "wide.gguf", np.random.default_rng(6))
    out = tmp_path / "out.gguf"
    assert cli.main([str(src), str(out), target]) == 1
    err = capsys.readouterr().err
    assert "requires an importance matrix" in err and "blk.0.attn_q.weight" in err and not out.exists()


def test_moe_experts_get_mxfp4(tmp_path):
    out = tmp_path / "mxfp4.gguf"
    assert cli.main([str(tiny("qwen3moe")), str(out), "MXFP4_MOE"]) == 0
    types = _types(out)
    assert types["blk.0.ffn_down_exps.weight"] == "MXFP4" and types["blk.1.ffn_up_exps.weight"] == "MXFP4"
    assert types["blk.0.attn_q.weight"] == "Q8_0" and types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.ffn_gate_inp.weight"] == "F32" and types["blk.0.attn_norm.weight"] == "F32"
    with lg.read(out) as f:
        assert f.fields["general.file_type"].value == 38


def test_output_and_embedding_switches(tmp_path, capsys):
    out = tmp_path / "a.gguf"
    assert cli.main(["--leave-output-tensor", "--token-embedding-type", "q4_1", str(tiny("olmo2")), str(out),
                     "Q8_0"]) == 0
    types = _types(out)
    assert types["output.weight"] == "F16" and types["token_embd.weight"] == "Q4_1"
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    # an explicit type is not subject to the fallbacks: a row of 64 cannot hold a 256-block
    assert cli.main(["--token-embedding-type", "q4_K", str(tiny("olmo2")), str(tmp_path / "b.gguf"), "Q8_0"]) == 1
    assert "token_embd.weight: its rows of 64 values cannot be stored as q4_K" in capsys.readouterr().err
    assert not (tmp_path / "b.gguf").exists()
    assert cli.main(["--output-tensor-type", "Q8_0", "--pure", "--tensor-type", "attn_q=bf16", str(tiny("olmo2")),
                     str(out), "Q5_0"]) == 0
    types = _types(out)
    assert types["output.weight"] == "Q8_0" and types["token_embd.weight"] == "Q5_0"
    assert types["blk.0.attn_q.weight"] == "BF16" and types["blk.1.attn_v.weight"] == "Q5_0"


def test_copy_keeps_tensors_and_file_type(tmp_path):
    out = tmp_path / "copy.gguf"
    assert cli.main([str(tiny("granite")), str(out), "COPY"]) == 0
    with lg.read(tiny("granite")) as a, lg.read(out) as b:
        assert b.fields["general.file_type"].value == a.fields["general.file_type"].value
        for name, t in a.tensors.items():
            assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(b.tensors[name].data).view(np.uint8))


@pytest.mark.parametrize("target", ["F32", "BF16"])
def test_float_conversions_round_like_ggml(tmp_path, target):
    out = tmp_path / f"{target}.gguf"
    assert cli.main([str(tiny("starcoder2")), str(out), target]) == 0
    with lg.read(tiny("starcoder2")) as a, lg.read(out) as b:
        for name, t in a.tensors.items():
            got = b.tensors[name]
            if t.type == "F32" or len(t.shape) < 2:
                assert got.type == t.type
                continue
            f32 = np.asarray(t.data).astype(np.float32)  # exact
            if target == "F32":
                assert np.array_equal(np.asarray(got.data).view(np.uint32), f32.view(np.uint32))
            else:
                expected = gguf.quants.quantize(f32, gguf.GGMLQuantizationType.BF16)
                assert np.array_equal(np.asarray(got.data).view(np.uint16), expected.view(np.uint16))
    if target == "F32":  # and back: F16 -> F32 is exact, so F32 -> F16 must give the original bytes
        back = tmp_path / "back.gguf"
        assert cli.main([str(out), str(back), "F16"]) == 0
        with lg.read(tiny("starcoder2")) as a, lg.read(back) as b:
            for name, t in a.tensors.items():
                assert b.tensors[name].type == t.type
                assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(b.tensors[name].data).view(np.uint8))


def test_non_finite_weights_fail_validation(tmp_path):
    src = tmp_path / "nan.gguf"
    with lg.read(tiny("qwen3")) as f:
        tensors = []
        for name, t in f.tensors.items():
            data = np.array(t.data)
            if name == "blk.1.attn_q.weight":
                data.reshape(-1)[100] = np.inf
            tensors.append(lg.NewTensor(name, t.shape, t.type, data))
        lg.write(src, f.typed_metadata(), tensors)
    out = tmp_path / "out.gguf"
    with pytest.raises(QuantizeError, match="blk.1.attn_q.weight: quantized data validation failed"):
        quantize_model(QuantizeRequest(str(src), str(out), parse_target("Q8_0")))
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_bad_options_are_usage_errors(tmp_path, capsys):
    base = [str(tiny("qwen3")), str(tmp_path / "o.gguf"), "Q8_0"]
    for argv, message in [(["--output-tensor-type", "q9"] + base, "invalid ggml_type 'q9'"),
                          (["--tensor-type", "attn_q"] + base, "malformed tensor type"),
                          (["--include-weights", "a", "--exclude-weights", "b"] + base, "cannot be used together"),
                          (["--keep-split"] + base, "not supported"),
                          (["--override-kv", "x=int:abc"] + base, "invalid KV override"),
                          (base + ["two"], "invalid nthread 'two'"),
                          ([str(tiny("qwen3")), "Q1_0"], "does not implement")]:
        assert cli.main(argv) == 1, argv
        assert message in capsys.readouterr().err, argv
    assert not (tmp_path / "o.gguf").exists()


def test_default_output_name_and_override_kv(tmp_path):
    src = tmp_path / "model.gguf"
    src.write_bytes(tiny("qwen3").read_bytes())
    assert cli.main(["--override-kv", "general.name=str:renamed", "--override-kv", "qwen3.context_length=int:-77",
                     str(src), "q8_0", "1"]) == 0
    out = tmp_path / "ggml-model-Q8_0.gguf"
    with lg.read(out) as f:
        assert f.fields["general.name"].value == "renamed"
        assert (f.fields["qwen3.context_length"].value, f.fields["qwen3.context_length"].type) == \
               (77, lg.ValueType.UINT32)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)


def test_progress_bar_on_a_terminal(tmp_path):
    import sys

    import pexpect

    out = tmp_path / "bar.gguf"
    child = pexpect.spawn(sys.executable, ["-c", "import sys; from lamina.cli import main; sys.exit(main())",
                                           "quantize", str(tiny("qwen3")), str(out), "Q8_0", "1"],
                          dimensions=(24, 120), timeout=300, encoding="utf-8")
    child.expect(pexpect.EOF)
    child.close()
    text = child.before
    assert child.exitstatus == 0, text
    with lg.read(tiny("qwen3")) as f:
        n = len(f.tensors)
    assert f"{n}/{n}" in text and "100%" in text and "quantizing" in text  # tqdm's bar, one step per tensor
    assert "[   1/" not in text  # the per-tensor log lines are for logs, not terminals
    assert out.exists()


@pytest.mark.parametrize("target,expected", [
    ("IQ2_XXS", {"token_embd.weight": "Q5_K", "blk.0.attn_q.weight": "IQ2_XXS", "blk.0.attn_v.weight": "Q2_K",
                 "blk.0.ffn_down.weight": "IQ2_XXS"}),
    ("IQ3_M", {"token_embd.weight": "Q6_K", "blk.0.attn_q.weight": "IQ3_S", "blk.0.attn_v.weight": "Q4_K",
               "blk.0.ffn_down.weight": "IQ3_S"}),
])
def test_iquant_targets_with_an_imatrix(tmp_path, target, expected):
    rng = np.random.default_rng(8)
    src = _wide_llama(tmp_path / "wide.gguf", rng)
    entries, counts = {}, {}
    with lg.read(src) as f:
        for name, t in f.tensors.items():
            if len(t.shape) == 2:
                entries[name] = rng.uniform(0.1, 3.0, (1, t.shape[0]))
                counts[name] = np.array([10.0])
    _write_gguf_imatrix(tmp_path / "im.gguf", entries, counts)
    out = tmp_path / "out.gguf"
    assert cli.main(["--imatrix", str(tmp_path / "im.gguf"), str(src), str(out), target, "2"]) == 0
    with lg.read(src) as a, lg.read(out) as b:
        assert {k: t.type for k, t in b.tensors.items() if t.type != "F32"} == expected
        for name, t in b.tensors.items():
            if t.type == "F32":
                continue
            weights = entries[name][0].astype(np.float32) / np.float32(10.0)
            values = _values(a.tensors[name]).reshape(-1, t.shape[0])
            assert np.array_equal(np.asarray(t.data).reshape(values.shape[0], -1), Q.quantize(values, t.type, weights)
                                  .reshape(values.shape[0], -1)), name
