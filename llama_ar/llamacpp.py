"""Sampling the D-AR prior with llama.cpp: :class:`LlamaCppPrior`, the sampler of :mod:`llama_ar.sampling` on a GGUF.

:class:`LlamaCppPrior` (a :class:`llama_ar.llamacpp_model.LlamaCppModel`) offers ``sample_codes`` /
``iter_code_groups`` with the arguments and semantics of :func:`llama_ar.sample_codes` (D-AR §3.3–§3.4): class
labels, batched classifier-free guidance, the constant / linear CFG schedule of :func:`llama_ar.cfg_scales`,
``cfg_interval``, temperature / top-k / top-p, a ``torch.Generator``, prefix forcing and streaming of code groups.

llama.cpp runs the transformer: the B conditional rows ``[class id, codes …]`` and the B null rows
``[null id, codes …]`` are 2B sequences of ONE llama.cpp batch per step. Guidance, the warpers and the draw run
in torch on the (rows, codebook_size) fp32 code logits (the class / null ids are never candidates), with the same
``transformers`` warpers and ``torch.multinomial(generator=...)`` as :func:`llama_ar.sample_codes`: with an f32
GGUF (logits within ~1e-5 of transformers') both samplers returned the same codes in our tests, greedy and
sampled. After ``cfg_interval`` the null rows are no longer run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from .llamacpp_model import SERVE_EXTRA_HINT, LlamaCppModel
from .options import SamplingOptions

__all__ = ["SERVE_EXTRA_HINT", "LlamaCppModel", "LlamaCppPrior"]

LogitsCallback = Callable[[int, torch.Tensor], None]


class LlamaCppPrior(LlamaCppModel):
    """The D-AR sampler on llama.cpp; constructor arguments and attributes as :class:`LlamaCppModel`.

    Example::

        with LlamaCppPrior("demo-q8_0.gguf") as prior:
            for group in prior.iter_code_groups([3, 7], tokens_per_step=8, cfg_scale=4.0, generator=g):
                ...  # (2, 8) int64 codes, as soon as they exist
    """

    def iter_code_groups(
        self,
        class_labels: torch.Tensor | Sequence[int] | int,
        num_tokens: int | None = None,
        tokens_per_step: int = 32,
        *,
        options: SamplingOptions | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        prefix_codes: torch.Tensor | None = None,
        logits_callback: LogitsCallback | None = None,
        **option_fields,
    ) -> Iterator[torch.Tensor]:
        """Sample codes and yield them group by group, each as soon as its last code has been sampled.

        Same arguments and meaning as :func:`llama_ar.iter_code_groups` (without its ``model``); validated when
        called. ``num_tokens=None`` uses :attr:`num_tokens` from the GGUF. The ``cache`` and ``fast_linear``
        options concern the transformers sampler and are ignored here.

        Args:
            class_labels: (B,) integer class indices in ``[0, num_classes)`` (tensor, list or int).
            num_tokens: Codes per image N ≤ :attr:`capacity`, a multiple of ``tokens_per_step``.
            tokens_per_step: Codes per yielded group.
            options: a :class:`llama_ar.SamplingOptions`; ``option_fields`` (``cfg_scale=``, ``top_k=``, …)
                override its fields.
            generator: CPU ``torch.Generator`` (or a list of B of them) for ``torch.multinomial``.
            prefix_codes: Optional (P,) or (B, P) int64 codes, P < N, forced as the first P codes.
            logits_callback: Optional ``f(k, logits)`` with the (B, codebook_size) fp32 guided logits of code k.

        Yields:
            (B, tokens_per_step) int64 CPU code groups in order.
        """
        from .sampling import _check_generator, _prepare_prefix

        options = SamplingOptions.build(options, **option_fields)
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
        class_tokens = self.layout.class_tokens(class_labels)
        _check_generator(
            generator, class_tokens.shape[0], torch.device("cpu")
        )  # llama.cpp's logits are on the CPU
        schedule = options.scales(num_tokens)
        guided = bool((schedule != 1.0).any())
        prefix = _prepare_prefix(prefix_codes, self.layout, class_tokens.shape[0], num_tokens, "cpu")
        self.threads()  # validate now, not at the first next()
        return self._decode(
            class_tokens,
            prefix,
            num_tokens,
            tokens_per_step,
            schedule.tolist() if guided else None,
            options,
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
        options: SamplingOptions,
        generator,
        logits_callback: LogitsCallback | None,
    ) -> Iterator[torch.Tensor]:
        from .sampling import _draw

        cfg_interval, warpers = options.cfg_interval, options.warpers()
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
        self.prepare(rows, rows * length, max_outputs=rows)
        outputs = np.zeros((rows, length), dtype=bool)
        outputs[:, -1] = True
        logits = self.forward(
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
            next_codes = _draw(torch.softmax(code_logits, dim=-1), generator, k, options)[:, 0]  # (B,)
            codes[:, k] = next_codes
            if (k + 1) % tokens_per_step == 0:
                yield codes[:, k + 1 - tokens_per_step : k + 1].clone()
            if k + 1 == num_tokens:
                break
            # the null rows are needed for code k + 1 only while it is guided
            active = rows if guided and (cfg_interval < 0 or k + 1 <= cfg_interval) else batch
            step = next_codes.numpy().astype(np.int32)
            logits = self.forward(
                np.tile(step, active // batch),
                np.full(active, k + 1, dtype=np.int32),
                sequences[:active],
                step_outputs[:active],
            )
