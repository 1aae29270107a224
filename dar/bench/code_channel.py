"""How much of the class survives the demo tokenizer's codes, and how much its flow decoder loses on top.

On the demo test split, judged by the shipped demo classifier: the reconstructions of the flow decoder
(``decode(encode(x))``, 8 steps, several noise seeds; the share right for *any* seed and for *every* seed), and,
when the tokenizer has the auxiliary regressor (``regression_weight`` > 0), its deterministic estimate from the
conditions of all codes. If the regressor is not much better than the flow decoder, the codes themselves bound
the reconstructions and the next lever is the code channel's capacity (codes, codebook), not the decoder.
``flow_unquantised`` decodes the encoder's latents themselves (ℓ2-normalised, as the codes are), not their
nearest codes: what an unlimited codebook would give this encoder and decoder (seed 0).

Usage: ``python -m dar.bench.code_channel [--tokenizer DIR] [--seeds 3] [--noise-scale S]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
from unittest import mock

import torch
import torch.nn.functional as F

BATCH = 200  # images per forward: bounds the memory of a 1,000-image split


def measure(
    tokenizer,
    classifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    seeds: int = 3,
    noise_scale: float | None = None,
) -> dict:
    """Class accuracies of real images, of flow reconstructions per seed, and of the regressor (if any).

    ``noise_scale`` is the decoder's (default: the tokenizer's ``config.noise_scale``).
    """
    batches = range(0, len(images), BATCH)

    def decode(codes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = tokenizer.initial_noise(len(codes), generator, noise_scale)
        return tokenizer.decode(codes, noise=noise)

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
            per_seed.append(right(torch.cat([decode(codes[i : i + BATCH], generator) for i in batches])))
        per_seed = torch.stack(per_seed).float()
        generator, unquantised = torch.Generator().manual_seed(0), []
        for i in batches:
            vectors = F.normalize(tokenizer.encoder(images[i : i + BATCH]), dim=-1)
            # the conditions see the latents where the codebook rows would be (decode's only use of lookup)
            with mock.patch.object(tokenizer.quantizer, "lookup", lambda c, v=vectors: v[:, : c.shape[1]]):
                unquantised.append(decode(codes[i : i + BATCH], generator))
        result["flow_unquantised"] = right(torch.cat(unquantised)).float().mean().item()
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
    from tokenizer.config import check_noise_scale

    parser = argparse.ArgumentParser(
        prog="python -m dar.bench.code_channel", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--tokenizer", default="checkpoints/dar-animals/tokenizer", help="a tokenizer folder")
    parser.add_argument("--seeds", type=int, default=3, help="noise seeds of the flow decoder (default 3)")
    parser.add_argument(
        "--noise-scale", type=float, help="std of the decoder's starting noise (default: the tokenizer's)"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.noise_scale is not None:
        try:
            check_noise_scale(args.noise_scale)
        except ValueError as error:
            parser.error(str(error))
    tokenizer = DARTokenizer.from_pretrained(args.tokenizer).eval()
    classifier = ShapeClassifier.from_pretrained(str(DEMO_CLASSIFIER)).eval()
    images, labels = animal_shapes_uint8("test")
    images, labels = from_uint8(images), torch.tensor(labels)
    result = measure(tokenizer, classifier, images, labels, seeds=args.seeds, noise_scale=args.noise_scale)
    print(
        json.dumps(
            {
                "noise_scale": tokenizer.config.noise_scale if args.noise_scale is None else args.noise_scale,
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
