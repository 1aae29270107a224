"""Encode a dataset into D-AR codes once, for AR training (paper §3.3; DESIGN §6).

    accelerate launch recipes/extract_codes.py --config recipes/configs/demo_codes.yaml [--set a.b=c ...]

Each process encodes a contiguous slice of the dataset with the frozen tokenizer (eval mode, fp32, no
autocast, as the official on-the-fly tokenization) and writes safetensors shards; the main process then writes
``codes_index.json`` with the tokenizer fingerprint, so that ``train_llama_ar.py`` refuses codes from another
tokenizer. ``views: ten_crop`` stores all ten LlamaGen crops per image (one is drawn per epoch in training).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from dar.data.codes import INDEX_FILE, CodeShardWriter, tokenizer_fingerprint, write_codes_index
from dar.data.images import ImageDataset, class_names_of, collate_images, load_image_dataset
from dar.training.config import ExtractCodesConfig
from dar.training.config_io import save_config
from dar.training.recipe import recipe_main
from dar.training.run import check_world_size, multi_process_cpu_launch

logger = logging.getLogger("extract_codes")


def main(cfg: ExtractCodesConfig) -> dict:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from tokenizer import DARTokenizer

    if not cfg.tokenizer_path:
        raise ValueError("set tokenizer_path to a tokenizer folder written by save_pretrained")
    accelerator = Accelerator(cpu=multi_process_cpu_launch(), mixed_precision="no")  # fp32, as the official
    check_world_size(accelerator)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        if (out / INDEX_FILE).exists() or any(out.glob("codes-r*.safetensors")):
            if not cfg.overwrite:
                raise FileExistsError(
                    f"{out} already holds a code set; pass --overwrite to replace it or choose another output_dir"
                )
            shutil.rmtree(out)
        elif out.exists() and any(out.iterdir()):
            raise FileExistsError(f"{out} is not empty and holds no code set: choose an empty output_dir")
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "extract_config.yaml")
    accelerator.wait_for_everyone()

    tok = DARTokenizer.from_pretrained(cfg.tokenizer_path).to(accelerator.device).eval()
    if cfg.data.image_size != tok.config.image_size:
        raise ValueError(
            f"data.image_size={cfg.data.image_size} but the tokenizer works at {tok.config.image_size} px"
        )
    fingerprint = tokenizer_fingerprint(tok)
    hf_dataset = load_image_dataset(cfg.data)
    ten_crop = cfg.views == "ten_crop"
    dataset = ImageDataset.from_config(
        cfg.data,
        dataset=hf_dataset,
        augment="ten_crop" if ten_crop else "center_crop",
        random_flip=False,
        all_views=ten_crop,
    )
    rows = list(range(len(dataset)))
    with accelerator.split_between_processes(rows) as my_rows:  # contiguous slice per process
        subset = torch.utils.data.Subset(dataset, my_rows)
    per_process = max(1, cfg.data.batch_size // accelerator.num_processes)
    loader = torch.utils.data.DataLoader(
        subset,
        batch_size=per_process,
        shuffle=False,
        num_workers=cfg.data.num_workers,
        collate_fn=collate_images,
    )
    logger.info(
        "world size %d: encoding %d of %d images per process (%s views) with tokenizer %s",
        accelerator.num_processes,
        len(subset),
        len(dataset),
        cfg.views,
        fingerprint[:12],
    )

    writer = CodeShardWriter(
        out, fingerprint, tok.config.codebook_size, accelerator.process_index, cfg.shard_size
    )
    skipped = 0
    with torch.no_grad():
        for batch in tqdm(loader, disable=not accelerator.is_local_main_process, desc="encode"):
            skipped += batch["num_skipped"]
            images = batch["images"].to(accelerator.device)
            if images.shape[0] == 0:
                continue
            flat = images.flatten(0, 1) if ten_crop else images  # (B·V, 3, S, S)
            codes = tok.encode(flat).view(images.shape[0], -1, tok.config.num_tokens)  # (B, V, N)
            writer.add(codes, batch["labels"], batch["indices"])
    writer.close()
    skipped_all = int(accelerator.gather(torch.tensor([skipped], device=accelerator.device)).sum())
    accelerator.wait_for_everyone()

    class_names = class_names_of(hf_dataset, cfg.data.label_column)
    num_classes = len(class_names) if class_names else None
    if num_classes is None and cfg.data.label_column is not None:
        num_classes = int(max(hf_dataset[cfg.data.label_column])) + 1
    if accelerator.is_main_process:
        write_codes_index(
            out,
            fingerprint,
            num_tokens=tok.config.num_tokens,
            codebook_size=tok.config.codebook_size,
            num_classes=num_classes or 1,
            views=10 if ten_crop else 1,
            class_names=class_names,
            tokenizer_path=str(Path(cfg.tokenizer_path).resolve()),
            extra={"skipped_images": skipped_all, "world_size": accelerator.num_processes},
        )
        logger.info("wrote %s (%d unreadable images skipped)", out / INDEX_FILE, skipped_all)
    accelerator.wait_for_everyone()
    return {"output_dir": str(out), "fingerprint": fingerprint, "skipped_images": skipped_all}


if __name__ == "__main__":
    recipe_main(ExtractCodesConfig, main, "Encode a dataset into D-AR code shards.")
