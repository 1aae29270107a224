"""llama.cpp (through ``llama-cpp-python``) running a D-AR prior from a GGUF written by :mod:`llama_ar.gguf`.

:class:`LlamaCppModel` loads the GGUF, reads the D-AR layout from its metadata and runs batches of token ids as
llama.cpp sequences, returning their logits; :class:`llama_ar.llamacpp.LlamaCppPrior` adds the samplers.

Each row is one llama.cpp sequence (sequence ids 0 … rows − 1) with its own KV-cache stream (or one unified
buffer, ``kv_unified=True``); all rows of a step go to llama.cpp as ONE batch. Positions are explicit (0 … N),
as in the HF sampler.

Numerics: llama.cpp's CPU flash-attention kernel rounds to f16 internally (max relative logit error 1.75e-3 on
the demo model against 1e-5 without it), so ``flash_attn`` is off by default; the KV cache is f32 for f32
GGUFs and f16 otherwise (``kv_dtype``).

``llama-cpp-python`` is optional (``pip install -e .[serve]``); it is imported when a model is created, and its
absence raises an ``ImportError`` naming that extra. llama.cpp's own log goes to the ``llama_ar.llamacpp.native``
logger (errors at ERROR, warnings at INFO, the rest at DEBUG).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .gguf import LAYOUT_KEY, NUM_TOKENS_KEY
from .layout import VocabLayout

__all__ = ["SERVE_EXTRA_HINT", "LlamaCppModel"]

logger = logging.getLogger(__name__)
NATIVE_LOGGER = "llama_ar.llamacpp.native"

SERVE_EXTRA_HINT = "pip install -e .[serve]"
_FILE_TYPES = {0: "f32", 1: "f16", 7: "q8_0"}
_MAX_SEQUENCES = 256  # LLAMA_MAX_SEQ of llama.cpp (src/llama-cparams.h), not exported by llama-cpp-python
_LOG_CALLBACK = None  # keeps the ctypes callback alive for as long as llama.cpp may call it


def _import_llama_cpp():
    """Import ``llama_cpp``, route llama.cpp's log to :mod:`logging` and initialise its backend (once)."""
    global _LOG_CALLBACK
    try:
        import llama_cpp
    except ImportError as error:
        raise ImportError(
            "the llama.cpp engine needs llama-cpp-python (built from source with cmake and a C++ compiler): "
            f"{SERVE_EXTRA_HINT}"
        ) from error
    if _LOG_CALLBACK is None:
        native = logging.getLogger(NATIVE_LOGGER)

        # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 continuation. Its warnings go to INFO: for this
        # use they are benign ("adding N dummy tokens" for the textless vocabulary, "n_ctx_seq > n_ctx_train"
        # because llama.cpp pads each KV stream to 256 cells); failures also surface as return codes.
        levels = {3: logging.INFO, 4: logging.ERROR}

        @llama_cpp.llama_log_callback
        def _log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
            message = text.decode("utf-8", errors="replace").rstrip("\n")
            if message:
                native.log(levels.get(level, logging.DEBUG), message)

        llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
        _LOG_CALLBACK = _log
        llama_cpp.llama_backend_init()
    return llama_cpp


class LlamaCppModel:
    """A D-AR prior exported to GGUF (:func:`llama_ar.gguf.export_gguf`), loaded in llama.cpp on the CPU.

    Not thread-safe: one run at a time per instance. Close it (or use it as a context manager) to
    free llama.cpp's memory at once.

    Args:
        path: The ``.gguf`` file.
        n_threads: CPU threads of llama.cpp; ``None`` uses ``torch.get_num_threads()``. Settable later through
            the attribute of the same name.
        kv_dtype: KV-cache type ``"f32"`` or ``"f16"``; ``"auto"`` is f32 for an f32 GGUF and f16 otherwise.
        flash_attn: Use llama.cpp's flash-attention kernel (faster at long contexts, but it rounds to f16 on
            CPU: ~1e-3 relative logit error).
        kv_unified: One KV buffer shared by all sequences (each token attends over every sequence's cells,
            masked) instead of one stream per sequence (each padded by llama.cpp to a multiple of 256 cells).
            Either gives the same logits; which is faster depends on rows × codes.

    Attributes:
        layout: The :class:`VocabLayout` stored in the GGUF (``dar.layout``).
        num_tokens: Codes per image stored in the GGUF (``dar.num_tokens``), the default of the samplers.
        capacity: Most codes the model can condition on (its context length − 1).
        dtype: Weight type of the GGUF matrices (``"f32"``, ``"f16"`` or ``"q8_0"``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        n_threads: int | None = None,
        kv_dtype: Literal["auto", "f32", "f16"] = "auto",
        flash_attn: bool = False,
        kv_unified: bool = False,
    ):
        self._lib = None
        self._model = None
        self._context = None
        self._batch = None
        lib = _import_llama_cpp()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"{self.path} does not exist: write it with `dar export-gguf` (llama_ar.export_gguf)."
            )
        if kv_dtype not in ("auto", "f32", "f16"):
            raise ValueError(f"kv_dtype must be 'auto', 'f32' or 'f16', got {kv_dtype!r}.")
        params = lib.llama_model_default_params()
        params.n_gpu_layers = 0
        model = lib.llama_model_load_from_file(os.fsencode(self.path), params)
        if not model:
            raise ValueError(
                f"llama.cpp could not load {self.path} (enable DEBUG logging of '{NATIVE_LOGGER}' "
                "for its reasons); re-export it with `dar export-gguf`."
            )
        self._lib, self._model = lib, model
        text = self.metadata(LAYOUT_KEY)
        if text is None:
            self.close()
            raise ValueError(
                f"{self.path} has no '{LAYOUT_KEY}' metadata: it was not written by llama_ar.export_gguf "
                "(`dar export-gguf`), so its token ids cannot be read as D-AR codes and classes."
            )
        self.layout = VocabLayout.from_dict(json.loads(text))
        vocab = lib.llama_model_get_vocab(model)
        n_vocab = lib.llama_vocab_n_tokens(vocab)
        if n_vocab != self.layout.vocab_size:
            self.close()
            raise ValueError(
                f"{self.path} has {n_vocab} token ids but its layout implies {self.layout.vocab_size}; "
                "re-export it with `dar export-gguf`."
            )
        self.capacity = int(lib.llama_model_n_ctx_train(model)) - 1
        self.num_tokens = int(self.metadata(NUM_TOKENS_KEY) or self.capacity)
        self.dtype = _FILE_TYPES.get(int(self.metadata("general.file_type") or 0), "other")
        if kv_dtype == "auto":
            kv_dtype = "f32" if self.dtype == "f32" else "f16"
        self.kv_dtype = kv_dtype
        self.flash_attn = bool(flash_attn)
        self.kv_unified = bool(kv_unified)
        self.n_threads = n_threads
        self._context_key: tuple[int, int, int] | None = None
        self._batch_capacity = 0

    def metadata(self, key: str) -> str | None:
        size = 256
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = self._lib.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
            if length < 0:
                return None
            if length < size:
                return buffer.value.decode("utf-8")
            size = length + 1

    def threads(self) -> int:
        threads = self.n_threads if self.n_threads is not None else torch.get_num_threads()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"n_threads must be a positive int or None, got {threads!r}.")
        return threads

    def prepare(self, num_sequences: int, batch_tokens: int, max_outputs: int | None = None) -> None:
        """Get a cleared llama.cpp context ready for a run (kept and reused while the sizes stay the same).

        Args:
            num_sequences: Sequences (rows) of the run, each with positions 0 … capacity.
            batch_tokens: Most tokens one :meth:`forward` will pass.
            max_outputs: Most of them that return logits (default: all).
        """
        if self._model is None:
            raise RuntimeError(f"this {type(self).__name__} is closed; create a new one.")
        lib = self._lib
        if num_sequences > _MAX_SEQUENCES:
            raise ValueError(
                f"llama.cpp runs at most {_MAX_SEQUENCES} sequences at once and this call needs "
                f"{num_sequences} (B rows, 2B with guidance); sample fewer class labels per call."
            )
        batch_tokens = max(batch_tokens, num_sequences)
        key = (num_sequences, batch_tokens, min(max_outputs or batch_tokens, batch_tokens))
        if self._context is not None and self._context_key == key:
            lib.llama_memory_clear(lib.llama_get_memory(self._context), True)
        else:
            self._free_context()
            params = lib.llama_context_default_params()
            if self.kv_unified:
                params.n_ctx = -(-num_sequences * (self.capacity + 1) // 256) * 256
            else:  # llama.cpp pads each sequence's KV stream to a multiple of 256 cells
                params.n_ctx = num_sequences * (-(-(self.capacity + 1) // 256) * 256)
            params.n_batch = params.n_ubatch = key[1]
            params.n_seq_max = num_sequences
            params.n_outputs_max = key[2]  # the logits buffer holds n_outputs_max × vocab_size floats
            params.n_threads = params.n_threads_batch = self.threads()
            ggml_type = lib.GGML_TYPE_F32 if self.kv_dtype == "f32" else lib.GGML_TYPE_F16
            params.type_k = params.type_v = ggml_type
            params.flash_attn_type = (
                lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if self.flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
            params.kv_unified = self.kv_unified
            params.no_perf = True
            context = lib.llama_init_from_model(self._model, params)
            if not context:
                raise RuntimeError(
                    f"llama.cpp could not create a context for {num_sequences} sequences (out of memory?)."
                )
            self._context, self._context_key = context, key
            if key[1] > self._batch_capacity:
                if self._batch is not None:
                    lib.llama_batch_free(self._batch)
                self._batch = lib.llama_batch_init(key[1], 0, 1)
                self._batch_capacity = key[1]
        lib.llama_set_n_threads(self._context, self.threads(), self.threads())

    def forward(
        self, tokens: np.ndarray, positions: np.ndarray, sequences: np.ndarray, outputs: np.ndarray
    ) -> np.ndarray:
        """Run one llama.cpp batch; return the logits of the tokens flagged in ``outputs``, in batch order.

        Args:
            tokens, positions, sequences: (T,) int arrays (token id, position, sequence id of every token).
            outputs: (T,) bool array, True where logits are wanted.

        Returns:
            (outputs.sum(), vocab_size) float32 array (a copy).
        """
        lib, batch, count = self._lib, self._batch, len(tokens)
        np.ctypeslib.as_array(batch.token, shape=(count,))[:] = tokens
        np.ctypeslib.as_array(batch.pos, shape=(count,))[:] = positions
        np.ctypeslib.as_array(batch.n_seq_id, shape=(count,))[:] = 1
        np.ctypeslib.as_array(batch.logits, shape=(count,))[:] = outputs
        for i, sequence in enumerate(sequences.tolist()):
            batch.seq_id[i][0] = sequence
        batch.n_tokens = count
        status = lib.llama_decode(self._context, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} (1: no KV-cache slot, < 0: error).")
        rows = int(outputs.sum())
        logits = np.ctypeslib.as_array(
            lib.llama_get_logits(self._context), shape=(rows, self.layout.vocab_size)
        )
        return logits.copy()

    def _free_context(self) -> None:
        if self._context is not None:
            self._lib.llama_free(self._context)
            self._context, self._context_key = None, None

    def close(self) -> None:
        """Free llama.cpp's context, batch and model (idempotent)."""
        if self._lib is None:
            return
        self._free_context()
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch, self._batch_capacity = None, 0
        if self._model is not None:
            self._lib.llama_model_free(self._model)
            self._model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, dtype={self.dtype}, kv_dtype={self.kv_dtype}, "
            f"codebook_size={self.layout.codebook_size}, num_classes={self.layout.num_classes})"
        )

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits at every position of each row (one llama.cpp sequence per row).

        Args:
            input_ids: (B, L) int64 token ids (``[class or null id, code_0 …]``), L ≤ capacity + 1.

        Returns:
            (B, L, vocab_size) float32 logits; ``[:, i]`` predicts the token after position i.
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("input_ids must be a (B, L) integer tensor.")
        batch, length = input_ids.shape
        if not 1 <= length <= self.capacity + 1:
            raise ValueError(f"input_ids have {length} positions; the model holds 1 … {self.capacity + 1}.")
        ids = input_ids.detach().cpu().long()
        if int(ids.min()) < 0 or int(ids.max()) >= self.layout.vocab_size:
            raise ValueError(f"input_ids must lie in [0, {self.layout.vocab_size}).")
        self.prepare(batch, batch * length)
        logits = self.forward(
            ids.reshape(-1).numpy().astype(np.int32),
            np.tile(np.arange(length, dtype=np.int32), batch),
            np.repeat(np.arange(batch, dtype=np.int32), length),
            np.ones(batch * length, dtype=bool),
        )
        return torch.from_numpy(logits).view(batch, length, -1)
