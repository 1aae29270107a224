"""Train the D-AR sequential diffusion tokenizer (paper §3; reference §3 for the official hyperparameters).

    accelerate launch recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer.yaml [--set a.b=c ...]

Writes ``<output_dir>/{config.yaml, checkpoints/, logs/train_log.jsonl, samples/, export/tokenizer}``; the export
holds the EMA weights (with the live VQ codebook) as a ``DARTokenizer.save_pretrained`` folder.
"""

from __future__ import annotations

import logging

import torch

from dar.data.images import ImageDataset, collate_images, first_images
from dar.images import save_grid
from dar.training.config import TokenizerTrainingConfig
from dar.training.loop import export_model
from dar.training.recipe import build_loop, finish, fit, recipe_main, setup

logger = logging.getLogger("train_tokenizer")


def build_tokenizer(cfg: TokenizerTrainingConfig):
    from tokenizer import DARTokenizer, split_codebook

    if cfg.model.init_from:
        tok = DARTokenizer.from_pretrained(cfg.model.init_from)
        if cfg.model.split_codebook > 1:  # resumed runs then load the split codebook's checkpoint over it
            generator = torch.Generator().manual_seed(cfg.train.seed)
            tok = split_codebook(
                tok, cfg.model.split_codebook, spread=cfg.model.split_spread, generator=generator
            )
    else:
        tok = DARTokenizer.from_preset(cfg.model.preset, **cfg.model.overrides)
    if cfg.data.image_size != tok.config.image_size:
        raise ValueError(
            f"data.image_size={cfg.data.image_size} but the tokenizer works at {tok.config.image_size} px"
        )
    if cfg.model.gradient_checkpointing:
        tok.enable_gradient_checkpointing()
    if tok.decoder.repa_out is not None and cfg.loss.repa_model is None:
        tok.decoder.repa_out.requires_grad_(False)  # an unused REPA head would stall DDP
    return tok.train()


def main(cfg: TokenizerTrainingConfig) -> dict:
    from tokenizer import TokenizerLossModule, frozen_loss_models

    run = setup(cfg, "train_tokenizer")
    tok = build_tokenizer(cfg)  # after the process group exists, so the VQ syncs its codebook under DDP
    perceptual, repa = frozen_loss_models(tok, perceptual=cfg.loss.perceptual, repa_model=cfg.loss.repa_model)
    module = TokenizerLossModule(
        tok,
        perceptual_loss=None if perceptual is None else perceptual.to(run.accelerator.device),
        perceptual_weight=cfg.loss.perceptual_weight,
        repa_target=None if repa is None else repa.to(run.accelerator.device),
        repa_weight=cfg.loss.repa_weight,
    )
    dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
    eval_set = ImageDataset.from_config(
        cfg.data, dataset=dataset.dataset, augment="center_crop", random_flip=False
    )
    eval_images = first_images(eval_set, cfg.train.num_samples).to(run.accelerator.device)  # fixed batch
    loop = build_loop(
        run,
        cfg,
        module,
        dataset,
        ema_source=tok,
        inputs=lambda batch: (batch["images"],) if batch["images"].shape[0] else None,
        sample=lambda step, path: save_reconstructions(export_model(loop), eval_images, path, cfg.train.seed),
        collate_fn=collate_images,
    )
    result = fit(run, loop, cfg)

    export_dir = run.output_dir / "export" / "tokenizer"
    if run.accelerator.is_main_process:
        export_model(loop).save_pretrained(export_dir)
        weights = "EMA" if loop.ema is not None else "raw"
        logger.info(
            "exported %s weights to %s (%d images skipped)", weights, export_dir, result.skipped_images
        )
    return finish(run, result, export_dir)


@torch.no_grad()
def save_reconstructions(model, images: torch.Tensor, path, seed: int) -> None:
    """Grid of the inputs (first row) and their reconstructions (second row)."""
    was_training = model.training
    model.eval()
    recon = model.decode(model.encode(images), generator=torch.Generator(images.device).manual_seed(seed))
    save_grid(torch.cat([images, recon.clamp(-1, 1)]), path, nrow=images.shape[0])
    model.train(was_training)


if __name__ == "__main__":
    recipe_main(TokenizerTrainingConfig, main, "Train the D-AR tokenizer.")
