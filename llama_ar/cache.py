"""KV caches for the D-AR sampler (D-AR §3.3: one token per step after a class-token prefill).

``make_cache(kind, config, max_len)`` returns a ``transformers`` cache for a stock Llama:

* ``"dynamic"``: ``DynamicCache``; grows by concatenation, so every step copies the whole cache;
* ``"static"``: ``StaticCache``; preallocated, but attention runs over the padded length with a mask;
* ``"preallocated"``: one ``PreallocatedLayer`` (see :func:`preallocated_layer_class`) per layer; writes into
  one preallocated buffer and hands attention a view of the filled part (no copy, no padding). Towards the model
  and the mask code it behaves like a ``DynamicLayer`` (it subclasses it), so the model stays stock.
"""

from __future__ import annotations

from functools import cache
from typing import get_args

import torch

from .options import CacheKind

__all__ = ["CACHE_KINDS", "check_cache_filled", "make_cache", "preallocated_layer_class"]

CACHE_KINDS: tuple[str, ...] = get_args(CacheKind)


@cache
def preallocated_layer_class() -> type:
    """The ``PreallocatedLayer`` class (built on first use so that importing this module does not import transformers).

    A ``DynamicLayer`` that writes into one preallocated (B, heads, max_len, head_dim) buffer and returns views
    of its filled part. It behaves like ``DynamicLayer`` towards the model and the mask code (attention sees
    exactly the cached tokens, no padding mask) but never re-allocates. It serves the append-only decode loop of
    :mod:`llama_ar.sampling`; beam-search style reordering or cropping is not supported.
    """
    from transformers.cache_utils import DynamicLayer

    class PreallocatedLayer(DynamicLayer):
        def __init__(self, max_cache_len: int):
            super().__init__()
            self.max_cache_len = max_cache_len
            self.length = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            batch, heads, _, _ = key_states.shape
            shape = (batch, heads, self.max_cache_len)
            self._key_buffer = key_states.new_empty(shape + key_states.shape[-1:])
            self._value_buffer = value_states.new_empty(shape + value_states.shape[-1:])
            self.keys, self.values = self._key_buffer[:, :, :0], self._value_buffer[:, :, :0]
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            start, end = self.length, self.length + key_states.shape[-2]
            if end > self.max_cache_len:
                raise ValueError(
                    f"the preallocated KV cache holds {self.max_cache_len} tokens; {end} were fed."
                )
            self._key_buffer[:, :, start:end] = key_states
            self._value_buffer[:, :, start:end] = value_states
            self.length = end
            self.keys, self.values = self._key_buffer[:, :, :end], self._value_buffer[:, :, :end]
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length

        def reset(self) -> None:
            super().reset()
            self.length = 0

    return PreallocatedLayer


def make_cache(kind: str, config, max_len: int):
    """A fresh KV cache.

    Args:
        kind: One of :data:`CACHE_KINDS` (``"preallocated"``: one buffer written in place, attention over the
            filled part only, no copy and no padding — the fastest on CPU).
        config: The model's ``LlamaConfig``.
        max_len: Largest number of tokens that will be fed (prefill + decode steps).

    Returns:
        A ``transformers.Cache`` to pass as ``cache=`` (the keyword of transformers ≥ 5.24).
    """
    from transformers import DynamicCache, StaticCache
    from transformers.cache_utils import Cache

    if kind == "dynamic":
        return DynamicCache(config=config)
    if kind == "static":
        return StaticCache(config=config, max_cache_len=max_len)
    if kind == "preallocated":
        layer_class = preallocated_layer_class()
        return Cache(layers=[layer_class(max_len) for _ in range(config.num_hidden_layers)])
    raise ValueError(f"cache must be one of {CACHE_KINDS}, got {kind!r}.")


def check_cache_filled(cache, num_tokens: int) -> None:
    """Raise unless ``cache`` holds exactly ``num_tokens`` positions after a prefill of that length.

    transformers 5.24 renamed the cache keyword of ``LlamaModel.forward`` from ``past_key_values`` to ``cache``;
    a release that does not know the keyword it is given puts it in ``**kwargs`` and builds a fresh cache per
    call, so every later code would be sampled without context, silently. This check turns that into an error.
    """
    filled = cache.get_seq_length()
    if filled != num_tokens:
        import transformers

        raise RuntimeError(
            f"the KV cache holds {filled} positions after a prefill of {num_tokens} tokens: transformers "
            f"{transformers.__version__} did not use the cache passed as cache=; install transformers>=5.24,<6"
        )
