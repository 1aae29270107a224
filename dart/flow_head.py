"""DART-FM's per-token flow-matching head (reference dart.md §3; the paper names the variant, the design is ours).

A small MLP velocity network, MAR-style (Li et al. 2024, "SimpleMLPAdaLN"): the token's backbone hidden state
h and the flow time s drive adaLN modulations of ``fm_depth`` residual MLP blocks; the output layer is
zero-initialised, like the x̂_0 head of plain DART.

Choices (documented, ours):

- **Target x_0**, not x_{t−1}: the head samples the clean patch given everything the backbone has read, so
  every level still yields a clean preview and the re-noising step is DART's. x_{t−1} would only add known
  Gaussian noise to the target.
- **Path** x_s = (1 − s)·z + s·x_0 with z ~ N(0, I), s ∈ [0, 1] (0 = noise, 1 = data, like the tokenizer);
  velocity target v = x_0 − z (conditional flow matching, uniform s).
- **Output** (``fm_prediction``): the velocity itself, or the clean token x̂_0, turned into the velocity
  v = (x̂_0 − x_s)/(1 − s) (1 − s clipped at :data:`MIN_ONE_MINUS_S`), as Li & He ("Back to Basics: Let
  Denoising Generative Models Denoise", 2025) argue for tokens of many values: the clean patch lies near a
  low-dimensional manifold that a narrow network can reach, the velocity (clean minus noise) does not. The loss is
  the same velocity MSE either way.
- **Sampling**: ``fm_steps`` Euler steps from s = 0 to 1 (8 by default). Guidance mixes the conditional and
  unconditional velocities, v = v_u + w·(v_c − v_u); since the one-jump estimate x_s + (1 − s)·v is linear in v,
  this is guidance on the head's x̂_0 estimate at every step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from dart.layers import timestep_embedding

__all__ = ["MIN_ONE_MINUS_S", "FlowHead"]

MIN_ONE_MINUS_S = 0.05
"""Lower clip of 1 − s when an x̂_0 output is turned into a velocity (Li & He's value)."""


class _ResBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        shift, scale, gate = self.modulation(cond).chunk(3, dim=-1)
        return x + gate * self.mlp(self.norm(x) * (1 + scale) + shift)


class FlowHead(nn.Module):
    """Velocity network v(x_s, s, h) for one token at a time.

    Args:
        token_dim: values per token D.
        cond_dim: backbone width d (the hidden state h).
        width: head width.
        depth: residual adaLN blocks.
        prediction: ``"x0"`` (the output is x̂_0, converted to v; the default, as in :class:`~dart.config.DARTConfig`) or
            ``"velocity"`` (the output is v).
    """

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, prediction: str = "x0"):
        super().__init__()
        if prediction not in ("velocity", "x0"):
            raise ValueError(f"prediction must be 'velocity' or 'x0', got {prediction!r}")
        self.width = width
        self.prediction = prediction
        self.input_proj = nn.Linear(token_dim, width)
        self.cond_proj = nn.Linear(cond_dim, width)
        self.time_mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(_ResBlock(width) for _ in range(depth))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.output = nn.Linear(width, token_dim)
        for module in [*(b.modulation[-1] for b in self.blocks), self.final_modulation[-1], self.output]:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, x: Tensor, s: Tensor, cond: Tensor) -> Tensor:
        """Velocity.

        Args:
            x: (N, D) points x_s on the path.
            s: (N,) flow times in [0, 1].
            cond: (N, d) backbone hidden states.

        Returns:
            (N, D) velocity estimates (x_0 − z in expectation).
        """
        c = self.cond_proj(cond) + self.time_mlp(timestep_embedding(s, self.width).to(cond.dtype))
        h = self.input_proj(x)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.final_modulation(c).chunk(2, dim=-1)
        out = self.output(self.final_norm(h) * (1 + scale) + shift)
        if self.prediction == "velocity":
            return out
        return (out - x) / (1 - s).clamp_min(MIN_ONE_MINUS_S)[:, None].to(out.dtype)

    def loss(self, x0: Tensor, cond: Tensor, num_samples: int, generator: torch.Generator | None) -> Tensor:
        """Conditional flow-matching loss per token.

        Args:
            x0: (N, D) clean tokens (the targets).
            cond: (N, d) hidden states that condition them.
            num_samples: flow times drawn per token.
            generator: for the times and the noise.

        Returns:
            (N,) velocity MSE per token, averaged over its samples and values.
        """
        from diffusers.utils.torch_utils import randn_tensor

        n, dim = x0.shape
        x0 = x0.repeat(num_samples, 1)  # (S·N, D)
        cond = cond.repeat(num_samples, 1)
        s = torch.rand(x0.shape[0], generator=generator, device=generator.device if generator else None)
        s = s.to(device=x0.device, dtype=x0.dtype)
        z = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_s = (1 - s[:, None]) * z + s[:, None] * x0
        error = (self(x_s, s, cond) - (x0 - z)).pow(2).mean(-1)  # (S·N,)
        return error.view(num_samples, n).mean(0)

    @torch.no_grad()
    def sample(
        self,
        cond: Tensor,
        num_steps: int,
        *,
        uncond: Tensor | None = None,
        cfg_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Euler integration from noise to x̂_0, optionally guided.

        Args:
            cond: (N, d) conditional hidden states.
            num_steps: Euler steps.
            uncond: (N, d) unconditional hidden states for guidance, or ``None``.
            cfg_scale: guidance scale w (used with ``uncond``).
            generator: for the starting noise z.

        Returns:
            (N, D) sampled clean tokens.
        """
        from diffusers.utils.torch_utils import randn_tensor

        n = cond.shape[0]
        x = randn_tensor(
            (n, self.output.out_features), generator=generator, device=cond.device, dtype=cond.dtype
        )
        both = cond if uncond is None else torch.cat([cond, uncond])
        for i in range(num_steps):
            s = torch.full((both.shape[0],), i / num_steps, device=cond.device, dtype=cond.dtype)
            velocity = self(x if uncond is None else torch.cat([x, x]), s, both)
            if uncond is not None:
                v_cond, v_uncond = velocity.chunk(2)
                velocity = v_uncond + cfg_scale * (v_cond - v_uncond)
            x = x + velocity / num_steps
        return x
