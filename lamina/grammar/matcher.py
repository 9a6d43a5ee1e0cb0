"""One sequence's grammar state: which tokens may come next, and advancing on the chosen one.

llguidance does the matching (an Earley parser over a token trie, in Rust, with the GIL
released). Its resource limits are what keep a hostile grammar bounded: past them the matcher
enters an error state, which becomes a :class:`GrammarError` here rather than a hang.
"""

from __future__ import annotations

import numpy as np

from .errors import GrammarError


def parser_limits():
    """llguidance's limits, tightened where its defaults allow a single step to run for seconds."""
    import llguidance

    return llguidance.LLParserLimits(step_max_items=50_000, max_grammar_size=500_000, verbose_errors=False)


class GrammarMatcher:
    """Tracks one generation against a compiled grammar (``CompiledGrammar.llguidance``).

    ``allows(token)`` is cheap (one step of the parser); ``mask()`` computes the whole
    vocabulary's bitmask, which is what a sampler pays for when the first choice was refused.
    """

    def __init__(self, compiled_grammar: str, llg_tokenizer, n_vocab: int):
        import llguidance

        self.n_vocab = int(n_vocab)
        self._matcher = llguidance.LLMatcher(llg_tokenizer, compiled_grammar, log_level=0, limits=parser_limits())
        self._raise_if_failed("the grammar could not be compiled")
        self.eos_tokens = set(llg_tokenizer.eos_tokens)
        self._words = (llg_tokenizer.vocab_size + 31) // 32

    def _raise_if_failed(self, what: str) -> None:
        if self._matcher.is_error():
            raise GrammarError(f"{what}: {self._matcher.get_error()}")

    @property
    def accepting(self) -> bool:
        """The text so far is a complete match (an end-of-generation token may come now)."""
        return self._matcher.is_accepting()

    @property
    def finished(self) -> bool:
        """Nothing can follow but the end of generation."""
        return self._matcher.is_stopped()

    def allows(self, token: int) -> bool:
        token = int(token)
        if token in self.eos_tokens:
            return self._matcher.is_accepting()
        if not 0 <= token < self.n_vocab:
            return False
        return self._matcher.validate_tokens([token]) == 1

    def mask(self) -> np.ndarray:
        """A boolean array over the vocabulary: True where the token may come next."""
        words = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        self._raise_if_failed("the grammar failed while computing the allowed tokens")
        allowed = np.unpackbits(words, bitorder="little").astype(bool)
        out = np.zeros(self.n_vocab, dtype=bool)
        n = min(self.n_vocab, len(allowed))
        out[:n] = allowed[:n]
        return out

    def masked(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with every token the grammar refuses set to -inf."""
        allowed = self.mask()
        if not allowed.any():
            raise GrammarError("the grammar allows no token here (its matcher reached a dead end)")
        out = np.array(logits, dtype=np.float32, copy=True)
        out[~allowed] = -np.inf
        return out

    def accept(self, token: int) -> None:
        """Advance on a generated token (which must be allowed)."""
        if not self._matcher.consume_token(int(token)):
            self._raise_if_failed(f"token {int(token)} does not fit the grammar")
            raise GrammarError(f"token {int(token)} does not fit the grammar")

    def reset(self) -> None:
        self._matcher.reset()
