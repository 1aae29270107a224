"""Contracts of llama_ar.training: teacher forcing on code positions only, deterministic dropout, learning."""

import pytest
import torch
import torch.nn.functional as F

from llama_ar import ar_loss
from llama_ar.training import ar_training_batch, drop_class_tokens, drop_embeddings


def random_batch(layout, batch=3, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, layout.num_classes, (batch,), generator=g)
    codes = torch.randint(0, layout.codebook_size, (batch, length), generator=g)
    return labels, codes


def test_batch_shifts_codes_behind_the_class_token(layout):
    labels, codes = random_batch(layout)
    batch = ar_training_batch(labels, codes, layout, class_dropout=0.0)
    assert torch.equal(batch.input_ids[:, 0], labels + layout.codebook_size)
    assert torch.equal(batch.input_ids[:, 1:], codes[:, :-1])
    assert torch.equal(batch.targets, codes)  # the class token is never a target
    assert bool((batch.targets < layout.codebook_size).all())
    assert batch.position_ids.tolist() == [list(range(codes.shape[1]))]


def test_loss_is_cross_entropy_over_code_ids_at_code_positions(tiny_model, layout):
    labels, codes = random_batch(layout)
    out = ar_loss(tiny_model, labels, codes, class_dropout=0.0, token_dropout=0.0)
    ids = layout.build_inputs(layout.class_tokens(labels), codes[:, :-1])
    with torch.no_grad():
        logits = tiny_model(ids).logits[..., : layout.codebook_size]
    expected = F.cross_entropy(logits.reshape(-1, layout.codebook_size), codes.reshape(-1))
    torch.testing.assert_close(out.loss.detach(), expected)
    assert out.num_targets == codes.numel()
    # HF convention for comparison: labels = [-100, codes] on [class, codes] (shifted inside the model).
    full_ids = layout.build_inputs(layout.class_tokens(labels), codes)
    hf_labels = torch.cat([torch.full_like(labels[:, None], -100), codes], dim=1)
    with torch.no_grad():
        hf_logits = tiny_model(full_ids).logits[:, :-1, : layout.codebook_size]
    torch.testing.assert_close(
        F.cross_entropy(hf_logits.reshape(-1, layout.codebook_size), hf_labels[:, 1:].reshape(-1)), expected
    )


def test_the_class_token_conditions_the_loss(tiny_model, layout):
    labels, codes = random_batch(layout)
    base = ar_loss(tiny_model, labels, codes, class_dropout=0.0, token_dropout=0.0).loss
    other = ar_loss(
        tiny_model, (labels + 1) % layout.num_classes, codes, class_dropout=0.0, token_dropout=0.0
    ).loss
    assert not torch.allclose(base, other)  # position 0 (class) conditions the first code


def test_class_dropout_is_deterministic_under_a_generator(layout):
    tokens = layout.class_tokens(torch.arange(4).repeat(50))
    first, dropped = drop_class_tokens(tokens, layout, 0.3, torch.Generator().manual_seed(1))
    again, _ = drop_class_tokens(tokens, layout, 0.3, torch.Generator().manual_seed(1))
    other, _ = drop_class_tokens(tokens, layout, 0.3, torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert bool((first[dropped] == layout.null_token).all()) and torch.equal(
        first[~dropped], tokens[~dropped]
    )
    assert 0.15 < dropped.float().mean().item() < 0.45
    assert not drop_class_tokens(tokens, layout, 0.0)[1].any()


@pytest.mark.parametrize("mode", ["element", "row"])
def test_token_dropout_is_deterministic_and_rescales(mode):
    embeds = torch.ones(4, 50, 8)
    first = drop_embeddings(embeds, 0.25, torch.Generator().manual_seed(3), mode)
    again = drop_embeddings(embeds, 0.25, torch.Generator().manual_seed(3), mode)
    assert torch.equal(first, again)
    assert set(first.unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    zero = first == 0
    assert 0.15 < zero.float().mean().item() < 0.35
    if mode == "row":
        assert torch.equal(zero.all(-1), zero.any(-1))  # whole rows
    kept = drop_embeddings(embeds, 0.9, torch.Generator().manual_seed(3), mode, keep_first=True)
    assert torch.equal(kept[:, 0], embeds[:, 0])


def test_ar_loss_is_reproducible_with_a_generator(tiny_model, layout):
    labels, codes = random_batch(layout)
    tiny_model.train()

    def loss(seed):
        return ar_loss(
            tiny_model,
            labels,
            codes,
            class_dropout=0.5,
            token_dropout=0.3,
            generator=torch.Generator().manual_seed(seed),
        ).loss

    assert torch.equal(loss(4), loss(4)) and not torch.equal(loss(4), loss(5))


def test_loss_falls_when_overfitting_one_batch(layout):
    from llama_ar import build_ar_model

    torch.manual_seed(0)
    model = build_ar_model("tiny", layout, num_tokens=16)
    labels, codes = random_batch(layout, batch=4, length=16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = ar_loss(model, labels, codes, class_dropout=0.0, token_dropout=0.0)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_ar_loss_rejects_bad_inputs(tiny_model, layout):
    labels, codes = random_batch(layout)
    none = {"class_dropout": 0.0, "token_dropout": 0.0}
    with pytest.raises(ValueError, match="codes must lie"):
        ar_loss(tiny_model, labels, codes + layout.codebook_size, **none)
    with pytest.raises(ValueError, match="at most"):
        ar_loss(tiny_model, labels, torch.zeros(3, 40, dtype=torch.long), **none)
    with pytest.raises(ValueError, match="one label per row"):
        ar_loss(tiny_model, labels[:2], codes, **none)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ar_loss(tiny_model, labels, codes, class_dropout=1.0, token_dropout=0.0)
    with pytest.raises(
        TypeError, match="class_dropout"
    ):  # the training values come from ARConfig, not defaults
        ar_loss(tiny_model, labels, codes)


def test_ar_loss_module_runs_the_embedding_lookup_inside_its_forward(tiny_model, layout):
    from llama_ar import ARLossModule

    labels, codes = random_batch(layout)
    module = ARLossModule(tiny_model, class_dropout=0.0, token_dropout=0.0)
    lookups = []
    handle = tiny_model.get_input_embeddings().register_forward_hook(lambda *_: lookups.append(inside))
    inside = False
    original = module.forward

    def wrapped(*args, **kwargs):  # what DDP / FSDP see: everything must happen between these two lines
        nonlocal inside
        inside = True
        try:
            return original(*args, **kwargs)
        finally:
            inside = False

    module.forward = wrapped
    terms = module(labels, codes)
    handle.remove()
    assert lookups == [True]
    expected = ar_loss(tiny_model, labels, codes, class_dropout=0.0, token_dropout=0.0)
    torch.testing.assert_close(terms["loss"], expected.loss)
    assert set(terms) == {"loss", "accuracy"}
