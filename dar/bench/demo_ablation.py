"""Equal-CPU-time ablation of the demo tokenizer: how fast does each variant carry the silhouette through the codes?

Every variant trains the ``demo`` tokenizer preset from the same seed on the same in-memory training split (batch
32, AdamW (0.9, 0.95), lr 2e-3 with 100 warm-up steps, grad clip 1, random flips, raw weights, one thread) for a
budget of *process CPU seconds*, and is judged on the same 200 test images by the shipped demo classifier:
reconstruction class accuracy (``decode(encode(x))``, 8 AB2 steps, fixed noise), PSNR and codebook usage.

Variants (TokenizerConfig overrides, defaults = official):

- ``base``: the demo preset (step k cross-attends to group k's conditions, which only drive adaLN);
- ``prefix``: ``decoder_condition_context="prefix"`` (step k sees the conditions of groups 0…k);
- ``resid``: ``decoder_condition_residual=True`` (the cross-attention output also enters the residual stream);
- ``prefix_resid``: both;
- ``bound``: the upper bound of the diagnosis — the same encoder, quantizer and condition network, and the
  ``prefix_resid`` decoder used as a plain deterministic regressor (input zeros at t = 0, all 64 conditions,
  MSE to the image). If it learns the shape fast and the flow decoder does not, the diffusion objective's
  gradient to the encoder is the weak link;
- ``all_groups`` (diagnosis only, not streamable): the flow decoder sees the conditions of *all* 64 codes at
  every step, in training and decoding. If it learns fast, the coarse-to-fine split of the information over
  the groups is what is slow to learn, not the flow objective;
- ``aux``: the demo preset plus the bound as a training-only term (``regression_weight=1``: a regressor
  decodes the image from the conditions of groups 0…g, so the codes get the regression gradient while the
  flow decoder learns to use them); ``aux_prefix_resid``: the same with both decoder options;
- ``pos*``: the same with ``decoder_position_embedding=True`` (learned absolute positions on the decoder's image
  tokens, so that tokens of pure noise can still tell where they are);
- ``est*``: the auxiliary regressor's estimate from the step's groups also enters the flow decoder as an input
  image (``decoder_estimate_input=True``), so the flow decoder refines a placed shape;
- ``est_all``: ``est_prefix_resid`` plus the bound's regression from all groups in every step
  (``regression_all_groups=True``);
- ``regonly`` (diagnosis only): the auxiliary regressor's loss alone (random prefix of groups 0…g, as in
  ``aux``; no flow loss, so the flow decoder stays untrained and only ``regressor_acc`` means anything): does
  the prefix training slow the regressor down, or the flow loss beside it?
- ``ctx*``: in-context conditioning, ``decoder_condition_tokens=True`` (the conditions join the decoder's
  self-attention as extra tokens), with positions, optionally the prefix context and the auxiliary term.

Usage: ``python -m dar.bench.demo_ablation VARIANT [--cpu-seconds 600] [--eval-every 300]``; one JSON line per
evaluation on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

VARIANTS = {
    "base": {},
    "prefix": {"decoder_condition_context": "prefix"},
    "resid": {"decoder_condition_residual": True},
    "prefix_resid": {"decoder_condition_context": "prefix", "decoder_condition_residual": True},
    "bound": {"decoder_condition_context": "prefix", "decoder_condition_residual": True},
    "all_groups": {"decoder_condition_context": "prefix"},
    "aux": {"regression_weight": 1.0},
    "aux_prefix_resid": {
        "regression_weight": 1.0,
        "decoder_condition_context": "prefix",
        "decoder_condition_residual": True,
    },
    "pos": {"decoder_position_embedding": True},
    "pos_resid": {"decoder_position_embedding": True, "decoder_condition_residual": True},
    "pos_prefix_resid": {
        "decoder_position_embedding": True,
        "decoder_condition_context": "prefix",
        "decoder_condition_residual": True,
    },
    "pos_aux_prefix_resid": {
        "decoder_position_embedding": True,
        "regression_weight": 1.0,
        "decoder_condition_context": "prefix",
        "decoder_condition_residual": True,
    },
    "est": {"regression_weight": 1.0, "decoder_estimate_input": True},
    "est_prefix_resid": {
        "regression_weight": 1.0,
        "decoder_estimate_input": True,
        "decoder_condition_context": "prefix",
        "decoder_condition_residual": True,
    },
    "est_all": {
        "regression_weight": 1.0,
        "regression_all_groups": True,
        "decoder_estimate_input": True,
        "decoder_condition_context": "prefix",
        "decoder_condition_residual": True,
    },
    "regonly": {"regression_weight": 1.0},
    "ctx": {"decoder_position_embedding": True, "decoder_condition_tokens": True},
    "ctx_prefix": {
        "decoder_position_embedding": True,
        "decoder_condition_tokens": True,
        "decoder_condition_context": "prefix",
    },
    "ctx_aux_prefix": {
        "decoder_position_embedding": True,
        "decoder_condition_tokens": True,
        "decoder_condition_context": "prefix",
        "regression_weight": 1.0,
    },
}


def _images(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from dar.demo.animal_shapes import animal_shapes_uint8

    images, labels = animal_shapes_uint8(split)
    return images.float() / 127.5 - 1.0, torch.tensor(labels)


def _regression(tok, images: torch.Tensor) -> torch.Tensor:
    """The bound's deterministic decoder: all conditions, zero input, t = 0 → image estimate in [-1, 1] units."""
    quantized = tok.quantizer.quantize(tok.encoder(images))
    cond = tok.conditioning(quantized.vectors)
    zeros = torch.zeros_like(images)
    out = tok.decoder(zeros, torch.zeros(images.shape[0]), cond).velocity
    return out, quantized.loss


def _decode_with_all_conditions(tok, codes: torch.Tensor, shape) -> torch.Tensor:
    from tokenizer.flow import sampling_times
    from tokenizer.sampler import sampler_step

    cfg = tok.config
    cond = tok.conditioning(tok.quantizer.lookup(codes))
    times = sampling_times(cfg.num_steps, cfg.num_steps, cfg.time_shift)
    x, previous = torch.randn(shape, generator=torch.Generator().manual_seed(1)), None
    for i in range(cfg.num_steps):
        velocity = tok.decoder(x, times[i].expand(shape[0]), cond).velocity
        x, previous = sampler_step(cfg.sampler, x, velocity, previous, times[i], times[i + 1]), velocity
    return x / cfg.data_scale


@torch.no_grad()
def evaluate(tok, variant: str, images: torch.Tensor, labels: torch.Tensor, classifier) -> dict:
    tok.eval()
    codes = tok.encode(images)
    if variant == "bound":
        cond = tok.conditioning(tok.quantizer.lookup(codes))
        rec = tok.decoder(torch.zeros_like(images), torch.zeros(images.shape[0]), cond).velocity
    elif variant == "all_groups":
        rec = _decode_with_all_conditions(tok, codes, images.shape)
    else:
        rec = tok.decode(codes, generator=torch.Generator().manual_seed(1))
    rec = rec.clamp(-1, 1)
    mse = ((rec - images) / 2).pow(2).mean().item()
    row = {
        "recon_acc": (classifier.predict(rec) == labels).float().mean().item(),
        "psnr": 10 * math.log10(1 / mse),
        "codes_used": int(codes.unique().numel()),
    }
    if tok.regressor is not None:  # do the codes carry the shape? (the auxiliary regressor, all groups)
        cond = tok.conditioning(tok.quantizer.lookup(codes))
        estimate = tok.regressor(torch.zeros_like(images), torch.zeros(images.shape[0]), cond).velocity
        row["regressor_acc"] = (classifier.predict(estimate.clamp(-1, 1)) == labels).float().mean().item()
    tok.train()
    return row


def run(
    variant: str, cpu_seconds: float, eval_every: float, seed: int = 0, save: str | None = None
) -> list[dict]:
    from dar.demo import DEMO_CLASSIFIER, shipped
    from dar.demo.classifier import ShapeClassifier
    from tokenizer import DARTokenizer

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    tok = DARTokenizer.from_preset("demo", **VARIANTS[variant]).train()
    if variant == "all_groups":  # every training image at the last group: all codes, every time
        import tokenizer.model

        tokenizer.model.group_of_u = lambda u, k: torch.full_like(u, k - 1, dtype=torch.long)
    train_x, _ = _images("train")
    test_x, test_y = _images("test")
    pick = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(0))[:200]
    test_x, test_y = test_x[pick], test_y[pick]
    classifier = ShapeClassifier.from_pretrained(shipped(DEMO_CLASSIFIER, "demo classifier")).eval()
    opt = torch.optim.AdamW(tok.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100))
    g = torch.Generator().manual_seed(seed)
    rows, step, spent, next_eval = [], 0, 0.0, eval_every
    while spent < cpu_seconds:
        start = time.process_time()
        x = train_x[torch.randint(0, len(train_x), (32,), generator=g)]
        x = torch.where((torch.rand(32, generator=g) < 0.5)[:, None, None, None], x.flip(-1), x)
        if variant == "bound":
            rec, vq = _regression(tok, x)
            loss = F.mse_loss(rec, x) + vq
        elif variant == "regonly":
            terms = tok.training_losses(x, generator=g)
            loss = terms.regression + terms.vq
        else:
            loss = tok.training_losses(x, generator=g).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tok.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        spent += time.process_time() - start
        if spent >= next_eval or spent >= cpu_seconds:
            row = {"variant": variant, "cpu_seconds": round(spent), "steps": step, "loss": loss.item()}
            row.update(evaluate(tok, variant, test_x, test_y, classifier))
            print(json.dumps(row), flush=True)
            rows.append(row)
            next_eval += eval_every
    if save:
        tok.save_pretrained(save)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("--cpu-seconds", type=float, default=600.0)
    parser.add_argument("--eval-every", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write the trained tokenizer here (save_pretrained)")
    args = parser.parse_args(argv)
    if args.cpu_seconds <= 0 or args.eval_every <= 0:
        parser.error("--cpu-seconds and --eval-every must be positive")
    run(args.variant, args.cpu_seconds, args.eval_every, args.seed, args.save)


if __name__ == "__main__":
    main()
