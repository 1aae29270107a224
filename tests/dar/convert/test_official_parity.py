"""Parity with the official D-AR code (showlab/D-AR @ 3fb0f2d), run from its own checkout.

Skipped unless ``DAR_OFFICIAL_REPO`` names a checkout of the official repository. The official modules are
built at small sizes with random weights (on CPU, with the stand-ins of ``official_stubs``), their state dicts
saved in the released file form, converted with :mod:`dar.convert`, and the outputs compared.

Small official configurations that work (everything else in the official code is hard-coded):

- Tokenizer (``VQModel(config)``): ``OFFICIAL_TOKENIZER`` below: 32 px, encoder patch 4 (8×8 = 64 patches),
  64 queries in 8 groups of 8, 8 denoising steps, dims 128 (2 heads), 2 + 2 gated blocks, codebook 64×8,
  pixel decoder patch 2 (16×16 tokens), depth 2, REPA layer 1.
- GPT (``Transformer(ModelArgs(...))``): ``OFFICIAL_GPT`` below: dim 128, 2 layers, 2 heads, ``multiple_of=32``
  (SwiGLU hidden 352), 64 codes, 10 classes (+ null row), block size 16, dropouts 0.

Official hard-coded limits found while doing so:

- head dim 64 everywhere (``dim // 64`` heads in the tokenizer; the GPT derives it from ``n_head``), and the
  tokenizer's 2-D RoPE axes are fixed at ``[32, 32]`` dims, so every tokenizer width must be a multiple of 64;
- query table ``Embedding(1024, 8)`` (rank 8 whatever ``vq_dim`` is) and position table ``Embedding(1024, d)``:
  at most 1024 tokens;
- ``sampling_resolution`` defaults to 256 and ``decode_code`` decodes at ``max(256, requested)``: set
  ``sampling_resolution`` to the small size;
- the REPA head runs inside every decoder forward, also when sampling, and average-pools with stride
  ``grid // 16``: a decoder grid below 16 crashes unless ``repa_layer >= depth`` (then the head is never run);
  the head is always 2048 → 2048 → 768 wide;
- ``grad_checkpointing`` defaults to true and the gated blocks checkpoint in training mode: use ``eval()``;
- the gates, ``conv_out``, the adaLN output layers and the GPT ``output`` are zero-initialised, so at
  initialisation every image gets the same codes and the decoder outputs only noise: parameters are
  re-randomised before comparing;
- ``extract_code`` draws ``torch.rand`` (an unused training time) and ``decode_code`` draws its noise with
  the global RNG: the noise is reproduced by re-seeding, not passed in;
- the GPT in eval mode needs ``input_pos`` (``freqs_cis[input_pos]``); without a KV cache it runs with
  ``is_causal=True``;
- ``decode_code`` needs all N codes; ``clip_steps=k`` gives the k-group preview.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from official_checkpoints import converted_tokenizer

from dar.convert import files, load_strict
from dar.convert.tokenizer_config import tokenizer_config_from_official
from llama_ar import official_keys

REPO = os.environ.get("DAR_OFFICIAL_REPO")
pytestmark = pytest.mark.skipif(
    not REPO or not Path(REPO, "tokenizer", "tokenizer_image", "vq_model.py").is_file(),
    reason="set DAR_OFFICIAL_REPO to a checkout of github.com/showlab/D-AR to run the official parity tests",
)

OFFICIAL_TOKENIZER = {
    "encoder_patch_size": 4,
    "num_encoder_layers": 2,
    "num_decoder_layers": 2,
    "query_low_rank": True,
    "encoder_dim": 128,
    "decoder_dim": 128,
    "vq_dim": 8,
    "vq_codebook_size": 64,
    "num_denoising_steps": 8,
    "num_query_groups": 8,
    "num_all_queries": 64,
    "queries_per_step": 8,
    "vq_enable": True,
    "sampling_resolution": 32,
    "diff_decoder": {
        "in_dim": 3,
        "out_dim": 3,
        "dim": 128,
        "cond_dim": 128,
        "patch_size": 2,
        "depth": 2,
        "data_std": 0.6,
        "time_shift": 2,
        "mlp_head": False,
        "share_time_encoding": False,
        "repa_layer": 1,
        "grad_checkpointing": False,
    },
}
OFFICIAL_GPT = {
    "dim": 128,
    "n_layer": 2,
    "n_head": 2,
    "multiple_of": 32,
    "vocab_size": 64,
    "num_classes": 10,
    "block_size": 16,
    "token_dropout_p": 0.0,
    "resid_dropout_p": 0.0,
    "ffn_dropout_p": 0.0,
}


@pytest.fixture(scope="module")
def official():
    from dar.bench.official_stubs import load_official_modules

    return load_official_modules(REPO)


def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Replace every parameter (zero-initialised gates and heads included) by random values of sensible size."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim >= 2:
                p.copy_(noise / math.sqrt(p[0].numel()))
            elif name.endswith(("norm.weight", "norm1.weight", "norm2.weight")):
                p.copy_(1 + 0.1 * noise)
            elif "gate" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.1 * noise)


def save_released_form(state_dict, path: Path, prefix: str = "") -> Path:
    """Save like the released files: a bare dict, keys optionally prefixed (``_orig_mod.`` for the GPT)."""
    torch.save({prefix + k: v.clone() for k, v in state_dict.items()}, path)
    return path


# ------------------------------------------------------------------------------------------------- GPT
def test_ar_logits_match_official(official, tmp_path):
    from llama_ar import ARConfig, VocabLayout, build_ar_model

    gpt = official.gpt.Transformer(official.gpt.ModelArgs(**OFFICIAL_GPT)).eval()
    randomize_(gpt, seed=0)
    path = save_released_form(gpt.state_dict(), tmp_path / "gpt.pt", prefix="_orig_mod.")

    sd = files.load_official_state_dict(path)
    preset = official_keys.infer_ar_preset(sd, num_tokens=OFFICIAL_GPT["block_size"])
    assert isinstance(preset, ARConfig) and preset.intermediate_size == 352
    layout = VocabLayout(OFFICIAL_GPT["vocab_size"], OFFICIAL_GPT["num_classes"])
    model = build_ar_model(preset, layout).eval()
    load_strict(model, official_keys.convert_ar_state_dict(sd, model.config, layout), "AR model")

    classes = torch.tensor([0, 7, 10])  # 10 = the official null class
    codes = torch.randint(0, OFFICIAL_GPT["vocab_size"], (3, OFFICIAL_GPT["block_size"] - 1))
    ids = torch.cat(
        [torch.tensor([layout.class_token(0), layout.class_token(7), layout.null_token])[:, None], codes], 1
    )
    with torch.no_grad():
        theirs, _ = gpt(codes, classes, input_pos=torch.arange(OFFICIAL_GPT["block_size"]))
        ours = model(ids).logits
    assert theirs.std() > 0.1  # the random weights give logits that differ from code to code
    torch.testing.assert_close(ours[..., : layout.codebook_size], theirs)


# ------------------------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def tokenizer_pair(official, tmp_path_factory):
    """(official VQModel, our DARTokenizer) holding the same random weights."""
    vq = official.vq_model.VQModel(OFFICIAL_TOKENIZER).eval()
    randomize_(vq, seed=1)
    path = save_released_form(vq.state_dict(), tmp_path_factory.mktemp("tok") / "tokenizer.pt")
    config = tokenizer_config_from_official(OFFICIAL_TOKENIZER)
    ours = converted_tokenizer(files.load_official_state_dict(path), config)
    return vq, ours


def test_tokenizer_codes_match_official(tokenizer_pair):
    vq, ours = tokenizer_pair
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        theirs = vq.extract_code(images)
        codes = ours.encode(images)
    assert theirs.unique().numel() > 8  # the random weights give varied codes
    assert torch.equal(codes, theirs)


@pytest.mark.parametrize("num_groups", [8, 3])
def test_tokenizer_decode_matches_official(tokenizer_pair, num_groups):
    vq, ours = tokenizer_pair
    tokens_per_step = OFFICIAL_TOKENIZER["queries_per_step"]
    codes = torch.randint(
        0, OFFICIAL_TOKENIZER["vq_codebook_size"], (2, OFFICIAL_TOKENIZER["num_all_queries"])
    )
    torch.manual_seed(123)
    noise = torch.randn(2, 3, 32, 32)
    torch.manual_seed(123)  # decode_code draws the same noise from the global RNG
    with torch.no_grad():
        clip = None if num_groups == 8 else num_groups
        theirs = vq.decode_code(codes, height=32, width=32, clip_steps=clip)
        mine = ours.decode(codes[:, : num_groups * tokens_per_step], noise=noise)
    assert theirs.std() > 0.1
    torch.testing.assert_close(mine, theirs)
