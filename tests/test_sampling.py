"""The sampler chain against llama.cpp's documented algorithms and its own test vectors.

Probability vectors become logits with ``log``; after the samplers run, a final
``dist`` turns the survivors' logits into probabilities, listed in candidate
order. Expected values are either from llama.cpp's tests/test-sampling.cpp or
worked out from the formula in the sampler's docstring (shown next to them).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.sampling import SamplerChain, SamplingError, SamplingParams, parse_sampler_names, parse_sampling_seq
from lamina.sampling.candidates import Candidates, top_indices
from lamina.sampling.dry import Dry, breaker_table
from lamina.sampling.rng import Mt19937
from lamina.sampling.samplers import (Dist, Greedy, MinP, Mirostat, MirostatV2, Penalties, Temperature, TopK,
                                      TopNSigma, TopP, TypicalP, Xtc)


def candidates(probs) -> Candidates:
    logits = np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)
    return Candidates(np.arange(len(probs), dtype=np.int32), logits)


def run(samplers, probs, history=(), final_dist=True) -> Candidates:
    cand = candidates(probs)
    for sampler in samplers:
        for token in history:
            sampler.accept(token)
    for sampler in samplers + ([Dist(0)] if final_dist else []):
        sampler.apply(cand)
    return cand


def assert_probs(cand: Candidates, expected, ids=None):
    assert cand.probs is not None
    np.testing.assert_allclose(cand.probs, expected, atol=1e-5)
    if ids is not None:
        assert cand.ids.tolist() == ids


P4 = [0.1, 0.2, 0.3, 0.4]


# --- the random number generator -------------------------------------------------------------

def test_mt19937_matches_the_cpp_standard():
    # C++11 [rand.predef]: the 10000th output of a default-constructed std::mt19937 (seed 5489) is 4123659995.
    rng = Mt19937(5489)
    first = rng.next_u32()
    for _ in range(9998):
        rng.next_u32()
    assert first == 3499211612
    assert rng.next_u32() == 4123659995


def test_uniform_double_is_generate_canonical_of_two_words():
    words = Mt19937(0)
    lo, hi = words.next_u32(), words.next_u32()
    assert (lo, hi) == (2357136044, 2546248239)
    assert Mt19937(0).uniform_double() == (lo + hi * 2.0**32) / 2.0**64


def test_uniform_float_uses_one_word():
    rng = Mt19937(0)
    assert rng.uniform_float() == np.float32(2357136044.0) / np.float32(2.0**32)
    assert rng.next_u32() == 2546248239


# --- each sampler ------------------------------------------------------------------------------

def test_temperature_one_changes_nothing_and_zero_keeps_the_maximum():
    assert_probs(run([Temperature(1.0)], P4), P4, ids=[0, 1, 2, 3])
    assert_probs(run([Temperature(0.0)], P4), [0, 0, 0, 1], ids=[0, 1, 2, 3])


def test_temperature_scales_logits():
    # p_i ** (1/T) renormalised: T = 0.5 squares the probabilities.
    squared = np.square(P4) / np.sum(np.square(P4))
    assert_probs(run([Temperature(0.5)], P4), squared)


def test_dynamic_temperature_follows_normalised_entropy():
    # H = -sum p ln p, normalised by ln 4; T = (temp - range) + 2 * range * (H / ln 4) ** exponent.
    p = np.array(P4)
    entropy = -np.sum(p * np.log(p)) / math.log(4)
    for exponent in (1.0, 2.0):
        t = 0.5 + 1.0 * entropy ** exponent
        expected = np.sort(p ** (1 / t) / np.sum(p ** (1 / t)))[::-1]
        cand = run([Temperature(1.0, 0.5, exponent)], P4)
        assert_probs(cand, expected, ids=[3, 2, 1, 0])
    assert_probs(run([Temperature(0.0, 0.0, 1.0)], P4), [0, 0, 0, 1])


def test_top_k():
    assert_probs(run([TopK(1)], P4), [1.0], ids=[3])
    assert_probs(run([TopK(3)], P4), [0.44444, 0.33333, 0.22222], ids=[3, 2, 1])
    assert_probs(run([TopK(4)], P4), [0.4, 0.3, 0.2, 0.1], ids=[3, 2, 1, 0])
    assert_probs(run([TopK(0)], P4), P4, ids=[0, 1, 2, 3])
    assert_probs(run([TopK(1000)], P4), [0.4, 0.3, 0.2, 0.1])


def test_top_k_on_a_large_vocabulary_is_exact_and_breaks_ties_by_id():
    rng = np.random.default_rng(7)
    for n, k in [(262144, 40), (151936, 1), (20000, 100), (50000, 3000), (9000, 40)]:
        logits = np.round(rng.standard_normal(n) * 4).astype(np.float32)  # many exact ties
        logits[rng.integers(0, n, n // 3)] = -np.inf
        expected = np.lexsort((np.arange(n), -logits))[:k]
        assert np.array_equal(top_indices(logits, k), expected)


def test_top_p():
    assert_probs(run([TopP(0.0, 0)], P4), [1.0], ids=[3])
    # 0.4 < 0.7 <= 0.4 + 0.3: two tokens, renormalised 0.4/0.7 and 0.3/0.7
    assert_probs(run([TopP(0.7, 0)], P4), [0.571429, 0.428571], ids=[3, 2])
    assert_probs(run([TopP(0.8, 0)], P4), [0.44444, 0.33333, 0.22222], ids=[3, 2, 1])
    assert_probs(run([TopP(1.0, 0)], P4), P4, ids=[0, 1, 2, 3])
    assert_probs(run([TopP(0.0, 3)], P4), [0.44444, 0.33333, 0.22222])  # min_keep wins


def test_top_p_on_a_large_unsorted_vocabulary():
    # 2000 tokens with p proportional to rank: the nucleus is found in the top 256 or after a full sort.
    n = 2000
    probs = np.arange(1, n + 1, dtype=np.float64)
    probs /= probs.sum()
    for p in (0.05, 0.9):
        cand = run([TopP(p, 0)], probs, final_dist=False)
        cumulative = np.cumsum(np.sort(probs)[::-1])
        expected_size = int(np.searchsorted(cumulative, p)) + 1
        assert len(cand) in (expected_size, expected_size + 1)  # float32 sums may round at the boundary
        assert cand.ids.tolist() == list(range(n - 1, n - 1 - len(cand), -1))


def test_min_p():
    # keep p_i >= min_p * p_max (p_max = 0.4), in the original order
    assert_probs(run([MinP(0.00, 0)], P4), P4)
    assert_probs(run([MinP(0.24, 0)], P4), P4)
    assert_probs(run([MinP(0.26, 0)], P4), [0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9], ids=[1, 2, 3])
    assert_probs(run([MinP(0.49, 0)], P4), [0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9])
    assert_probs(run([MinP(0.51, 0)], P4), [0.3 / 0.7, 0.4 / 0.7], ids=[2, 3])
    assert_probs(run([MinP(0.74, 0)], P4), [0.3 / 0.7, 0.4 / 0.7])
    assert_probs(run([MinP(0.76, 0)], P4), [1.0], ids=[3])
    assert_probs(run([MinP(1.00, 0)], P4), [1.0])
    assert_probs(run([MinP(0.76, 2)], P4), [0.4 / 0.7, 0.3 / 0.7], ids=[3, 2])  # min_keep: sorted path


def test_xtc_removes_the_top_choices_above_the_threshold():
    # seed 0's first draw is 0.549 <= 0.99, so XTC acts; probabilities are not renormalised.
    probs = [0.4, 0.3, 0.2, 0.1]
    assert_probs(run([Xtc(0.99, 0.09, 0, 0)], probs, final_dist=False), [0.1], ids=[3])
    assert_probs(run([Xtc(0.99, 0.19, 0, 0)], probs, final_dist=False), [0.2, 0.1])
    assert_probs(run([Xtc(0.99, 0.29, 0, 0)], probs, final_dist=False), [0.3, 0.2, 0.1])
    # only one token above the threshold: nothing is removed
    assert_probs(run([Xtc(0.99, 0.39, 0, 0)], probs, final_dist=False), [0.4, 0.3, 0.2, 0.1])
    # the draw (0.549) is above probability 0.5: XTC does nothing this time
    cand = run([Xtc(0.5, 0.09, 0, 0)], probs, final_dist=False)
    assert cand.ids.tolist() == [0, 1, 2, 3] and cand.probs is None


def test_typical():
    assert_probs(run([TypicalP(0.5, 0)], [0.97, 0.01, 0.01, 0.01], final_dist=False), [0.97], ids=[0])
    # H = 1.3322 nats; |-ln p - H| is 0.277 for 0.2 and 0.416 for 0.4: the three 0.2 tokens come first
    assert_probs(run([TypicalP(0.5, 0)], [0.4, 0.2, 0.2, 0.2], final_dist=False), [0.2, 0.2, 0.2], ids=[1, 2, 3])


def test_repetition_penalty():
    # logit ln 0.2 < 0 is multiplied by 50: exp(50 ln 0.2) is 0 to float precision
    p5 = [0.2] * 5
    assert_probs(run([Penalties(1, 50.0, 0.0, 0.0)], p5, [0]), [0, 0.25, 0.25, 0.25, 0.25])
    assert_probs(run([Penalties(3, 50.0, 0.0, 0.0)], p5, [0, 1, 2]), [0, 0, 0, 0.5, 0.5])
    assert_probs(run([Penalties(5, 50.0, 0.0, 0.0)], p5, [0, 1, 2, 0, 0]), [0, 0, 0, 0.5, 0.5])


def test_frequency_and_presence_penalties():
    # logit -= count * 5 + 5: one occurrence costs e^-10 relative to the others
    p5 = [0.2] * 5
    assert_probs(run([Penalties(1, 1.0, 5.0, 5.0)], p5, [0]), [0.000011, 0.249997, 0.249997, 0.249997, 0.249997])
    assert_probs(run([Penalties(3, 1.0, 5.0, 5.0)], p5, [0, 1, 2]),
                 [0.000023, 0.000023, 0.000023, 0.499966, 0.499966])
    assert_probs(run([Penalties(5, 1.0, 5.0, 5.0)], p5, [0, 1, 2, 0, 0]),
                 [0.000000, 0.000023, 0.000023, 0.499977, 0.499977])


def test_penalty_window_forgets_old_tokens():
    sampler = Penalties(2, 50.0, 0.0, 0.0)
    for token in [0, 1, 2]:  # token 0 has left the 2-token window
        sampler.accept(token)
    cand = run([sampler], [0.2] * 5)
    assert_probs(cand, [1 / 3, 0, 0, 1 / 3, 1 / 3])


def test_positive_logits_are_divided_by_the_repeat_penalty():
    cand = Candidates(np.arange(3, dtype=np.int32), np.array([2.0, -2.0, 1.0], dtype=np.float32))
    sampler = Penalties(4, 2.0, 0.0, 0.0)
    sampler.accept(0)
    sampler.accept(1)
    sampler.apply(cand)
    assert cand.logits.tolist() == [1.0, -4.0, 1.0]


def test_dry():
    # multiplier * base ** (repeat - allowed): after "0 1 2 0 1", token 2 would repeat 3 tokens -> 1.1 ** 0
    p4 = [0.25] * 4
    assert_probs(run([Dry(1.0, 1.1, 2, 4, {})], p4, [0, 1]), p4)
    assert_probs(run([Dry(1.0, 1.1, 2, 5, {})], p4, [0, 1, 2, 0, 1]), [0.296923, 0.296923, 0.109232, 0.296923])
    p5 = [0.2] * 5
    assert_probs(run([Dry(1.0, 1.1, 2, 6, {3: [()]})], p5, [0, 1, 3, 4, 0, 1]), p5)  # token 3 breaks it
    assert_probs(run([Dry(2.0, 1.1, 2, 5, {})], p5, [0, 1, 2, 0, 1]),
                 [0.241818, 0.241818, 0.032727, 0.241818, 0.241818])
    assert_probs(run([Dry(1.0, 1.1, 4, 7, {})], p5, [0, 1, 2, 3, 4, 0, 1]), p5)


def test_dry_penalty_grows_with_repeat_length():
    # "5 6 7 8 5 6 7": emitting 8 repeats 4 tokens; allowed 2 -> penalty 0.8 * 1.75 ** 1
    cand = candidates([0.1] * 10)
    sampler = Dry(0.8, 1.75, 2, 64, {})
    for token in [5, 6, 7, 8, 5, 6, 7]:
        sampler.accept(token)
    before = cand.logits.copy()
    sampler.apply(cand)
    penalty = before - cand.logits
    assert penalty[8] == pytest.approx(0.8 * 1.75 ** 1)
    assert np.count_nonzero(penalty) == 1


def test_dry_breakers_from_the_vocabulary():
    pieces = [b"a", b"b", b"\n", b"x:", b"\"q", b"*", b"ab", b"c"]
    ids = {p: i for i, p in enumerate(pieces)}

    def tokenize(text: bytes):
        return [ids[bytes([ch])] for ch in text]

    table = breaker_table(["\n", ":", "ab", ""], pieces, tokenize)
    # tokens containing a breaker break alone; "a" ends with the start of "ab", completed by "b"
    assert table == {2: [()], 3: [()], 6: [()], 0: [(1,)]}
    # "c a b c a b c": without breakers, "a" next would extend the 4-token repeat "c a b c" -> 1.75 ** (4 - 2);
    # with "a b" a breaker the repeat may reach back only to it (1 token < allowed 2): no penalty
    history = [7, 0, 1, 7, 0, 1, 7]
    for breakers, expected_penalty in (({}, 1.75 ** (4 - 2)), (table, 0.0)):
        sampler = Dry(1.0, 1.75, 2, 64, breakers)
        for token in history:
            sampler.accept(token)
        cand = candidates([0.125] * 8)
        before = cand.logits.copy()
        sampler.apply(cand)
        penalty = before - cand.logits
        assert penalty[0] == pytest.approx(expected_penalty)
        assert np.count_nonzero(penalty[1:]) == 0


def test_top_n_sigma():
    # logits ln p: mean -1.5472, std 0.5347; keep logit >= max - n * std
    assert_probs(run([TopNSigma(1.0)], P4), [0.0, 0.0, 0.428571, 0.571429])
    assert_probs(run([TopNSigma(0.0)], P4), P4)
    assert_probs(run([TopNSigma(3.0)], P4), P4)


def test_mirostat_v2_truncates_by_surprise_and_updates_mu():
    # tau = 1 -> mu = 2 bits: surprises 1, 2, 3, 3 -> keep the first two, renormalised to 2/3, 1/3.
    sampler = MirostatV2(seed=0, tau=1.0, eta=0.1)
    cand = run([sampler], [0.5, 0.25, 0.125, 0.125], final_dist=False)
    assert_probs(cand, [2 / 3, 1 / 3], ids=[0, 1])
    u = Mt19937(0).uniform_double()  # 0.5928 <= 2/3: the first token
    assert u <= 2 / 3 and cand.selected == 0
    assert float(sampler.mu) == pytest.approx(2.0 - 0.1 * (-math.log2(2 / 3) - 1.0), rel=1e-6)


def test_mirostat_v1_estimates_zipf_exponent():
    # p ~ 1/(i+1)^2: s_hat = 2, eps = 1, k = (2^mu / (1 - n^-1)) ** (1/2); tau 2 -> mu 4 -> k = 4.216 -> 4 kept
    n = 10
    probs = 1.0 / np.arange(1, n + 1) ** 2
    probs /= probs.sum()
    sampler = Mirostat(n_vocab=n, seed=1, tau=2.0, eta=0.1)
    cand = run([sampler], probs, final_dist=False)
    assert cand.ids.tolist() == [0, 1, 2, 3]
    assert_probs(cand, probs[:4] / probs[:4].sum())
    surprise = -math.log2(cand.probs[cand.selected])
    assert float(sampler.mu) == pytest.approx(4.0 - 0.1 * (surprise - 2.0), rel=1e-6)


def test_dist_draws_with_llama_cpp_rule():
    # selected = first i whose running sum of exp(logit - max) reaches u * total
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    u = Mt19937(0).uniform_double()
    expected = int(np.searchsorted(np.cumsum(probs), u * probs.sum()))
    cand = run([], probs)
    assert cand.selected == expected
    assert_probs(cand, probs)


def test_dist_draws_for_a_single_candidate_too():
    # llama.cpp keeps the generator in step: a lone candidate still consumes one draw
    lone, pair = Dist(4242), Dist(4242)
    lone.apply(candidates([1.0]))
    pair.apply(candidates([0.5, 0.5]))
    for _ in range(4):
        a, b = candidates([1 / 256] * 256), candidates([1 / 256] * 256)
        lone.apply(a)
        pair.apply(b)
        assert a.selected == b.selected


def test_greedy_takes_the_first_maximum():
    cand = Candidates(np.arange(4, dtype=np.int32), np.array([1, 3, 3, 2], dtype=np.float32))
    Greedy().apply(cand)
    assert cand.selected == 1


@pytest.mark.parametrize("seq,top_k,top_p,min_p", [
    ("k", 100, 1.0, 1.0), ("p", 10000, 0.8, 1.0), ("m", 10000, 1.0, 0.1),
    ("kp", 100, 0.8, 0.1), ("pm", 100, 0.8, 0.1), ("mk", 100, 0.8, 0.1), ("mpk", 100, 0.8, 0.1),
])
def test_sampler_queue_on_log_rank_logits(seq, top_k, top_p, min_p):
    # logits ln(id): p is proportional to the id. llama.cpp's test_sampler_queue sizes.
    n = 10000
    with np.errstate(divide="ignore"):
        cand = Candidates(np.arange(n, dtype=np.int32), np.log(np.arange(n, dtype=np.float64)).astype(np.float32))
    min_id = 0
    for letter in seq:
        {"k": TopK(top_k), "p": TopP(top_p, 1), "m": MinP(min_p, 1)}[letter].apply(cand)
        Dist(0).apply(cand)
        size = len(cand)
        if letter == "k":
            min_id = max(min_id, n - top_k)
            assert size == min(size, top_k)
        elif letter == "p":
            target = math.ceil(top_p * (n * (n - 1) // 2 - min_id * (min_id - 1) // 2))
            min_id, expected, total = n, 0, 0
            while True:
                min_id -= 1
                expected += 1
                total += min_id
                if total >= target:
                    break
            assert size == expected
        else:
            assert size == min(max(math.ceil((1 - min_p) * n), 1), size)
            min_id = min(max(math.floor(min_p * n), 1, n - size), n - 1)
        assert set(cand.ids.tolist()) == set(range(n - size, n))
        assert n - size >= min_id or letter == "m"


# --- the chain ---------------------------------------------------------------------------------

def test_defaults_are_llama_cpp_defaults():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.typical_p) == (0.8, 40, 0.95, 0.05, 1.0)
    assert (p.repeat_penalty, p.repeat_last_n, p.frequency_penalty, p.presence_penalty) == (1.0, 64, 0.0, 0.0)
    assert (p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n) == (0.0, 1.75, 2, 64)
    assert p.dry_sequence_breakers == ("\n", ":", "\"", "*")
    assert (p.xtc_probability, p.xtc_threshold, p.top_n_sigma) == (0.0, 0.1, -1.0)
    assert (p.dynatemp_range, p.dynatemp_exponent) == (0.0, 1.0)
    assert (p.mirostat, p.mirostat_tau, p.mirostat_eta, p.seed) == (0, 5.0, 0.1, -1)
    assert p.sampling_seq == "edskypmxt"
    assert SamplerChain(p, 100).describe() == "logits -> top-k -> top-p -> min-p -> temp-ext -> dist"


def test_chain_includes_enabled_samplers_in_the_given_order():
    p = SamplingParams(samplers="temperature;min_p;top_k", repeat_penalty=1.1, logit_bias={3: -1.0}, top_n_sigma=2)
    assert SamplerChain(p, 10).describe() == "logits -> logit-bias -> temp-ext -> min-p -> top-k -> dist"
    p = SamplingParams.from_sampling_seq("ekst", repeat_penalty=1.1, top_n_sigma=2)
    assert SamplerChain(p, 10).describe() == "logits -> penalties -> top-k -> top-n-sigma -> temp-ext -> dist"
    # Mirostat replaces the whole chain but logit bias and temperature
    p = SamplingParams(mirostat=2, repeat_penalty=1.3, logit_bias={1: 2.0})
    assert SamplerChain(p, 10).describe() == "logits -> logit-bias -> temp-ext -> mirostat-v2"


def test_sampler_names_and_letters():
    assert parse_sampler_names("top-k;TopP;nucleus;temp;typ;min_p") == ("top_k", "top_p", "top_p", "temperature",
                                                                        "typ_p", "min_p")
    assert parse_sampling_seq("edskypmxt") == SamplingParams().samplers
    with pytest.raises(SamplingError, match="unknown sampler name 'topz'"):
        parse_sampler_names("top_k;topz")
    with pytest.raises(SamplingError, match="unknown sampler letter 'q'"):
        parse_sampling_seq("kq")


def test_options_in_llama_cpp_spelling():
    p = SamplingParams.from_options(temp=0.7, typ_p=0.9, penalty_last_n=32, penalty_repeat=1.2, penalty_freq=0.1,
                                    penalty_present=0.2, mirostat_mode=2, top_k=None, sampling_seq="kt", seed=None)
    assert (p.temperature, p.typical_p, p.repeat_last_n, p.repeat_penalty) == (0.7, 0.9, 32, 1.2)
    assert (p.frequency_penalty, p.presence_penalty, p.mirostat, p.top_k) == (0.1, 0.2, 2, 40)
    assert p.samplers == ("top_k", "temperature") and p.seed is None
    with pytest.raises(SamplingError, match="unknown sampling option 'warmth'"):
        SamplingParams.from_options(warmth=1.0)
    with pytest.raises(SamplingError, match="given twice"):
        SamplingParams.from_options(temp=1.0, temperature=0.5)


def _logits(n=5000, seed=3):
    return (np.random.default_rng(seed).standard_normal(n) * 3).astype(np.float32)


def _generate(chain, logits, steps=30):
    out = []
    for i in range(steps):
        token = chain.sample(np.roll(logits, i * 7))
        chain.accept(token)
        out.append(token)
    return out


@pytest.mark.parametrize("settings", [
    {}, {"repeat_penalty": 1.3, "frequency_penalty": 0.2, "presence_penalty": 0.1, "top_k": 0},
    {"mirostat": 1}, {"mirostat": 2}, {"xtc_probability": 0.5, "xtc_threshold": 0.05, "top_k": 200},
    {"dynatemp_range": 0.5, "typical_p": 0.9},
])
def test_same_seed_same_tokens(settings):
    logits = _logits()
    a = _generate(SamplerChain(SamplingParams(seed=1234, **settings), 5000), logits)
    b = _generate(SamplerChain(SamplingParams(seed=1234, **settings), 5000), logits)
    c = _generate(SamplerChain(SamplingParams(seed=4321, **settings), 5000), logits)
    assert a == b
    assert a != c
    chain = SamplerChain(SamplingParams(seed=1234, **settings), 5000)
    _generate(chain, logits, 5)
    chain.reset()
    assert _generate(chain, logits) == a


def test_random_seed_is_reported_and_reproducible():
    chain = SamplerChain(SamplingParams(seed=None), 5000)
    logits = _logits()
    again = SamplerChain(SamplingParams(seed=chain.seed), 5000)
    assert _generate(chain, logits) == _generate(again, logits)


def test_greedy_when_temperature_is_zero():
    logits = _logits()
    chain = SamplerChain(SamplingParams(temperature=0.0, seed=5), 5000)
    assert chain.sample(logits) == int(np.argmax(logits))


def test_logit_bias_and_ignore_eos():
    logits = np.zeros(10, dtype=np.float32)
    chain = SamplerChain(SamplingParams(temperature=0, logit_bias={7: 5.0}), 10)
    assert chain.sample(logits) == 7
    chain = SamplerChain(SamplingParams(temperature=0, logit_bias=[[7, 5.0], [7, False]]), 10)
    assert chain.sample(logits) == 0  # a ban (False = -inf) wins over any boost
    chain = SamplerChain(SamplingParams(temperature=0, ignore_eos=True), 10, eog_tokens=[0, 1])
    assert chain.sample(logits) == 2
    ids, probs = chain.candidate_probabilities()
    assert ids[0] == 2 and probs[0] == 1.0


def test_penalties_use_accepted_tokens():
    logits = np.array([5.0, 4.9, 0.0], dtype=np.float32)
    chain = SamplerChain(SamplingParams(temperature=0, repeat_penalty=1.1), 3)
    assert chain.sample(logits) == 0
    chain.accept(0)
    assert chain.sample(logits) == 1  # 5 / 1.1 = 4.545 < 4.9
    chain.reset()
    assert chain.sample(logits) == 0


def test_dry_in_chain_needs_the_vocabulary():
    with pytest.raises(SamplingError, match="token_pieces"):
        SamplerChain(SamplingParams(dry_multiplier=0.8), 10)
    chain = SamplerChain(SamplingParams(dry_multiplier=0.8, dry_sequence_breakers=()), 10)
    assert "dry" in chain.describe()


# --- invalid values ----------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,expected", [
    ("temperature", -1.0, 0.0), ("top_k", 0, 0), ("top_k", -5, -5), ("top_p", 1.5, 1.0), ("top_p", -0.5, 0.0),
    ("min_p", 2.0, 1.0), ("min_p", -1.0, 0.0), ("typical_p", 3.0, 1.0), ("xtc_probability", 7.0, 1.0),
    ("xtc_threshold", -1.0, 0.0), ("dry_base", 0.5, 1.75),
])
def test_out_of_range_values_are_clamped(field, value, expected):
    assert getattr(SamplingParams(**{field: value}), field) == expected


@pytest.mark.parametrize("field,value,message", [
    ("temperature", float("nan"), "temperature must be a number, got NaN"),
    ("temperature", float("inf"), "temperature must be finite"),
    ("temperature", "hot", "temperature must be a number"),
    ("top_k", 4.5, "top_k must be an integer"),
    ("top_k", True, "top_k must be an integer"),
    ("top_p", float("nan"), "top_p must be a number, got NaN"),
    ("min_p", None, "min_p must be a number"),
    ("repeat_penalty", 0.0, "repeat_penalty must be finite and greater than 0"),
    ("repeat_penalty", -1.0, "repeat_penalty must be finite and greater than 0"),
    ("repeat_penalty", 1e-45, "repeat_penalty must be finite and greater than 0"),
    ("repeat_penalty", float("inf"), "repeat_penalty must be finite"),
    ("frequency_penalty", float("nan"), "frequency_penalty"),
    ("presence_penalty", float("-inf"), "presence_penalty must be finite"),
    ("repeat_last_n", -1, "repeat_last_n must be >= 0"),
    ("dry_penalty_last_n", -1, "dry_penalty_last_n must be >= 0"),
    ("dry_allowed_length", -2, "dry_allowed_length must be >= 0"),
    ("dry_sequence_breakers", "\n", "dry_sequence_breakers must be a list of strings"),
    ("mirostat", 3, "mirostat must be 0"),
    ("mirostat_tau", float("nan"), "mirostat_tau"),
    ("min_keep", -1, "min_keep must be >= 0"),
    ("seed", -2, "seed must be -1"),
    ("seed", 1.5, "seed must be an integer"),
    ("logit_bias", {5: float("nan")}, r"logit_bias\[5\] must be a number, got NaN"),
    ("logit_bias", {5: float("inf")}, r"logit_bias\[5\] must not be \+inf"),
    ("logit_bias", {"x": 1.0}, "logit_bias token id must be an integer"),
    ("logit_bias", 3, "logit_bias must be a mapping"),
    ("samplers", "top_k;warp", "unknown sampler name 'warp'"),
    ("ignore_eos", "yes", "ignore_eos must be true or false"),
])
def test_invalid_values_are_refused(field, value, message):
    with pytest.raises(SamplingError, match=message):
        SamplingParams(**{field: value})


def test_logit_bias_ids_outside_the_vocabulary_are_refused():
    for token in (-1, 10, 2**31):
        with pytest.raises(SamplingError, match=f"token id {token} is outside the vocabulary"):
            SamplerChain(SamplingParams(logit_bias={token: 1.0}), 10)
    assert SamplerChain(SamplingParams(logit_bias={"9": -1.0}), 10).describe().startswith("logits -> logit-bias")


def test_bad_logits_and_tokens_are_refused():
    chain = SamplerChain(SamplingParams(), 10)
    with pytest.raises(SamplingError, match="1-D array of 10"):
        chain.sample(np.zeros(9, dtype=np.float32))
    with pytest.raises(SamplingError, match="NaN"):
        chain.sample(np.full(10, np.nan, dtype=np.float32))
    with pytest.raises(SamplingError, match="every logit is -inf"):
        chain.sample(np.full(10, -np.inf, dtype=np.float32))
    with pytest.raises(SamplingError, match="every remaining candidate"):
        SamplerChain(SamplingParams(logit_bias={i: False for i in range(10)}), 10).sample(np.zeros(10, np.float32))
    for bad in (-1, 10, 2.0, None):
        with pytest.raises(SamplingError, match="accepted token"):
            chain.accept(bad)
    for n_vocab in (0, -3, 2.5):
        with pytest.raises(SamplingError, match="n_vocab"):
            SamplerChain(SamplingParams(), n_vocab)


def test_sampling_does_not_modify_the_callers_logits():
    logits = _logits(100)
    keep = logits.copy()
    chain = SamplerChain(SamplingParams(repeat_penalty=1.5, logit_bias={3: 2.0}, temperature=0.5), 100)
    chain.accept_many([1, 2, 3])
    chain.sample(logits)
    assert np.array_equal(logits, keep)
