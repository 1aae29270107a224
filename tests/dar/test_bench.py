"""dar.bench: the timing helpers, the FLOP counter, and the GPU script's CPU behaviour (import, skip, arguments)."""

import pytest
import torch
import torch.nn.functional as F

from dar import bench
from dar.bench import alternate, ratio_of_pairs


def test_alternate_flips_the_order_and_pairs_ratios():
    calls = []
    timings = alternate({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert len(timings["a"].wall) == len(timings["a"].cpu) == 3
    timings["a"].wall[:] = [2.0, 4.0, 6.0]
    timings["b"].wall[:] = [1.0, 1.0, 6.0]
    assert ratio_of_pairs(timings["a"], timings["b"]) == 2.0  # median of 2, 4, 1


def test_flop_counter_counts_linears_and_attention():
    from dar.bench.tokenizer import FlopCounter

    x, w = torch.randn(2, 5, 8), torch.randn(3, 8)
    q, k = torch.randn(1, 2, 4, 16), torch.randn(1, 2, 6, 16)
    with FlopCounter() as counter:
        F.linear(x, w)
        F.scaled_dot_product_attention(q, k, k)
    assert counter.flops == 2 * 10 * 8 * 3 + 4 * (1 * 2 * 4 * 16) * 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU behaviour")
def test_gpu_part_skips_on_cpu_and_checks_its_arguments():
    from dar.bench import gpu

    assert gpu.bench(quick=True) == []
    assert any(line.startswith("gpu: everything: no CUDA device") for line in bench.SKIPPED)
    with pytest.raises(SystemExit):
        gpu.main(["--batch", "0"])
    with pytest.raises(SystemExit):
        gpu.main([])  # no CUDA device
    with pytest.raises(RuntimeError, match="CUDA"):
        gpu.run_gpu(batch=1)


def test_dart_part_times_the_cached_sampler_against_the_reference():
    from dar.bench import dart

    rows = {row["name"]: row for row in dart.bench(quick=True)}
    per_image = rows["DART demo, B=8+CFG: seconds per image"]
    assert per_image["unit"] == "s/image" and 0 < per_image["value"] < 60
    assert rows["DART demo, B=1+CFG: cached vs uncached sampler (speed-up)"]["value"] > 0


def test_serve_part_names_what_it_skips_without_the_extra(monkeypatch):
    import importlib.util

    from dar.bench import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llama_cpp" else real(name))
    monkeypatch.delenv("DAR_OFFICIAL_REPO", raising=False)
    bench.SKIPPED.clear()
    assert {"sample_codes", "generate"} <= {row["name"].split(": ")[-1] for row in serve.bench(quick=True)}
    assert any("serve extra is not installed" in line for line in bench.SKIPPED)
    assert any("official generate" in line for line in bench.SKIPPED)


def test_learning_curve_loads_a_checkpoints_ema_over_its_live_weights(tmp_path):
    from safetensors.torch import save_model
    from torch.optim.swa_utils import AveragedModel

    from dar.bench.learning_curve import _load_state
    from tokenizer import DARTokenizer, TokenizerLossModule

    torch.manual_seed(0)
    live = TokenizerLossModule(DARTokenizer.from_preset("tiny", codebook_size=32))
    ema = AveragedModel(live.tokenizer)
    for p in ema.parameters():
        p.data.add_(1.0)  # the EMA differs from the live weights
    save_model(live, str(tmp_path / "model.safetensors"))
    save_model(ema, str(tmp_path / "ema.safetensors"))
    loaded = TokenizerLossModule(DARTokenizer.from_preset("tiny", codebook_size=32))
    _load_state(loaded, tmp_path, loaded.tokenizer)
    torch.testing.assert_close(dict(loaded.tokenizer.named_parameters()), dict(ema.module.named_parameters()))
    torch.testing.assert_close(dict(loaded.named_buffers()), dict(live.named_buffers()))
    with pytest.raises(ValueError, match="does not fit"):
        _load_state(TokenizerLossModule(DARTokenizer.from_preset("tiny", codebook_size=16)), tmp_path)


def test_learning_curve_plot_draws_both_panels(tmp_path):
    from PIL import Image

    from dar.bench.learning_curve import plot

    rows = [
        {"part": "tokenizer", "step": 500, "recon_class_accuracy": 0.2},
        {"part": "tokenizer", "step": 1000, "recon_class_accuracy": 0.4},
        {"part": "ar", "step": 500, "sample_class_accuracy": 0.3},
    ]
    plot(rows, tmp_path / "curve.png")
    image = Image.open(tmp_path / "curve.png").convert("RGB")
    assert image.size == (600, 220)
    colours = set(image.getdata())
    assert (200, 40, 40) in colours and (40, 40, 200) in colours  # one line per panel


def test_learning_curve_plots_rows_of_earlier_runs_and_refuses_foreign_lines(tmp_path, capsys):
    import json

    from PIL import Image

    from dar.bench.learning_curve import main

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"part": "tokenizer", "step": 500, "recon_class_accuracy": 0.5})
        + "\n\n"
        + json.dumps({"part": "ar", "step": 500, "sample_class_accuracy": 0.25})
        + "\n"
    )
    main(["--rows", str(rows), "--png", str(tmp_path / "curve.png")])
    assert capsys.readouterr().out == ""  # earlier rows are plotted, not printed again
    colours = set(Image.open(tmp_path / "curve.png").convert("RGB").getdata())
    assert (200, 40, 40) in colours and (40, 40, 200) in colours
    with pytest.raises(SystemExit):
        main(["--rows", str(rows)])
    assert "add --png" in capsys.readouterr().err
    rows.write_text('{"part": "ar", "step": 5}\n')  # no accuracy
    with pytest.raises(SystemExit):
        main(["--rows", str(rows), "--png", str(tmp_path / "x.png")])
    assert "not a row printed by this command" in capsys.readouterr().err
    rows.write_text("step 500: 50 %\n")
    with pytest.raises(SystemExit):
        main(["--rows", str(rows), "--png", str(tmp_path / "x.png")])
    assert "not a row printed by this command" in capsys.readouterr().err


def test_learning_curve_starts_a_later_stage_at_its_init_export_and_offsets_its_steps(tmp_path):
    from dar.bench.learning_curve import tokenizer_curve
    from dar.training.config import TokenizerTrainingConfig
    from dar.training.config_io import save_config
    from tokenizer import DARTokenizer

    torch.manual_seed(0)
    tok = DARTokenizer.from_preset("tiny", codebook_size=32)
    tok.save_pretrained(tmp_path / "stage1_export")
    cfg = TokenizerTrainingConfig()
    cfg.model.init_from = str(tmp_path / "stage1_export")
    run = tmp_path / "stage2"
    (run / "checkpoints").mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
    size = tok.config.image_size
    images = torch.rand(4, 3, size, size) * 2 - 1
    labels = torch.tensor([0, 0, 1, 1])

    class HalfRight:  # predicts class 0 for everything: right on exactly half of the labels
        def predict(self, x):
            return torch.zeros(len(x), dtype=torch.long)

    rows = tokenizer_curve(run, images, labels, HalfRight(), offset=3200, with_init=True)
    assert [(r["step"], r["recon_class_accuracy"]) for r in rows] == [(3200, 0.5)]
    assert tokenizer_curve(run, images, labels, HalfRight(), offset=3200, with_init=False) == []


def test_code_channel_scores_are_consistent_accuracies():
    from dar.bench.code_channel import measure
    from tokenizer import DARTokenizer

    class Brightness:  # a stand-in judge: class 1 for images brighter than mid-grey
        def predict(self, images):
            return (images.mean(dim=(1, 2, 3)) > 0).long()

    torch.manual_seed(0)
    tokenizer = DARTokenizer.from_preset("tiny", regression_weight=1.0).eval()
    size = tokenizer.config.image_size
    images = torch.cat([torch.full((3, 3, size, size), 0.5), torch.full((3, 3, size, size), -0.5)])
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    result = measure(tokenizer, Brightness(), images, labels, seeds=2)
    assert result["real"] == 1.0
    assert len(result["flow_per_seed"]) == 2 and 0.0 <= result["regressor_all_codes"] <= 1.0
    assert result["flow_every_seed"] <= min(result["flow_per_seed"])
    assert max(result["flow_per_seed"]) <= result["flow_any_seed"]
    assert 1 <= result["codes_used"] <= tokenizer.config.codebook_size
    assert 0.0 <= result["flow_unquantised"] <= 1.0
    # the decoder noise scale reaches the decoder: at 0 every seed draws the same (zero) noise
    still = measure(tokenizer, Brightness(), images, labels, seeds=2, noise_scale=0.0)
    assert still["flow_per_seed"][0] == still["flow_per_seed"][1] == still["flow_every_seed"]
