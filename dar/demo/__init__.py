"""Everything specific to the embedded demo: the animal-silhouette data (:mod:`.animal_shapes`), the
demo-domain judge (:mod:`.classifier`) and the shipped checkpoints of this repository.

A user with their own data can ignore this package. The checkpoints live in the source checkout
(``checkpoints/``), not in an installed wheel: :func:`shipped` says so when they are missing.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"
DEMO_PIPELINE = CHECKPOINTS / "dar-animals"
DART_DEMO_PIPELINE = CHECKPOINTS / "dart-animals"
DEMO_CLASSIFIER = CHECKPOINTS / "animal-classifier"

__all__ = ["DART_DEMO_PIPELINE", "DEMO_CLASSIFIER", "DEMO_PIPELINE", "shipped"]


def shipped(path: Path, what: str) -> Path:
    """``path`` if it exists, else a ``FileNotFoundError`` that says where the shipped files come from."""
    if not path.exists():
        raise FileNotFoundError(
            f"the shipped {what} is missing at {path}: it lives in the d-ar source checkout (git clone the "
            "repository, or retrain it with `make demo-train`), or pass your own folder"
        )
    return path
