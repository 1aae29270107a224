"""Train DART, the Denoising Autoregressive Transformer (Gu et al. 2025; reference dart.md), on a stock Llama.

    accelerate launch recipes/train_dart.py --config recipes/configs/demo_dart.yaml [--set a.b=c ...]

Every step noises each image at all T levels independently and trains the x̂₀ prediction of every level in one
teacher-forced pass (``dart.DARTLossModule``); the loss of each level is logged (``level_1`` … ``level_T``).
Same data, EMA, checkpoints, exact resume, non-finite guard and logging as the D-AR recipes (``dar.training``).
Writes ``<output_dir>/{config.yaml, checkpoints/, logs/, samples/, export/pipeline}``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from dar.data.images import ImageDataset, class_names_of, collate_images
from dar.images import save_grid
from dar.training.config import DARTTrainingConfig
from dar.training.config_io import to_dict
from dar.training.loop import export_model
from dar.training.recipe import build_loop, finish, fit, recipe_main, setup

logger = logging.getLogger("train_dart")


def build_model(cfg: DARTTrainingConfig, names: list[str] | None):
    """The DART model of the config (class names stored in it) and the VAE of a latent-space model, or None."""
    from dart import DARTModel

    if cfg.model.init_from:
        model = DARTModel.from_pretrained(cfg.model.init_from)
    else:
        overrides = dict(cfg.model.overrides)
        if names:
            overrides.setdefault("num_classes", len(names))
            overrides.setdefault("id2label", dict(enumerate(names)))
        model = DARTModel.from_preset(cfg.model.preset, **overrides)
    size = model.config.image_size
    if cfg.data.image_size != size:
        raise ValueError(f"data.image_size={cfg.data.image_size} but the DART model makes {size}-px images")
    vae = None
    if model.config.space == "latent":
        from diffusers import AutoencoderKL

        if not cfg.model.vae:
            raise ValueError("a latent-space DART model needs model.vae (an AutoencoderKL folder or Hub id)")
        vae = AutoencoderKL.from_pretrained(cfg.model.vae).eval().requires_grad_(False)
    return model.train(), vae


def main(cfg: DARTTrainingConfig) -> dict:
    from dart import DARTLossModule, DARTPipeline

    run = setup(cfg, "train_dart")
    dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
    model, vae = build_model(cfg, class_names_of(dataset.dataset, cfg.data.label_column))
    encoder = None if vae is None else DARTPipeline(transformer=model, vae=vae.to(run.accelerator.device))
    module = DARTLossModule(model, encode=None if encoder is None else encoder.encode_images)

    def sample(step: int, path: Path) -> None:
        pipe = DARTPipeline(transformer=export_model(loop), vae=vae)
        pipe.set_progress_bar_config(disable=True)
        labels = [i % model.config.num_classes for i in range(cfg.train.num_samples)]
        g = torch.Generator(run.accelerator.device).manual_seed(cfg.train.seed)
        images = pipe(labels, generator=g, output_type="pt", **to_dict(cfg.sample)).images
        save_grid(images * 2 - 1, path, nrow=min(10, len(labels)))
        model.train()

    loop = build_loop(
        run,
        cfg,
        module,
        dataset,
        ema_source=model,
        inputs=lambda batch: (batch["images"], batch["labels"]) if batch["images"].shape[0] else None,
        sample=sample,
        collate_fn=collate_images,
    )
    result = fit(run, loop, cfg)

    export_dir = run.output_dir / "export" / "pipeline"
    if run.accelerator.is_main_process:
        pipe = DARTPipeline(
            transformer=export_model(loop).eval(), vae=vae, default_cfg_scale=cfg.sample.cfg_scale
        )
        pipe.save_pretrained(export_dir)
        logger.info("exported %s DART weights to %s", "EMA" if loop.ema is not None else "raw", export_dir)
    return finish(run, result, export_dir)


if __name__ == "__main__":
    recipe_main(DARTTrainingConfig, main, "Train DART (the Denoising Autoregressive Transformer).")
