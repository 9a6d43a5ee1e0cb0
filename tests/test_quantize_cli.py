"""`lamina quantize` on smollm2, checked against what llama-quantize did with the same model.

shared/refdata/llamacpp/quantize-smollm2.json records, for llama-quantize's F16 requantization of
smollm2 and for nine mixes made from that F16 file, the file size, general.file_type and every
tensor's type. The tensor bytes are pinned through lamina.quants.quantize (itself byte-exact with
ggml on shared/refdata/quant): each output tensor must equal that function applied to the F16
file's values, and the F16 values must equal the original model dequantized by the gguf package
and rounded by NumPy (both independent of lamina).
"""

from __future__ import annotations

import errno
import json

import gguf
import numpy as np
import pytest

import lamina.gguf as lg
import lamina.quants as Q
from lamina.cli import quantize as cli
from lamina.quants import model_quantize
from lamina.testing.models import shared_dir

REFERENCE = json.loads((shared_dir() / "refdata" / "llamacpp" / "quantize-smollm2.json").read_text())["outputs"]
MIXES = ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_0", "Q3_K_M", "Q2_K", "IQ4_XS"]
FULLY_CHECKED_MIX = "Q4_K_M"  # every row of every tensor; the other mixes check a sample of rows


@pytest.fixture(scope="module")
def smollm2(model_paths):
    return model_paths["smollm2"]


@pytest.fixture(scope="module")
def f16_model(smollm2, tmp_path_factory):
    out = tmp_path_factory.mktemp("quantize") / "smollm2-f16.gguf"
    assert cli.main(["--allow-requantize", str(smollm2), str(out), "F16", "2"]) == 0
    return out


def _check_against_reference(path, mix):
    expected = REFERENCE[mix]
    assert path.stat().st_size == expected["file_bytes"]
    with lg.read(path) as f:
        assert f.fields["general.file_type"].value == expected["general.file_type"]
        assert f.fields["general.file_type"].type == lg.ValueType.UINT32
        assert f.fields["general.quantization_version"].value == 2
        assert {name: t.type for name, t in f.tensors.items()} == expected["tensor_types"]
        assert list(f.tensors) == list(expected["tensor_types"])  # llama.cpp's tensor order


def _sample_rows(n_rows: int, rng) -> np.ndarray:
    chunk = model_quantize.CHUNK_BYTES // (4 * 576)  # rows per work item (the F16 file's rows are 576 long)
    picks = [np.arange(min(8, n_rows)), np.arange(max(0, n_rows - 8), n_rows),
             np.arange(chunk - 4, chunk + 4), np.arange(3 * chunk - 4, 3 * chunk + 4), rng.integers(0, n_rows, 8)]
    rows = np.unique(np.concatenate(picks))
    return rows[rows < n_rows]


def test_f16_requantization_matches_llama_quantize(f16_model, smollm2):
    _check_against_reference(f16_model, "F16")
    with lg.read(smollm2) as original, lg.read(f16_model) as converted:
        original_keys = [k for k in original.fields if k not in ("general.file_type", "general.quantization_version")]
        assert list(converted.fields)[:len(original_keys)] == original_keys  # metadata copied in order
        assert list(converted.fields)[-2:] == ["general.quantization_version", "general.file_type"]
        for key in original_keys:
            a, b = original.fields[key], converted.fields[key]
            assert (a.type, a.element_type) == (b.type, b.element_type), key
            assert np.array_equal(np.asarray(a.value, dtype=object), np.asarray(b.value, dtype=object)), key
        for name, t in original.tensors.items():
            out = converted.tensors[name]
            if t.type == "F32":
                assert np.array_equal(out.data.view(np.uint32), t.data.view(np.uint32))
                continue
            values = gguf.quants.dequantize(np.asarray(t.data), gguf.GGMLQuantizationType[t.type])
            expected = np.asarray(values, dtype=np.float32).astype(np.float16)
            assert np.array_equal(np.asarray(out.data).view(np.uint16), expected.view(np.uint16)), name


@pytest.mark.parametrize("mix", MIXES)
def test_mix_matches_llama_quantize(f16_model, tmp_path, mix):
    out = tmp_path / f"smollm2-{mix}.gguf"
    assert cli.main([str(f16_model), str(out), mix, "2"]) == 0
    _check_against_reference(out, mix)
    rng = np.random.default_rng(0)
    with lg.read(f16_model) as source, lg.read(out) as result:
        for name, t in result.tensors.items():
            src = source.tensors[name]
            if t.type == src.type:
                assert np.array_equal(np.asarray(t.data).view(np.uint8), np.asarray(src.data).view(np.uint8)), name
                continue
            values = np.asarray(src.data, dtype=np.float32).reshape(-1, src.shape[0])
            raw = np.asarray(t.data).reshape(values.shape[0], -1)
            rows = np.arange(values.shape[0]) if mix == FULLY_CHECKED_MIX else _sample_rows(values.shape[0], rng)
            expected = Q.quantize(values[rows], t.type).reshape(len(rows), -1)
            bad = np.flatnonzero((raw[rows] != expected).any(axis=1))
            assert bad.size == 0, f"{name} ({t.type}): rows {rows[bad][:5]} differ from lamina.quants.quantize"


def _no_leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")] == []


def test_bad_type_name_is_refused(f16_model, tmp_path, capsys):
    out = tmp_path / "out.gguf"
    assert cli.main([str(f16_model), str(out), "Q4_K_X"]) == 1
    err = capsys.readouterr().err
    assert "invalid ftype 'Q4_K_X'" in err
    assert not out.exists() and _no_leftovers(tmp_path)


def test_quantized_input_needs_allow_requantize(smollm2, tmp_path, capsys):
    out = tmp_path / "out.gguf"
    assert cli.main([str(smollm2), str(out), "Q4_0", "2"]) == 1
    err = capsys.readouterr().err
    assert "requantizing from type Q4_1 is disabled" in err and "--allow-requantize" in err
    assert not out.exists() and _no_leftovers(tmp_path)


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``limit`` bytes have been written."""

    def __init__(self, f, limit):
        self.f, self.left = f, limit

    def write(self, data):
        n = memoryview(data).nbytes
        if n > self.left:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.left -= n
        return self.f.write(data)


def test_disk_full_leaves_no_output(f16_model, tmp_path, capsys, monkeypatch):
    real = model_quantize.write_atomically

    def full_disk(path, emit):
        real(path, lambda f: emit(_FullDisk(f, 20 << 20)))

    monkeypatch.setattr(model_quantize, "write_atomically", full_disk)
    out = tmp_path / "out.gguf"
    assert cli.main([str(f16_model), str(out), "Q8_0", "2"]) == 1
    err = capsys.readouterr().err
    assert f"error: failed to write '{out}': No space left on device" in err
    assert not out.exists() and _no_leftovers(tmp_path)


def test_existing_output_survives_a_failure(f16_model, tmp_path, monkeypatch):
    out = tmp_path / "out.gguf"
    out.write_bytes(b"previous contents")
    real = model_quantize.write_atomically
    monkeypatch.setattr(model_quantize, "write_atomically",
                        lambda path, emit: real(path, lambda f: emit(_FullDisk(f, 1 << 20))))
    assert cli.main([str(f16_model), str(out), "Q8_0"]) == 1
    assert out.read_bytes() == b"previous contents" and _no_leftovers(tmp_path)


def test_missing_input_and_same_file(tmp_path, f16_model, capsys):
    assert cli.main([str(tmp_path / "nope.gguf"), str(tmp_path / "o.gguf"), "Q8_0"]) == 1
    assert "cannot read the input model" in capsys.readouterr().err
    assert cli.main([str(f16_model), str(f16_model), "Q8_0"]) == 1
    assert "input and output files are the same" in capsys.readouterr().err


def test_help_lists_every_target_with_bits_per_weight(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name, bpw in [("Q4_0", "4.50"), ("Q4_K_M", "4.50"), ("Q2_K", "2.62"), ("Q3_K_S", "3.44"), ("Q5_K_M", "5.50"),
                      ("Q6_K", "6.56"), ("Q8_0", "8.50"), ("IQ4_NL", "4.50"), ("IQ4_XS", "4.25"), ("F16", "16.00"),
                      ("BF16", "16.00"), ("F32", "32.00"), ("IQ2_XXS", "2.06"), ("TQ1_0", "1.69")]:
        line = next(line for line in text.splitlines() if f" {name} " in line)
        assert f"{bpw} bpw" in line, line
    assert "COPY" in text and "--allow-requantize" in text and "--imatrix" in text


def test_dry_run_writes_nothing(f16_model, tmp_path, capsys):
    assert cli.main(["--dry-run", str(f16_model), "Q4_K_M"]) == 0
    err = capsys.readouterr().err
    assert "blk.0.ffn_down.weight" in err and "(q6_K)" in err
    assert not (f16_model.parent / "ggml-model-Q4_K_M.gguf").exists()
