"""DARTModel through its public API: mask semantics, the 4-D mask path, training losses, strict save / load."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from dart import DARTModel


def _inputs(model, batch=2, seed=0):
    cfg = model.config
    g = torch.Generator().manual_seed(seed)
    noisy = torch.randn(batch, cfg.num_levels, cfg.tokens_per_level, cfg.token_dim, generator=g)
    return noisy, torch.arange(batch) % cfg.num_classes


def _outputs(model, noisy, labels):
    with torch.no_grad():
        out = model(noisy, labels)
    return out.hidden if out.x0 is None else out.x0  # (B, T, K, ·), index t − 1 = level t


@pytest.mark.parametrize("variant", ["dart", "dart_fm"])
def test_block_causal_a_cleaner_level_never_changes_noisier_outputs(make_model, variant):
    model = make_model(variant)
    noisy, labels = _inputs(model)
    base = _outputs(model, noisy, labels)
    for level in (1, 2):  # perturb one token of level t
        changed = noisy.clone()
        changed[:, level - 1, 0] += 1.0
        out = _outputs(model, changed, labels)
        assert torch.equal(out[:, level:], base[:, level:]), "noisier levels must be bit-identical"
        # bidirectional inside a level: every token of level t reacts, and so does every cleaner level
        assert bool(((out[:, :level] - base[:, :level]).abs().amax(dim=-1) > 0).all())


def test_own_level_ablation_is_strictly_markovian(make_model):
    model = make_model(attention="own_level")
    noisy, labels = _inputs(model)
    base = _outputs(model, noisy, labels)
    changed = noisy.clone()
    changed[:, 2] += 1.0  # level 3
    out = _outputs(model, changed, labels)
    for level in (1, 2, 4):
        assert torch.equal(out[:, level - 1], base[:, level - 1])
    assert bool(((out[:, 2] - base[:, 2]).abs().amax(dim=-1) > 0).all())


@pytest.mark.parametrize("num_layers", [1, 2])
def test_markovian_mask_reaches_one_level_further_per_layer(make_model, num_layers):
    model = make_model(attention="markovian", num_layers=num_layers)
    noisy, labels = _inputs(model)
    base = _outputs(model, noisy, labels)
    changed = noisy.clone()
    changed[:, 3] += 1.0  # level 4
    out = _outputs(model, changed, labels)
    reached = [level for level in (1, 2, 3) if not torch.equal(out[:, level - 1], base[:, level - 1])]
    assert (
        reached == list(range(3, 3 - num_layers, -1))[::-1]
    )  # level 3 after one layer, levels 2–3 after two


def test_dart_ar_a_later_token_never_changes_earlier_predictions(make_model):
    model = make_model("dart_ar")
    cfg = model.config
    noisy, labels = _inputs(model)
    base = _outputs(model, noisy, labels)
    k = cfg.tokens_per_level
    as_sequence = lambda x: x.flip(1).reshape(x.shape[0], -1, x.shape[-1])  # noqa: E731 (B, T·K, D), noisiest first
    for level, patch in ((4, 5), (2, k - 1)):  # inside a level, and the last token of a level
        j = (cfg.num_levels - level) * k + patch  # sequence index of the perturbed token
        changed = noisy.clone()
        changed[:, level - 1, patch] += 1.0
        out, ref = as_sequence(_outputs(model, changed, labels)), as_sequence(base)
        assert torch.equal(out[:, : j + 1], ref[:, : j + 1]), (
            "a token's own and earlier predictions are fixed"
        )
        assert bool(((out[:, j + 1 :] - ref[:, j + 1 :]).abs().amax(dim=-1) > 0).all())


def test_class_token_conditions_every_level(make_model):
    model = make_model()
    noisy, _ = _inputs(model)
    a = _outputs(model, noisy, torch.tensor([0, 0]))
    b = _outputs(model, noisy, torch.tensor([0, model.config.null_class]))
    assert torch.equal(a[0], b[0]) and bool(((a[1] - b[1]).abs().amax(dim=-1) > 0).all())


def test_the_4d_mask_means_the_same_to_sdpa_and_eager(make_model):
    model = make_model()
    noisy, labels = _inputs(model)
    sdpa = _outputs(model, noisy, labels)
    model.backbone.set_attn_implementation("eager")
    assert model.backbone.config._attn_implementation == "eager"
    torch.testing.assert_close(_outputs(model, noisy, labels), sdpa)


def test_zero_initialised_head_and_llama_backbone():
    from transformers import LlamaModel

    model = DARTModel.from_preset("tiny")
    assert type(model.backbone) is LlamaModel  # stock class, no subclass
    assert model.backbone.embed_tokens.num_embeddings == model.config.num_classes + 1  # class + null table
    noisy, labels = _inputs(model)
    assert torch.equal(_outputs(model, noisy, labels), torch.zeros_like(noisy))


@pytest.mark.parametrize(
    "variant, changes",
    [("dart", {}), ("dart_ar", {}), ("dart_fm", {}), ("dart_fm", {"fm_prediction": "velocity"})],
)
def test_training_losses(make_model, variant, changes):
    model = make_model(variant, **changes).train()
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    labels = torch.tensor([0, 1, 3])
    losses = model.training_losses(images, labels, generator=torch.Generator().manual_seed(0))
    assert losses.total.shape == () and losses.per_level.shape == (4,) and not losses.per_level.requires_grad
    torch.testing.assert_close(losses.total.detach(), (losses.weights * losses.per_level).mean())
    losses.total.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    again = model.training_losses(images, labels, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.per_level, losses.per_level)  # one generator drives every random draw


def test_untrained_head_gives_the_data_variance_at_every_level():
    model = DARTModel.from_preset("tiny")  # zero head: x̂_0 = 0
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    losses = model.training_losses(images, torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(losses.per_level, images.pow(2).mean().expand(4))


def test_class_dropout(make_model):
    model = make_model(class_dropout=0.5).train()
    images = torch.zeros(64, 3, 8, 8)
    labels = torch.zeros(64, dtype=torch.long)
    dropped = model.training_losses(images, labels, generator=torch.Generator().manual_seed(0)).dropped
    assert 10 < int(dropped.sum()) < 54
    assert not model.eval().training_losses(images, labels).dropped.any()  # off in eval mode by default
    assert model.training_losses(images, labels, class_dropout=1.0).dropped.all()


def test_loss_weighting_enters_the_total(make_model):
    model = make_model(loss_weighting="cumulative_snr").train()
    losses = model.training_losses(torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]))
    assert losses.weights[-1] == 0 and losses.weights.mean().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (torch.zeros(2, 3, 16, 16), [0, 1], "shape"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], "float"),
        (torch.full((2, 3, 8, 8), 3.0), [0, 1], "\\[-1, 1\\]"),
        (torch.zeros(2, 3, 8, 8), [0, 4], "out of range"),
        (torch.zeros(2, 3, 8, 8), [0], "one per sample"),
        (torch.zeros(2, 3, 8, 8), [0.5, 1.0], "integer"),
    ],
)
def test_training_inputs_are_validated(make_model, images, labels, message):
    with pytest.raises(ValueError, match=message):
        make_model().training_losses(images, torch.tensor(labels))


@pytest.mark.parametrize("variant", ["dart", "dart_ar", "dart_fm"])
def test_save_load_round_trip(make_model, tmp_path, variant):
    model = make_model(variant, id2label={0: "cat", 1: "dog"})
    model.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").exists() and (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = DARTModel.from_pretrained(tmp_path)
    assert loaded.config == model.config and loaded.config.id2label == {0: "cat", 1: "dog"}
    assert not loaded.training
    noisy, labels = _inputs(model)
    torch.testing.assert_close(_outputs(loaded, noisy, labels), _outputs(model, noisy, labels))


def test_strict_loading_names_the_bad_keys(make_model, tmp_path):
    make_model().save_pretrained(tmp_path)
    weights_file = tmp_path / "diffusion_pytorch_model.safetensors"
    weights = load_file(weights_file)
    weights.pop("level_embed.weight")
    weights["extra.weight"] = torch.zeros(1)
    save_file(weights, weights_file)
    with pytest.raises(
        ValueError, match="missing keys: \\['level_embed.weight'\\].*unexpected keys: \\['extra.weight'\\]"
    ):
        DARTModel.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["hidden_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match|cannot load"):
        DARTModel.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="no DART model folder"):
        DARTModel.from_pretrained(tmp_path / "missing")


def test_loading_reads_safetensors_only(make_model, tmp_path):
    model = make_model()
    model.save_pretrained(tmp_path)
    (tmp_path / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "diffusion_pytorch_model.bin")  # a pickle is never read
    with pytest.raises(OSError, match="safetensors"):
        DARTModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        DARTModel.from_pretrained(tmp_path, use_safetensors=False)
