"""Sampling settings with llama.cpp's defaults, and what happens to values out of range.

Every field has llama.cpp's default (``common_params_sampling`` in common/common.h).
Values are checked once, when the object is made, so the sampler chain can trust
them. Out-of-range values are either clamped or refused, field by field, the way
llama.cpp's command line and server treat them; what llama.cpp leaves undefined
(NaN, infinities) is refused. The rules:

=====================  ====================================================================
field                  invalid values
=====================  ====================================================================
temperature            negative -> 0 (greedy), as llama.cpp's ``--temp`` and server clamp;
                       NaN or infinite -> refused
top_k                  0 or negative -> disabled; above the vocabulary -> the whole
                       vocabulary (both as llama.cpp); not an integer -> refused
top_p, min_p,          clamped into [0, 1] as llama.cpp's server does; NaN -> refused
typical_p
xtc_probability,       clamped into [0, 1] as llama.cpp's server does; NaN -> refused
xtc_threshold
repeat_penalty         0, negative, NaN, infinite (or so small its inverse is infinite)
                       -> refused, as llama.cpp refuses them
frequency_penalty,     NaN or infinite -> refused, as llama.cpp
presence_penalty
repeat_last_n,         negative -> refused (llama.cpp's hard limits)
dry_allowed_length,
dry_penalty_last_n,
min_keep
dry_base               below 1 -> llama.cpp's default 1.75, as its server does; NaN -> refused
dry_multiplier,        NaN or infinite -> refused
dynatemp_range,
dynatemp_exponent,
top_n_sigma,
mirostat_tau,
mirostat_eta
mirostat               anything but 0, 1, 2 -> refused
seed                   None or -1 -> random; other negatives or non-integers -> refused
logit_bias             ids that are not integers, NaN or +inf biases -> refused here; ids
                       outside the vocabulary -> refused by the SamplerChain, which knows
                       the vocabulary size; ``False`` as a bias means -inf (ban), as in
                       llama.cpp's server
samplers               unknown names or letters -> refused
=====================  ====================================================================

Everything refused raises :class:`SamplingError` (a ``ValueError``) naming the field.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import SamplingError

#: llama.cpp's canonical sampler names (``common_sampler_type_to_str``) and their ``--sampling-seq`` letters.
SAMPLER_LETTERS: dict[str, str] = {
    "penalties": "e",
    "dry": "d",
    "top_n_sigma": "s",
    "top_k": "k",
    "typ_p": "y",
    "top_p": "p",
    "min_p": "m",
    "xtc": "x",
    "temperature": "t",
}

#: llama.cpp's default ``--samplers`` order.
DEFAULT_SAMPLERS: tuple[str, ...] = (
    "penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature",
)

DEFAULT_DRY_SEQUENCE_BREAKERS: tuple[str, ...] = ("\n", ":", "\"", "*")


#: Other spellings of the fields: llama.cpp's common_params_sampling names, its
#: command-line names, and llama-cpp-python's.
OPTION_ALIASES: dict[str, str] = {
    "temp": "temperature", "typ_p": "typical_p", "typical": "typical_p",
    "penalty_last_n": "repeat_last_n", "penalty_repeat": "repeat_penalty",
    "penalty_freq": "frequency_penalty", "penalty_present": "presence_penalty",
    "dynatemp_exp": "dynatemp_exponent", "top_nsigma": "top_n_sigma",
    "mirostat_mode": "mirostat", "mirostat_lr": "mirostat_eta", "mirostat_ent": "mirostat_tau",
}


def _sampler_aliases() -> dict[str, str]:
    # The spellings llama.cpp's common_sampler_types_from_names accepts: canonical,
    # kebab-case, without underscores, and a few historical names.
    aliases = {}
    for name in SAMPLER_LETTERS:
        aliases[name] = name
        if "_" in name:
            aliases[name.replace("_", "-")] = name
            aliases[name.replace("_", "")] = name
    aliases.update({"nucleus": "top_p", "temp": "temperature", "typ": "typ_p"})
    return aliases


_ALIASES = _sampler_aliases()
_LETTERS = {letter: name for name, letter in SAMPLER_LETTERS.items()}


def parse_sampler_names(names: str | Iterable[str]) -> tuple[str, ...]:
    """``--samplers``: names separated by ';' (or an iterable of names), case-insensitive, aliases allowed."""
    items = names.split(";") if isinstance(names, str) else list(names)
    result = []
    for item in items:
        if not isinstance(item, str):
            raise SamplingError(f"samplers: each sampler name must be a string, got {item!r}")
        key = item.strip().lower()
        if key not in _ALIASES:
            known = ", ".join(SAMPLER_LETTERS)
            raise SamplingError(f"samplers: unknown sampler name {item!r} (known: {known})")
        result.append(_ALIASES[key])
    return tuple(result)


def parse_sampling_seq(letters: str) -> tuple[str, ...]:
    """``--sampling-seq``: one letter per sampler, e.g. llama.cpp's default ``edskypmxt``."""
    if not isinstance(letters, str):
        raise SamplingError(f"sampling_seq must be a string of letters, got {letters!r}")
    result = []
    for letter in letters:
        if letter not in _LETTERS:
            known = ", ".join(f"{v}={k}" for k, v in SAMPLER_LETTERS.items())
            raise SamplingError(f"sampling_seq: unknown sampler letter {letter!r} (known: {known})")
        result.append(_LETTERS[letter])
    return tuple(result)


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise SamplingError(f"{field} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise SamplingError(f"{field} must be a number, got {value!r}") from None
    if math.isnan(value):
        raise SamplingError(f"{field} must be a number, got NaN")
    return value


def _finite(field: str, value: Any) -> float:
    value = _number(field, value)
    if math.isinf(value):
        raise SamplingError(f"{field} must be finite, got {value}")
    return value


def _unit(field: str, value: Any) -> float:
    return min(1.0, max(0.0, _number(field, value)))


def _integer(field: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise SamplingError(f"{field} must be an integer, got {value!r}")
    value = int(value.__index__())
    if minimum is not None and value < minimum:
        raise SamplingError(f"{field} must be >= {minimum}, got {value}")
    return value


def _logit_bias(value: Any) -> tuple[tuple[int, float], ...]:
    if value is None:
        return ()
    pairs = value.items() if isinstance(value, Mapping) else value
    result = []
    try:
        iterator = iter(pairs)
    except TypeError:
        raise SamplingError(f"logit_bias must be a mapping of token id to bias, got {value!r}") from None
    for pair in iterator:
        try:
            token, bias = pair
        except (TypeError, ValueError):
            raise SamplingError(f"logit_bias entries must be (token id, bias) pairs, got {pair!r}") from None
        if isinstance(token, str) and token.strip().lstrip("-").isdigit():
            token = int(token)  # JSON object keys arrive as strings
        token = _integer("logit_bias token id", token)
        if bias is False:
            bias = -math.inf
        bias = _number(f"logit_bias[{token}]", bias)
        if bias == math.inf:
            raise SamplingError(f"logit_bias[{token}] must not be +inf (use a large finite bias to force a token)")
        result.append((token, bias))
    return tuple(result)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """Everything that shapes how the next token is picked, with llama.cpp's defaults.

    Field names follow llama-cpp-python / the OpenAI API; the llama.cpp option each
    mirrors is in the comment. See the module docstring for what invalid values do.
    """

    temperature: float = 0.8            # --temp; <= 0 picks the most likely token
    top_k: int = 40                     # --top-k; <= 0 disables
    top_p: float = 0.95                 # --top-p; 1 disables
    min_p: float = 0.05                 # --min-p; 0 disables
    typical_p: float = 1.0              # --typical; 1 disables
    repeat_penalty: float = 1.0         # --repeat-penalty; 1 disables
    repeat_last_n: int = 64             # --repeat-last-n; 0 disables penalties
    frequency_penalty: float = 0.0      # --frequency-penalty
    presence_penalty: float = 0.0       # --presence-penalty
    dry_multiplier: float = 0.0         # --dry-multiplier; 0 disables DRY
    dry_base: float = 1.75              # --dry-base
    dry_allowed_length: int = 2         # --dry-allowed-length
    dry_penalty_last_n: int = 64        # --dry-penalty-last-n; 0 disables DRY
    dry_sequence_breakers: tuple[str, ...] = DEFAULT_DRY_SEQUENCE_BREAKERS  # --dry-sequence-breaker
    xtc_probability: float = 0.0        # --xtc-probability; 0 disables
    xtc_threshold: float = 0.1          # --xtc-threshold; > 0.5 disables
    top_n_sigma: float = -1.0           # --top-n-sigma; <= 0 disables
    dynatemp_range: float = 0.0         # --dynatemp-range; 0 disables
    dynatemp_exponent: float = 1.0      # --dynatemp-exp
    mirostat: int = 0                   # --mirostat: 0 off, 1 Mirostat, 2 Mirostat 2.0
    mirostat_tau: float = 5.0           # --mirostat-ent
    mirostat_eta: float = 0.1           # --mirostat-lr
    min_keep: int = 0                   # --min-keep (server): samplers keep at least this many
    seed: int | None = -1               # --seed; -1 or None is random
    logit_bias: Any = ()                # --logit-bias; {token id: bias} or (id, bias) pairs
    ignore_eos: bool = False            # --ignore-eos: bans end-of-generation tokens
    samplers: Any = DEFAULT_SAMPLERS    # --samplers (names) or a --sampling-seq string via from_sampling_seq

    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)

        put("temperature", max(0.0, _finite("temperature", self.temperature)))
        put("top_k", _integer("top_k", self.top_k))
        put("top_p", _unit("top_p", self.top_p))
        put("min_p", _unit("min_p", self.min_p))
        put("typical_p", _unit("typical_p", self.typical_p))
        put("xtc_probability", _unit("xtc_probability", self.xtc_probability))
        put("xtc_threshold", _unit("xtc_threshold", self.xtc_threshold))

        repeat = _finite("repeat_penalty", self.repeat_penalty)
        with np.errstate(over="ignore", divide="ignore"):
            inverse_overflows = not np.isfinite(np.float32(1.0) / np.float32(repeat))  # float32, as llama.cpp
        if repeat <= 0.0 or inverse_overflows:
            raise SamplingError(f"repeat_penalty must be finite and greater than 0, got {repeat}")
        put("repeat_penalty", repeat)
        put("frequency_penalty", _finite("frequency_penalty", self.frequency_penalty))
        put("presence_penalty", _finite("presence_penalty", self.presence_penalty))
        put("repeat_last_n", _integer("repeat_last_n", self.repeat_last_n, minimum=0))

        put("dry_multiplier", _finite("dry_multiplier", self.dry_multiplier))
        dry_base = _finite("dry_base", self.dry_base)
        put("dry_base", dry_base if dry_base >= 1.0 else 1.75)
        put("dry_allowed_length", _integer("dry_allowed_length", self.dry_allowed_length, minimum=0))
        put("dry_penalty_last_n", _integer("dry_penalty_last_n", self.dry_penalty_last_n, minimum=0))
        breakers = self.dry_sequence_breakers
        if isinstance(breakers, str) or not all(isinstance(b, str) for b in breakers):
            raise SamplingError(f"dry_sequence_breakers must be a list of strings, got {breakers!r}")
        put("dry_sequence_breakers", tuple(breakers))

        put("top_n_sigma", _finite("top_n_sigma", self.top_n_sigma))
        put("dynatemp_range", _finite("dynatemp_range", self.dynatemp_range))
        put("dynatemp_exponent", _finite("dynatemp_exponent", self.dynatemp_exponent))
        mirostat = _integer("mirostat", self.mirostat)
        if mirostat not in (0, 1, 2):
            raise SamplingError(f"mirostat must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0), got {mirostat}")
        put("mirostat", mirostat)
        put("mirostat_tau", _finite("mirostat_tau", self.mirostat_tau))
        put("mirostat_eta", _finite("mirostat_eta", self.mirostat_eta))
        put("min_keep", _integer("min_keep", self.min_keep, minimum=0))

        if self.seed is not None:
            seed = _integer("seed", self.seed)
            if seed < -1:
                raise SamplingError(f"seed must be -1 (random) or a non-negative integer, got {seed}")
            put("seed", seed)
        put("logit_bias", _logit_bias(self.logit_bias))
        if not isinstance(self.ignore_eos, bool):
            raise SamplingError(f"ignore_eos must be true or false, got {self.ignore_eos!r}")
        put("samplers", parse_sampler_names(self.samplers))

    @classmethod
    def from_options(cls, **options: Any) -> "SamplingParams":
        """Settings from keyword options spelled as llama.cpp or llama-cpp-python spell them.

        Accepts the field names above plus llama.cpp's ``common_params_sampling`` names
        (``temp``, ``typ_p``, ``penalty_last_n``, ``penalty_repeat``, ``penalty_freq``,
        ``penalty_present``, ``dynatemp_exp``...), llama-cpp-python's ``mirostat_mode``,
        and ``sampling_seq`` letters. None means "the default". Unknown names are refused.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        chosen: dict[str, Any] = {}
        for name, value in options.items():
            if value is None and name != "seed":
                continue
            if name == "sampling_seq":
                name, value = "samplers", parse_sampling_seq(value)
            field = OPTION_ALIASES.get(name, name)
            if field not in fields:
                raise SamplingError(f"unknown sampling option {name!r}")
            if field in chosen:
                raise SamplingError(f"sampling option {field!r} given twice (as {name!r})")
            chosen[field] = value
        return cls(**chosen)

    @classmethod
    def from_sampling_seq(cls, letters: str, **fields: Any) -> "SamplingParams":
        """Settings whose sampler order is given as ``--sampling-seq`` letters (``edskypmxt``)."""
        return cls(samplers=parse_sampling_seq(letters), **fields)

    def replace(self, **changes: Any) -> "SamplingParams":
        return dataclasses.replace(self, **changes)

    @property
    def sampling_seq(self) -> str:
        """The sampler order as ``--sampling-seq`` letters."""
        return "".join(SAMPLER_LETTERS[name] for name in self.samplers)
