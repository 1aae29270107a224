"""Evaluate a pipeline on several processes: class-balanced samples, FID/IS/KID/precision/recall (DESIGN §8).

    accelerate launch recipes/evaluate.py --checkpoint DIR --per-class 50 \
        --reference VIRTUAL_imagenet256_labeled.npz --features inception --inception default_1.pt --out-dir DIR

Every process samples its contiguous share of the class-balanced label list with seed ``seed + rank`` and writes
``shards/rank{r:03d}.npz`` (and PNGs named by global index with ``--save-png``); the main process gathers the
shards in rank order, writes ``samples.npz`` (ADM-evaluator compatible: ``arr_0`` uint8 NHWC, ``labels``),
computes the metrics and writes ``metrics.json``. Same protocol as ``dar eval`` (``dar.evaluation.protocol``);
with one process and the same seed and batch size it draws the same samples.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch

from dar.arguments import add_generation_arguments, add_judge_arguments, sampling_kwargs
from dar.evaluation import protocol
from dar.images import load_images, prepare_image_folder, save_npz, save_pngs
from dar.training.run import check_world_size, multi_process_cpu_launch

logger = logging.getLogger("evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="pipeline folder written by save_pretrained")
    parser.add_argument("--out-dir", required=True, help="folder for shards, samples.npz and metrics.json")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=50, help="images per pipeline call and process")
    add_generation_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="process r samples with seed + r")
    add_judge_arguments(parser)
    parser.add_argument("--save-png", action="store_true", help="also write out-dir/png/{index:06d}.png")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier evaluation in out-dir")
    return parser.parse_args(argv)


def main(cfg: argparse.Namespace) -> dict | None:
    from accelerate import Accelerator

    from dar.loading import class_names, image_size, load_pipeline

    accelerator = Accelerator(cpu=multi_process_cpu_launch(), mixed_precision="no")
    check_world_size(accelerator)
    rank, world_size = accelerator.process_index, accelerator.num_processes
    out = Path(cfg.out_dir)
    shard_dir = out / "shards"
    judges = None
    if accelerator.is_main_process:  # reference, extractor and output folders first: errors before sampling
        done = [name for name in ("metrics.json", "samples.npz") if (out / name).exists()]
        if done and not cfg.overwrite:
            raise FileExistsError(
                f"{out} already holds {', '.join(done)} of an evaluation: pass --overwrite or another --out-dir"
            )
        judges = protocol.build_judges(
            cfg.reference, cfg.features, inception=cfg.inception, classifier=cfg.classifier
        )
        judges.to(accelerator.device)
        shard_dir.mkdir(parents=True, exist_ok=True)
        for stale in shard_dir.glob("rank*.npz"):
            stale.unlink()
        if cfg.save_png:
            prepare_image_folder(out / "png", overwrite=cfg.overwrite)
    accelerator.wait_for_everyone()

    # ---- every process: its share of the class-balanced labels, seed + rank
    pipe = load_pipeline(cfg.checkpoint).to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    if judges is not None:
        judges.check_size(image_size(pipe))
    labels = protocol.class_balanced_labels(pipe.num_classes, cfg.per_class)
    start, my_labels = protocol.shard(labels, rank, world_size)
    if my_labels:
        generator = torch.Generator(pipe.device).manual_seed(cfg.seed + rank)
        images = protocol.sample_images(
            pipe, my_labels, batch_size=cfg.batch_size, generator=generator, **sampling_kwargs(cfg)
        )
        save_npz(images, shard_dir / f"rank{rank:03d}.npz", labels=torch.tensor(my_labels))
        if cfg.save_png:
            save_pngs(images, out / "png", start_index=start)
        logger.info("rank %d: sampled images %d..%d", rank, start, start + len(my_labels) - 1)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None

    # ---- main process: gather the shards in rank order, then measure
    paths = [
        shard_dir / f"rank{r:03d}.npz" for r in range(world_size) if protocol.shard(labels, r, world_size)[1]
    ]
    shards = [load_images(p) for p in paths]
    images, gathered = torch.cat([s[0] for s in shards]), torch.cat([s[1] for s in shards])
    if gathered.tolist() != labels:
        raise RuntimeError(
            f"gathered {len(gathered)} labels out of order or incomplete; expected {len(labels)}"
        )
    results = protocol.run_evaluation(
        images,
        labels,
        judges,
        class_names=class_names(pipe),
        save_npz=out / "samples.npz",
        seed=cfg.seed,
        metrics=cfg.metrics,
        kid_subset_size=cfg.kid_subset_size,
    )
    results["settings"] = {
        **vars(cfg),
        "features": judges.features,
        "world_size": world_size,
        "num_samples": len(labels),
        "sampling": sampling_kwargs(cfg),
    }
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=str))
    print(protocol.format_results(results))
    print(f"wrote {out / 'metrics.json'} and {out / 'samples.npz'} ({len(labels)} images)")
    return results


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    main(parse_args())
