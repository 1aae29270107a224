"""DARTPipeline: class-conditional generation with DART, offline or streamed one level at a time.

Same verbs and outputs as ``dar.DARPipeline``: ``pipe(class_labels, ...)`` → ``ImagePipelineOutput`` and
``pipe.stream(...)`` → one :class:`DARTStreamStep` per noise level with a preview of the final image. The
pipeline composes and owns no maths: :func:`dart.sampling.iter_levels` samples, the optional ``vae`` (a diffusers
``AutoencoderKL``, for models with ``space="latent"``) decodes x̂_0 latents to pixels. Both paths run the same
sampler, so for the same generator the last streamed preview equals ``pipe(...)``'s image; ``pipe(...)`` only
skips decoding the intermediate previews.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from dart.folders import check_pipeline_folder
from dart.model import DARTModel
from dart.sampling import LevelStep, iter_levels

__all__ = ["DARTPipeline", "DARTStreamStep"]

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class DARTStreamStep:
    """One streamed noise level.

    Attributes:
        index: sampling step 0 … T − 1 (0 = the pure-noise level T).
        level: noise level t = T − index whose x̂_0 this is.
        preview: the clean-image estimate after this level, in ``output_type`` format (values in [0, 1]); after
            the last level it is the final image.
        sample: the same estimate as a (B, 3, H, W) float tensor in [-1, 1].
        x0: the model-space estimate x̂_0 (pixels or latents), (B, C, S, S).
        cfg_scale: guidance scale used at this level.
    """

    index: int
    level: int
    preview: object
    sample: torch.Tensor
    x0: torch.Tensor
    cfg_scale: float


class DARTPipeline(DiffusionPipeline):
    """DART class-conditional generation: ``pipe(class_labels)`` and ``pipe.stream(class_labels)``.

    Args:
        transformer: the :class:`dart.DARTModel` (its config carries ``id2label``).
        vae: a diffusers ``AutoencoderKL`` for a latent-space model (``config.space == "latent"``); ``None`` for a
            pixel-space model. Its ``scaling_factor`` (and ``shift_factor``) come from its own config.
        default_cfg_scale: the guidance scale used when a call gives none (≥ 1; 1 turns guidance off). It is
            saved in ``model_index.json``, so a folder carries the scale its model was tuned for (the recipe
            exports ``sample.cfg_scale``).
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(self, transformer: DARTModel, vae=None, default_cfg_scale: float = 4.0):
        super().__init__()
        if not isinstance(transformer, DARTModel):
            raise TypeError(f"transformer must be a dart.DARTModel, got {type(transformer).__name__}.")
        if (
            isinstance(default_cfg_scale, bool)
            or not isinstance(default_cfg_scale, (int, float))
            or not math.isfinite(default_cfg_scale)
            or default_cfg_scale < 1
        ):
            raise ValueError(
                f"default_cfg_scale must be a finite number >= 1 (1 turns guidance off), got {default_cfg_scale!r}."
            )
        cfg = transformer.config
        if cfg.space == "latent":
            if vae is None:
                raise ValueError(
                    "this DART model denoises VAE latents (space='latent'): pass the AutoencoderKL it was "
                    "trained with as vae=."
                )
            vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
            if vae.config.latent_channels != cfg.in_channels or vae_factor != cfg.latent_factor:
                raise ValueError(
                    f"the VAE makes {vae.config.latent_channels}-channel latents downsampled {vae_factor}×, but the "
                    f"model expects in_channels={cfg.in_channels} and latent_factor={cfg.latent_factor}: pair the "
                    "model with the VAE it was trained with."
                )
        elif vae is not None:
            raise ValueError(
                "this DART model works in pixel space (space='pixel'): build the pipeline without a vae."
            )
        self.register_modules(transformer=transformer, vae=vae)
        self.register_to_config(default_cfg_scale=float(default_cfg_scale))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loader, after checking a folder (a DARTPipeline, intact weights). A missing path goes to the
        Hub only as an id ``owner/name`` whose ``owner`` is no local folder; else ``FileNotFoundError``."""
        folder = check_pipeline_folder(pretrained_model_name_or_path, cls.__name__)
        if isinstance(folder, Path):
            return super().from_pretrained(folder, **kwargs)
        try:
            return super().from_pretrained(folder, **kwargs)
        except OSError as error:  # not cached while offline, unknown repo, network
            raise FileNotFoundError(
                f"{folder} is not a local folder and could not be loaded from the Hugging Face Hub "
                f"({type(error).__name__}): check the id, the network and HF_HUB_OFFLINE, or pass a local folder"
            ) from None

    # ------------------------------------------------------------------ labels

    @property
    def num_classes(self) -> int:
        return self.transformer.config.num_classes

    @property
    def id2label(self) -> dict[int, str]:
        """Class index → name, as stored in the model config (empty when it stores none)."""
        return dict(self.transformer.config.id2label or {})

    def get_label_ids(self, labels: str | Sequence[str]) -> list[int]:
        """Map class names (case-insensitive, any comma-separated synonym) to class indices.

        Raises:
            ValueError: for a name the model does not know; the message lists the known names.
        """
        if isinstance(labels, str):
            labels = [labels]
        lookup: dict[str, int] = {}
        for idx, name in self.id2label.items():
            for synonym in str(name).split(","):
                lookup.setdefault(synonym.strip().lower(), int(idx))
        ids = []
        for label in labels:
            key = str(label).strip().lower()
            if key not in lookup:
                known = ", ".join(self.id2label.values()) or "none: this model stores no class names"
                raise ValueError(f"unknown class name {label!r}. Known names: {known}. Or pass integer ids.")
            ids.append(lookup[key])
        return ids

    def check_class_labels(self, class_labels) -> torch.Tensor:
        """Class ids or names → a (B,) int64 tensor of validated class ids (on the CPU)."""
        return self._class_labels(class_labels, 1).cpu()

    def _class_labels(self, class_labels, num_images_per_prompt: int) -> torch.Tensor:
        if isinstance(class_labels, (numbers.Integral, str)):
            class_labels = [class_labels]
        if isinstance(class_labels, np.ndarray):
            class_labels = torch.from_numpy(class_labels)
        if not isinstance(class_labels, torch.Tensor):
            class_labels = list(class_labels)
            if not class_labels:
                raise ValueError("class_labels is empty: pass at least one class id or name.")
            class_labels = [self.get_label_ids(c)[0] if isinstance(c, str) else c for c in class_labels]
        labels = self.transformer.check_labels(class_labels, allow_null=False)
        if (
            isinstance(num_images_per_prompt, bool)
            or not isinstance(num_images_per_prompt, int)
            or num_images_per_prompt < 1
        ):
            raise ValueError(f"num_images_per_prompt must be a positive int, got {num_images_per_prompt!r}.")
        return labels.repeat_interleave(num_images_per_prompt).to(self._execution_device)

    # ------------------------------------------------------------------ latents <-> images

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images → model-space samples for :meth:`DARTModel.training_losses`.

        Args:
            images: (B, 3, H, W) float in [-1, 1].
            generator: draws from the VAE posterior (latent space).

        Returns:
            Pixel space: the images (averaged to grey for a 1-channel model). Latent space:
            (latent_dist.sample() − shift_factor) · scaling_factor.
        """
        cfg = self.transformer.config
        if self.vae is None:
            x = images.mean(dim=1, keepdim=True) if cfg.in_channels == 1 and images.shape[1] == 3 else images
            return self.transformer.check_samples(x)
        latents = self.vae.encode(images.to(self.vae.device, self.vae.dtype)).latent_dist.sample(generator)
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (latents - shift) * self.vae.config.scaling_factor

    def decode_samples(self, x0: torch.Tensor) -> torch.Tensor:
        """Model-space samples → (B, 3, H, W) float images clamped to [-1, 1]."""
        if self.vae is None:
            images = x0.expand(-1, 3, -1, -1) if x0.shape[1] == 1 else x0
        else:
            shift = getattr(self.vae.config, "shift_factor", None) or 0.0
            latents = x0.to(self.vae.dtype) / self.vae.config.scaling_factor + shift
            images = self.vae.decode(latents).sample
        return images.float().clamp(-1, 1)

    def to_images(self, images: torch.Tensor, output_type: str = "pil"):
        """(B, 3, H, W) images in [-1, 1] → ``output_type`` ("pil", "np" (B, H, W, 3) or "pt" (B, 3, H, W), in [0, 1])."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        array = images.permute(0, 2, 3, 1).cpu().numpy()
        return self.numpy_to_pil(array) if output_type == "pil" else array

    # ------------------------------------------------------------------ generation

    def _levels(
        self,
        class_labels,
        output_type: str,
        num_images_per_prompt: int,
        cfg_scale: float | None,
        guidance_scale: float | None,
        **sampler_kwargs,
    ) -> Iterator[LevelStep]:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if guidance_scale is not None and cfg_scale is not None and float(guidance_scale) != float(cfg_scale):
            raise ValueError(
                f"cfg_scale={cfg_scale} and guidance_scale={guidance_scale} disagree; guidance_scale is the "
                "diffusers alias of cfg_scale, pass one of them."
            )
        scale = next((s for s in (cfg_scale, guidance_scale) if s is not None), self.config.default_cfg_scale)
        labels = self._class_labels(class_labels, num_images_per_prompt)
        hook = getattr(self.transformer, "_hf_hook", None)
        if hook is not None and hasattr(hook, "pre_forward"):
            hook.pre_forward(self.transformer)  # model CPU offload: the sampler does not call forward()
        return iter_levels(self.transformer, labels, cfg_scale=scale, **sampler_kwargs)

    def __call__(
        self,
        class_labels,
        *,
        cfg_scale: float | None = None,
        cfg_schedule: str = "constant",
        cfg_scale_start: float = 1.0,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        num_images_per_prompt: int = 1,
        batch_size: int | None = None,
        use_cache: bool = True,
        **unknown,
    ):
        """Sample images.

        Args:
            class_labels: class ids (int, list or 1-D int tensor) or class names.
            cfg_scale: guidance scale on x̂_0 (default: the pipeline's ``default_cfg_scale``; the last level's
                scale of a linear schedule); 1 turns guidance off.
            cfg_schedule: "constant", or "linear" from ``cfg_scale_start`` (noisiest level) to ``cfg_scale``.
            cfg_scale_start: first scale of the linear schedule.
            guidance_scale: diffusers' name for ``cfg_scale`` (pass one of the two).
            generator: one ``torch.Generator`` for all the sampler's noise.
            noise: optional (B·num_images_per_prompt, C, S, S) starting level x_T in model space.
            output_type: "pil", "np" ((B, H, W, 3) float in [0, 1]) or "pt" ((B, 3, H, W) in [0, 1]).
            return_dict: return an ``ImagePipelineOutput`` (default) or a tuple ``(images,)``.
            num_images_per_prompt: images per class label (labels are repeated in place).
            batch_size: images per sampler batch (None: all at once); one generator runs through the batches.
            use_cache: KV-cached sampling (default) or the uncached reference path.

        Returns:
            ``ImagePipelineOutput`` with ``images``, or ``(images,)``.
        """
        _refuse_options(unknown)
        if batch_size is not None:
            labels = self._class_labels(class_labels, num_images_per_prompt)
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
            parts = [
                self(
                    labels[i : i + batch_size],
                    cfg_scale=cfg_scale,
                    cfg_schedule=cfg_schedule,
                    cfg_scale_start=cfg_scale_start,
                    guidance_scale=guidance_scale,
                    generator=generator,
                    noise=None if noise is None else noise[i : i + batch_size],
                    output_type="pt",
                    use_cache=use_cache,
                ).images
                for i in range(0, len(labels), batch_size)
            ]
            images = self.to_images(torch.cat(parts) * 2 - 1, output_type)
            return ImagePipelineOutput(images=images) if return_dict else (images,)
        levels = self._levels(
            class_labels,
            output_type,
            num_images_per_prompt,
            cfg_scale,
            guidance_scale,
            cfg_schedule=cfg_schedule,
            cfg_scale_start=cfg_scale_start,
            generator=generator,
            noise=noise,
            use_cache=use_cache,
        )
        last = None
        with self.progress_bar(total=self.transformer.config.num_levels) as bar:
            for step in levels:
                last = step
                bar.update(1)
        with torch.inference_mode():
            images = self.decode_samples(last.x0)
        images = self.to_images(images.clone(), output_type)  # a normal tensor, usable outside inference mode
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def stream(
        self,
        class_labels,
        *,
        cfg_scale: float | None = None,
        cfg_schedule: str = "constant",
        cfg_scale_start: float = 1.0,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
        output_type: str = "pil",
        num_images_per_prompt: int = 1,
        use_cache: bool = True,
        **unknown,
    ) -> Iterator[DARTStreamStep]:
        """Yield a preview after every noise level (same arguments as ``__call__``).

        Level t's x̂_0 is decoded and yielded before level t − 1 is computed; the last step's ``preview`` equals
        ``pipe(...)``'s image for the same generator (or noise).

        Yields:
            :class:`DARTStreamStep`, one per level, noisiest first.
        """
        _refuse_options(unknown)
        levels = self._levels(
            class_labels,
            output_type,
            num_images_per_prompt,
            cfg_scale,
            guidance_scale,
            cfg_schedule=cfg_schedule,
            cfg_scale_start=cfg_scale_start,
            generator=generator,
            noise=noise,
            use_cache=use_cache,
        )
        return self._stream(levels, output_type)

    def _stream(self, levels: Iterator[LevelStep], output_type: str) -> Iterator[DARTStreamStep]:
        with self.progress_bar(total=self.transformer.config.num_levels) as bar:
            for step in levels:
                with torch.inference_mode():
                    images = self.decode_samples(step.x0)
                images = images.clone()  # a normal tensor, usable outside inference mode
                bar.update(1)
                yield DARTStreamStep(
                    index=step.index,
                    level=step.level,
                    preview=self.to_images(images, output_type),
                    sample=images,
                    x0=step.x0,
                    cfg_scale=step.cfg_scale,
                )


def _refuse_options(unknown: dict) -> None:
    if unknown:
        raise TypeError(
            f"{sorted(unknown)} are not options of a DART pipeline, which takes cfg_scale, cfg_schedule and "
            "cfg_scale_start (temperature, top-k/top-p, cfg_interval, cache and layout control are D-AR's)"
        )
