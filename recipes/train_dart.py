"""Train DART, the Denoising Autoregressive Transformer (Gu et al. 2025; reference dart.md), on a stock Llama.

    accelerate launch recipes/train_dart.py --config recipes/configs/demo_dart.yaml [--set a.b=c ...]

Every step noises each image at all T levels independently and trains the x̂₀ prediction of every level in one
teacher-forced pass (``dart.DARTLossModule``); the loss of each level is logged (``level_1`` … ``level_T``).
Same data, EMA, checkpoints, exact resume, non-finite guard and logging as the D-AR recipes (``dar.training``).
Writes ``<output_dir>/{config.yaml, checkpoints/, logs/, samples/, export/pipeline}``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from dar.data.images import ImageDataset, class_names_of, collate_images
from dar.images import save_grid
from dar.training.config import DARTTrainingConfig
from dar.training.config_io import parse_config_args, to_dict
from dar.training.ema import build_ema
from dar.training.loop import TrainingLoop, export_model, train
from dar.training.optim import build_lr_scheduler, build_optimizer
from dar.training.run import check_distributed_setup, micro_batch_size, start_run

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
    from accelerate.utils import set_seed

    from dart import DARTLossModule, DARTPipeline

    run = start_run(cfg, "train_dart")
    acc = run.accelerator
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
    set_seed(cfg.train.seed)
    check_distributed_setup(acc, cfg.ema.enabled, cfg.optim.grad_accum)

    dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
    model, vae = build_model(cfg, class_names_of(dataset.dataset, cfg.data.label_column))
    encoder = None if vae is None else DARTPipeline(transformer=model, vae=vae.to(acc.device))
    ema = build_ema(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    module = DARTLossModule(model, encode=None if encoder is None else encoder.encode_images)
    optimizer = build_optimizer(module, cfg.optim)
    scheduler = build_lr_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=micro_batch_size(cfg.data.batch_size, acc.num_processes, cfg.optim.grad_accum),
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_images,
    )
    module, optimizer, loader = acc.prepare(module, optimizer, loader)

    def sample(step: int, path: Path) -> None:
        pipe = DARTPipeline(transformer=export_model(loop), vae=vae)
        pipe.set_progress_bar_config(disable=True)
        labels = [i % model.config.num_classes for i in range(cfg.train.num_samples)]
        g = torch.Generator(acc.device).manual_seed(cfg.train.seed)
        images = pipe(labels, generator=g, output_type="pt", **to_dict(cfg.sample)).images
        save_grid(images * 2 - 1, path, nrow=min(10, len(labels)))
        model.train()

    loop = TrainingLoop(
        accelerator=acc,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        train=cfg.train,
        optim=cfg.optim,
        inputs=lambda batch: (batch["images"], batch["labels"]) if batch["images"].shape[0] else None,
        ema=ema,
        ema_source=model,
        sample=sample,
    )
    result = train(
        loop, run.resume_from, "train_dart" if cfg.train.log_with != "none" else None, to_dict(cfg)
    )

    export_dir = run.output_dir / "export" / "pipeline"
    if acc.is_main_process:
        final = export_model(loop).eval()
        DARTPipeline(transformer=final, vae=vae).save_pretrained(export_dir)
        logger.info("exported %s DART weights to %s", "EMA" if ema is not None else "raw", export_dir)
    acc.wait_for_everyone()
    acc.end_training()
    return {
        "step": result.step,
        "export_dir": str(export_dir),
        "metrics": result.metrics,
        "skipped_images": result.skipped_images,
    }


if __name__ == "__main__":
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    main(
        parse_config_args(
            DARTTrainingConfig, description="Train DART (the Denoising Autoregressive Transformer)."
        )
    )
