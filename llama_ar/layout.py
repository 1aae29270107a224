"""The vocabulary layout of the D-AR prior: which token ids are image codes, class labels and the null class.

D-AR (Gao & Shou 2025, §3.3 and §4) feeds a vanilla Llama the sequence ``[class id, code_0 … code_{N−1}]``.
The official model keeps two embedding tables (16384 codes, 1001 class rows with row 1000 the null class used
for classifier-free guidance). A stock ``LlamaForCausalLM`` has one table, so we lay the ids out in one range:

====================================  =============================================
ids                                   meaning
====================================  =============================================
``[0, codebook_size)``                image codes (the only ids ever sampled or used as targets)
``codebook_size + i``                 class ``i`` for ``0 <= i < num_classes``
``codebook_size + num_classes``       the null class (classifier-free guidance)
====================================  =============================================

so ``vocab_size = codebook_size + num_classes + 1``, and the official class table appends verbatim after the
code table (its row 1000 lands on :attr:`VocabLayout.null_token`).

The layout travels inside the ``LlamaConfig`` as the extra attribute ``config.dar_layout`` (see
:data:`CONFIG_KEY`), which ``save_pretrained`` writes into ``config.json`` as a plain JSON object, e.g.
``"dar_layout": {"codebook_size": 16384, "num_classes": 1000, "id2label": {"0": "tench", …}}``. A model loaded
with ``AutoModelForCausalLM.from_pretrained`` therefore knows its layout; read it back with
:meth:`VocabLayout.from_config`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["CONFIG_KEY", "VocabLayout"]

CONFIG_KEY = "dar_layout"
"""Name of the ``LlamaConfig`` attribute (and ``config.json`` entry) holding :meth:`VocabLayout.to_dict`."""


@dataclass(frozen=True)
class VocabLayout:
    """Token-id layout of the AR prior (codes, then classes, then one null class).

    Args:
        codebook_size: Number of image codes K; code ids are ``[0, K)``. Must be ≥ 1.
        num_classes: Number of class labels C; class ``i`` has id ``K + i``. Must be ≥ 1.
        id2label: Optional class names, ``{class index: name}`` for every index in ``[0, C)`` (or a subset).
            Keys may be ints or decimal strings (JSON turns them into strings); they are stored as ints.
    """

    codebook_size: int
    num_classes: int
    id2label: Mapping[int, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("codebook_size", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"VocabLayout.{name} must be a positive int, got {value!r}.")
        if self.id2label is not None:
            labels: dict[int, str] = {}
            for key, name in dict(self.id2label).items():
                try:
                    index = int(key)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"id2label keys must be class indices (int or decimal str), got {key!r}."
                    ) from None
                if not 0 <= index < self.num_classes:
                    raise ValueError(
                        f"id2label has class index {index} outside [0, {self.num_classes}); "
                        "pass names only for the model's classes or raise num_classes."
                    )
                labels[index] = str(name)
            object.__setattr__(self, "id2label", labels)

    # ----------------------------------------------------------------------------------------------- ids
    @property
    def null_token(self) -> int:
        """Id of the null class used for classifier-free guidance (= ``codebook_size + num_classes``)."""
        return self.codebook_size + self.num_classes

    @property
    def vocab_size(self) -> int:
        """Size of the token table and of the output head (= ``codebook_size + num_classes + 1``)."""
        return self.codebook_size + self.num_classes + 1

    def class_token(self, index: int) -> int:
        """Token id of class ``index`` (``0 <= index < num_classes``)."""
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(
                f"class index must be an int, got {type(index).__name__}; use class_tokens for tensors."
            )
        if not 0 <= index < self.num_classes:
            raise ValueError(
                f"class index {index} is outside [0, {self.num_classes}); the model knows {self.num_classes} classes."
            )
        return self.codebook_size + index

    def label_ids(self, names: str | Sequence[str]) -> list[int]:
        """Class names (case-insensitive, any comma-separated synonym of ``id2label``) → class indices.

        Raises:
            ValueError: for a name the layout does not know; the message lists the known names.
        """
        if isinstance(names, str):
            names = [names]
        lookup: dict[str, int] = {}
        for index, name in (self.id2label or {}).items():
            for synonym in str(name).split(","):
                lookup.setdefault(synonym.strip().lower(), int(index))
        ids = []
        for name in names:
            key = str(name).strip().lower()
            if key not in lookup:
                known = (
                    ", ".join(sorted((self.id2label or {}).values()))
                    or "none: this model stores no class names"
                )
                raise ValueError(f"Unknown class name {name!r}. Known names: {known}. Or pass integer ids.")
            ids.append(lookup[key])
        return ids

    def class_ids(self, labels: Any, device: torch.device | str | None = None) -> torch.Tensor:
        """Validate class labels: ints (Python or numpy), names, integer tensors/arrays, or a list of these.

        Args:
            labels: one label or a sequence, each a class index in ``[0, num_classes)`` or a class name.
            device: device of the result (default: the tensor's, or CPU).

        Returns:
            (B,) int64 class indices.
        """
        if isinstance(labels, (str, numbers.Integral)):
            labels = [labels]
        if isinstance(labels, np.ndarray):
            labels = torch.from_numpy(labels)
        if isinstance(labels, torch.Tensor):
            if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
                raise ValueError(
                    f"class labels must be an integer tensor, got dtype {labels.dtype}; pass class indices as "
                    "int64 (e.g. labels.long())."
                )
            if labels.dim() > 1:
                raise ValueError(
                    f"class labels must have shape (B,), got {tuple(labels.shape)}; flatten them first."
                )
            tensor = labels.reshape(-1).to(
                device=device if device is not None else labels.device, dtype=torch.long
            )
        else:
            try:
                values = list(labels)
            except TypeError:
                raise TypeError(
                    f"class labels must be class indices or names, got {type(labels).__name__}."
                ) from None
            ids = []
            for value in values:
                if isinstance(value, str):
                    ids.extend(self.label_ids(value))
                elif isinstance(value, numbers.Integral) and not isinstance(value, bool):
                    ids.append(int(value))
                else:
                    raise ValueError(
                        f"class labels must be ints or names, got {value!r} ({type(value).__name__}); pass class "
                        f"indices in [0, {self.num_classes})."
                    )
            tensor = torch.tensor(ids, dtype=torch.long, device=device)
        if tensor.numel() == 0:
            raise ValueError("class labels are empty; pass at least one class index.")
        low, high = int(tensor.min()), int(tensor.max())
        if low < 0 or high >= self.num_classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"class label {bad} is outside [0, {self.num_classes}); this model knows {self.num_classes} "
                "classes (use the null class only through cfg_scale / class dropout)."
            )
        return tensor

    def class_tokens(self, labels: Any, device: torch.device | str | None = None) -> torch.Tensor:
        """Validate class labels (see :meth:`class_ids`) and map them to token ids.

        Returns:
            (B,) int64 token ids in ``[codebook_size, codebook_size + num_classes)``.
        """
        return self.class_ids(labels, device) + self.codebook_size

    def null_tokens(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """(batch_size,) int64 tensor filled with :attr:`null_token`."""
        return torch.full((batch_size,), self.null_token, dtype=torch.long, device=device)

    def is_code(self, ids: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the entries of ``ids`` that are image codes."""
        return (ids >= 0) & (ids < self.codebook_size)

    # ------------------------------------------------------------------------------------------ sequences
    def check_codes(self, codes: torch.Tensor, name: str = "codes") -> None:
        """Raise ``ValueError`` unless ``codes`` is an integer tensor with every entry in ``[0, codebook_size)``."""
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of int64 code ids, got {type(codes).__name__}.")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(
                f"{name} must be an integer tensor, got dtype {codes.dtype}; pass int64 code ids."
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"{name} hold ids in [{int(codes.min())}, {int(codes.max())}] but codes must lie in "
                f"[0, {self.codebook_size}); check that the tokenizer's codebook matches the AR model's layout."
            )

    def build_inputs(self, class_tokens: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Concatenate class tokens and codes into model inputs ``[class id, code_0 … code_{L−1}]``.

        Args:
            class_tokens: (B,) int64 token ids (from :meth:`class_tokens`, or :attr:`null_token`).
            codes: (B, L) int64 code ids in ``[0, codebook_size)``, L ≥ 0.

        Returns:
            (B, L + 1) int64 input ids; position 0 holds the class token.
        """
        self.check_codes(codes)
        if codes.dim() != 2 or class_tokens.dim() != 1 or class_tokens.shape[0] != codes.shape[0]:
            raise ValueError(
                f"build_inputs expects class_tokens (B,) and codes (B, L), got {tuple(class_tokens.shape)} and "
                f"{tuple(codes.shape)}."
            )
        non_code = (class_tokens < self.codebook_size) | (class_tokens > self.null_token)
        if bool(non_code.any()):
            raise ValueError(
                "class_tokens must be class or null token ids; map labels with layout.class_tokens(labels)."
            )
        return torch.cat([class_tokens[:, None].to(codes.device, torch.long), codes.long()], dim=1)

    def mask_to_codes(self, logits: torch.Tensor) -> torch.Tensor:
        """Return a copy of ``logits`` (..., vocab_size) with every non-code id set to −inf.

        The samplers in this package slice ``logits[..., :codebook_size]`` instead, which is equivalent and
        cheaper; this helper is for code that needs full-vocabulary logits.
        """
        if logits.shape[-1] != self.vocab_size:
            raise ValueError(
                f"logits have {logits.shape[-1]} entries in the last dim, expected vocab_size={self.vocab_size}."
            )
        masked = logits.clone()
        masked[..., self.codebook_size :] = float("-inf")
        return masked

    # ---------------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``id2label`` keys become strings, as in ``config.json``)."""
        out: dict[str, Any] = {"codebook_size": self.codebook_size, "num_classes": self.num_classes}
        if self.id2label is not None:
            out["id2label"] = {str(k): v for k, v in sorted(self.id2label.items())}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocabLayout:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(data) - {"codebook_size", "num_classes", "id2label"}
        if unknown:
            raise ValueError(
                f"unknown VocabLayout keys {sorted(unknown)}; expected codebook_size, num_classes, id2label."
            )
        return cls(int(data["codebook_size"]), int(data["num_classes"]), data.get("id2label"))

    def attach_to(self, config: Any) -> None:
        """Store this layout on a ``transformers`` config as ``config.dar_layout`` (so it lands in config.json)."""
        if getattr(config, "vocab_size", self.vocab_size) != self.vocab_size:
            raise ValueError(
                f"config.vocab_size={config.vocab_size} does not match the layout's vocab_size={self.vocab_size}."
            )
        setattr(config, CONFIG_KEY, self.to_dict())

    @classmethod
    def from_config(cls, config: Any) -> VocabLayout:
        """Read the layout stored in a ``LlamaConfig`` (or a model: its ``.config`` is used).

        Raises:
            ValueError: when the config carries no ``dar_layout`` entry or it disagrees with ``vocab_size``.
        """
        config = getattr(config, "config", config)
        data = getattr(config, CONFIG_KEY, None)
        if data is None:
            raise ValueError(
                f"this config has no '{CONFIG_KEY}' entry: it was not built by llama_ar.build_ar_model; attach "
                "one with VocabLayout(codebook_size, num_classes).attach_to(model.config)."
            )
        layout = cls.from_dict(data)
        vocab_size = getattr(config, "vocab_size", layout.vocab_size)
        if vocab_size != layout.vocab_size:
            raise ValueError(
                f"config.vocab_size={vocab_size} but its {CONFIG_KEY} implies {layout.vocab_size} "
                "(codebook_size + num_classes + 1); the config was edited inconsistently."
            )
        return layout
