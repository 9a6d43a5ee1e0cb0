"""The one error type the sampling package raises."""


class SamplingError(ValueError):
    """A sampling setting or input that cannot be used; the message names the field and the value."""
