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
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from transformers import LlamaForCausalLM

from llama_ar import VocabLayout, iter_code_groups
from tokenizer import DARTokenizer

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class StreamStep:
    """One streamed denoising step.

    Attributes:
        index: decoder step / code group index k, 0-based.
        t: flow time at which the velocity of this step was evaluated (0 = noise, 1 = data).
        codes: (B, (k+1)·tokens_per_step) int64, every code sampled so far.
        preview: the clean-image estimate after step k, in ``output_type`` format (values in [0, 1]).
        sample: the decoder state after step k, as a (B, 3, H, W) float tensor in image units; after the last
            step this is the final image in [-1, 1] (unclamped).
        ar_seconds: wall time the AR model spent on this group.
        decode_seconds: wall time of this decoder step.
        elapsed: wall time since the call started, when the step was yielded.
    """

    index: int
    t: float
    codes: torch.Tensor
    preview: object
    sample: torch.Tensor
    ar_seconds: float
    decode_seconds: float
    elapsed: float


class DARPipeline(DiffusionPipeline):
    """D-AR class-conditional generation: ``pipe(class_labels)`` and ``pipe.stream(class_labels)``.

    Args:
        tokenizer: the sequential diffusion tokenizer (codes → pixels).
        ar_model: a stock ``LlamaForCausalLM`` whose config carries the vocabulary layout (and class names).
    """

    model_cpu_offload_seq = "ar_model->tokenizer"

    def __init__(self, tokenizer: DARTokenizer, ar_model: LlamaForCausalLM):
        super().__init__()
        layout = VocabLayout.from_config(ar_model.config)
        if layout.codebook_size != tokenizer.config.codebook_size:
            raise ValueError(
                f"The AR model predicts {layout.codebook_size} codes but the tokenizer's codebook has "
                f"{tokenizer.config.codebook_size} entries: pair models trained together."
            )
        self.register_modules(tokenizer=tokenizer, ar_model=ar_model)

    # ------------------------------------------------------------------ labels
    @property
    def layout(self) -> VocabLayout:
        return VocabLayout.from_config(self.ar_model.config)

    @property
    def id2label(self) -> dict[int, str]:
        """Class index → name, as stored with the AR model (empty when the model carries no names)."""
        return dict(self.layout.id2label or {})

    def get_label_ids(self, labels: str | Sequence[str]) -> list[int]:
        """Map class names (case-insensitive, any comma-separated synonym) to class indices.

        Raises:
            ValueError: for a name the pipeline does not know; the message lists the known names.
        """
        if isinstance(labels, str):
            labels = [labels]
        lookup = {}
        for idx, name in self.id2label.items():
            for synonym in str(name).split(","):
                lookup.setdefault(synonym.strip().lower(), int(idx))
        ids = []
        for label in labels:
            key = str(label).strip().lower()
            if key not in lookup:
                known = ", ".join(sorted(self.id2label.values())) or "none: this model stores no class names"
                raise ValueError(f"Unknown class name {label!r}. Known names: {known}. Or pass integer ids.")
            ids.append(lookup[key])
        return ids

    def _class_labels(self, class_labels) -> torch.Tensor:
        if isinstance(class_labels, (int, str)):
            class_labels = [class_labels]
        if isinstance(class_labels, torch.Tensor):
            labels = class_labels
        else:
            class_labels = list(class_labels)
            if not class_labels:
                raise ValueError("class_labels is empty: pass at least one class id or name.")
            if any(isinstance(c, str) for c in class_labels):
                class_labels = [self.get_label_ids(c)[0] if isinstance(c, str) else c for c in class_labels]
            labels = torch.as_tensor(class_labels)
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise ValueError(f"class_labels must be integer class ids or names, got dtype {labels.dtype}.")
        labels = labels.reshape(-1).long()
        num_classes = self.layout.num_classes
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.numel():
            raise ValueError(
                f"Class id(s) {bad.tolist()} out of range: this model knows classes 0..{num_classes - 1}."
            )
        return labels.to(self.device)

    # ------------------------------------------------------------------ inputs
    def _num_groups(self, num_inference_steps: int | None) -> int:
        num_steps = self.tokenizer.config.num_steps
        if num_inference_steps is None:
            return num_steps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= num_steps:
            raise ValueError(
                f"num_inference_steps must be an int in [1, {num_steps}] (one code group per decoder step), "
                f"got {num_inference_steps!r}."
            )
        return num_inference_steps

    def _prefix_codes(self, layout, layout_tokens: int | None, batch_size: int, num_tokens: int):
        if layout is None:
            if layout_tokens is not None:
                raise ValueError(
                    "layout_tokens was given without layout: pass the reference images or codes."
                )
            return None
        if layout_tokens is None:
            raise ValueError("layout needs layout_tokens=P, the number of reference codes to keep (e.g. 16).")
        if not isinstance(layout_tokens, int) or not 1 <= layout_tokens < num_tokens:
            raise ValueError(f"layout_tokens must be an int in [1, {num_tokens - 1}], got {layout_tokens!r}.")
        reference = torch.as_tensor(layout) if not isinstance(layout, torch.Tensor) else layout
        if reference.dtype.is_floating_point:
            codes = self.tokenizer.encode(reference.to(self.device, torch.float32))
        else:
            codes = reference.to(self.device).long()
            if codes.ndim == 1:
                codes = codes[None]
        if codes.shape[1] < layout_tokens:
            raise ValueError(f"layout has {codes.shape[1]} codes, fewer than layout_tokens={layout_tokens}.")
        if codes.shape[0] not in (1, batch_size):
            raise ValueError(
                f"layout has {codes.shape[0]} references for {batch_size} class labels: pass 1 or {batch_size}."
            )
        return codes[:, :layout_tokens].expand(batch_size, -1).contiguous()

    def _initial_noise(self, batch_size: int, generator, noise):
        size = self.tokenizer.config.image_size
        shape = (batch_size, 3, size, size)
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}.")
            return noise.to(self.device, torch.float32)
        return torch.randn(shape, generator=generator, device=self.device, dtype=torch.float32)

    def _postprocess(self, images: torch.Tensor, output_type: str):
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).cpu().numpy()
        return self.numpy_to_pil(array) if output_type == "pil" else array

    def _prepare(
        self,
        class_labels,
        num_inference_steps,
        generator,
        noise,
        layout,
        layout_tokens,
        output_type,
        **sampling,
    ):
        """Validate the call and return (labels, num_groups, initial noise, sampler kwargs)."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        labels = self._class_labels(class_labels)
        num_groups = self._num_groups(num_inference_steps)
        tokens_per_step = self.tokenizer.config.tokens_per_step
        num_tokens = num_groups * tokens_per_step
        prefix = self._prefix_codes(layout, layout_tokens, len(labels), num_tokens)
        # noise first, so the offline and streamed paths consume the generator in the same order
        x0 = self._initial_noise(len(labels), generator, noise)
        sampler_kwargs = dict(
            num_tokens=num_tokens,
            tokens_per_step=tokens_per_step,
            generator=generator,
            prefix_codes=prefix,
            **sampling,
        )
        return labels, num_groups, x0, sampler_kwargs

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def __call__(
        self,
        class_labels,
        *,
        cfg_scale: float = 4.0,
        cfg_schedule: str = "constant",
        cfg_scale_start: float = 1.0,
        cfg_interval: int = -1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        layout=None,
        layout_tokens: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """Sample every code, then decode: the official (offline) order.

        Args:
            class_labels: class ids (ints, a list or a 1-D int tensor) or class names.
            cfg_scale: guidance scale (the final scale of a linear schedule). 1 disables guidance.
            cfg_schedule: "constant", or "linear" from ``cfg_scale_start`` to ``cfg_scale`` over code positions
                (the paper's FIDs use linear 1.1→8.0 for D-AR-L, 1.1→10.0 for D-AR-XL).
            cfg_scale_start: first scale of the linear schedule.
            cfg_interval: code index after which guidance stops (-1: never).
            temperature: softmax temperature of AR sampling (paper: 1.0).
            top_k: keep the k most likely codes (0: off, the paper's setting).
            top_p: nucleus sampling mass (1.0: off, the paper's setting).
            num_inference_steps: decoder steps = code groups sampled (default: all); fewer groups give the
                paper's partial-token images (Table 5).
            generator: one ``torch.Generator`` for the decoder noise and the AR sampling.
            noise: optional (B, 3, H, W) initial decoder noise instead of drawing it.
            layout: reference images (B|1, 3, H, W) in [-1, 1] or codes (B|1, N) for layout control.
            layout_tokens: how many leading reference codes to force (paper Fig. 6 uses 8–32).
            output_type: "pil", "np" ((B, H, W, 3) float in [0, 1]) or "pt" ((B, 3, H, W) in [0, 1]).
            return_dict: return an ``ImagePipelineOutput`` (default) or a tuple.

        Returns:
            ``ImagePipelineOutput`` with ``images``, or a tuple ``(images,)`` when ``return_dict=False``.
        """
        labels, num_groups, x0, sampler_kwargs = self._prepare(
            class_labels,
            num_inference_steps,
            generator,
            noise,
            layout,
            layout_tokens,
            output_type,
            cfg_scale=cfg_scale,
            cfg_schedule=cfg_schedule,
            cfg_scale_start=cfg_scale_start,
            cfg_interval=cfg_interval,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )
        groups = []
        with self.progress_bar(total=num_groups) as bar:
            for group in iter_code_groups(self.ar_model, labels, **sampler_kwargs):
                groups.append(group)
                bar.update(1)
        codes = torch.cat(groups, dim=1)
        images = self.tokenizer.decode(codes, noise=x0)
        images = self._postprocess(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def stream(
        self,
        class_labels,
        *,
        cfg_scale: float = 4.0,
        cfg_schedule: str = "constant",
        cfg_scale_start: float = 1.0,
        cfg_interval: int = -1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        layout=None,
        layout_tokens: int | None = None,
        output_type: str = "pil",
    ) -> Iterator[StreamStep]:
        """Interleave AR sampling and decoding: yield a preview after every code group.

        Same arguments as ``__call__``. Decoder step k runs as soon as code group k exists and before group
        k + 1 is sampled, so the first preview exists after ``tokens_per_step`` codes. The last step's
        ``preview`` equals ``pipe(...)``'s image for the same generator (or noise).

        Yields:
            :class:`StreamStep`, one per code group.
        """
        labels, num_groups, x0, sampler_kwargs = self._prepare(
            class_labels,
            num_inference_steps,
            generator,
            noise,
            layout,
            layout_tokens,
            output_type,
            cfg_scale=cfg_scale,
            cfg_schedule=cfg_schedule,
            cfg_scale_start=cfg_scale_start,
            cfg_interval=cfg_interval,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
        )
        return self._stream(labels, num_groups, x0, sampler_kwargs, output_type)

    def _stream(self, labels, num_groups, x0, sampler_kwargs, output_type):
        start = time.perf_counter()
        ar_times: list[float] = []

        def timed_groups():
            groups = iter_code_groups(self.ar_model, labels, **sampler_kwargs)
            while True:
                tick = time.perf_counter()
                group = next(groups, None)
                if group is None:
                    return
                ar_times.append(time.perf_counter() - tick)
                yield group

        # inference mode only around each step, so it never leaks into the caller's code between yields
        with self.progress_bar(total=num_groups) as bar:
            steps = self.tokenizer.stream(timed_groups(), noise=x0, num_groups=num_groups)
            while True:
                tick = time.perf_counter()
                with torch.inference_mode():
                    step = next(steps, None)
                if step is None:
                    break
                # the tokenizer pulled group k (timed in ar_times) and then ran decoder step k
                decode_seconds = time.perf_counter() - tick - ar_times[step.index]
                last = step.index == num_groups - 1
                image = step.sample if last else step.preview
                bar.update(1)
                yield StreamStep(
                    index=step.index,
                    t=float(step.t),
                    codes=step.codes,
                    preview=self._postprocess(image, output_type),
                    sample=step.sample,
                    ar_seconds=ar_times[step.index],
                    decode_seconds=decode_seconds,
                    elapsed=time.perf_counter() - start,
                )

    def to_images(self, images: torch.Tensor, output_type: str = "pil"):
        """Convert (B, 3, H, W) images in [-1, 1] to ``output_type`` (helper for callers of ``stream``)."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        return self._postprocess(images, output_type)


def make_grid(images: np.ndarray, nrow: int) -> np.ndarray:
    """Tile (B, H, W, 3) images in [0, 1] into one (rows·H, nrow·W, 3) uint8 array, with a 2-px gutter."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"make_grid expects (B, H, W, 3) images, got shape {images.shape}.")
    batch, height, width, _ = images.shape
    nrow = max(1, min(nrow, batch))
    rows = -(-batch // nrow)
    pad = 2
    grid = np.ones((rows * (height + pad) + pad, nrow * (width + pad) + pad, 3), dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, nrow)
        y, x = pad + r * (height + pad), pad + c * (width + pad)
        grid[y : y + height, x : x + width] = image
    return (grid * 255).round().clip(0, 255).astype(np.uint8)
