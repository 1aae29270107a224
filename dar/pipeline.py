"""DARPipeline: class-conditional image generation with D-AR, offline or streamed (paper §3.3, Fig. 1).

The pipeline composes the two models and owns no maths:

- ``ar_model`` (a stock ``transformers.LlamaForCausalLM``) samples the code sequence group by group through
  :func:`llama_ar.iter_code_groups`;
- ``tokenizer`` (:class:`tokenizer.DARTokenizer`) turns code group *k* into denoising step *k* of its
  pixel-space flow-matching decoder.

``pipe(...)`` samples every code first and then decodes (the official order). ``pipe.stream(...)`` interleaves:
group *k* is sampled, decoder step *k* runs at once and a :class:`StreamStep` with the current clean-image
estimate is yielded before group *k + 1* is sampled. Both draw the decoder's initial noise from ``generator``
before any code is sampled, so for the same generator the last streamed image equals ``pipe(...)``'s image.

Loading: ``DARPipeline.from_pretrained(folder)`` loads both components strictly (every weight accounted for).
``diffusers.DiffusionPipeline.from_pretrained(folder, custom_pipeline="<path to dar/pipeline.py>",
trust_remote_code=True)`` works too, but loads the AR model through transformers' non-strict loader;
:func:`dar.loading.load_pipeline` also opens DART folders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from transformers import LlamaForCausalLM

from dar.engines import build_engine
from dar.inputs import GenerationRequest, check_generator, check_noise, int_in_range, reference_tensor
from dar.loading import check_model_index
from llama_ar import SamplingOptions, VocabLayout, iter_code_groups, load_ar_model
from tokenizer import DARTokenizer
from tokenizer.checkpoint import resolve_folder
from tokenizer.config import check_noise_scale

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt")
StepCallback = Callable[[Any, int, float, dict[str, torch.Tensor]], Any]

__all__ = ["DARPipeline", "StreamStep"]


@dataclass
class StreamStep:
    """One streamed denoising step.

    Attributes:
        index: decoder step / code group index k, 0-based.
        t: flow time at which the velocity of this step was evaluated (0 = noise, 1 = data).
        codes: (B, (k+1)·tokens_per_step) int64, every code sampled so far.
        preview: the image after step k in ``output_type`` format (values in [0, 1]): the clean-image estimate
            x̂ = x + (1 − t)·v of this step, and on the last step the decoded image itself.
        sample: the decoder state after step k, a (B, 3, H, W) float tensor in image units; after the last step
            this is the final image in [-1, 1] (unclamped).
    """

    index: int
    t: float
    codes: torch.Tensor
    preview: Any
    sample: torch.Tensor


class DARPipeline(DiffusionPipeline):
    """D-AR class-conditional generation: ``pipe(class_labels)`` and ``pipe.stream(class_labels)``.

    Args:
        tokenizer: the sequential diffusion tokenizer (codes → pixels).
        ar_model: a stock ``LlamaForCausalLM`` whose config carries the vocabulary layout (and class names).
        engine: what samples the codes: None / ``"transformers"`` (``ar_model`` itself), ``"llamacpp"`` (an f32
            GGUF of it, through llama.cpp; the ``serve`` extra) or a ``llama_ar.LlamaCppPrior`` (see
            :mod:`dar.engines`). llama.cpp needs CPU generators.

    ``enable_model_cpu_offload()`` works: the tokenizer's verbs carry ``apply_forward_hook`` and the AR model is
    called through its ``forward``, so each model is moved to the accelerator when it runs.
    """

    model_cpu_offload_seq = "ar_model->tokenizer"

    def __init__(self, tokenizer: DARTokenizer, ar_model: LlamaForCausalLM, engine: Any = None):
        super().__init__()
        layout = VocabLayout.from_config(ar_model.config)
        if layout.codebook_size != tokenizer.config.codebook_size:
            raise ValueError(
                f"The AR model predicts {layout.codebook_size} codes but the tokenizer's codebook has "
                f"{tokenizer.config.codebook_size} entries: pair models trained together."
            )
        if layout.codebook_size and ar_model.config.max_position_embeddings - 1 < tokenizer.config.num_tokens:
            raise ValueError(
                f"the AR model holds {ar_model.config.max_position_embeddings - 1} codes but the tokenizer uses "
                f"{tokenizer.config.num_tokens}: pair models trained together."
            )
        SamplingOptions.defaults_from(getattr(ar_model, "generation_config", None))  # refuse bad defaults now
        self.register_modules(tokenizer=tokenizer, ar_model=ar_model)
        self.engine = build_engine(engine, ar_model, tokenizer.config.codebook_size)  # None: ar_model samples

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        torch_dtype: torch.dtype | None = None,
        engine: Any = None,
        **hub: Any,
    ) -> DARPipeline:
        """Load a pipeline folder (``model_index.json``, ``tokenizer/``, ``ar_model/``) strictly.

        Args:
            pretrained_model_name_or_path: a folder written by ``save_pretrained``, or a Hub id ``owner/name``.
            torch_dtype: dtype of both models (default: as saved, float32).
            engine: what samples the codes (see :class:`DARPipeline`).
            **hub: ``revision``, ``cache_dir``, ``local_files_only``, ``token`` (Hub ids only).

        Raises:
            FileNotFoundError: no such folder (a local-looking path is never looked up on the Hub).
            ValueError: a folder of another pipeline, damaged files, or weights that do not fit their config.
        """
        folder = resolve_folder(pretrained_model_name_or_path, "pipeline", **hub)
        check_model_index(folder, cls.__name__)
        tokenizer = DARTokenizer.from_pretrained(folder / "tokenizer", torch_dtype=torch_dtype)
        ar_model = load_ar_model(folder / "ar_model", torch_dtype=torch_dtype)
        return cls(tokenizer=tokenizer, ar_model=ar_model, engine=engine)

    # ------------------------------------------------------------------ labels
    @property
    def vocab_layout(self) -> VocabLayout:
        """The AR model's token-id layout (codes, classes, null class)."""
        return VocabLayout.from_config(self.ar_model.config)

    @property
    def num_classes(self) -> int:
        return self.vocab_layout.num_classes

    @property
    def id2label(self) -> dict[int, str]:
        """Class index → name, as stored with the AR model (empty when the model carries no names)."""
        return dict(self.vocab_layout.id2label or {})

    def get_label_ids(self, labels: str | Sequence[str]) -> list[int]:
        """Map class names (case-insensitive, any comma-separated synonym) to class indices.

        Raises:
            ValueError: for a name the pipeline does not know; the message lists the known names.
        """
        return self.vocab_layout.label_ids(labels)

    def check_class_labels(self, class_labels: Any) -> torch.Tensor:
        """Class ids or names → a (B,) int64 tensor of validated class ids (on the CPU)."""
        return self.vocab_layout.class_ids(class_labels, device="cpu")

    @property
    def sampling_defaults(self) -> dict[str, Any]:
        """``temperature`` / ``top_k`` / ``top_p`` of ``ar_model.generation_config`` (also plain ``generate``'s)."""
        return SamplingOptions.defaults_from(getattr(self.ar_model, "generation_config", None))

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def __call__(
        self,
        class_labels: Any,
        *,
        options: SamplingOptions | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        noise_scale: float | None = None,
        layout: Any = None,
        layout_tokens: int | None = None,
        num_images_per_prompt: int = 1,
        batch_size: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        guidance_scale: float | None = None,
        **option_fields: Any,
    ):
        """Sample every code, then decode: the official (offline) order.

        Args:
            class_labels: class ids (ints, numpy ints, a list or a 1-D int tensor) or class names.
            options: a :class:`llama_ar.SamplingOptions` (None: :attr:`sampling_defaults`), or as keywords:
                ``cfg_scale`` (4.0; 1 disables guidance), ``cfg_schedule`` ("constant" or "linear"),
                ``cfg_scale_start``, ``cfg_interval``, ``temperature``, ``top_k``, ``top_p``, ``cache``,
                ``fast_linear``. The paper's FIDs use linear 1.1→8.0 (D-AR-L) / 1.1→10.0 (D-AR-XL).
            num_inference_steps: decoder steps = code groups sampled (default: all); fewer groups give the
                paper's partial-token images (Table 5).
            generator: one ``torch.Generator`` for the decoder noise and the AR sampling (consumed batch after
                batch), or a list of one generator per image (each image then independent of the batching).
            noise: optional (B, 3, H, W) initial decoder noise instead of drawing it.
            noise_scale: standard deviation of the drawn decoder noise (default: the tokenizer's
                ``config.noise_scale``, 1 for the paper's tokenizers; the shipped demo's is in its config.json).
                Below 1 trades diversity for fidelity to the codes. Not allowed together with ``noise``.
            layout: reference images (B|1, 3, H, W) float in [-1, 1], uint8, PIL images) or codes (B|1, N) for
                layout control (paper Fig. 6).
            layout_tokens: how many leading reference codes to force (paper Fig. 6 uses 8–32).
            num_images_per_prompt: images per class label (labels repeated, diffusers' convention).
            batch_size: images per AR + decoder batch (None: all at once); bounds memory for long label lists.
            output_type: "pil", "np" ((B, H, W, 3) float in [0, 1]) or "pt" ((B, 3, H, W) in [0, 1]).
            return_dict: return an ``ImagePipelineOutput`` (default) or a tuple.
            callback_on_step_end: ``f(pipe, step, t, {"latents": decoder state, "codes": codes})`` after every
                decoder step (read-only: its return value is ignored).
            guidance_scale: diffusers' name for ``cfg_scale``.

        Returns:
            ``ImagePipelineOutput`` with ``images``, or a tuple ``(images,)`` when ``return_dict=False``.

        Examples:
            >>> pipe = DARPipeline.from_pretrained("checkpoints/dar-animals")
            >>> images = pipe(["cat", "zebra"], cfg_scale=4.0, generator=torch.Generator().manual_seed(0)).images
        """
        request = self._prepare(**_verb_arguments(locals()))
        size = request.batch if batch_size is None else int_in_range("batch_size", batch_size, 1)
        images = []
        with self.progress_bar(total=request.num_groups * -(-request.batch // size)) as bar:
            for part in request.split(size):
                x0 = self._initial_noise(part)  # first, so __call__ and stream use the generator alike
                groups = []
                for group in self._code_groups(part):
                    groups.append(group)
                    bar.update(1)
                codes = torch.cat(groups, dim=1)
                for step in self.tokenizer.stream(codes, noise=x0):
                    if callback_on_step_end is not None:
                        callback_on_step_end(
                            self, step.index, step.t, {"latents": step.sample, "codes": codes}
                        )
                images.append(step.sample)
        result = self._postprocess(torch.cat(images), output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=result) if return_dict else (result,)

    def stream(
        self,
        class_labels: Any,
        *,
        options: SamplingOptions | None = None,
        num_inference_steps: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        noise: torch.Tensor | None = None,
        noise_scale: float | None = None,
        layout: Any = None,
        layout_tokens: int | None = None,
        num_images_per_prompt: int = 1,
        output_type: str = "pil",
        guidance_scale: float | None = None,
        **option_fields: Any,
    ) -> Iterator[StreamStep]:
        """Interleave AR sampling and decoding: yield a preview after every code group.

        Same arguments as ``__call__`` (one batch: no ``batch_size``). Decoder step k runs as soon as code group
        k exists and before group k + 1 is sampled, so the first preview exists after ``tokens_per_step`` codes.
        The last step's ``preview`` equals ``pipe(...)``'s image for the same generator (or noise).

        Yields:
            :class:`StreamStep`, one per code group.
        """
        request = self._prepare(**_verb_arguments(locals()))
        return self._stream(request)

    def _initial_noise(self, request: GenerationRequest) -> torch.Tensor:
        if request.noise is not None:
            return request.noise
        return self.tokenizer.initial_noise(request.batch, request.generator, scale=request.noise_scale)

    def _code_groups(self, request: GenerationRequest) -> Iterator[torch.Tensor]:
        if self.engine is not None:  # llama.cpp: CPU in and out; the tokenizer moves each group to its device
            prefix = None if request.prefix is None else request.prefix.cpu()
            return self.engine.iter_code_groups(
                request.labels.cpu(),
                request.num_tokens,
                request.tokens_per_step,
                options=request.options,
                generator=request.generator,
                prefix_codes=prefix,
            )
        return iter_code_groups(
            self.ar_model,
            request.labels,
            request.num_tokens,
            request.tokens_per_step,
            options=request.options,
            generator=request.generator,
            prefix_codes=request.prefix,
        )

    def _stream(self, request: GenerationRequest) -> Iterator[StreamStep]:
        x0 = self._initial_noise(request)
        steps = self.tokenizer.stream(self._code_groups(request), noise=x0, num_groups=request.num_groups)
        with self.progress_bar(total=request.num_groups) as bar:
            while True:
                with torch.inference_mode():  # only around each step: never leaks into the caller's code
                    step = next(steps, None)
                if step is None:
                    break
                bar.update(1)
                last = step.index == request.num_groups - 1
                image = step.sample if last else step.preview
                yield StreamStep(
                    index=step.index,
                    t=float(step.t),
                    codes=step.codes,
                    preview=self._postprocess(image, request.output_type),
                    sample=step.sample,
                )
        self.maybe_free_model_hooks()

    # ------------------------------------------------------------------ inputs
    def _prepare(
        self,
        class_labels,
        *,
        options,
        num_inference_steps,
        generator,
        noise,
        noise_scale,
        layout,
        layout_tokens,
        num_images_per_prompt,
        output_type,
        guidance_scale,
        **option_fields,
    ) -> GenerationRequest:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if guidance_scale is not None:
            if option_fields.get("cfg_scale", guidance_scale) != guidance_scale:
                raise ValueError("pass cfg_scale or guidance_scale (its diffusers name), not both")
            option_fields["cfg_scale"] = guidance_scale
        if options is None:  # the checkpoint's defaults (generation_config.json), then the caller's keywords
            option_fields = self.sampling_defaults | option_fields
        options = SamplingOptions.build(options, **option_fields)
        repeat = int_in_range("num_images_per_prompt", num_images_per_prompt, 1)
        labels = self.check_class_labels(class_labels).repeat_interleave(repeat)
        cfg = self.tokenizer.config
        num_groups = int_in_range(
            "num_inference_steps (code groups = decoder steps)",
            cfg.num_steps if num_inference_steps is None else num_inference_steps,
            1,
            cfg.num_steps,
        )
        check_generator(generator, len(labels), "cpu" if self.engine is not None else self._execution_device)
        noise = check_noise(noise, (len(labels), 3, cfg.image_size, cfg.image_size))
        if noise_scale is not None:
            if noise is not None:
                raise ValueError("pass noise or noise_scale, not both: noise is used as given")
            noise_scale = check_noise_scale(noise_scale)
        return GenerationRequest(
            labels=labels.to(self._execution_device),
            options=options,
            num_groups=num_groups,
            num_tokens=num_groups * cfg.tokens_per_step,
            tokens_per_step=cfg.tokens_per_step,
            prefix=self._prefix_codes(layout, layout_tokens, len(labels), num_groups * cfg.tokens_per_step),
            noise=None if noise is None else noise.to(self._execution_device, self.tokenizer.dtype),
            generator=generator,
            output_type=output_type,
            noise_scale=noise_scale,
        )

    def _prefix_codes(self, layout: Any, layout_tokens: int | None, batch: int, num_tokens: int):
        if layout is None:
            if layout_tokens is not None:
                raise ValueError(
                    "layout_tokens was given without layout: pass the reference images or codes."
                )
            return None
        if layout_tokens is None:
            raise ValueError("layout needs layout_tokens=P, the number of reference codes to keep (e.g. 16).")
        layout_tokens = int_in_range("layout_tokens", layout_tokens, 1, num_tokens - 1)
        reference = reference_tensor(layout).to(self._execution_device)
        codes = (
            self.tokenizer.encode(reference.to(self.tokenizer.dtype)) if reference.ndim == 4 else reference
        )
        if codes.shape[1] < layout_tokens:
            raise ValueError(f"layout has {codes.shape[1]} codes, fewer than layout_tokens={layout_tokens}.")
        if codes.shape[0] not in (1, batch):
            raise ValueError(f"layout has {codes.shape[0]} references for {batch} images: pass 1 or {batch}.")
        return codes[:, :layout_tokens].expand(batch, -1).contiguous()

    def _postprocess(self, images: torch.Tensor, output_type: str):
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).cpu().numpy()
        return self.numpy_to_pil(array) if output_type == "pil" else array


def _verb_arguments(verb_locals: dict[str, Any]) -> dict[str, Any]:
    """The arguments of a generation verb that ``_prepare`` validates: its locals minus the verb's own."""
    own = ("self", "batch_size", "return_dict", "callback_on_step_end", "option_fields")
    return {**{k: v for k, v in verb_locals.items() if k not in own}, **verb_locals["option_fields"]}
