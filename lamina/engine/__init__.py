"""The inference engine: a model's KV cache and batched decoding of one or more sequences.

>>> ctx = Context(model, n_ctx=4096, n_seq_max=2)
>>> logits = ctx.decode(Batch.for_sequence(tokens, start_pos=0, seq_id=0))
"""

from .batch import Batch
from .context import Context, InvalidTokenError
from .kv_cache import ContextFullError, KVCache, KVCacheMemoryError

__all__ = ["Batch", "Context", "ContextFullError", "InvalidTokenError", "KVCache", "KVCacheMemoryError"]
