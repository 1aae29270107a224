"""Evaluation: feature networks (:mod:`.features`), metrics (:mod:`.metrics`) and the protocol of DESIGN §8
(:mod:`.protocol`, shared by ``dar eval`` and ``recipes/evaluate.py``).

This module holds only the torch-free names, so that the command line can list choices without importing
torch.
"""

GENERATION_METRICS: tuple[str, ...] = ("fid", "is", "kid", "pr")
FEATURE_KINDS: tuple[str, ...] = ("inception", "classifier")
DEMO_REFERENCE = "demo-test"
DEMO_TRAIN_SAMPLES = "demo-train"
# Below this many samples FID/KID/IS/precision/recall are strongly biased; results carry a warning.
MIN_RELIABLE_SAMPLES = 1000

__all__ = [
    "DEMO_REFERENCE",
    "DEMO_TRAIN_SAMPLES",
    "FEATURE_KINDS",
    "GENERATION_METRICS",
    "MIN_RELIABLE_SAMPLES",
]
