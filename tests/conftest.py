"""Shared fixtures: the shared reference folder and the three real models.

A test that needs a model fails (never skips) when the model cannot be had.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.testing.models import MODEL_NAMES, ModelFetchError, ensure_models, shared_dir

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
    """llama.cpp's prompts, tokens, top-64 logits and greedy continuations for one model."""
    path = refdata / "llamacpp" / f"{name}.greedy.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
