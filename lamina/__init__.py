"""lamina: llama.cpp's system in Python — GGUF models, quantization, tokenizers and fast CPU inference."""

__version__ = "0.1.0"


def __getattr__(name):
    # `from lamina import Llama` without paying for the engine's imports on `import lamina`.
    if name == "Llama":
        from .llama import Llama

        return Llama
    if name in ("LogitsProcessorList", "StoppingCriteriaList"):
        from . import processors

        return getattr(processors, name)
    if name in ("LlamaState", "LlamaRAMCache", "LlamaDiskCache", "LlamaCache"):
        from . import llama_cache

        return getattr(llama_cache, name)
    if name == "LlamaTokenizer":
        from .llama_tokenizer import LlamaTokenizer

        return LlamaTokenizer
    if name in ("LlamaGrammar", "GrammarError", "UnsupportedSchemaError"):
        from . import grammar

        return getattr(grammar, name)
    raise AttributeError(f"module 'lamina' has no attribute {name!r}")
