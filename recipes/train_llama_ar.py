"""Train the D-AR prior, a stock ``LlamaForCausalLM`` over tokenizer codes (paper §3.3, §4.1; reference §4.2).

    accelerate launch recipes/train_llama_ar.py --config recipes/configs/demo_ar.yaml [--set a.b=c ...]

Data: pre-extracted code shards (``data.source: codes``, from ``extract_codes.py``; refused when made by another
tokenizer) or images tokenized on the fly with ``model.tokenizer_path`` (the official way, ten-crop). Loss:
:class:`llama_ar.ARLossModule` with the class and token dropout of the ``ARConfig`` (official 0.1 each). Writes
``<output_dir>/{config.yaml, checkpoints/, logs/, samples/, export/ar_model, export/pipeline}`` (the pipeline
folder when a tokenizer is known).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from dar.data.codes import CodeDataset, load_codes, read_codes_index, tokenizer_fingerprint
from dar.data.images import ImageDataset, class_names_of, collate_images
from dar.images import save_grid
from dar.training.config import ARTrainingConfig
from dar.training.config_io import parse_config_args, to_dict
from dar.training.ema import build_ema
from dar.training.loop import TrainingLoop, export_model, train
from dar.training.optim import build_lr_scheduler, build_optimizer
from dar.training.run import check_distributed_setup, micro_batch_size, start_run

logger = logging.getLogger("train_llama_ar")


def load_tokenizer(path: str | None, device):
    from tokenizer import DARTokenizer

    return None if path is None else DARTokenizer.from_pretrained(path).to(device).eval()


def build_data(cfg: ARTrainingConfig, device):
    """(dataset, tokenizer or None, layout) for pre-extracted codes or images tokenized on the fly."""
    from llama_ar import VocabLayout

    if cfg.data.source == "codes":
        index = read_codes_index(cfg.data.require_path())
        recorded = (
            index.tokenizer_path if index.tokenizer_path and Path(index.tokenizer_path).is_dir() else None
        )
        tok = load_tokenizer(cfg.model.tokenizer_path or recorded, device)
        code_set = load_codes(cfg.data.path, tokenizer_fingerprint(tok) if tok is not None else None)
        names, num_classes, codebook_size = index.class_names, index.num_classes, index.codebook_size
        dataset = CodeDataset(code_set, seed=cfg.train.seed)
    else:
        tok = load_tokenizer(cfg.model.tokenizer_path, device)
        if tok is None:
            raise ValueError(
                f"data.source={cfg.data.source!r} tokenizes on the fly: set model.tokenizer_path"
            )
        dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
        names = class_names_of(dataset.dataset, cfg.data.label_column)
        num_classes, codebook_size = (
            (len(names) if names else cfg.model.num_classes),
            tok.config.codebook_size,
        )
        if num_classes is None:
            raise ValueError("the dataset has no class names: set model.num_classes")
    layout = VocabLayout(codebook_size, num_classes, dict(enumerate(names)) if names else None)
    return dataset, tok, layout


def main(cfg: ARTrainingConfig) -> dict:
    from accelerate.utils import set_seed

    from llama_ar import ARConfig, ARLossModule, build_ar_model, sample_codes

    run = start_run(cfg, "train_llama_ar")
    acc = run.accelerator
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = cfg.train.allow_tf32
    set_seed(cfg.train.seed)
    check_distributed_setup(acc, cfg.ema.enabled, cfg.optim.grad_accum)

    dataset, tok, layout = build_data(cfg, acc.device)
    num_tokens = dataset.codes.shape[-1] if isinstance(dataset, CodeDataset) else tok.config.num_tokens
    overrides = {"num_tokens": num_tokens, **cfg.model.overrides}
    if overrides["num_tokens"] != num_tokens:
        raise ValueError(
            f"model.overrides.num_tokens={overrides['num_tokens']} but the codes have {num_tokens}"
        )
    ar_config = ARConfig.from_preset(cfg.model.preset, **overrides)
    model = build_ar_model(ar_config, layout)
    ema = build_ema(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    module = ARLossModule(model, class_dropout=ar_config.class_dropout, token_dropout=ar_config.token_dropout)
    optimizer = build_optimizer(module, cfg.optim)  # weight decay on >= 2-D tensors only
    scheduler = build_lr_scheduler(optimizer, cfg.optim, cfg.train.max_steps)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=micro_batch_size(cfg.data.batch_size, acc.num_processes, cfg.optim.grad_accum),
        shuffle=True,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_images if isinstance(dataset, ImageDataset) else None,
    )
    module, optimizer, loader = acc.prepare(module, optimizer, loader)

    def inputs(batch):
        if batch["labels"].shape[0] == 0:  # every image of the batch was unreadable
            return None
        if "images" in batch:  # on the fly: the frozen tokenizer, fp32, outside autocast
            with torch.no_grad():
                return batch["labels"], tok.encode(batch["images"].float())
        return batch["labels"], batch["codes"]

    def sample(step: int, path: Path) -> None:
        if tok is None:
            return
        labels = [i % layout.num_classes for i in range(cfg.train.num_samples)]
        g = torch.Generator(acc.device).manual_seed(cfg.train.seed)
        codes = sample_codes(export_model(loop), labels, num_tokens, options=cfg.sample, generator=g)
        save_grid(tok.decode(codes, generator=g).clamp(-1, 1), path, nrow=min(10, len(labels)))

    loop = TrainingLoop(
        accelerator=acc,
        module=module,
        optimizer=optimizer,
        scheduler=scheduler,
        loader=loader,
        train=cfg.train,
        optim=cfg.optim,
        inputs=inputs,
        ema=ema,
        ema_source=model,
        sample=sample,
    )
    result = train(
        loop, run.resume_from, "train_llama_ar" if cfg.train.log_with != "none" else None, to_dict(cfg)
    )

    export_dir = run.output_dir / "export" / "ar_model"
    state_dict = acc.get_state_dict(module) if ema is None else None  # gathers FSDP shards on every process
    if acc.is_main_process:
        weights = {k.removeprefix("model."): v for k, v in state_dict.items()} if state_dict else None
        export_model(loop).save_pretrained(export_dir, **({"state_dict": weights} if weights else {}))
        if tok is not None:  # the pair as one diffusers pipeline folder (what `dar sample` loads)
            from dar.pipeline import DARPipeline
            from llama_ar import load_ar_model

            pipe = DARPipeline(tokenizer=tok.to("cpu"), ar_model=load_ar_model(export_dir))
            pipe.save_pretrained(run.output_dir / "export" / "pipeline")
        logger.info("exported the AR model to %s", export_dir)
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
    main(parse_config_args(ARTrainingConfig, description="Train the D-AR prior (a stock Llama)."))
