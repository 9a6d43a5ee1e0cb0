"""Split GGUF models: ``lamina gguf-split`` writes llama-gguf-split's bytes, and split models load whole.

The reference (tests/data/gguf_split_llamacpp.json) is llama.cpp's own llama-gguf-split run on
smollm2 (the commands are in the file): every part's size and sha256, and the merged file's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lamina import gguf
from lamina.cli.gguf_split import main as gguf_split
from lamina.engine.batch import Batch
from lamina.engine.context import Context
from lamina.models import load_model

REFERENCE = json.loads((Path(__file__).parent / "data" / "gguf_split_llamacpp.json").read_text())
PROMPT = [504, 3575, 282, 4649, 314]  # "The capital of France is"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def parts(model_paths, tmp_path_factory) -> Path:
    """smollm2 split the four ways the reference was made, by lamina."""
    out = tmp_path_factory.mktemp("split")
    model = str(model_paths["smollm2"])
    for args in (["--split-max-tensors", "100", model, str(out / "t100")],
                 ["--split-max-size", "40M", model, str(out / "s40")],
                 ["--split-max-tensors", "100", "--no-tensor-first-split", model, str(out / "nf")],
                 ["--merge", str(out / "t100-00001-of-00003.gguf"), str(out / "merged.gguf")]):
        assert gguf_split(args) == 0
    return out


def test_parts_and_merge_are_llama_gguf_splits_bytes(parts):
    written = sorted(p.name for p in parts.iterdir())
    assert written == sorted(REFERENCE["files"])
    for name, expected in REFERENCE["files"].items():
        assert os.path.getsize(parts / name) == expected["size"], name
        assert sha256(parts / name) == expected["sha256"], name


def test_the_merged_file_holds_the_model_as_the_original(parts, model_paths):
    original = gguf.read(model_paths["smollm2"])
    merged = gguf.read(parts / "merged.gguf")
    assert list(merged.tensors) == list(original.tensors)
    for name, t in original.tensors.items():
        assert np.array_equal(merged.tensors[name].data, t.data), name
    assert merged.get_int("split.count") == 0  # as llama-gguf-split leaves it


def logits(path) -> np.ndarray:
    model = load_model(gguf.read(path))
    return Context(model, 64).decode(Batch.for_sequence(PROMPT, 0))[-1]


def test_a_split_model_loads_all_its_parts(parts, model_paths):
    f = gguf.read(parts / "s40-00001-of-00003.gguf")
    assert len(f.parts) == 3 and len(f.tensors) == f.get_int("split.tensors.count") == 272
    assert list(f.tensors) == list(gguf.read(model_paths["smollm2"]).tensors)
    assert np.array_equal(logits(parts / "s40-00001-of-00003.gguf"), logits(model_paths["smollm2"]))
    assert len(gguf.read(parts / "nf-00001-of-00004.gguf").tensors) == 272  # a first part with no tensors


def test_missing_and_mismatched_parts_are_named(parts, tmp_path):
    for name in ("t100-00001-of-00003.gguf", "t100-00002-of-00003.gguf"):
        shutil.copy(parts / name, tmp_path / name)
    with pytest.raises(gguf.GGUFError, match="part 3 of 3 .* is missing: .*t100-00003-of-00003.gguf"):
        gguf.read(tmp_path / "t100-00001-of-00003.gguf")
    with pytest.raises(gguf.GGUFError, match="open the first part"):
        gguf.read(tmp_path / "t100-00002-of-00003.gguf")
    shutil.copy(parts / "s40-00002-of-00003.gguf", tmp_path / "t100-00003-of-00003.gguf")  # another split's part
    with pytest.raises(gguf.GGUFError, match="t100-00003-of-00003.gguf.*part 2 of 3, but its name makes it part 3"):
        gguf.read(tmp_path / "t100-00001-of-00003.gguf")
    shutil.copy(parts / "t100-00001-of-00003.gguf", tmp_path / "renamed.gguf")
    with pytest.raises(gguf.GGUFError, match="does not end in -00001-of-00003.gguf"):
        gguf.read(tmp_path / "renamed.gguf")


def test_bad_requests_are_refused_and_nothing_is_left_behind(parts, model_paths, tmp_path, capsys):
    model = str(model_paths["smollm2"])
    assert gguf_split(["--split-max-size", "1M", model, str(tmp_path / "tiny")]) == 1  # a tensor is larger
    assert "does not fit" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    assert gguf_split(["--merge", str(parts / "t100-00001-of-00003.gguf"), str(parts / "merged.gguf")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert gguf_split(["--merge", model, str(tmp_path / "m.gguf")]) == 1
    assert "not part of a split model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gguf_split(["--split-max-size", "40K", model, str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        gguf_split(["--split-max-size", "40M", "--split-max-tensors", "5", model, str(tmp_path / "x")])
    assert os.listdir(tmp_path) == []
