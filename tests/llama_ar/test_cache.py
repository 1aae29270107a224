"""Contracts of llama_ar.cache: the preallocated cache matches DynamicCache; importing stays light."""

import subprocess
import sys

import pytest
import torch

from llama_ar.cache import CACHE_KINDS, make_cache


def test_preallocated_cache_returns_the_same_keys_and_values_as_dynamic(tiny_model, layout):
    ids = layout.build_inputs(layout.class_tokens([0, 1]), torch.randint(0, layout.codebook_size, (2, 5)))
    caches = {kind: make_cache(kind, tiny_model.config, 8) for kind in ("dynamic", "preallocated")}
    with torch.no_grad():
        for cache in caches.values():
            tiny_model(ids, cache=cache, use_cache=True)
            tiny_model(ids[:, :1], position_ids=torch.tensor([[6]]), cache=cache, use_cache=True)
    assert caches["preallocated"].get_seq_length() == caches["dynamic"].get_seq_length() == 7
    for dynamic, preallocated in zip(caches["dynamic"].layers, caches["preallocated"].layers):
        assert torch.equal(dynamic.keys, preallocated.keys) and torch.equal(
            dynamic.values, preallocated.values
        )


def test_preallocated_cache_refuses_to_overflow(tiny_model, layout):
    cache = make_cache("preallocated", tiny_model.config, 4)
    ids = layout.build_inputs(layout.class_tokens([0]), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="holds 4 tokens"), torch.no_grad():
        tiny_model(ids, cache=cache, use_cache=True)


def test_unknown_cache_kind_is_refused(tiny_model):
    with pytest.raises(ValueError, match="preallocated"):
        make_cache("paged", tiny_model.config, 4)
    for kind in CACHE_KINDS:  # every kind the options accept can be built
        make_cache(kind, tiny_model.config, 4)


def test_importing_llama_ar_does_not_import_transformers():
    code = "import sys, llama_ar; assert 'transformers' not in sys.modules, 'transformers imported at import time'"
    subprocess.run([sys.executable, "-c", code], check=True)
