"""Configuration of the D-AR prior: :class:`ARConfig`, the named presets and the mapping onto ``LlamaConfig``.

Implements the AR model of D-AR (Gao & Shou 2025, §3.3 and Table 3): a vanilla Llama (RMSNorm, SwiGLU, 1-D
RoPE, no GQA, untied head) over ``[class id, code_0 … code_{N−1}]``. The paper-size presets reproduce the
official ``GPT-B/L/XL/XXL`` shapes exactly (head dim 64, SwiGLU hidden ``round_up(int(2·4d/3), 256)``,
RMSNorm eps 1e-5, RoPE θ 10000); the small presets are for tests (``tiny``) and the 32-px demo (``demo``).

Dropout. The official model has token dropout (0.1, on the input embeddings), class dropout (0.1, labels →
null class), residual dropout (0.1, after the attention output projection) and FFN dropout (0.1, after the
SwiGLU down projection). A stock ``LlamaForCausalLM`` has only ``attention_dropout`` (on attention weights),
so:

* ``token_dropout`` and ``class_dropout`` are applied *outside* the model by
  :func:`llama_ar.training.ar_loss` (class ids are swapped for the null id, input embeddings are dropped and
  fed through ``inputs_embeds``), which keeps the model class stock;
* residual and FFN dropout are **not available** in a stock Llama and are therefore not fields here;
  training without them is a (documented) deviation from the official recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .layout import VocabLayout

__all__ = ["AR_PRESETS", "ARConfig", "swiglu_hidden_size"]


def swiglu_hidden_size(hidden_size: int, multiple_of: int = 256) -> int:
    """SwiGLU hidden width of the official model: ``round_up(int(2 · 4d / 3), multiple_of)``.

    Gives 2048 / 2816 / 3584 / 4096 for d = 768 / 1024 / 1280 / 1536.
    """
    width = int(2 * 4 * hidden_size / 3)
    return -(-width // multiple_of) * multiple_of


@dataclass(frozen=True)
class ARConfig:
    """Shape and training-time settings of the AR prior.

    Args:
        hidden_size: Model width d.
        num_layers: Number of decoder layers.
        num_heads: Attention heads (no GQA: key/value heads = ``num_heads``); ``hidden_size`` must divide.
        intermediate_size: SwiGLU hidden width; ``None`` derives ``round_up(int(2·4d/3), 256)``.
        rms_norm_eps: RMSNorm epsilon (official 1e-5).
        rope_theta: RoPE base (official 10000); the class token sits at position 0, code k at k + 1.
        num_tokens: Maximum number of codes per image N; positions 0 … N are needed.
        initializer_range: Std of the normal init of linear and embedding weights (official 0.02).
        zero_init_head: Zero-initialise the output head, as the official model does.
        attention_dropout: Dropout on attention probabilities (the only dropout a stock Llama has; official 0).
        token_dropout: Probability used by :func:`llama_ar.training.ar_loss` to drop input-embedding
            entries (official 0.1; applied outside the model).
        class_dropout: Probability of replacing a class label by the null class in training (official 0.1;
            applied outside the model).
    """

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    num_tokens: int = 256
    initializer_range: float = 0.02
    zero_init_head: bool = True
    attention_dropout: float = 0.0
    token_dropout: float = 0.1
    class_dropout: float = 0.1

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ARConfig.{name} must be a positive int, got {value!r}.")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "pick num_heads so that hidden_size / num_heads (the head dim, 64 officially) is an integer."
            )
        if self.intermediate_size is None:
            object.__setattr__(self, "intermediate_size", swiglu_hidden_size(self.hidden_size))
        elif isinstance(self.intermediate_size, bool) or not isinstance(self.intermediate_size, int):
            raise ValueError(
                f"ARConfig.intermediate_size must be an int or None, got {self.intermediate_size!r}."
            )
        elif self.intermediate_size < 1:
            raise ValueError(f"ARConfig.intermediate_size must be positive, got {self.intermediate_size}.")
        for name in ("attention_dropout", "token_dropout", "class_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ARConfig.{name} must lie in [0, 1), got {value}.")
        if self.rms_norm_eps <= 0 or self.rope_theta <= 0 or self.initializer_range < 0:
            raise ValueError(
                "ARConfig.rms_norm_eps and rope_theta must be positive and initializer_range ≥ 0."
            )

    @property
    def head_dim(self) -> int:
        """Per-head width (``hidden_size // num_heads``)."""
        return self.hidden_size // self.num_heads

    @property
    def params_per_layer(self) -> int:
        """Parameters of one decoder layer: ``4d² + 3·d·h + 2d`` (attention, SwiGLU, two RMSNorms)."""
        d, h = self.hidden_size, self.intermediate_size
        return 4 * d * d + 3 * d * h + 2 * d

    def num_parameters(self, layout: VocabLayout) -> int:
        """Total parameters of the built model (layers, token table, final norm, untied head)."""
        return (
            self.num_layers * self.params_per_layer
            + 2 * layout.vocab_size * self.hidden_size
            + self.hidden_size
        )

    def replace(self, **changes: Any) -> ARConfig:
        """A copy with some fields changed, validated again; a new ``hidden_size`` re-derives the SwiGLU width.

        Raises:
            ValueError: naming unknown fields.
        """
        _check_fields(changes)
        if "hidden_size" in changes and "intermediate_size" not in changes:
            changes["intermediate_size"] = None  # re-derive the SwiGLU width for a new width
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ARConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        _check_fields(data)
        return cls(**data)

    @classmethod
    def from_preset(cls, name: str, **changes: Any) -> ARConfig:
        """A preset from :data:`AR_PRESETS`, optionally with fields changed."""
        if name not in AR_PRESETS:
            raise ValueError(f"unknown AR preset {name!r}; choose one of {sorted(AR_PRESETS)}.")
        return AR_PRESETS[name].replace(**changes) if changes else AR_PRESETS[name]

    def to_llama_config(self, layout: VocabLayout, **llama_kwargs: Any):
        """The matching ``transformers.LlamaConfig``, with ``layout`` stored as ``config.dar_layout``.

        The vocabulary is ``layout.vocab_size``; ``max_position_embeddings = num_tokens + 1`` (class token +
        codes); bos/eos/pad ids are ``None`` because no special token exists besides the class and null ids (and a
        ``pad_token_id`` would make ``nn.Embedding`` freeze that row at zero). Extra keyword arguments go to
        ``LlamaConfig`` (e.g. ``attn_implementation="eager"``).
        """
        from transformers import LlamaConfig

        if not isinstance(layout, VocabLayout):
            raise TypeError(f"layout must be a llama_ar.VocabLayout, got {type(layout).__name__}.")
        kwargs: dict[str, Any] = dict(
            vocab_size=layout.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            max_position_embeddings=self.num_tokens + 1,
            initializer_range=self.initializer_range,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": float(self.rope_theta)},
            attention_dropout=self.attention_dropout,
            attention_bias=False,
            mlp_bias=False,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=None,
            pad_token_id=None,
            use_cache=True,
        )
        kwargs.update(llama_kwargs)
        config = LlamaConfig(**kwargs)
        layout.attach_to(config)
        return config


def _check_fields(names: Any) -> None:
    known = {f.name for f in dataclasses.fields(ARConfig)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown ARConfig fields {unknown}; known fields are {sorted(known)}.")


AR_PRESETS: dict[str, ARConfig] = {
    # Official sizes (paper Table 3; reference §4.1): head dim 64, SwiGLU hidden 2048 / 2816 / 3584 / 4096.
    "dar-b": ARConfig(hidden_size=768, num_layers=12, num_heads=12),
    "dar-l": ARConfig(hidden_size=1024, num_layers=24, num_heads=16),
    "dar-xl": ARConfig(hidden_size=1280, num_layers=36, num_heads=20),
    "dar-xxl": ARConfig(hidden_size=1536, num_layers=48, num_heads=24),
    # Unit tests: ~0.1 M parameters in the layers.
    "tiny": ARConfig(hidden_size=64, num_layers=2, num_heads=2, num_tokens=64),
    # 32-px demo (64 codes): 4 × 442,752 layer parameters ≈ 1.8 M, ≈ 8.7 MB fp32 with a 1024-code book.
    "demo": ARConfig(hidden_size=192, num_layers=4, num_heads=3, num_tokens=64),
}
