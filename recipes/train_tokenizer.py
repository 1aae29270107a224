"""Train the D-AR sequential diffusion tokenizer (paper §3; reference §3 for the official hyperparameters).

    accelerate launch recipes/train_tokenizer.py --config recipes/configs/demo_tokenizer.yaml [--set a.b=c ...]
    python recipes/train_tokenizer.py --config recipes/configs/tiny_tokenizer.yaml --resume latest

Writes ``<output_dir>/{config.yaml, checkpoints/, logs/train_log.jsonl, logs/<tensorboard>, samples/, export/tokenizer}``;
the export holds the EMA weights (with the live VQ codebook) as a ``DARTokenizer.save_pretrained`` folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path

import torch

from dar.checkpointing import load_checkpoint, resolve_resume, save_checkpoint
from dar.config_io import parse_config_args, save_config, to_dict
from dar.data import ImageDataset, collate_images, first_images, save_image_grid
from dar.recipe_config import TokenizerLossConfig, TokenizerTrainingConfig
from dar.train_loop import (
    JsonlLogger,
    build_accelerator,
    check_distributed_setup,
    clip_gradients,
    flat_config,
    gather_metrics,
    iterate_batches,
    micro_batch_size,
    step_generator,
)
from dar.training import (
    build_ema,
    build_lr_scheduler,
    build_optimizer,
    ema_model_for_export,
    register_ema_checkpointing,
)

logger = logging.getLogger("train_tokenizer")


class TokenizerLossModule(torch.nn.Module):
    """Runs ``training_losses`` inside ``forward`` so that DDP / FSDP / autocast wrappers see the computation.

    The frozen LPIPS / DINOv2 networks are kept out of the module tree (not trained, not checkpointed).
    """

    def __init__(self, tokenizer: torch.nn.Module, loss_cfg: TokenizerLossConfig, perceptual=None, repa=None):
        super().__init__()
        self.tokenizer = tokenizer
        self.loss_cfg = loss_cfg
        self.frozen = {"perceptual": perceptual, "repa": repa}

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        losses = self.tokenizer.training_losses(
            images, generator, perceptual_loss=self.frozen["perceptual"], repa_target=self.frozen["repa"],
            perceptual_weight=self.loss_cfg.perceptual_weight, repa_weight=self.loss_cfg.repa_weight,
        )  # fmt: skip
        terms = {"loss": losses.total, "flow": losses.flow, "vq": losses.vq}
        terms.update(
            {k: getattr(losses, k) for k in ("perceptual", "repa") if getattr(losses, k) is not None}
        )
        return terms


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
    if cfg.loss.repa_model is None:  # an unused REPA head would stall DDP: freeze it
        for name, param in tok.named_parameters():
            if "repa" in name:
                param.requires_grad_(False)
    return tok.train()


@torch.no_grad()
def save_reconstructions(model, images: torch.Tensor, path: Path, seed: int) -> None:
    """Grid of the inputs (first row) and their reconstructions (second row)."""
    was_training = model.training
    model.eval()
    recon = model.decode(model.encode(images), generator=torch.Generator(images.device).manual_seed(seed))
    save_image_grid(torch.cat([images, recon.clamp(-1, 1)]), path, nrow=images.shape[0])
    model.train(was_training)


def main(cfg: TokenizerTrainingConfig) -> dict:
    from accelerate.utils import set_seed

    out = Path(cfg.train.output_dir)
    accelerator = build_accelerator(cfg.train)
    torch.backends.cuda.matmul.allow_tf32 = cfg.train.allow_tf32
    torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
    set_seed(cfg.train.seed)
    check_distributed_setup(accelerator, cfg.ema.enabled, cfg.optim.grad_accum)
    main_process = accelerator.is_main_process
    if main_process:
        save_config(cfg, out / "config.yaml")
    logger.info("world size %d, device %s, mixed precision %s", accelerator.num_processes, accelerator.device,
                accelerator.mixed_precision)  # fmt: skip

    tok = build_tokenizer(cfg)  # after the process group exists, so the VQ syncs its codebook under DDP
    ema = build_ema(tok, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    perceptual, repa = build_frozen_losses(cfg.loss, tok, accelerator.device)
    model = TokenizerLossModule(tok, cfg.loss, perceptual, repa)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_lr_scheduler(optimizer, cfg.optim, cfg.train.max_steps)

    micro = micro_batch_size(cfg.data.batch_size, accelerator.num_processes, cfg.optim.grad_accum)
    dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=micro, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
        collate_fn=collate_images, persistent_workers=False,
    )  # fmt: skip
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        register_ema_checkpointing(accelerator, ema)
    unwrapped = accelerator.unwrap_model(model).tokenizer

    ckpt_root = out / "checkpoints"
    start_step, skipped_total, last_ckpt = 0, 0, None
    resume_path = resolve_resume(cfg.train.resume, ckpt_root)
    if resume_path is not None:
        state = load_checkpoint(accelerator, resume_path)
        start_step, skipped_total, last_ckpt = state["step"], state.get("skipped_images", 0), resume_path
    if cfg.train.log_with != "none":
        accelerator.init_trackers("train_tokenizer", config=flat_config(to_dict(cfg)))
    log = JsonlLogger(out / "logs" / "train_log.jsonl", enabled=main_process)
    log.log({"event": "start", "world_size": accelerator.num_processes, "start_step": start_step,
             "resumed_from": str(resume_path) if resume_path else None, "micro_batch": micro})  # fmt: skip

    eval_set = ImageDataset.from_config(
        cfg.data, dataset=dataset.dataset, augment="center_crop", random_flip=False
    )
    eval_images = first_images(eval_set, cfg.train.num_samples).to(
        accelerator.device
    )  # fixed reconstruction batch

    from tqdm.auto import tqdm

    batches = iterate_batches(loader, start_step * cfg.optim.grad_accum, accelerator)
    progress = tqdm(
        total=cfg.train.max_steps, initial=start_step, disable=not accelerator.is_local_main_process
    )
    metrics: dict[str, float] = {}
    tick = time.perf_counter()
    for step in range(start_step + 1, cfg.train.max_steps + 1):
        sums: dict[str, torch.Tensor] = {}
        skipped = 0
        for micro_step in range(cfg.optim.grad_accum):
            epoch, batch = next(batches)
            skipped += batch["num_skipped"]
            while batch["images"].shape[0] == 0:  # every image of the batch was unreadable
                epoch, batch = next(batches)
                skipped += batch["num_skipped"]
            generator = step_generator(cfg.train.seed, (step - 1) * cfg.optim.grad_accum + micro_step,
                                       accelerator.process_index, accelerator.device)  # fmt: skip
            last = micro_step == cfg.optim.grad_accum - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                terms = model(batch["images"], generator)
                if cfg.debug.nan_at_step == step:  # fault injection for the NaN-guard test
                    terms["loss"] = terms["loss"] * float("nan")
                accelerator.backward(terms["loss"] / cfg.optim.grad_accum)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value.detach().float() / cfg.optim.grad_accum
        # NaN guard on every process before the update: the weights and the last checkpoint stay good
        metrics = gather_metrics(accelerator, {**sums, "sum_skipped": float(skipped)}, step, last_ckpt)
        skipped_total += int(metrics.pop("skipped"))
        lr = optimizer.param_groups[0]["lr"]  # the rate of this step (get_last_lr is the next one's)
        grad_norm = clip_gradients(accelerator, model, cfg.optim.grad_clip)
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(unwrapped)
        progress.update(1)
        if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
            elapsed, tick = time.perf_counter() - tick, time.perf_counter()
            record = {"step": step, "epoch": epoch, "lr": lr, **metrics,
                      "skipped_images": skipped_total, "seconds": elapsed}  # fmt: skip
            log.log(record)
            accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}", skipped=skipped_total)
        if cfg.train.sample_every and step % cfg.train.sample_every == 0 and main_process:
            sample_model = ema_model_for_export(ema, unwrapped) if ema is not None else unwrapped
            save_reconstructions(
                sample_model, eval_images, out / "samples" / f"step_{step:08d}.png", cfg.train.seed
            )
        if step % cfg.train.save_every == 0 or step == cfg.train.max_steps:
            last_ckpt = save_checkpoint(accelerator, ckpt_root, step, cfg.train.keep_last,
                                        {"skipped_images": skipped_total})  # fmt: skip
    progress.close()

    export_dir = out / "export" / "tokenizer"
    if main_process:
        final = ema_model_for_export(ema, unwrapped) if ema is not None else unwrapped
        save_reconstructions(final, eval_images, out / "samples" / "final.png", cfg.train.seed)
        final.save_pretrained(export_dir)
        logger.info("exported %s weights to %s (%d unreadable images skipped)",
                    "EMA" if ema is not None else "raw", export_dir, skipped_total)  # fmt: skip
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": cfg.train.max_steps, "export_dir": str(export_dir), "metrics": metrics,
            "skipped_images": skipped_total}  # fmt: skip


if __name__ == "__main__":
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")  # fmt: skip
    main(parse_config_args(TokenizerTrainingConfig, description="Train the D-AR tokenizer."))
