"""The engines a :class:`dar.DARPipeline` can sample its codes with: the transformers model itself, or llama.cpp.

``engine=None`` (or ``"transformers"``) samples with :func:`llama_ar.iter_code_groups` on the pipeline's
``ar_model``. ``engine="llamacpp"`` exports that model to a temporary f32 GGUF and samples with
:class:`llama_ar.LlamaCppPrior`; pass a ``LlamaCppPrior`` (e.g. of a q8_0 file from ``dar export-gguf``) to use
another file. Either way the tokenizer decodes what the engine samples, streaming included.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENGINES = ("transformers", "llamacpp")

__all__ = ["ENGINES", "build_engine", "engine_of"]


def build_engine(engine: Any, ar_model: Any, codebook_size: int):
    """None for the transformers sampler, else an object with llama_ar's ``iter_code_groups`` interface.

    Args:
        engine: None, ``"transformers"``, ``"llamacpp"``, or a ready ``llama_ar.LlamaCppPrior``.
        ar_model: the pipeline's ``LlamaForCausalLM`` (exported for ``"llamacpp"``).
        codebook_size: the tokenizer's codebook size, which the engine's layout must match.
    """
    if engine is None or engine == "transformers":
        return None
    if isinstance(engine, str):
        if engine != "llamacpp":
            raise ValueError(f"engine must be one of {ENGINES} or a llama_ar.LlamaCppPrior, got {engine!r}")
        engine = _llamacpp_of(ar_model)
    if not callable(getattr(engine, "iter_code_groups", None)) or not hasattr(engine, "layout"):
        raise TypeError(
            f"engine must be one of {ENGINES} or a llama_ar.LlamaCppPrior, got {type(engine).__name__}"
        )
    if engine.layout.codebook_size != codebook_size:
        raise ValueError(
            f"the engine's model predicts {engine.layout.codebook_size} codes but the tokenizer has {codebook_size}: "
            "export the GGUF from this pipeline's AR model"
        )
    return engine


def _llamacpp_of(ar_model: Any):
    """A LlamaCppPrior of an f32 GGUF of ``ar_model``, written to a temporary folder (deleted once loaded)."""
    from llama_ar import LlamaCppPrior, export_gguf

    with tempfile.TemporaryDirectory(prefix="dar-gguf-") as tmp:
        ar_model.save_pretrained(Path(tmp) / "ar_model")
        path = export_gguf(Path(tmp) / "ar_model", Path(tmp) / "model.gguf", dtype="f32")
        logger.info("exported the AR model to GGUF (f32) for llama.cpp")
        return LlamaCppPrior(path)  # llama.cpp reads the whole file at load time


def engine_of(name: str | None, gguf: str | None, device: str):
    """The engine the command-line flags ``--engine`` / ``--gguf`` ask for (see :func:`build_engine`)."""
    if gguf:
        if name != "llamacpp":
            raise ValueError("--gguf FILE is read by the llama.cpp engine: add --engine llamacpp")
        from llama_ar import LlamaCppPrior

        name = LlamaCppPrior(gguf)
    if name not in (None, "transformers") and device != "cpu":
        raise ValueError("the llama.cpp engine runs on the CPU: pass --device cpu")
    return name
