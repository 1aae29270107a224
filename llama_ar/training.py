"""Next-token training loss of the D-AR prior, with the official class and token dropout (D-AR §3.3, §4.1).

The model sees ``[class id, code_0 … code_{N−2}]`` (N positions, class token at position 0) and predicts
``code_0 … code_{N−1}``: the logits at position i are scored against code i, so no position ever has the class
token as its target (the HF ``labels=`` equivalent is a −100 label on the class position). The softmax runs over
the code ids only (``logits[..., :codebook_size]``), as in the official model whose head has exactly
``codebook_size`` outputs; class and null ids are never targets.

Regularisation done *outside* the stock model:

* class dropout: each class id is replaced by the null id with probability ``class_dropout`` (official 0.1);
* token dropout: dropout on the input embeddings, fed through ``inputs_embeds`` (official 0.1). The official
  model uses ``nn.Dropout`` on the embedding tensor, i.e. element-wise with 1/(1−p) rescaling, and the class
  token's embedding is included; ``token_dropout_mode="element"`` (default) reproduces that, ``"row"`` drops
  whole token rows instead (also rescaled). ``drop_class_token=False`` spares position 0.

Residual / FFN dropout (official 0.1) have no counterpart in a stock Llama (see :mod:`llama_ar.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .layout import VocabLayout

__all__ = [
    "ARLossModule",
    "ARLossOutput",
    "ARTrainingBatch",
    "ar_loss",
    "ar_training_batch",
    "drop_class_tokens",
    "drop_embeddings",
]


@dataclass
class ARTrainingBatch:
    """Inputs and targets of one teacher-forced step.

    Attributes:
        input_ids: (B, N) int64, ``[class or null id, code_0 … code_{N−2}]``.
        targets: (B, N) int64 code ids ``code_0 … code_{N−1}`` in ``[0, codebook_size)``.
        position_ids: (1, N) int64 ``0 … N−1`` (class token at position 0).
        class_dropped: (B,) bool, True where the class id was replaced by the null id.
    """

    input_ids: torch.Tensor
    targets: torch.Tensor
    position_ids: torch.Tensor
    class_dropped: torch.Tensor


@dataclass
class ARLossOutput:
    """Result of :func:`ar_loss`.

    Attributes:
        loss: Scalar mean cross-entropy over all B·N code targets (differentiable).
        accuracy: Scalar top-1 accuracy of the code predictions (detached).
        num_targets: Number of scored positions (B·N).
        class_dropped: (B,) bool mask of the rows trained unconditionally.
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    num_targets: int
    class_dropped: torch.Tensor


def _check_probability(name: str, p: float) -> None:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {p}.")


def drop_class_tokens(
    class_tokens: torch.Tensor, layout: VocabLayout, p: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each class token by the null token with probability ``p``.

    Args:
        class_tokens: (B,) int64 class token ids.
        layout: The vocabulary layout.
        p: Drop probability in [0, 1).
        generator: Random source (on ``class_tokens.device``).

    Returns:
        ``(tokens, dropped)``: (B,) int64 ids and the (B,) bool mask of dropped rows.
    """
    _check_probability("class_dropout", p)
    if p == 0.0:
        return class_tokens, torch.zeros_like(class_tokens, dtype=torch.bool)
    dropped = torch.rand(class_tokens.shape, generator=generator, device=class_tokens.device) < p
    return torch.where(dropped, layout.null_token, class_tokens), dropped


def drop_embeddings(
    embeds: torch.Tensor,
    p: float,
    generator: torch.Generator | None = None,
    mode: Literal["element", "row"] = "element",
    keep_first: bool = False,
) -> torch.Tensor:
    """Inverted dropout on input embeddings (kept entries are scaled by 1/(1−p)).

    Args:
        embeds: (B, L, d) float input embeddings.
        p: Drop probability in [0, 1).
        generator: Random source (on ``embeds.device``).
        mode: ``"element"`` drops single entries (``nn.Dropout``, the official behaviour); ``"row"`` drops
            whole token rows.
        keep_first: Never drop position 0 (the class token).

    Returns:
        (B, L, d) tensor of the same dtype.
    """
    _check_probability("token_dropout", p)
    if mode not in ("element", "row"):
        raise ValueError(f"token dropout mode must be 'element' or 'row', got {mode!r}.")
    if p == 0.0:
        return embeds
    shape = embeds.shape if mode == "element" else embeds.shape[:-1] + (1,)
    keep = torch.rand(shape, generator=generator, device=embeds.device) >= p
    if keep_first:
        keep[:, 0] = True
    scale = torch.where(keep, 1.0 / (1.0 - p), 0.0).to(embeds.dtype)
    if keep_first:
        scale[:, 0] = 1.0
    return embeds * scale


def ar_training_batch(
    class_labels: torch.Tensor,
    codes: torch.Tensor,
    layout: VocabLayout,
    *,
    class_dropout: float,
    generator: torch.Generator | None = None,
) -> ARTrainingBatch:
    """Build the teacher-forced input/target pair, with class dropout.

    Args:
        class_labels: (B,) integer class indices in ``[0, num_classes)``.
        codes: (B, N) int64 codes in ``[0, codebook_size)``, N ≥ 1.
        layout: The vocabulary layout.
        class_dropout: Probability of replacing a label by the null class (``ARConfig.class_dropout``).
        generator: Random source for the class dropout.

    Returns:
        An :class:`ARTrainingBatch`.
    """
    layout.check_codes(codes)
    if codes.dim() != 2 or codes.shape[1] < 1:
        raise ValueError(f"codes must have shape (B, N) with N ≥ 1, got {tuple(codes.shape)}.")
    tokens = layout.class_tokens(class_labels, device=codes.device)
    if tokens.shape[0] != codes.shape[0]:
        raise ValueError(
            f"got {tokens.shape[0]} class labels for {codes.shape[0]} code rows; pass one label per row."
        )
    tokens, dropped = drop_class_tokens(tokens, layout, class_dropout, generator)
    codes = codes.long()
    input_ids = layout.build_inputs(tokens, codes[:, :-1])  # (B, N)
    position_ids = torch.arange(codes.shape[1], device=codes.device)[None]  # (1, N)
    return ARTrainingBatch(
        input_ids=input_ids, targets=codes, position_ids=position_ids, class_dropped=dropped
    )


def ar_loss(
    model: torch.nn.Module,
    class_labels: torch.Tensor,
    codes: torch.Tensor,
    layout: VocabLayout | None = None,
    *,
    class_dropout: float,
    token_dropout: float,
    generator: torch.Generator | None = None,
    token_dropout_mode: Literal["element", "row"] = "element",
    drop_class_token: bool = True,
) -> ARLossOutput:
    """Mean next-code cross-entropy of ``model`` on a batch, with class and token dropout.

    The token embeddings are looked up outside the Llama's ``forward``: under DDP / FSDP / autocast wrap an
    :class:`ARLossModule` (whose ``forward`` runs all of this) rather than the bare model. The caller chooses
    train/eval mode (the only in-model dropout is ``attention_dropout``). Pass ``class_dropout=0,
    token_dropout=0`` for a validation loss; the training values live in :class:`llama_ar.ARConfig`.

    Args:
        model: A ``LlamaForCausalLM`` built by :func:`llama_ar.build_ar_model` (or a wrapper with ``.module``).
        class_labels: (B,) integer class indices in ``[0, num_classes)``.
        codes: (B, N) int64 codes in ``[0, codebook_size)``; N ≤ the model's ``max_position_embeddings``.
        layout: Vocabulary layout; read from ``model.config`` when ``None``.
        class_dropout: Probability of training a row unconditionally (``ARConfig.class_dropout``).
        token_dropout: Input-embedding dropout probability (``ARConfig.token_dropout``).
        generator: Random source for both dropouts (deterministic given the generator state).
        token_dropout_mode: ``"element"`` (official ``nn.Dropout``) or ``"row"``.
        drop_class_token: Whether token dropout also applies to the class token (official: yes).

    Returns:
        An :class:`ARLossOutput`.
    """
    inner = getattr(model, "module", model)
    if layout is None:
        layout = VocabLayout.from_config(inner.config)
    max_codes = inner.config.max_position_embeddings
    if codes.dim() == 2 and codes.shape[1] > max_codes:
        raise ValueError(
            f"codes have {codes.shape[1]} positions but the model holds at most {max_codes}; "
            "build the model with a larger num_tokens."
        )
    batch = ar_training_batch(class_labels, codes, layout, class_dropout=class_dropout, generator=generator)
    embeds = inner.get_input_embeddings()(batch.input_ids)  # (B, N, d)
    embeds = drop_embeddings(
        embeds, token_dropout, generator, token_dropout_mode, keep_first=not drop_class_token
    )
    logits = model(inputs_embeds=embeds, position_ids=batch.position_ids, use_cache=False).logits
    code_logits = logits[..., : layout.codebook_size].float()  # (B, N, K): non-code ids are never targets
    loss = F.cross_entropy(code_logits.reshape(-1, layout.codebook_size), batch.targets.reshape(-1))
    with torch.no_grad():
        accuracy = (code_logits.argmax(-1) == batch.targets).float().mean()
    return ARLossOutput(
        loss=loss, accuracy=accuracy, num_targets=batch.targets.numel(), class_dropped=batch.class_dropped
    )


class ARLossModule(torch.nn.Module):
    """:func:`ar_loss` as a module's ``forward``: the embedding lookup, dropouts and the Llama all run inside it.

    Wrap this module (not the bare Llama) with DDP / FSDP / ``accelerator.prepare``: FSDP gathers sharded
    parameters only inside the wrapped ``forward``, and autocast covers the embeddings too.

    Args:
        model: the ``LlamaForCausalLM`` being trained (it carries its :class:`VocabLayout`).
        class_dropout: class-label dropout probability (``ARConfig.class_dropout``).
        token_dropout: input-embedding dropout probability (``ARConfig.token_dropout``).
    """

    def __init__(self, model: torch.nn.Module, *, class_dropout: float, token_dropout: float) -> None:
        super().__init__()
        _check_probability("class_dropout", class_dropout)
        _check_probability("token_dropout", token_dropout)
        self.model = model
        self.layout = VocabLayout.from_config(model.config)
        self.class_dropout, self.token_dropout = class_dropout, token_dropout

    def forward(
        self, class_labels: torch.Tensor, codes: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """(B,) labels and (B, N) codes → ``{"loss": …, "accuracy": …}`` scalar tensors."""
        result = ar_loss(
            self.model,
            class_labels,
            codes,
            self.layout,
            class_dropout=self.class_dropout,
            token_dropout=self.token_dropout,
            generator=generator,
        )
        return {"loss": result.loss, "accuracy": result.accuracy}
