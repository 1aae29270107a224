"""How much of the class survives the demo tokenizer's codes, and how much its flow decoder loses on top.

On the demo test split, judged by the shipped demo classifier: the reconstructions of the flow decoder
(``decode(encode(x))``, 8 steps, several noise seeds; the share right for *any* seed and for *every* seed), and,
when the tokenizer has the auxiliary regressor (``regression_weight`` > 0), its deterministic estimate from the
conditions of all codes. If the regressor is not much better than the flow decoder, the codes themselves bound
the reconstructions and the next lever is the code channel's capacity (codes, codebook), not the decoder.

Usage: ``python -m dar.bench.code_channel [--tokenizer DIR] [--seeds 3]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json

import torch

BATCH = 200  # images per forward: bounds the memory of a 1,000-image split


def measure(tokenizer, classifier, images: torch.Tensor, labels: torch.Tensor, *, seeds: int = 3) -> dict:
    """Class accuracies of real images, of flow reconstructions per seed, and of the regressor (if any)."""
    batches = range(0, len(images), BATCH)

    def right(estimates: torch.Tensor) -> torch.Tensor:
        return classifier.predict(estimates.clamp(-1, 1)) == labels

    with torch.no_grad():
        codes = torch.cat([tokenizer.encode(images[i : i + BATCH]) for i in batches])
        result = {"real": right(images).float().mean().item(), "codes_used": codes.unique().numel()}
        if tokenizer.regressor is not None:
            estimates = []
            for i in batches:
                conditions = tokenizer.conditioning(tokenizer.quantizer.lookup(codes[i : i + BATCH]))
                estimates.append(tokenizer._regress(conditions))
            result["regressor_all_codes"] = right(torch.cat(estimates)).float().mean().item()
        per_seed = []
        for seed in range(seeds):
            generator = torch.Generator().manual_seed(seed)
            flow = torch.cat([tokenizer.decode(codes[i : i + BATCH], generator=generator) for i in batches])
            per_seed.append(right(flow))
        per_seed = torch.stack(per_seed).float()
    result["flow_per_seed"] = per_seed.mean(1).tolist()
    result["flow_any_seed"] = per_seed.max(0).values.mean().item()
    result["flow_every_seed"] = per_seed.min(0).values.mean().item()
    return result


def main(argv: list[str] | None = None) -> None:
    from dar.demo import DEMO_CLASSIFIER
    from dar.demo.animal_shapes import animal_shapes_uint8
    from dar.demo.classifier import ShapeClassifier
    from dar.images import from_uint8
    from tokenizer import DARTokenizer

    parser = argparse.ArgumentParser(
        prog="python -m dar.bench.code_channel", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tokenizer", default="checkpoints/dar-animals/tokenizer", help="a tokenizer folder")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds of the flow decoder (default 3)")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    tokenizer = DARTokenizer.from_pretrained(args.tokenizer).eval()
    classifier = ShapeClassifier.from_pretrained(str(DEMO_CLASSIFIER)).eval()
    images, labels = animal_shapes_uint8("test")
    print(
        json.dumps(measure(tokenizer, classifier, from_uint8(images), torch.tensor(labels), seeds=args.seeds))
    )


if __name__ == "__main__":
    main()
