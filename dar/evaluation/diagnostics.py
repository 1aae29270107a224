"""Evaluations of one model part on the reference images: the tokenizer's reconstructions and DART's levels.

``dar eval --reconstruction`` runs :func:`evaluate_reconstruction` (PSNR, SSIM, rFID and, on the demo data, the
class accuracy of the reconstructions); ``dar eval --levels`` runs :func:`evaluate_levels` (DART's held-out
per-level x̂₀-MSE).
"""

from __future__ import annotations

import logging

import torch

from dar.evaluation.metrics import reconstruction_metrics
from dar.evaluation.protocol import DEMO_TEST_DESCRIPTION, Judges, class_accuracy
from dar.images import from_uint8

logger = logging.getLogger(__name__)

__all__ = ["evaluate_levels", "evaluate_reconstruction", "format_levels", "format_reconstruction"]


def evaluate_reconstruction(
    tokenizer: torch.nn.Module, judges: Judges, *, batch_size: int = 100, seed: int = 0
) -> dict:
    """``dar eval --reconstruction``: the tokenizer encodes and decodes the reference images; PSNR, SSIM, rFID."""
    images = judges.reference.images
    if images is None:
        raise ValueError("reconstruction needs reference images: a folder, an npz with arr_0, or demo-test")
    size = tokenizer.config.image_size
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(
            f"the reference images are {tuple(images.shape[-2:])} px but the tokenizer takes {size}×{size}: pass "
            "images at the tokenizer's resolution"
        )
    generator = torch.Generator(tokenizer.device).manual_seed(seed)
    scores, reconstructions = reconstruction_metrics(
        tokenizer,
        from_uint8(images),
        generator=generator,
        feature=judges.feature,
        batch_size=batch_size,
        return_reconstructions=True,
    )
    labels = judges.reference.labels
    if judges.classifier is not None and labels and judges.classifier.config.num_classes > max(labels):
        names = [str(c) for c in range(judges.classifier.config.num_classes)]
        if judges.reference.description == DEMO_TEST_DESCRIPTION:
            from dar.demo.animal_shapes import ANIMAL_SHAPE_CLASSES as names
        scores["class_accuracy"] = class_accuracy(judges.classifier, reconstructions, labels, names)
    return {"reconstruction": scores, "reference": judges.reference.description}


def evaluate_levels(pipe, judges: Judges, *, batch_size: int = 100, seed: int = 0) -> dict:
    """DART only: the x̂₀-MSE of every noise level on the reference images (their labels where known).

    Each image is noised at every level with noise drawn from one generator seeded by ``seed`` (so two models
    see the same noisy inputs), and the model predicts x₀ from the whole trajectory as in training, without
    class dropout. This is the held-out version of the per-level training loss, the key diagnostic of DART
    (and of its Markovian ablation: same inputs, other mask).
    """
    if getattr(pipe, "transformer", None) is None:
        raise ValueError(
            f"--levels measures the noise levels of a DART pipeline, but this is a {type(pipe).__name__}: use "
            "--reconstruction for a D-AR pipeline's tokenizer"
        )
    images, labels = judges.reference.images, judges.reference.labels
    if images is None:
        raise ValueError("per-level losses need reference images: a folder, an npz with arr_0, or demo-test")
    model = pipe.transformer
    judges.check_size(model.config.image_size)
    if labels is None:
        labels = [model.config.num_classes - 1] * len(images)
        logger.info("the reference has no labels: every image is scored with class %d", labels[0])
    generator = torch.Generator(model.device).manual_seed(seed)
    totals, count = None, 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            chunk = from_uint8(images[start : start + batch_size]).to(model.device)
            samples = pipe.encode_images(chunk, generator=generator)
            label = torch.tensor(labels[start : start + batch_size], device=model.device)
            per_level = model.eval().training_losses(samples, label, generator, class_dropout=0.0).per_level
            totals = per_level * len(chunk) if totals is None else totals + per_level * len(chunk)
            count += len(chunk)
    per_level = (totals / count).tolist()
    return {
        "per_level": per_level,
        "mean": sum(per_level) / len(per_level),
        "num_images": count,
        "reference": judges.reference.description,
    }


def format_reconstruction(results: dict) -> str:
    """The scores of :func:`evaluate_reconstruction`, one per line."""
    scores = results["reconstruction"]
    lines = [f"  {k:<8} {v:10.4f}" for k, v in scores.items() if isinstance(v, float)]
    if "class_accuracy" in scores:
        lines.append(f"  {'class accuracy':<15}{scores['class_accuracy']['overall']:10.4f}")
    return "\n".join(lines)


def format_levels(results: dict) -> str:
    """The per-level losses of :func:`evaluate_levels` on one line, level 1 (the cleanest) first."""
    return "per-level x0-MSE (level 1 = cleanest): " + " ".join(f"{v:.4f}" for v in results["per_level"])
