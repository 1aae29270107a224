"""Tests of tokenizer/layers.py: 2-D RoPE, attention, gated block, time features, patching."""

import math

import torch
from einops import rearrange

from tokenizer.layers import (
    Attention,
    TransformerBlock,
    apply_rope,
    patchify,
    rope_2d_table,
    timestep_features,
    unpatchify,
)


def test_rope_table_angles_follow_row_then_column_pairs():
    head_dim, theta = 16, 10000.0
    table = rope_2d_table(3, 5, head_dim, theta, num_identity=2)
    assert table.shape == (3 * 5 + 2, head_dim // 2) and table.dtype == torch.complex64
    r, c = 2, 3
    angles = torch.angle(table[r * 5 + c].to(torch.complex128))
    for k in range(head_dim // 4):
        omega = theta ** (-2 * k / (head_dim // 2))
        assert math.isclose(angles[k].item(), math.remainder(r * omega, 2 * math.pi), abs_tol=1e-6)
        assert math.isclose(
            angles[head_dim // 4 + k].item(), math.remainder(c * omega, 2 * math.pi), abs_tol=1e-6
        )
    assert torch.equal(table[-2:], torch.ones(2, head_dim // 2, dtype=torch.complex64))


def test_apply_rope_rotates_interleaved_pairs():
    x = torch.randn(2, 3, 15, 16)
    table = rope_2d_table(3, 5, 16)
    out = apply_rope(x, table)
    cos, sin = table.real, table.imag
    a, b = x[..., 0::2], x[..., 1::2]
    torch.testing.assert_close(out[..., 0::2], a * cos - b * sin)
    torch.testing.assert_close(out[..., 1::2], a * sin + b * cos)


def test_rope_scores_depend_only_on_grid_offset():
    q, k = torch.randn(16), torch.randn(16)
    table = rope_2d_table(6, 6, 16)

    def dot(a, b):
        qa = apply_rope(q[None], table[a[0] * 6 + a[1]][None])
        kb = apply_rope(k[None], table[b[0] * 6 + b[1]][None])
        return (qa * kb).sum()

    torch.testing.assert_close(dot((1, 2), (3, 1)), dot((2, 4), (4, 3)))
    assert not torch.allclose(dot((1, 2), (3, 1)), dot((1, 2), (3, 2)))


def test_attention_matches_manual_computation_with_qk_norm_before_rope():
    torch.manual_seed(0)
    attn = Attention(32, 16)
    with torch.no_grad():
        for p in (attn.q_norm.weight, attn.k_norm.weight, attn.q_norm.bias, attn.k_norm.bias):
            p.normal_()
    x = torch.randn(2, 6, 32)
    table = rope_2d_table(2, 3, 16)
    mask = torch.rand(6, 6) > 0.3
    mask |= torch.eye(6, dtype=torch.bool)
    out = attn(x, rope=table, attn_mask=mask)

    def heads(t):
        return t.view(2, 6, 2, 16).transpose(1, 2)

    q = apply_rope(attn.q_norm(heads(attn.q(x))), table)
    k = apply_rope(attn.k_norm(heads(attn.k(x))), table)
    scores = (q @ k.transpose(-1, -2)) / 4.0
    scores = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    expected = attn.proj((scores @ heads(attn.v(x))).transpose(1, 2).reshape(2, 6, 32))
    torch.testing.assert_close(out, expected)


def test_cross_attention_rotates_queries_only():
    torch.manual_seed(0)
    attn = Attention(32, 16)
    x, ctx = torch.randn(1, 6, 32), torch.randn(1, 4, 32)
    table = rope_2d_table(2, 3, 16)
    out = attn(x, context=ctx, rope=table)
    q = apply_rope(attn.q_norm(attn.q(x).view(1, 6, 2, 16)).transpose(1, 2), table)
    k = attn.k_norm(attn.k(ctx).view(1, 4, 2, 16)).transpose(1, 2)
    v = attn.v(ctx).view(1, 4, 2, 16).transpose(1, 2)
    expected = attn.proj(((q @ k.transpose(-1, -2) / 4.0).softmax(-1) @ v).transpose(1, 2).reshape(1, 6, 32))
    torch.testing.assert_close(out, expected)


def test_gated_block_is_identity_at_init_and_not_after():
    block = TransformerBlock(32, 16)
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(block(x), x)
    with torch.no_grad():
        block.gate1.fill_(0.5)
    assert not torch.allclose(block(x), x)
    names = {n for n, _ in block.named_parameters()}
    assert {
        "gate1",
        "gate2",
        "attention.q.weight",
        "attention.q_norm.weight",
        "mlp.fc1.weight",
        "norm1.weight",
    } <= names


def test_timestep_features_cosine_half_first():
    t = torch.tensor([0.0, 0.25, 1.0])
    features = timestep_features(t, 8)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    args = 1000 * t[:, None] * freqs
    torch.testing.assert_close(features, torch.cat([args.cos(), args.sin()], dim=-1))


def test_patchify_channel_order_and_round_trip():
    images = torch.randn(2, 3, 8, 12)
    tokens = patchify(images, 4)
    expected = rearrange(images, "b c (h p1) (w p2) -> b (h w) (c p1 p2)", p1=4, p2=4)
    assert torch.equal(tokens, expected)
    assert torch.equal(unpatchify(tokens, 4, 2, 3), images)


def test_patchify_linear_equals_patch_convolution():
    conv = torch.nn.Conv2d(3, 10, kernel_size=4, stride=4)
    images = torch.randn(2, 3, 8, 8)
    as_linear = patchify(images, 4) @ conv.weight.reshape(10, -1).t() + conv.bias
    torch.testing.assert_close(as_linear, conv(images).flatten(2).transpose(1, 2))
