"""Train the D-AR prior, a stock ``LlamaForCausalLM`` over tokenizer codes (paper §3.3, §4.1; reference §4.2).

    accelerate launch recipes/train_llama_ar.py --config recipes/configs/demo_ar.yaml [--set a.b=c ...]

Data: pre-extracted code shards (``data.source: codes``, from ``extract_codes.py``; refused when made by another
tokenizer) or images tokenized on the fly with ``model.tokenizer_path`` (the official way, ten-crop).
Loss: ``llama_ar.ar_loss`` with class dropout and token dropout (official 0.1 each). Writes
``<output_dir>/{config.yaml, checkpoints/, logs/, samples/, export/ar_model, export/pipeline}`` (the pipeline
folder when ``model.tokenizer_path`` is set).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

import torch

from dar.checkpointing import load_checkpoint, resolve_resume, save_checkpoint
from dar.codes import INDEX_FILE, CodeDataset, load_codes, tokenizer_fingerprint
from dar.config_io import parse_config_args, save_config, to_dict
from dar.data import ImageDataset, class_names_of, collate_images, save_image_grid
from dar.recipe_config import ARTrainingConfig
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

logger = logging.getLogger("train_llama_ar")


def load_tokenizer(path: str | None, device):
    from tokenizer import DARTokenizer

    if path is None:
        return None
    if not Path(path).is_dir():
        raise FileNotFoundError(f"model.tokenizer_path={path!r} is not a folder written by save_pretrained")
    return DARTokenizer.from_pretrained(path).to(device).eval()


def build_data(cfg: ARTrainingConfig, device):
    """(dataset, tokenizer or None, codebook_size, num_classes, class_names) for codes or on-the-fly images."""
    if cfg.data.source == "codes":
        code_path = cfg.data.require_path()
        tokenizer_path = cfg.model.tokenizer_path
        if tokenizer_path is None:  # the tokenizer recorded with the codes, if it is still there
            recorded = json.loads((Path(code_path) / INDEX_FILE).read_text()).get("tokenizer_path")
            tokenizer_path = recorded if recorded and Path(recorded).is_dir() else None
        tok = load_tokenizer(tokenizer_path, device)
        code_set = load_codes(code_path, tokenizer_fingerprint(tok) if tok is not None else None)
        index = code_set.index
        return (CodeDataset(code_set, seed=cfg.train.seed), tok, index["codebook_size"], index["num_classes"],
                index.get("class_names"))  # fmt: skip
    tok = load_tokenizer(cfg.model.tokenizer_path, device)
    if tok is None:
        raise ValueError(f"data.source={cfg.data.source!r} tokenizes on the fly: set model.tokenizer_path")
    dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
    names = class_names_of(dataset.dataset, cfg.data.label_column)
    num_classes = len(names) if names else cfg.model.num_classes
    if num_classes is None:
        raise ValueError("the dataset has no class names: set model.num_classes")
    return dataset, tok, tok.config.codebook_size, num_classes, names


def main(cfg: ARTrainingConfig) -> dict:
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from llama_ar import ARConfig, VocabLayout, ar_loss, build_ar_model, sample_codes

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

    dataset, tok, codebook_size, num_classes, names = build_data(cfg, accelerator.device)
    id2label = dict(enumerate(names)) if names else None
    layout = VocabLayout(codebook_size=codebook_size, num_classes=num_classes, id2label=id2label)
    overrides = dict(cfg.model.overrides)
    num_tokens = dataset.codes.shape[-1] if isinstance(dataset, CodeDataset) else tok.config.num_tokens
    if overrides.setdefault("num_tokens", num_tokens) != num_tokens:
        raise ValueError(
            f"model.overrides.num_tokens={overrides['num_tokens']} but the codes have {num_tokens} tokens"
        )
    ar_config = ARConfig.from_preset(cfg.model.preset, **overrides)
    model = build_ar_model(ar_config, layout)
    ema = build_ema(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    optimizer = build_optimizer(model, cfg.optim)  # weight decay on >= 2-D tensors only
    scheduler = build_lr_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    micro = micro_batch_size(cfg.data.batch_size, accelerator.num_processes, cfg.optim.grad_accum)
    collate = collate_images if isinstance(dataset, ImageDataset) else None
    loader = torch.utils.data.DataLoader(dataset, batch_size=micro, shuffle=True, drop_last=True,
                                         num_workers=cfg.data.num_workers, collate_fn=collate)  # fmt: skip
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)
    if ema is not None:
        ema.to(accelerator.device)
        register_ema_checkpointing(accelerator, ema)
    unwrapped = accelerator.unwrap_model(model)

    ckpt_root = out / "checkpoints"
    start_step, skipped_total, last_ckpt = 0, 0, None
    resume_path = resolve_resume(cfg.train.resume, ckpt_root)
    if resume_path is not None:
        state = load_checkpoint(accelerator, resume_path)
        start_step, skipped_total, last_ckpt = state["step"], state.get("skipped_images", 0), resume_path
    if cfg.train.log_with != "none":
        accelerator.init_trackers("train_llama_ar", config=flat_config(to_dict(cfg)))
    log = JsonlLogger(out / "logs" / "train_log.jsonl", enabled=main_process)
    log.log({"event": "start", "world_size": accelerator.num_processes, "start_step": start_step,
             "resumed_from": str(resume_path) if resume_path else None, "micro_batch": micro,
             "num_parameters": sum(p.numel() for p in unwrapped.parameters())})  # fmt: skip

    def save_samples(path: Path) -> None:
        if tok is None:
            return
        sampler_model = ema_model_for_export(ema, unwrapped) if ema is not None else unwrapped
        sampler_model.eval()
        labels = [i % num_classes for i in range(cfg.train.num_samples)]
        g = torch.Generator(accelerator.device).manual_seed(cfg.train.seed)
        with torch.no_grad():
            codes = sample_codes(
                sampler_model,
                labels,
                num_tokens,
                cfg_scale=cfg.sample.cfg_scale,
                generator=g,
                temperature=cfg.sample.temperature,
                top_k=cfg.sample.top_k,
                top_p=cfg.sample.top_p,
            )
            save_image_grid(tok.decode(codes, generator=g).clamp(-1, 1), path, nrow=min(10, len(labels)))
        sampler_model.train()  # fmt: skip

    batches = iterate_batches(loader, start_step * cfg.optim.grad_accum, accelerator)
    progress = tqdm(
        total=cfg.train.max_steps, initial=start_step, disable=not accelerator.is_local_main_process
    )
    metrics: dict[str, float] = {}
    tick = time.perf_counter()
    for step in range(start_step + 1, cfg.train.max_steps + 1):
        sums = {"loss": 0.0, "accuracy": 0.0}
        skipped = 0
        for micro_step in range(cfg.optim.grad_accum):
            epoch, batch = next(batches)
            skipped += batch.get("num_skipped", 0)
            while batch["labels"].shape[0] == 0:  # every image of the batch was unreadable
                epoch, batch = next(batches)
                skipped += batch["num_skipped"]
            if tok is not None and "images" in batch:  # on-the-fly: frozen tokenizer, fp32, outside autocast
                with torch.no_grad():
                    batch["codes"] = tok.encode(batch["images"].float())
            generator = step_generator(cfg.train.seed, (step - 1) * cfg.optim.grad_accum + micro_step,
                                       accelerator.process_index, accelerator.device)  # fmt: skip
            last = micro_step == cfg.optim.grad_accum - 1
            with contextlib.nullcontext() if last else accelerator.no_sync(model):
                result = ar_loss(
                    model,
                    batch["labels"],
                    batch["codes"],
                    layout,
                    generator=generator,
                    class_dropout=ar_config.class_dropout,
                    token_dropout=ar_config.token_dropout,
                )
                loss = result.loss * float("nan") if cfg.debug.nan_at_step == step else result.loss
                accelerator.backward(loss / cfg.optim.grad_accum)  # fmt: skip
            sums["loss"] += loss.detach().float() / cfg.optim.grad_accum
            sums["accuracy"] += result.accuracy.float() / cfg.optim.grad_accum
        # NaN guard on every process before the update: the weights and the last checkpoint stay good
        metrics = gather_metrics(accelerator, {**sums, "sum_skipped": float(skipped)}, step, last_ckpt)
        skipped_total += int(metrics.pop("skipped"))
        lr = optimizer.param_groups[0]["lr"]
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
            record = {"step": step, "epoch": epoch, "lr": lr, **metrics, "skipped_images": skipped_total,
                      "seconds": elapsed}  # fmt: skip
            log.log(record)
            accelerator.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=step)
            progress.set_postfix(loss=f"{metrics['loss']:.4f}")
        if cfg.train.sample_every and step % cfg.train.sample_every == 0 and main_process:
            save_samples(out / "samples" / f"step_{step:08d}.png")
        if step % cfg.train.save_every == 0 or step == cfg.train.max_steps:
            last_ckpt = save_checkpoint(accelerator, ckpt_root, step, cfg.train.keep_last,
                                        {"skipped_images": skipped_total})  # fmt: skip
    progress.close()

    export_dir = out / "export" / "ar_model"
    state_dict = accelerator.get_state_dict(model) if ema is None else None  # gathers FSDP shards
    if main_process:
        final = ema_model_for_export(ema, unwrapped) if ema is not None else unwrapped
        final.save_pretrained(export_dir, **({"state_dict": state_dict} if ema is None else {}))
        save_samples(out / "samples" / "final.png")
        logger.info("exported the AR model to %s", export_dir)
        if cfg.model.tokenizer_path:  # the pair as one diffusers pipeline folder (what `dar sample` loads)
            from transformers import AutoModelForCausalLM

            from dar.pipeline import DARPipeline

            pipe = DARPipeline(
                tokenizer=load_tokenizer(cfg.model.tokenizer_path, "cpu"),
                ar_model=AutoModelForCausalLM.from_pretrained(export_dir),
            )
            pipe.save_pretrained(out / "export" / "pipeline")
            logger.info("exported the pipeline to %s", out / "export" / "pipeline")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": cfg.train.max_steps, "export_dir": str(export_dir), "metrics": metrics,
            "skipped_images": skipped_total}  # fmt: skip


if __name__ == "__main__":
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")  # fmt: skip
    main(parse_config_args(ARTrainingConfig, description="Train the D-AR prior (a stock Llama)."))
