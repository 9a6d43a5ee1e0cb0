"""Shared fixtures: the shared reference folder and the three real models.

A test that needs a model fails (never skips) when the model cannot be had.

The suite runs the AVX-512 kernel family unless ``LAMINA_KERNELS`` says otherwise: most of its
references were made by llama.cpp built for AVX-512 (logits, perplexities, embeddings, the tiny
models), and lamina computes that build's arithmetic on any CPU (with the CPU's own instructions
where it lacks AVX-512). The other families are tested in processes of their own
(tests/test_kernel_families.py), against ``refdata/llamacpp-avx2`` where llama.cpp's AVX2 build differs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("LAMINA_KERNELS", "avx512-vnni")  # before lamina's kernels are imported

import pytest  # noqa: E402

from lamina.testing.models import MODEL_NAMES, ModelFetchError, ensure_models, shared_dir  # noqa: E402

MODELS = list(MODEL_NAMES)  # "smollm2", "qwen2", "gemma3"


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if not (path / "refdata").is_dir():
        pytest.fail(f"the shared reference folder is missing at {path} (set LAMINA_SHARED)")
    return path


@pytest.fixture(scope="session")
def refdata(shared) -> Path:
    return shared / "refdata"


@pytest.fixture(scope="session")
def model_paths() -> dict[str, Path]:
    try:
        return ensure_models(log=lambda *a: None)
    except ModelFetchError as e:
        pytest.fail(f"test models unavailable: {e}")


@pytest.fixture(params=MODELS)
def model_name(request) -> str:
    return request.param


@pytest.fixture
def model_path(model_paths, model_name) -> Path:
    return model_paths[model_name]


@pytest.fixture(scope="module")
def llms(model_paths):
    """``llms(name)``: a ``Llama`` of that test model (n_ctx 1024), loaded once per test module."""
    from lamina import Llama

    loaded = {}
    yield lambda name: loaded.setdefault(name, Llama(str(model_paths[name]), n_ctx=1024, verbose=False))
    for llm in loaded.values():
        llm.close()


def load_greedy_reference(refdata: Path, name: str) -> list[dict]:
    """llama.cpp's prompts, tokens, top-64 logits and greedy continuations for one model, from the
    llama.cpp build whose arithmetic the running kernel family repeats."""
    from lamina.kernels import family

    path = refdata / ("llamacpp" if family.EPR == 16 else "llamacpp-avx2") / f"{name}.greedy.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
