"""``from lamina.llama_grammar import LlamaGrammar``, as ``from llama_cpp.llama_grammar import LlamaGrammar``."""

from lamina.grammar.llama_grammar import LlamaGrammar

__all__ = ["LlamaGrammar"]
