"""The demo model committed under checkpoints/dar-animals: within budget, loads, `dar sample` works, draws the class."""

from pathlib import Path

import torch
from PIL import Image

from dar import DARPipeline, cli
from dar.demo import DEMO_CLASSIFIER
from dar.demo.classifier import ShapeClassifier
from dar.evaluation.protocol import class_accuracy, class_balanced_labels, sample_images

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "checkpoints" / "dar-animals"
# A regression guard, not the quality bar: chance is 10 % and a label mix-up or a broken tokenizer falls to it.
# Raise it when a better demo model ships. Measured: 89.2 % at 100 per class (earlier demo 81.1 %; the 0.80 below
# leaves ~3 standard errors of the 20-per-class draw under it) by `dar eval` (README, "The demo
# model"); this fixed draw (20 per class, seed 0) measured 83.0 %, with a standard error of ~3 points: 0.75 leaves
# nearly three of them.
MIN_CLASS_ACCURACY = 0.80


def test_shipped_folders_are_safetensors_within_the_size_budget():
    weights = sorted(SHIPPED.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"tokenizer", "ar_model"}
    assert sum(p.stat().st_size for p in weights) <= 25 * 2**20
    assert not [p for p in SHIPPED.rglob("*") if p.suffix in (".bin", ".pt", ".pkl")]


def test_dar_sample_runs_on_the_shipped_checkpoint(tmp_path, capsys):
    cli.main(["sample", "--classes", "cat", "zebra", "--per-class", "3", "--out", str(tmp_path), "--quiet"])
    grid = Image.open(tmp_path / "samples.png")
    assert grid.size == (3 * 34 + 2, 2 * 34 + 2)  # 32-px images, 2-px borders, one class per row
    assert "samples.png" in capsys.readouterr().out


def test_shipped_pipeline_loads_with_class_names_and_a_stock_llama():
    from transformers import AutoModelForCausalLM

    pipe = DARPipeline.from_pretrained(str(SHIPPED))
    assert pipe.get_label_ids(["bear", "zebra"]) == [0, 9] and pipe.tokenizer.config.image_size == 32
    ar = AutoModelForCausalLM.from_pretrained(SHIPPED / "ar_model")
    assert type(ar).__name__ == "LlamaForCausalLM"


def test_shipped_model_draws_the_requested_animal_above_chance():
    # 20 samples per class at the pipeline's defaults, judged by the demo classifier. The README reports the
    # 100-per-class figure of `dar eval`; this is a smaller, fixed draw.
    pipe = DARPipeline.from_pretrained(str(SHIPPED))
    classifier = ShapeClassifier.from_pretrained(DEMO_CLASSIFIER).eval()
    labels = class_balanced_labels(10, 20)
    images = sample_images(pipe, labels, batch_size=100, generator=torch.Generator().manual_seed(0))
    accuracy = class_accuracy(classifier, images, labels, [pipe.id2label[i] for i in range(10)])
    assert accuracy["overall"] >= MIN_CLASS_ACCURACY, accuracy


# Measured: 90.8 % (noise_scale 0.5; earlier demo 83.1 %) of the 1,000 test images by `dar eval --reconstruction` (README, "The demo model"); this fixed
# draw (the first 10 test images per class, seed 0) measured 83 %. 10 per class has a standard error of ~4 points:
# 0.72 leaves nearly three of them and still fails a tokenizer that lost the shape (chance is 10 %).
MIN_RECONSTRUCTION_ACCURACY = 0.80


def test_shipped_tokenizer_reconstructions_keep_the_animal():
    from dar.demo.animal_shapes import ANIMAL_SHAPE_CLASSES, animal_shapes_uint8
    from dar.evaluation.metrics import reconstruction_metrics
    from dar.images import from_uint8

    pipe = DARPipeline.from_pretrained(str(SHIPPED))
    classifier = ShapeClassifier.from_pretrained(DEMO_CLASSIFIER).eval()
    images, labels = animal_shapes_uint8("test", per_class=10)
    scores, reconstructions = reconstruction_metrics(
        pipe.tokenizer,
        from_uint8(images),
        generator=torch.Generator().manual_seed(0),
        return_reconstructions=True,
    )
    assert reconstructions.dtype == torch.uint8 and reconstructions.shape == images.shape
    accuracy = class_accuracy(classifier, reconstructions, labels, list(ANIMAL_SHAPE_CLASSES))
    assert accuracy["overall"] >= MIN_RECONSTRUCTION_ACCURACY, accuracy
    assert scores["psnr"] > 15.0, scores  # measured 20.9 dB on the 1,000 test images


SHIPPED_DART = REPO / "checkpoints" / "dart-animals"
# Measured: 92.1 % at 100 per class by `dar eval --checkpoint checkpoints/dart-animals` (README, "The DART demo").
MIN_DART_CLASS_ACCURACY = 0.85


def test_shipped_dart_folder_is_safetensors_within_its_budget_and_carries_its_guidance():
    from dart import DARTPipeline

    weights = sorted(SHIPPED_DART.rglob("*.safetensors"))
    assert [p.parent.name for p in weights] == ["transformer"]
    assert sum(p.stat().st_size for p in weights) <= 15 * 2**20
    assert not [p for p in SHIPPED_DART.rglob("*") if p.suffix in (".bin", ".pt", ".pkl")]
    pipe = DARTPipeline.from_pretrained(str(SHIPPED_DART))
    assert pipe.get_label_ids(["bear", "zebra"]) == [0, 9]
    assert pipe.config.default_cfg_scale == 7.0  # tuned by FID (README); calls without cfg_scale use it


def test_shipped_dart_model_draws_the_requested_animal():
    from dart import DARTPipeline

    pipe = DARTPipeline.from_pretrained(str(SHIPPED_DART))
    pipe.set_progress_bar_config(disable=True)
    classifier = ShapeClassifier.from_pretrained(DEMO_CLASSIFIER).eval()
    labels = class_balanced_labels(10, 20)
    images = sample_images(pipe, labels, batch_size=100, generator=torch.Generator().manual_seed(0))
    accuracy = class_accuracy(classifier, images, labels, [pipe.id2label[i] for i in range(10)])
    assert accuracy["overall"] >= MIN_DART_CLASS_ACCURACY, accuracy
