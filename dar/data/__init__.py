"""Training data: image datasets through Hugging Face ``datasets`` (:mod:`.images`), the recipes'
augmentations (:mod:`.transforms`) and pre-extracted code shards (:mod:`.codes`)."""

from __future__ import annotations


def mix_seed(seed: int, epoch_or_process: int, index: int) -> int:
    """One 63-bit seed from three integers (run seed, epoch or process, example or step index).

    Every per-example or per-step generator of the recipes is seeded with it, so data order, augmentations and
    training noise are pure functions of these numbers: they do not depend on worker or process counts or on
    where a run was resumed.
    """
    return ((int(seed) * 1_000_003 + int(epoch_or_process)) * 2_147_483_647 + int(index)) % (2**63 - 1)


__all__ = ["mix_seed"]
