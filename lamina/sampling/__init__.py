"""llama.cpp's sampler chain: settings with its defaults, its samplers, its random draws.

``SamplingParams`` holds the settings (and documents what invalid values do);
``SamplerChain`` turns a logit vector into the next token id.
"""

from .chain import SamplerChain
from .errors import SamplingError
from .params import (DEFAULT_SAMPLERS, SAMPLER_LETTERS, SamplingParams, parse_sampler_names,
                     parse_sampling_seq)

__all__ = [
    "DEFAULT_SAMPLERS",
    "SAMPLER_LETTERS",
    "SamplerChain",
    "SamplingError",
    "SamplingParams",
    "parse_sampler_names",
    "parse_sampling_seq",
]
