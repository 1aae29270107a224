"""Tests of tokenizer/official_keys.py: every official key of reference §6.2 maps, and the inverse round trip."""

import pytest
import torch
from tiny import random_images, randomize_

from tokenizer import TOKENIZER_PRESETS, DARTokenizer
from tokenizer.official_keys import CODEBOOK_STATE_KEYS, expected_shapes, official_to_ours, ours_to_official


def official_v1_shapes() -> dict[str, tuple[int, ...]]:
    """The 830 entries of the official D-AR-tokenizer_v1.pt, written out from reference §6.2."""
    d, mlp, hd = 768, 3072, 64
    shapes: dict[str, tuple[int, ...]] = {}

    def attention(prefix):
        for name in ("q", "k", "v", "proj"):
            shapes[f"{prefix}.{name}.weight"], shapes[f"{prefix}.{name}.bias"] = (d, d), (d,)
        for name in ("q_norm", "k_norm"):
            shapes[f"{prefix}.{name}.weight"], shapes[f"{prefix}.{name}.bias"] = (hd,), (hd,)

    def mlp_layers(prefix):
        shapes[f"{prefix}.fc1.weight"], shapes[f"{prefix}.fc1.bias"] = (mlp, d), (mlp,)
        shapes[f"{prefix}.fc2.weight"], shapes[f"{prefix}.fc2.bias"] = (d, mlp), (d,)

    for stack in ("encoder_layers", "decoder_layers"):
        for i in range(8):
            p = f"{stack}.{i}"
            shapes[f"{p}.gate1"], shapes[f"{p}.gate2"] = (d,), (d,)
            attention(f"{p}.attention")
            mlp_layers(f"{p}.mlp")
            for name in ("norm1", "norm2"):
                shapes[f"{p}.{name}.weight"], shapes[f"{p}.{name}.bias"] = (d,), (d,)
    shapes.update(
        {
            "patchify.weight": (d, 3, 16, 16),
            "patchify.bias": (d,),
            "quant_in_conv.weight": (8, d, 1, 1),
            "quant_out_conv.weight": (d, 8, 1, 1),
            "quantize.codebook_used": (65536,),
            "quantize.embedding.weight": (16384, 8),
            "query_embedding.weight": (1024, 8),
            "query_linear.weight": (d, 8),
            "query_linear.bias": (d,),
            "decoder_embedding.weight": (1024, d),
            "diff_decoder.net.cond_mlp.weight": (d, d),
            "diff_decoder.net.cond_mlp.bias": (d,),
            "diff_decoder.net.conv_in.weight": (d, 192, 1, 1),
            "diff_decoder.net.conv_in.bias": (d,),
            "diff_decoder.net.conv_out.weight": (192, d, 1, 1),
            "diff_decoder.net.conv_out.bias": (192,),
        }
    )
    for i in range(12):
        s = f"diff_decoder.net.blocks.{i}"
        attention(f"{s}.attention")
        attention(f"{s}.cross_attn")
        mlp_layers(f"{s}.mlp")
        shapes[f"{s}.adaLN_modulation.1.weight"], shapes[f"{s}.adaLN_modulation.1.bias"] = (
            (6 * d, d),
            (6 * d,),
        )
        for name in ("time_embed.mlp.0", "time_embed.mlp.2", "cond_embed.0", "cond_embed.2"):
            shapes[f"{s}.{name}.weight"], shapes[f"{s}.{name}.bias"] = (d, d), (d,)
    for index, (rows, cols) in {0: (2048, d), 2: (2048, 2048), 4: (768, 2048)}.items():
        shapes[f"diff_decoder.net.repa_out.{index}.weight"] = (rows, cols)
        shapes[f"diff_decoder.net.repa_out.{index}.bias"] = (rows,)
    return shapes


def _meta_state(shapes):
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


@pytest.mark.parametrize("repa_layer", [8, None])
def test_every_official_v1_key_maps_with_the_right_shape(repa_layer):
    shapes = official_v1_shapes()
    assert len(shapes) == 830
    config = TOKENIZER_PRESETS["tokenizer_v1"].replace(repa_layer=repa_layer)
    ours = official_to_ours(_meta_state(shapes), config)
    expected = expected_shapes(config)
    assert set(ours) == set(expected)
    assert all(ours[k].shape == expected[k] for k in expected)
    assert ours["quantizer.vq._codebook.embed"].shape == (1, 16384, 8)
    assert ours["encoder.patch_embed.weight"].shape == (768, 768)


def test_ours_to_official_produces_the_official_v1_layout():
    config = TOKENIZER_PRESETS["tokenizer_v1"]
    with torch.device("meta"):
        tok = DARTokenizer(**config.to_dict())
    official = ours_to_official(tok.state_dict(), config)
    shapes = official_v1_shapes()
    assert set(official) == set(shapes)
    assert all(tuple(official[k].shape) == shapes[k] for k in shapes)


def test_every_official_key_lands_on_one_of_ours():
    shapes = official_v1_shapes()
    ours = official_to_ours(_meta_state(shapes), TOKENIZER_PRESETS["tokenizer_v1"])
    with torch.device("meta"):
        expected = DARTokenizer.from_preset("tokenizer_v1").state_dict()
    assert set(ours) == set(expected)
    assert all(ours[k].shape == expected[k].shape for k in expected)


def test_strict_errors_name_the_keys():
    config = TOKENIZER_PRESETS["tokenizer_v1"]
    state = _meta_state(official_v1_shapes())
    state["mystery.weight"] = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match="mystery.weight"):
        official_to_ours(state, config)
    state = _meta_state(official_v1_shapes())
    del state["diff_decoder.net.repa_out.0.bias"]
    with pytest.raises(ValueError, match=r"decoder\.repa_out\.0\.bias.*repa_layer=None"):
        official_to_ours(state, config)
    state = _meta_state(official_v1_shapes())
    state["query_embedding.weight"] = torch.empty(256, 8, device="meta")
    with pytest.raises(ValueError, match="encoder.query_embedding.weight"):
        official_to_ours(state, config)


def test_round_trip_through_the_official_layout_reproduces_the_model(tiny):
    config = tiny.config
    official = ours_to_official(tiny.state_dict(), config)
    assert official["quantize.codebook_used"].shape == (65536,)
    converted = official_to_ours(official, config)
    assert set(converted) == set(tiny.state_dict())
    # the round trip is exact for every key with an official counterpart: unit-length codebook rows are not
    # normalised again
    differ = [
        k
        for k, v in tiny.state_dict().items()
        if k not in CODEBOOK_STATE_KEYS and not torch.equal(converted[k], v)
    ]
    assert differ == []
    # the EMA statistics have none (their initial values differ between vector-quantize-pytorch versions): the
    # converter writes ones that average to the codebook itself, so EMA training resumes from it
    embed = converted["quantizer.vq._codebook.embed"]
    assert torch.equal(converted["quantizer.vq._codebook.embed_avg"], embed)
    assert torch.equal(converted["quantizer.vq._codebook.cluster_size"], torch.ones(embed.shape[:2]))
    rebuilt = DARTokenizer(**config.to_dict()).eval()
    rebuilt.load_state_dict(converted, strict=True)
    images = random_images(2, config.image_size)
    codes = tiny.encode(images)
    assert torch.equal(rebuilt.encode(images), codes)
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    # float outputs of a rebuilt model: the same weights, but another memory layout may pick another BLAS kernel
    torch.testing.assert_close(rebuilt.decode(codes, noise=noise), tiny.decode(codes, noise=noise))


def test_unnormalised_official_codebook_is_row_normalised(tiny):
    config = tiny.config
    official = ours_to_official(randomize_(DARTokenizer(**config.to_dict())).state_dict(), config)
    official["quantize.embedding.weight"] = official["quantize.embedding.weight"] * 3.0
    ours = official_to_ours(official, config)
    torch.testing.assert_close(
        ours["quantizer.vq._codebook.embed"].norm(dim=-1), torch.ones(1, config.codebook_size)
    )
    assert ours["quantizer.vq._codebook.initted"].item() is True
