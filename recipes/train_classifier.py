"""Train the demo-domain judge: a small CNN on the real animal-silhouette training split.

    python recipes/train_classifier.py --out checkpoints/animal-classifier

Writes the classifier (config.json + safetensors) and ``metrics.json`` with its accuracy on the real test split.
The shipped demo model is judged with it (README, "Demo model").
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from dar.demo.animal_shapes import ANIMAL_SHAPE_CLASSES, animal_shapes_uint8
from dar.demo.classifier import ShapeClassifier, per_class_accuracy, train_classifier
from dar.images import from_uint8


def as_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The demo split as (N, 3, 32, 32) float images in [-1, 1] and (N,) int64 labels."""
    images, labels = animal_shapes_uint8(split)
    return from_uint8(images), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="checkpoints/animal-classifier")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace a classifier already in --out")
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise SystemExit(
            f"{out} already holds a classifier: pass --overwrite to replace it, or another --out"
        )
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)

    train_x, train_y = as_tensors("train")
    test_x, test_y = as_tensors("test")
    model = ShapeClassifier(num_classes=len(ANIMAL_SHAPE_CLASSES))
    train_classifier(
        model, train_x, train_y, epochs=args.epochs, generator=torch.Generator().manual_seed(args.seed)
    )
    predictions = model.predict(test_x)
    metrics = {
        "test_accuracy": (predictions == test_y).float().mean().item(),
        "test_accuracy_per_class": dict(
            zip(ANIMAL_SHAPE_CLASSES, per_class_accuracy(predictions, test_y, len(ANIMAL_SHAPE_CLASSES)))
        ),
        "train_images": len(train_y),
        "test_images": len(test_y),
        "epochs": args.epochs,
        "seed": args.seed,
    }
    model.save_pretrained(out)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print(json.dumps(metrics, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
