"""Tests of tokenizer/quantizer.py: cosine lookup, masking, EMA updates, the k-means trap guard."""

import pytest
import torch
import torch.nn.functional as F

from tokenizer import TOKENIZER_PRESETS
from tokenizer.quantizer import VectorQuantizer

CFG = TOKENIZER_PRESETS["tiny"]


def test_codes_are_nearest_by_cosine_and_match_library_eval():
    vq = VectorQuantizer(CFG).eval()
    latents = torch.randn(2, CFG.num_tokens, CFG.codebook_dim) * 3
    codes = vq.codes(latents)
    assert codes.dtype == torch.int64 and codes.shape == (2, CFG.num_tokens)
    similarity = F.normalize(latents, dim=-1) @ vq.codebook.t()
    assert torch.equal(codes, similarity.argmax(-1))
    _, library_codes, _ = vq.vq(F.normalize(latents, dim=-1))
    assert torch.equal(codes, library_codes)


def test_codes_never_change_the_codebook_even_in_training_mode():
    vq = VectorQuantizer(CFG).train()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq.codes(torch.randn(2, CFG.num_tokens, CFG.codebook_dim))
    for key, value in vq.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_lookup_returns_unit_rows_of_the_codebook():
    vq = VectorQuantizer(CFG)
    codes = torch.randint(0, CFG.codebook_size, (3, 5))
    vectors = vq.lookup(codes)
    assert vectors.shape == (3, 5, CFG.codebook_dim)
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3, 5))
    torch.testing.assert_close(vectors, vq.codebook[codes])


def test_masked_tokens_are_excluded_from_codes_loss_and_ema():
    vq = VectorQuantizer(CFG).train()
    latents = torch.randn(2, CFG.num_tokens, CFG.codebook_dim, requires_grad=True)
    mask = torch.arange(CFG.num_tokens)[None] < torch.tensor([[4], [8]])
    out = vq.quantize(latents, mask=mask)
    assert (out.codes[~mask] == -1).all() and (out.codes[mask] >= 0).all()
    assert torch.equal(out.vectors[~mask], torch.zeros_like(out.vectors[~mask]))
    z = F.normalize(latents.detach(), dim=-1)
    expected = CFG.commitment_weight * F.mse_loss(out.vectors.detach()[mask], z[mask])
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert latents.grad[~mask].abs().max() == 0 and latents.grad[mask].abs().max() > 0

    # Changing only masked latents changes neither the loss nor the EMA statistics.
    vq_a, vq_b = VectorQuantizer(CFG).train(), VectorQuantizer(CFG).train()
    vq_b.load_state_dict(vq_a.state_dict())
    other = latents.detach().clone()
    other[~mask] = torch.randn_like(other[~mask])
    loss_a = vq_a.quantize(latents.detach(), mask=mask).loss
    loss_b = vq_b.quantize(other, mask=mask).loss
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(vq_a.vq._codebook.cluster_size, vq_b.vq._codebook.cluster_size)
    torch.testing.assert_close(vq_a.vq._codebook.embed, vq_b.vq._codebook.embed)


def test_ema_updates_in_training_not_in_eval():
    vq = VectorQuantizer(CFG)
    latents = torch.randn(2, CFG.num_tokens, CFG.codebook_dim)
    before = vq.vq._codebook.embed.clone()
    vq.eval().quantize(latents)
    assert torch.equal(vq.vq._codebook.embed, before)
    vq.train().quantize(latents)
    assert not torch.equal(vq.vq._codebook.embed, before)


def test_kmeans_codebook_must_be_trained_before_inference():
    vq = VectorQuantizer(CFG.replace(kmeans_init=True))
    latents = torch.randn(4, CFG.num_tokens, CFG.codebook_dim)
    with pytest.raises(RuntimeError, match="not initialised"):
        vq.eval().quantize(latents)
    with pytest.raises(RuntimeError, match="not initialised"):
        vq.codes(latents)
    vq.train().quantize(latents)
    assert vq.is_initialised
    vq.codes(latents)


@pytest.mark.parametrize("threshold", [0.0, CFG.codebook_size / 2])
def test_dead_codes_are_replaced_only_when_asked(threshold):
    # every latent sits on code 0's direction, so all other codes go unused; without replacement the EMA only
    # rescales their running sums (same direction after the library's ℓ2 normalisation), with it they are re-drawn
    vq = VectorQuantizer(CFG.replace(threshold_ema_dead_code=threshold)).train()
    before = vq.codebook.clone()
    latents = before[0].expand(4, CFG.num_tokens, CFG.codebook_dim).clone()
    for _ in range(3):
        vq.quantize(latents)
    unused = vq.codebook[1:]
    if threshold == 0:
        torch.testing.assert_close(unused, before[1:])
    else:
        assert not torch.allclose(unused, before[1:], atol=1e-3)
