"""Evaluate a pipeline on several processes: class-balanced samples, FID/IS/KID/precision/recall (DESIGN §8).

    accelerate launch recipes/evaluate.py --checkpoint DIR --per-class 50 \
        --reference VIRTUAL_imagenet256_labeled.npz --features inception --inception default_1.pt --out-dir DIR

Every process samples its contiguous share of the class-balanced label list with seed ``seed + rank`` and writes
``shards/rank{r:03d}.npz`` (and PNGs named by global index with ``--save-png``); the main process gathers the
shards in rank order, writes ``samples.npz`` (ADM-evaluator compatible: ``arr_0`` uint8 NHWC, ``labels``),
computes the metrics and writes ``metrics.json``. Same options as ``dar eval``; with one process and the same
seed and batch size it draws the same samples.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch

from dar import evaluation, metrics
from dar.cli import DEMO_CLASSIFIER, add_generation_arguments, sampling_kwargs
from dar.train_loop import check_world_size, multi_process_cpu_launch

logger = logging.getLogger("evaluate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="pipeline folder written by save_pretrained")
    parser.add_argument("--out-dir", required=True, help="folder for shards, samples.npz and metrics.json")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=50, help="images per pipeline call and process")
    add_generation_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="process r samples with seed + r")
    parser.add_argument("--reference", default=evaluation.DEMO_REFERENCE)
    parser.add_argument("--features", choices=evaluation.FEATURE_KINDS)
    parser.add_argument("--inception", help="local TorchScript Inception file")
    parser.add_argument("--classifier", help="demo-domain classifier folder")
    parser.add_argument("--metrics", nargs="+", choices=metrics.GENERATION_METRICS)
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--save-png", action="store_true", help="also write out-dir/png/{index:06d}.png")
    return parser.parse_args(argv)


def main(cfg: argparse.Namespace) -> dict | None:
    from accelerate import Accelerator

    from dar.classifier import ShapeClassifier
    from dar.pipeline import DARPipeline

    if not (Path(cfg.checkpoint) / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{cfg.checkpoint} has no model_index.json: pass a folder written by save_pretrained"
        )
    accelerator = Accelerator(cpu=multi_process_cpu_launch(), mixed_precision="no")
    check_world_size(accelerator)
    rank, world_size = accelerator.process_index, accelerator.num_processes
    out = Path(cfg.out_dir)
    shard_dir = out / "shards"
    if accelerator.is_main_process:  # reference and extractor first: their errors come before the sampling
        features = cfg.features or (
            "classifier" if cfg.reference == evaluation.DEMO_REFERENCE else "inception"
        )
        reference = evaluation.load_reference(cfg.reference)
        classifier_path = Path(cfg.classifier) if cfg.classifier else DEMO_CLASSIFIER
        classifier = None
        if features == "classifier" or cfg.classifier or classifier_path.is_dir():
            classifier = ShapeClassifier.from_pretrained(str(classifier_path)).to(accelerator.device).eval()
        feature = evaluation.build_feature_extractor(
            features, inception_path=cfg.inception, classifier=classifier
        )
        feature.to(accelerator.device)
        for stale in shard_dir.glob("rank*.npz"):
            stale.unlink()
    accelerator.wait_for_everyone()

    # ---- every process: its share of the class-balanced labels, seed + rank
    pipe = DARPipeline.from_pretrained(cfg.checkpoint).to(accelerator.device)
    pipe.set_progress_bar_config(disable=True)
    labels = evaluation.class_balanced_labels(pipe.layout.num_classes, cfg.per_class)
    start, my_labels = evaluation.shard(labels, rank, world_size)
    if my_labels:
        generator = torch.Generator(pipe.device).manual_seed(cfg.seed + rank)
        images = evaluation.sample_images(
            pipe, my_labels, batch_size=cfg.batch_size, generator=generator, **sampling_kwargs(cfg)
        )
        metrics.save_npz(images, shard_dir / f"rank{rank:03d}.npz", labels=torch.tensor(my_labels))
        if cfg.save_png:
            metrics.save_pngs(images, out / "png", start_index=start)
        logger.info("rank %d: sampled images %d..%d", rank, start, start + len(my_labels) - 1)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return None

    # ---- main process: gather the shards in rank order, then measure
    paths = [
        shard_dir / f"rank{r:03d}.npz"
        for r in range(world_size)
        if evaluation.shard(labels, r, world_size)[1]
    ]
    shards = [metrics.load_images(p) for p in paths]
    images = torch.cat([s[0] for s in shards])
    gathered = torch.cat([s[1] for s in shards])
    if gathered.tolist() != labels:
        raise RuntimeError(
            f"gathered {len(gathered)} labels out of order or incomplete; expected {len(labels)}"
        )
    metrics.save_npz(images, out / "samples.npz", labels=gathered)

    names = [pipe.id2label.get(i, str(i)) for i in range(pipe.layout.num_classes)]
    results = evaluation.evaluate_samples(
        images, labels, reference, feature, metrics=cfg.metrics,
        classifier=classifier, class_names=names, kid_subset_size=cfg.kid_subset_size,
        generator=torch.Generator().manual_seed(cfg.seed),
    )  # fmt: skip
    results["settings"] = {
        **vars(cfg),
        "features": features,
        "world_size": world_size,
        "num_samples": len(labels),
    }
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=str))
    print(evaluation.format_results(results))
    print(f"wrote {out / 'metrics.json'} and {out / 'samples.npz'} ({len(labels)} images)")
    return results


if __name__ == "__main__":
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")  # fmt: skip
    main(parse_args())
