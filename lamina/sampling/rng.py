"""The random draws llama.cpp's samplers make, reproduced bit for bit.

llama.cpp gives each random sampler (``dist``, ``xtc``, ``mirostat``) its own
``std::mt19937`` seeded with the user's seed, and turns its 32-bit words into
numbers with libstdc++'s ``std::generate_canonical``. NumPy's ``MT19937`` bit
generator, seeded the legacy way (Matsumoto and Nishimura's ``init_genrand``,
which is also what ``std::mt19937(seed)`` does), yields the very same words, so
the same seed and the same logits give the same tokens as llama.cpp.
"""

from __future__ import annotations

import math
import secrets

import numpy as np

from .errors import SamplingError

#: llama.cpp's LLAMA_DEFAULT_SEED: "pick a random seed".
RANDOM_SEED = 0xFFFFFFFF

_TWO_32 = 4294967296.0
_TWO_64 = 18446744073709551616.0
_ONE_BELOW_ONE_F64 = math.nextafter(1.0, 0.0)
_ONE_BELOW_ONE_F32 = np.nextafter(np.float32(1.0), np.float32(0.0))


def resolve_seed(seed: int | None) -> int:
    """The 32-bit seed llama.cpp would use: None, -1 and 0xFFFFFFFF draw a fresh random one.

    Larger seeds keep their low 32 bits, as the C API's ``uint32_t`` does.
    """
    if seed is None:
        return secrets.randbits(32)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SamplingError(f"seed must be an integer (or None / -1 for a random seed), got {seed!r}")
    seed = int(seed)
    if seed == -1:
        return secrets.randbits(32)
    if seed < 0:
        raise SamplingError(f"seed must be -1 (random) or a non-negative integer, got {seed}")
    seed &= 0xFFFFFFFF
    if seed == RANDOM_SEED:
        return secrets.randbits(32)
    return seed


class Mt19937:
    """``std::mt19937`` plus the two ways llama.cpp draws uniform numbers from it."""

    def __init__(self, seed: int):
        self.seed = seed
        self._bits = np.random.MT19937(0)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        self.seed = seed
        # ``_legacy_seeding`` is MT19937's init_genrand, the seeding std::mt19937 uses.
        self._bits._legacy_seeding(seed)

    def next_u32(self) -> int:
        return int(self._bits.random_raw())

    def uniform_double(self) -> float:
        """``std::uniform_real_distribution<double>(0, 1)``: two words, low word first."""
        lo, hi = self._bits.random_raw(2)
        value = (float(lo) + float(hi) * _TWO_32) / _TWO_64
        return value if value < 1.0 else _ONE_BELOW_ONE_F64

    def uniform_float(self) -> np.float32:
        """``std::uniform_real_distribution<float>(0, 1)``: one word, rounded to float first."""
        value = np.float32(float(self.next_u32())) / np.float32(_TWO_32)
        return value if value < 1.0 else _ONE_BELOW_ONE_F32

    def discrete(self, probs: np.ndarray) -> int:
        """``std::discrete_distribution<int>(probs)(rng)`` as libstdc++ computes it.

        Fewer than two weights draw nothing and give 0; otherwise the weights are
        normalised in double, summed into a cumulative table whose last entry is
        forced to 1, and the first entry not below one uniform double is chosen.
        """
        if len(probs) < 2:
            return 0
        weights = probs.astype(np.float64)
        total = float(np.cumsum(weights)[-1])
        cumulative = np.cumsum(weights / total)
        cumulative[-1] = 1.0
        u = self.uniform_double()
        return int(np.searchsorted(cumulative, u, side="left"))
