"""One module per architecture; this table maps ``general.architecture`` to its model class."""

from __future__ import annotations

import importlib

from lamina.gguf import GGUFError, GGUFFile

ARCHITECTURES = {
    "llama": ("lamina.models.llama", "LlamaModel"),
    "qwen2": ("lamina.models.qwen2", "Qwen2Model"),
    "gemma3": ("lamina.models.gemma3", "Gemma3Model"),
    "qwen3": ("lamina.models.qwen3", "Qwen3Model"),
    "qwen3moe": ("lamina.models.qwen3", "Qwen3MoeModel"),
    "granite": ("lamina.models.granite", "GraniteModel"),
    "olmo2": ("lamina.models.olmo2", "Olmo2Model"),
    "stablelm": ("lamina.models.layer_norm_models", "StableLMModel"),
    "starcoder2": ("lamina.models.layer_norm_models", "StarCoder2Model"),
    "bert": ("lamina.models.bert", "BertModel"),
    "nomic-bert": ("lamina.models.bert", "NomicBertModel"),
    "jina-bert-v2": ("lamina.models.bert", "JinaBertV2Model"),
}


def load_model(gguf: GGUFFile):
    """Build the model object for a GGUF file (weights stay in its memory map)."""
    arch = gguf.get_str("general.architecture")
    if arch is None:
        raise GGUFError("general.architecture is missing: cannot tell which model this is", gguf.path)
    if arch not in ARCHITECTURES:
        raise GGUFError(f"architecture {arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})", gguf.path)
    module, cls = ARCHITECTURES[arch]
    return getattr(importlib.import_module(module), cls)(gguf)
