"""Train the D-AR sequential diffusion tokenizer (paper §3; reference §3 for the official hyperparameters).

    accelerate launch recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer.yaml [--set a.b=c ...]

Writes ``<output_dir>/{config.yaml, checkpoints/, logs/train_log.jsonl, samples/, export/tokenizer}``; the export
holds the EMA weights (with the live VQ codebook) as a ``DARTokenizer.save_pretrained`` folder.
"""

from __future__ import annotations

import logging
import os

import torch

from dar.data.images import ImageDataset, collate_images, first_images
from dar.images import save_grid
from dar.training.config import TokenizerLossConfig, TokenizerTrainingConfig
from dar.training.config_io import parse_config_args, to_dict
from dar.training.ema import build_ema
from dar.training.loop import TrainingLoop, export_model, train
from dar.training.optim import build_lr_scheduler, build_optimizer
from dar.training.run import check_distributed_setup, micro_batch_size, start_run

logger = logging.getLogger("train_tokenizer")


def build_frozen_losses(cfg: TokenizerLossConfig, tokenizer, device):
    """LPIPS (torchmetrics, needs torchvision) and the DINOv2 REPA target (transformers), when enabled."""
    perceptual = repa = None
    if cfg.perceptual == "lpips":
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity
        except ImportError as err:
            raise ImportError(
                "loss.perceptual=lpips needs torchvision; install it or set loss.perceptual=none"
            ) from err
        perceptual = LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=False).to(device).eval()
        perceptual.requires_grad_(False)
    if cfg.repa_model is not None:
        from transformers import AutoModel

        from tokenizer import Dinov2Target

        if not tokenizer.config.has_repa_head:
            raise ValueError(
                "loss.repa_model is set but the tokenizer has no REPA head (set model.overrides.repa_layer)"
            )
        repa = Dinov2Target(AutoModel.from_pretrained(cfg.repa_model), grid=tokenizer.config.repa_grid).to(
            device
        )
    return perceptual, repa


def build_tokenizer(cfg: TokenizerTrainingConfig):
    from tokenizer import DARTokenizer

    if cfg.model.init_from:
        tok = DARTokenizer.from_pretrained(cfg.model.init_from)
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
    from accelerate.utils import set_seed

    from tokenizer import TokenizerLossModule

    run = start_run(cfg, "train_tokenizer")
    acc = run.accelerator
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
    set_seed(cfg.train.seed)
    check_distributed_setup(acc, cfg.ema.enabled, cfg.optim.grad_accum)

    tok = build_tokenizer(cfg)  # after the process group exists, so the VQ syncs its codebook under DDP
    ema = build_ema(tok, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    perceptual, repa = build_frozen_losses(cfg.loss, tok, acc.device)
    module = TokenizerLossModule(
        tok,
        perceptual_loss=perceptual,
        perceptual_weight=cfg.loss.perceptual_weight,
        repa_target=repa,
        repa_weight=cfg.loss.repa_weight,
    )
    optimizer = build_optimizer(module, cfg.optim)
    scheduler = build_lr_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=micro_batch_size(cfg.data.batch_size, acc.num_processes, cfg.optim.grad_accum),
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_images,
    )
    module, optimizer, loader = acc.prepare(module, optimizer, loader)
    eval_set = ImageDataset.from_config(
        cfg.data, dataset=dataset.dataset, augment="center_crop", random_flip=False
    )
    eval_images = first_images(eval_set, cfg.train.num_samples).to(acc.device)  # fixed reconstruction batch

    loop = TrainingLoop(
        accelerator=acc,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        train=cfg.train,
        optim=cfg.optim,
        ema=ema,
        ema_source=tok,
        inputs=lambda batch: (batch["images"],) if batch["images"].shape[0] else None,
        sample=lambda step, path: save_reconstructions(export_model(loop), eval_images, path, cfg.train.seed),
    )
    result = train(
        loop, run.resume_from, "train_tokenizer" if cfg.train.log_with != "none" else None, to_dict(cfg)
    )

    export_dir = run.output_dir / "export" / "tokenizer"
    if acc.is_main_process:
        export_model(loop).save_pretrained(export_dir)
        logger.info(
            "exported %s weights to %s (%d unreadable images skipped)",
            "EMA" if ema is not None else "raw",
            export_dir,
            result.skipped_images,
        )
    acc.wait_for_everyone()
    acc.end_training()
    return {
        "step": result.step,
        "export_dir": str(export_dir),
        "metrics": result.metrics,
        "skipped_images": result.skipped_images,
    }


@torch.no_grad()
def save_reconstructions(model, images: torch.Tensor, path, seed: int) -> None:
    """Grid of the inputs (first row) and their reconstructions (second row)."""
    was_training = model.training
    model.eval()
    recon = model.decode(model.encode(images), generator=torch.Generator(images.device).manual_seed(seed))
    save_grid(torch.cat([images, recon.clamp(-1, 1)]), path, nrow=images.shape[0])
    model.train(was_training)


if __name__ == "__main__":
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    main(parse_config_args(TokenizerTrainingConfig, description="Train the D-AR tokenizer."))
