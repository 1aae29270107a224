"""Tests of tokenizer/encoder.py: attention mask, shapes, causality among the learned queries."""

import torch
from tiny import random_images, randomize_

from tokenizer import TOKENIZER_PRESETS
from tokenizer.encoder import TokenEncoder, encoder_attention_mask


def test_mask_patches_see_patches_queries_see_patches_and_earlier_queries():
    p, n = 4, 3
    mask = encoder_attention_mask(p, n)
    for a in range(p + n):
        for b in range(p + n):
            assert bool(mask[a, b]) == (b < p or b <= a), (a, b)


def test_encoder_output_shape():
    cfg = TOKENIZER_PRESETS["tiny"]
    encoder = TokenEncoder(cfg)
    latents = encoder(random_images(2, cfg.image_size))
    assert latents.shape == (2, cfg.num_tokens, cfg.codebook_dim) and latents.dtype == torch.float32


def test_query_latent_does_not_depend_on_later_queries():
    cfg = TOKENIZER_PRESETS["tiny"]
    encoder = randomize_(TokenEncoder(cfg)).eval()
    images = random_images(2, cfg.image_size)
    i = 5
    with torch.no_grad():
        before = encoder(images)
        encoder.query_embedding.weight[i + 1 :].normal_()
        after = encoder(images)
    torch.testing.assert_close(after[:, : i + 1], before[:, : i + 1])
    assert not torch.allclose(after[:, i + 1 :], before[:, i + 1 :])


def test_earlier_query_changes_reach_later_latents():
    cfg = TOKENIZER_PRESETS["tiny"]
    encoder = randomize_(TokenEncoder(cfg)).eval()
    images = random_images(1, cfg.image_size)
    with torch.no_grad():
        before = encoder(images)
        encoder.query_embedding.weight[0].normal_()
        after = encoder(images)
    assert not torch.allclose(after[:, 1:], before[:, 1:])
