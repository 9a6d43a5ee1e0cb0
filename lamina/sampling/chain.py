"""The sampler chain llama.cpp's ``common_sampler_init`` builds from the settings.

Order: logit bias first (the user's biases, plus -inf for end-of-generation
tokens when ``ignore_eos``); then, without Mirostat, the samplers named in
``params.samplers`` (default ``penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature``)
and a final draw from the distribution; with Mirostat, plain temperature and the
Mirostat sampler only (llama.cpp then skips penalties, DRY, top-k and the rest).

Typical use by a generation loop::

    chain = SamplerChain(params, n_vocab=vocab_size)
    chain.accept_many(prompt_tokens)          # llama.cpp's CLI and server do this too
    while ...:
        token = chain.sample(logits)           # picks; does not remember
        chain.accept(token)                    # remembers for penalties, DRY, Mirostat

The same seed and the same logits give the same tokens, and the same tokens as
llama.cpp: each random sampler owns a ``std::mt19937`` seeded like llama.cpp's.

A grammar (a ``lamina.grammar.GrammarMatcher``) constrains the choice as llama.cpp's
``common_sampler_sample`` does: the chain picks as usual, and only if the grammar refuses that
token is the choice made again, from logits masked to what the grammar allows (so an
unconstrained step costs one parser check, not a whole-vocabulary mask). With ``grammar_first``
the mask is applied before the chain every time, which is where llama-cpp-python's ``Llama``
puts its grammar sampler. Generated tokens advance the grammar; prompt tokens do not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .candidates import Candidates, logits_must_be_valid
from .dry import Dry, breaker_table
from .errors import SamplingError
from .params import SamplingParams
from .rng import resolve_seed
from .samplers import (Dist, LogitBias, MinP, Mirostat, MirostatV2, Penalties, Sampler, Temperature, TopK,
                       TopNSigma, TopP, TypicalP, Xtc)


class SamplerChain:
    """Picks each next token from a logit vector, following ``SamplingParams``.

    ``n_vocab`` is the model's vocabulary size (the logits' length). DRY needs the
    vocabulary to turn its sequence breakers into tokens: pass ``token_pieces``
    (each token's text as bytes, special tokens as their text) and ``tokenize``
    (plain text to ids, no BOS, no special tokens). ``eog_tokens`` are banned
    when ``params.ignore_eos`` is set. ``seed`` is the seed in use (drawn at
    random when the settings ask for a random one).
    """

    def __init__(self, params: SamplingParams, n_vocab: int, *,
                 token_pieces: Sequence[bytes] | None = None,
                 tokenize: Callable[[bytes], Sequence[int]] | None = None,
                 eog_tokens: Iterable[int] = (), grammar=None, grammar_first: bool = False):
        if not isinstance(params, SamplingParams):
            raise SamplingError(f"params must be SamplingParams, got {type(params).__name__}")
        if isinstance(n_vocab, bool) or not isinstance(n_vocab, (int, np.integer)) or n_vocab <= 0:
            raise SamplingError(f"n_vocab must be a positive integer, got {n_vocab!r}")
        self.params = params
        self.n_vocab = int(n_vocab)
        self.seed = resolve_seed(params.seed)
        self._all_ids = np.arange(self.n_vocab, dtype=np.int32)
        self._all_ids.flags.writeable = False
        self.samplers: list[Sampler] = self._build(token_pieces, tokenize, eog_tokens)
        self.last_candidates: Candidates | None = None
        self.grammar = grammar
        self.grammar_first = grammar_first

    def _build(self, token_pieces, tokenize, eog_tokens) -> list[Sampler]:
        p = self.params
        chain: list[Sampler] = []
        biases = self._merged_biases(eog_tokens)
        if biases:
            chain.append(LogitBias(biases))
        if p.mirostat == 1:
            return chain + [Temperature(p.temperature), Mirostat(self.n_vocab, self.seed, p.mirostat_tau, p.mirostat_eta)]
        if p.mirostat == 2:
            return chain + [Temperature(p.temperature), MirostatV2(self.seed, p.mirostat_tau, p.mirostat_eta)]
        for name in p.samplers:
            sampler = self._make(name, token_pieces, tokenize)
            if sampler is not None:
                chain.append(sampler)
        chain.append(Dist(self.seed))
        return chain

    def _make(self, name: str, token_pieces, tokenize) -> Sampler | None:
        """One sampler by its canonical name, or None where llama.cpp would add an empty one."""
        p = self.params
        if name == "penalties":
            disabled = p.repeat_last_n == 0 or (p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0
                                                and p.presence_penalty == 0.0)
            return None if disabled else Penalties(p.repeat_last_n, p.repeat_penalty, p.frequency_penalty,
                                                   p.presence_penalty)
        if name == "dry":
            if p.dry_multiplier == 0.0 or p.dry_base < 1.0 or p.dry_penalty_last_n == 0:
                return None
            breakers = {}
            if any(p.dry_sequence_breakers):
                if token_pieces is None or tokenize is None:
                    raise SamplingError("DRY with sequence breakers needs the vocabulary: pass token_pieces "
                                        "and tokenize to SamplerChain (or set dry_sequence_breakers=())")
                breakers = breaker_table(p.dry_sequence_breakers, token_pieces, tokenize)
            return Dry(p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n, breakers)
        if name == "top_n_sigma":
            return TopNSigma(p.top_n_sigma) if p.top_n_sigma > 0 else None
        if name == "top_k":
            return TopK(p.top_k) if p.top_k > 0 else None
        if name == "typ_p":
            return TypicalP(p.typical_p, p.min_keep) if p.typical_p < 1.0 else None
        if name == "top_p":
            return TopP(p.top_p, p.min_keep) if p.top_p < 1.0 else None
        if name == "min_p":
            return MinP(p.min_p, p.min_keep) if p.min_p > 0.0 else None
        if name == "xtc":
            enabled = p.xtc_probability > 0.0 and p.xtc_threshold <= 0.5
            return Xtc(p.xtc_probability, p.xtc_threshold, p.min_keep, self.seed) if enabled else None
        if name == "temperature":
            if p.temperature == 1.0 and p.dynatemp_range <= 0.0:
                return None
            return Temperature(p.temperature, p.dynatemp_range, p.dynatemp_exponent)
        raise SamplingError(f"unknown sampler {name!r}")  # params already refuses these

    def _merged_biases(self, eog_tokens: Iterable[int]) -> dict[int, float]:
        pairs = list(self.params.logit_bias)
        if self.params.ignore_eos:
            pairs += [(int(t), -np.inf) for t in eog_tokens]
        merged: dict[int, float] = {}
        for token, bias in pairs:
            if not 0 <= token < self.n_vocab:
                raise SamplingError(f"logit_bias: token id {token} is outside the vocabulary (0..{self.n_vocab - 1})")
            merged[token] = merged.get(token, 0.0) + bias
        return merged

    def sample(self, logits: np.ndarray) -> int:
        """The next token for these logits (float32, one per vocabulary entry). Does not ``accept`` it."""
        logits = logits_must_be_valid(logits, self.n_vocab)
        if self.grammar is None:
            return self._sample_chain(logits)
        if self.grammar_first:
            return self._sample_chain(self.grammar.masked(logits))
        token = self._sample_chain(logits)
        if self.grammar.allows(token):
            return token
        return self._sample_chain(self.grammar.masked(logits))

    def _sample_chain(self, logits: np.ndarray) -> int:
        cand = Candidates.from_logits(logits, self._all_ids)
        for sampler in self.samplers:
            sampler.apply(cand)
        if not 0 <= cand.selected < len(cand):
            raise SamplingError("the sampler chain selected no token")
        self.last_candidates = cand
        return int(cand.ids[cand.selected])

    def accept(self, token: int) -> None:
        """Remember a generated token: for penalties, DRY and Mirostat, and to advance the grammar."""
        token = self._remember(token)
        if self.grammar is not None:
            self.grammar.accept(token)

    def accept_many(self, tokens: Iterable[int]) -> None:
        """Remember prompt tokens: penalties and DRY see them, the grammar does not (as in llama.cpp)."""
        for token in tokens:
            self._remember(token)

    def _remember(self, token: int) -> int:
        if isinstance(token, bool) or not isinstance(token, (int, np.integer)) or not 0 <= token < self.n_vocab:
            raise SamplingError(f"accepted token must be an id in 0..{self.n_vocab - 1}, got {token!r}")
        token = int(token)
        for sampler in self.samplers:
            sampler.accept(token)
        return token

    def reset(self) -> None:
        """Forget accepted tokens and restart every random sampler from the seed."""
        for sampler in self.samplers:
            sampler.reset()
        if self.grammar is not None:
            self.grammar.reset()
        self.last_candidates = None

    def candidate_probabilities(self) -> tuple[np.ndarray, np.ndarray]:
        """The last ``sample``'s surviving token ids and their probabilities, most likely first."""
        cand = self.last_candidates
        if cand is None or cand.probs is None:
            return np.empty(0, dtype=np.int32), np.empty(0, dtype=np.float32)
        order = np.argsort(-cand.probs, kind="stable")
        return cand.ids[order], cand.probs[order]

    def describe(self) -> str:
        """The chain as llama.cpp prints it: ``logits -> logit-bias -> top-k -> ... -> dist``."""
        return "logits " + " ".join(f"-> {s.name}" for s in self.samplers)
