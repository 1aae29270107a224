"""Sampling the D-AR prior with llama.cpp (through ``llama-cpp-python``) from a GGUF written by :mod:`llama_ar.gguf`.

:class:`LlamaCppPrior` loads the GGUF and offers the sampler of :mod:`llama_ar.sampling` with the same arguments
and semantics (D-AR §3.3–§3.4): ``sample_codes`` / ``iter_code_groups`` with class labels, batched classifier-
free guidance, the constant / linear CFG schedule of :func:`llama_ar.cfg_scales`, ``cfg_interval``,
temperature / top-k / top-p, a ``torch.Generator``, prefix forcing and streaming of code groups.

llama.cpp runs the transformer: the B conditional rows ``[class id, codes …]`` and the B null rows
``[null id, codes …]`` are 2B sequences (sequence ids 0 … 2B − 1) of ONE llama.cpp batch per step, each with its
own KV cache stream, at positions 0 … N like the HF sampler. Guidance, the warpers and the draw run in torch on
the (rows, codebook_size) fp32 code logits (the class / null ids are never candidates), with the same
``transformers`` warpers and ``torch.multinomial(generator=...)`` as :func:`llama_ar.sample_codes`, so where the
logits agree both samplers return the same codes (bitwise for top_k=1). After ``cfg_interval`` the null rows are
no longer run.

Numerics: llama.cpp's CPU flash-attention kernel rounds to f16 internally (relative logit error ~1e-3 on the
demo model against ~2e-6 without it), so ``flash_attn`` is off by default; the KV cache is f32 for f32 GGUFs and
f16 otherwise (``kv_dtype``).

``llama-cpp-python`` is optional (``pip install -e .[serve]``); it is imported when a :class:`LlamaCppPrior`
is created, and its absence raises an ``ImportError`` naming that extra. llama.cpp's own log goes to the
``llama_ar.llamacpp.native`` logger (errors at ERROR, warnings at INFO, the rest at DEBUG).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from .gguf import LAYOUT_KEY, NUM_TOKENS_KEY
from .layout import VocabLayout

__all__ = ["LlamaCppPrior", "SERVE_EXTRA_HINT"]

logger = logging.getLogger(__name__)

SERVE_EXTRA_HINT = "pip install -e .[serve]"
_FILE_TYPES = {0: "f32", 1: "f16", 7: "q8_0"}
_MAX_SEQUENCES = 256  # LLAMA_MAX_SEQ of llama.cpp (src/llama-cparams.h), not exported by llama-cpp-python
_LOG_CALLBACK = None  # keeps the ctypes callback alive for as long as llama.cpp may call it

LogitsCallback = Callable[[int, torch.Tensor], None]


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
        native = logging.getLogger(__name__ + ".native")

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


class LlamaCppPrior:
    """A D-AR prior exported to GGUF (:func:`llama_ar.gguf.export_gguf`), run on the CPU by llama.cpp.

    Not thread-safe: one sampling run at a time per instance. Close it (or use it as a context manager) to
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
            Either gives the same logits; which is faster depends on rows × codes (see the module notes).

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
                f"llama.cpp could not load {self.path} (enable DEBUG logging of 'llama_ar.llamacpp.native' "
                "for its reasons); re-export it with `dar export-gguf`."
            )
        self._lib, self._model = lib, model
        text = self._metadata(LAYOUT_KEY)
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
        self.num_tokens = int(self._metadata(NUM_TOKENS_KEY) or self.capacity)
        self.dtype = _FILE_TYPES.get(int(self._metadata("general.file_type") or 0), "other")
        if kv_dtype == "auto":
            kv_dtype = "f32" if self.dtype == "f32" else "f16"
        self.kv_dtype = kv_dtype
        self.flash_attn = bool(flash_attn)
        self.kv_unified = bool(kv_unified)
        self.n_threads = n_threads
        self._context_key: tuple[int, int] | None = None
        self._batch_capacity = 0

    # ------------------------------------------------------------------------------------------ plumbing
    def _metadata(self, key: str) -> str | None:
        size = 256
        while True:
            buffer = ctypes.create_string_buffer(size)
            length = self._lib.llama_model_meta_val_str(self._model, key.encode(), buffer, size)
            if length < 0:
                return None
            if length < size:
                return buffer.value.decode("utf-8")
            size = length + 1

    def _threads(self) -> int:
        threads = self.n_threads if self.n_threads is not None else torch.get_num_threads()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"n_threads must be a positive int or None, got {threads!r}.")
        return threads

    def _prepare(self, num_sequences: int, batch_tokens: int):
        """A cleared llama.cpp context for ``num_sequences`` streams and a batch of ``batch_tokens`` tokens."""
        if self._model is None:
            raise RuntimeError("this LlamaCppPrior is closed; create a new one.")
        lib = self._lib
        if num_sequences > _MAX_SEQUENCES:
            raise ValueError(
                f"llama.cpp runs at most {_MAX_SEQUENCES} sequences at once and this call needs "
                f"{num_sequences} (B rows, 2B with guidance); sample fewer class labels per call."
            )
        key = (num_sequences, max(batch_tokens, num_sequences))
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
            params.n_threads = params.n_threads_batch = self._threads()
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
        lib.llama_set_n_threads(self._context, self._threads(), self._threads())

    def _forward(
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

    def __enter__(self) -> LlamaCppPrior:
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
            f"LlamaCppPrior({str(self.path)!r}, dtype={self.dtype}, kv_dtype={self.kv_dtype}, "
            f"codebook_size={self.layout.codebook_size}, num_classes={self.layout.num_classes})"
        )

    # ------------------------------------------------------------------------------------------- verbs
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
        self._prepare(batch, batch * length)
        logits = self._forward(
            ids.reshape(-1).numpy().astype(np.int32),
            np.tile(np.arange(length, dtype=np.int32), batch),
            np.repeat(np.arange(batch, dtype=np.int32), length),
            np.ones(batch * length, dtype=bool),
        )
        return torch.from_numpy(logits).view(batch, length, -1)

    def iter_code_groups(
        self,
        class_labels: torch.Tensor | Sequence[int] | int,
        num_tokens: int | None = None,
        tokens_per_step: int = 32,
        *,
        cfg_scale: float = 4.0,
        cfg_schedule: Literal["constant", "linear"] = "constant",
        cfg_scale_start: float = 1.0,
        cfg_interval: int = -1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        prefix_codes: torch.Tensor | None = None,
        logits_callback: LogitsCallback | None = None,
    ) -> Iterator[torch.Tensor]:
        """Sample codes and yield them group by group, each as soon as its last code has been sampled.

        Same arguments and meaning as :func:`llama_ar.iter_code_groups` (without its ``model``, ``cache`` and
        ``fast_linear``); validated when called. ``num_tokens=None`` uses :attr:`num_tokens` from the GGUF.

        Args:
            class_labels: (B,) integer class indices in ``[0, num_classes)`` (tensor, list or int).
            num_tokens: Codes per image N ≤ :attr:`capacity`, a multiple of ``tokens_per_step``.
            tokens_per_step: Codes per yielded group.
            cfg_scale: Guidance scale (constant) or the end of the linear ramp; ``1`` with a constant schedule
                runs B rows only.
            cfg_schedule: ``"constant"`` or ``"linear"`` (``linspace(cfg_scale_start, cfg_scale, N)[k]``).
            cfg_scale_start: Scale at code 0 for the linear schedule.
            cfg_interval: −1 (off) or j ≥ 0: codes with index > j use the conditional logits unguided.
            temperature: Softmax temperature > 0.
            top_k: Keep the k most likely codes (0 = off; 1 = greedy).
            top_p: Nucleus threshold in (0, 1] (1 = off).
            generator: CPU ``torch.Generator`` for ``torch.multinomial``.
            prefix_codes: Optional (P,) or (B, P) int64 codes, P < N, forced as the first P codes.
            logits_callback: Optional ``f(k, logits)`` with the (B, codebook_size) fp32 guided logits of code k.

        Yields:
            (B, tokens_per_step) int64 CPU code groups in order.
        """
        from .sampling import _build_warpers, _prepare_prefix, cfg_scales

        if self._model is None:
            raise RuntimeError("this LlamaCppPrior is closed; create a new one.")
        num_tokens = self.num_tokens if num_tokens is None else num_tokens
        for name, value in (("num_tokens", num_tokens), ("tokens_per_step", tokens_per_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        if num_tokens % tokens_per_step:
            raise ValueError(
                f"num_tokens={num_tokens} is not a multiple of tokens_per_step={tokens_per_step}; "
                "use the tokenizer's num_tokens and tokens_per_step."
            )
        if num_tokens > self.capacity:
            raise ValueError(
                f"num_tokens={num_tokens} exceeds the model's capacity of {self.capacity} codes; sample fewer codes."
            )
        if isinstance(cfg_interval, bool) or not isinstance(cfg_interval, int) or cfg_interval < -1:
            raise ValueError(f"cfg_interval must be -1 (off) or a code index ≥ 0, got {cfg_interval!r}.")
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(f"generator is on {generator.device}; llama.cpp's logits are on the CPU.")
        warpers = _build_warpers(temperature, top_k, top_p)
        schedule = cfg_scales(num_tokens, cfg_scale, cfg_schedule, cfg_scale_start)
        guided = bool((schedule != 1.0).any())
        class_tokens = self.layout.class_tokens(class_labels)
        prefix = _prepare_prefix(prefix_codes, self.layout, class_tokens.shape[0], num_tokens, "cpu")
        self._threads()  # validate now, not at the first next()
        return self._decode(
            class_tokens,
            prefix,
            num_tokens,
            tokens_per_step,
            schedule.tolist() if guided else None,
            cfg_interval,
            warpers,
            generator,
            logits_callback,
        )

    def sample_codes(
        self,
        class_labels: torch.Tensor | Sequence[int] | int,
        num_tokens: int | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """All codes at once; same keyword arguments as :meth:`iter_code_groups`.

        Returns:
            (B, num_tokens) int64 CPU codes in ``[0, codebook_size)``; the first P equal ``prefix_codes``.
        """
        num_tokens = self.num_tokens if num_tokens is None else num_tokens
        if "tokens_per_step" in kwargs:
            raise TypeError(
                "sample_codes returns all codes at once; use iter_code_groups for tokens_per_step."
            )
        return torch.cat(list(self.iter_code_groups(class_labels, num_tokens, num_tokens, **kwargs)), dim=1)

    def _decode(
        self,
        class_tokens: torch.Tensor,
        prefix: torch.Tensor,
        num_tokens: int,
        tokens_per_step: int,
        scales: list[float] | None,
        cfg_interval: int,
        warpers: list,
        generator: torch.Generator | None,
        logits_callback: LogitsCallback | None,
    ) -> Iterator[torch.Tensor]:
        batch, num_prefix = prefix.shape
        guided = scales is not None
        num_codes = self.layout.codebook_size
        codes = torch.empty(batch, num_tokens, dtype=torch.long)  # (B, N)
        codes[:, :num_prefix] = prefix

        # Prefill: row r = [first_r, prefix_r …] as sequence r at positions 0 … P; rows [cond ; null].
        first = torch.cat([class_tokens, self.layout.null_tokens(batch)]) if guided else class_tokens
        rows = first.shape[0]
        prompt = prefix.repeat(2, 1) if guided else prefix
        prompt_ids = torch.cat([first[:, None], prompt], dim=1).numpy().astype(np.int32)  # (rows, P + 1)
        length = num_prefix + 1
        self._prepare(rows, rows * length)
        outputs = np.zeros((rows, length), dtype=bool)
        outputs[:, -1] = True
        logits = self._forward(
            prompt_ids.reshape(-1),
            np.tile(np.arange(length, dtype=np.int32), rows),
            np.repeat(np.arange(rows, dtype=np.int32), length),
            outputs.reshape(-1),
        )
        for group in range(num_prefix // tokens_per_step):
            yield codes[:, group * tokens_per_step : (group + 1) * tokens_per_step].clone()

        sequences = np.arange(rows, dtype=np.int32)
        step_outputs = np.ones(rows, dtype=bool)
        for k in range(num_prefix, num_tokens):
            guide = guided and (cfg_interval < 0 or k <= cfg_interval)
            code_logits = torch.from_numpy(logits[:, :num_codes])  # (rows, K) fp32
            if guide:
                cond, uncond = code_logits[:batch], code_logits[batch : 2 * batch]
                code_logits = uncond + scales[k] * (cond - uncond)
            else:
                code_logits = code_logits[:batch]
            if logits_callback is not None:
                logits_callback(k, code_logits)
            for warper in warpers:
                code_logits = warper(None, code_logits)
            probs = torch.softmax(code_logits, dim=-1)
            next_codes = torch.multinomial(probs, 1, generator=generator)[:, 0]  # (B,)
            codes[:, k] = next_codes
            if (k + 1) % tokens_per_step == 0:
                yield codes[:, k + 1 - tokens_per_step : k + 1].clone()
            if k + 1 == num_tokens:
                break
            # the null rows are needed for code k + 1 only while it is guided
            active = rows if guided and (cfg_interval < 0 or k + 1 <= cfg_interval) else batch
            step = next_codes.numpy().astype(np.int32)
            logits = self._forward(
                np.tile(step, active // batch),
                np.full(active, k + 1, dtype=np.int32),
                sequences[:active],
                step_outputs[:active],
            )
