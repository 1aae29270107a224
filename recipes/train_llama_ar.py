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
from pathlib import Path

import torch

from dar.data.codes import CodeDataset, load_codes, read_codes_index, tokenizer_fingerprint
from dar.data.images import ImageDataset, class_names_of, collate_images
from dar.images import save_grid
from dar.training.config import ARTrainingConfig
from dar.training.loop import export_model
from dar.training.recipe import build_loop, finish, fit, gathered_weights, recipe_main, setup

logger = logging.getLogger("train_llama_ar")


def build_data(cfg: ARTrainingConfig, device):
    """(dataset, tokenizer or None, layout, codes per image): pre-extracted codes or images tokenized on the fly."""
    from llama_ar import VocabLayout
    from tokenizer import DARTokenizer

    if cfg.data.source == "codes":
        index = read_codes_index(cfg.data.require_path())
        recorded = (
            index.tokenizer_path if index.tokenizer_path and Path(index.tokenizer_path).is_dir() else None
        )
        path = cfg.model.tokenizer_path or recorded
        tok = DARTokenizer.from_pretrained(path).to(device).eval() if path else None
        codes = load_codes(cfg.data.path, tokenizer_fingerprint(tok) if tok is not None else None)
        dataset = CodeDataset(codes, seed=cfg.train.seed)
        names, num_classes, codebook_size = index.class_names, index.num_classes, index.codebook_size
        num_tokens = dataset.codes.shape[-1]
    else:
        if not cfg.model.tokenizer_path:
            raise ValueError(
                f"data.source={cfg.data.source!r} tokenizes on the fly: set model.tokenizer_path"
            )
        tok = DARTokenizer.from_pretrained(cfg.model.tokenizer_path).to(device).eval()
        dataset = ImageDataset.from_config(cfg.data, seed=cfg.train.seed)
        names = class_names_of(dataset.dataset, cfg.data.label_column)
        num_classes = len(names) if names else cfg.model.num_classes
        if num_classes is None:
            raise ValueError("the dataset has no class names: set model.num_classes")
        codebook_size, num_tokens = tok.config.codebook_size, tok.config.num_tokens
    layout = VocabLayout(codebook_size, num_classes, dict(enumerate(names)) if names else None)
    return dataset, tok, layout, num_tokens


def main(cfg: ARTrainingConfig) -> dict:
    from llama_ar import ARConfig, ARLossModule, build_ar_model, sample_codes

    run = setup(cfg, "train_llama_ar")
    dataset, tok, layout, num_tokens = build_data(cfg, run.accelerator.device)
    if cfg.model.noise_scale is not None:
        from tokenizer import with_noise_scale

        if tok is None:
            raise ValueError("model.noise_scale sets the tokenizer's: set model.tokenizer_path")
        tok = with_noise_scale(tok, cfg.model.noise_scale)
    if cfg.model.overrides.get("num_tokens", num_tokens) != num_tokens:
        raise ValueError(
            f"model.overrides.num_tokens={cfg.model.overrides['num_tokens']} but the codes have {num_tokens}"
        )
    ar_config = ARConfig.from_preset(cfg.model.preset, **{"num_tokens": num_tokens, **cfg.model.overrides})
    model = build_ar_model(ar_config, layout)
    for (
        name,
        value,
    ) in cfg.model.sampling_defaults.items():  # written into the export's generation_config.json
        setattr(model.generation_config, name, value)
    module = ARLossModule(model, class_dropout=ar_config.class_dropout, token_dropout=ar_config.token_dropout)

    def inputs(batch):
        if batch["labels"].shape[0] == 0:  # every image of the batch was unreadable
            return None
        if "images" in batch:  # on the fly: the frozen tokenizer, fp32, outside autocast
            with torch.no_grad():
                return batch["labels"], tok.encode(batch["images"].float())
        return batch["labels"], batch["codes"]

    def sample(step: int, path: Path) -> None:
        labels = [i % layout.num_classes for i in range(cfg.train.num_samples)]
        g = torch.Generator(run.accelerator.device).manual_seed(cfg.train.seed)
        codes = sample_codes(export_model(loop), labels, num_tokens, options=cfg.sample, generator=g)
        save_grid(tok.decode(codes, generator=g).clamp(-1, 1), path, nrow=min(10, len(labels)))

    collate = collate_images if isinstance(dataset, ImageDataset) else None
    sample = sample if tok is not None else None  # grids need a tokenizer to decode
    loop = build_loop(
        run, cfg, module, dataset, ema_source=model, inputs=inputs, sample=sample, collate_fn=collate
    )
    result = fit(run, loop, cfg)

    export_dir = run.output_dir / "export" / "ar_model"
    weights = gathered_weights(run, loop)  # on every process: FSDP gathers its shards
    if run.accelerator.is_main_process:
        export_model(loop).save_pretrained(export_dir, **({"state_dict": weights} if weights else {}))
        if tok is not None:  # the pair as one diffusers pipeline folder (what `dar sample` loads)
            from dar.pipeline import DARPipeline
            from llama_ar import load_ar_model

            pipe = DARPipeline(tokenizer=tok.to("cpu"), ar_model=load_ar_model(export_dir))
            pipe.save_pretrained(run.output_dir / "export" / "pipeline")
        logger.info("exported the AR model to %s", export_dir)
    return finish(run, result, export_dir)


if __name__ == "__main__":
    recipe_main(ARTrainingConfig, main, "Train the D-AR prior (a stock Llama).")
