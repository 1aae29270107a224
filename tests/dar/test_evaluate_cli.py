"""`dar eval` and recipes/evaluate.py end to end on a tiny random pipeline, a tiny classifier and a PNG reference."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from dar_test_utils import make_tiny_pipeline

from dar import cli
from dar.classifier import ShapeClassifier
from dar.metrics import load_images, save_pngs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    pipe = make_tiny_pipeline()
    pipe.save_pretrained(root / "pipe")
    size = pipe.tokenizer.config.image_size
    generator = torch.Generator().manual_seed(0)
    save_pngs(torch.randint(0, 256, (8, 3, size, size), dtype=torch.uint8, generator=generator), root / "ref")
    torch.manual_seed(0)
    ShapeClassifier(num_classes=3, image_size=size, width=4, num_features=8).save_pretrained(root / "clf")
    return root


def _eval_args(root, out, *extra):
    return ["eval", "--checkpoint", str(root / "pipe"), "--per-class", "2", "--batch-size", "4",
            "--reference", str(root / "ref"), "--features", "classifier", "--classifier", str(root / "clf"),
            "--device", "cpu", "--out", str(out), "--quiet", *extra]  # fmt: skip


def test_eval_writes_json_samples_and_table(setup, tmp_path, capsys):
    out = tmp_path / "eval.json"
    cli.main(
        _eval_args(setup, out, "--save-npz", str(tmp_path / "s.npz"), "--save-png", str(tmp_path / "png"))
    )
    results = json.loads(out.read_text())
    metrics = results["metrics"]
    assert {"fid", "is", "kid", "precision", "recall"} <= set(metrics)
    assert (metrics["num_fake"], metrics["num_real"]) == (6, 8)
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1 and metrics["is"] >= 1
    accuracy = results["class_accuracy"]
    assert set(accuracy["per_class"]) == {"bear", "bird", "cat"} and 0 <= accuracy["overall"] <= 1
    assert results["settings"]["num_samples"] == 6 and results["settings"]["features"] == "classifier"
    images, labels = load_images(tmp_path / "s.npz")
    assert images.shape == (6, 3, 16, 16) and labels.tolist() == [0, 0, 1, 1, 2, 2]  # class-balanced
    assert torch.equal(load_images(tmp_path / "png")[0], images)  # PNGs and npz hold the same pixels
    table = capsys.readouterr().out
    assert "FID" in table and "class accuracy" in table and str(out) in table


def test_recipe_matches_the_cli_with_one_process(setup, tmp_path):
    cli.main(_eval_args(setup, tmp_path / "cli.json", "--save-npz", str(tmp_path / "cli.npz")))
    spec = importlib.util.spec_from_file_location("recipe_evaluate", REPO / "recipes" / "evaluate.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    cfg = recipe.parse_args(["--checkpoint", str(setup / "pipe"), "--out-dir", str(tmp_path / "run"),
                             "--per-class", "2", "--batch-size", "4", "--reference", str(setup / "ref"),
                             "--features", "classifier", "--classifier", str(setup / "clf"), "--save-png"])  # fmt: skip
    results = recipe.main(cfg)
    run = tmp_path / "run"
    assert (run / "metrics.json").is_file() and (run / "shards" / "rank000.npz").is_file()
    assert len(list((run / "png").glob("*.png"))) == 6
    # rank 0 samples with seed + 0: the same images as `dar eval --seed 0` at the same batch size
    assert torch.equal(load_images(run / "samples.npz")[0], load_images(tmp_path / "cli.npz")[0])
    cli_metrics = json.loads((tmp_path / "cli.json").read_text())["metrics"]
    assert results["metrics"]["fid"] == pytest.approx(cli_metrics["fid"])


def test_eval_errors_name_the_fix(setup, tmp_path, monkeypatch):
    with pytest.raises(SystemExit, match="not 'demo-test', an image folder or an existing .npz"):
        cli.main(_eval_args(setup, tmp_path / "x.json") + ["--reference", str(tmp_path / "missing")])
    save_pngs(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), tmp_path / "small")
    with pytest.raises(SystemExit, match=r"\(8, 8\) px but the model generates 16×16"):
        cli.main(_eval_args(setup, tmp_path / "x.json") + ["--reference", str(tmp_path / "small")])
    with pytest.raises(SystemExit, match="no classifier at"):
        cli.main(_eval_args(setup, tmp_path / "x.json") + ["--classifier", str(tmp_path / "none")])
    import torchmetrics.image.fid

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", offline)
    with pytest.raises(SystemExit, match="--inception PATH"):
        cli.main(_eval_args(setup, tmp_path / "x.json") + ["--features", "inception"])
    assert not (tmp_path / "x.json").exists()


def test_eval_of_saved_samples_equals_eval_while_sampling(setup, tmp_path):
    cli.main(_eval_args(setup, tmp_path / "a.json", "--save-npz", str(tmp_path / "s.npz")))
    cli.main(_eval_args(setup, tmp_path / "b.json", "--samples", str(tmp_path / "s.npz")))
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert b["metrics"] == a["metrics"] and b["class_accuracy"] == a["class_accuracy"]
    assert b["settings"]["samples"] == str(tmp_path / "s.npz") and b["settings"]["checkpoint"] is None
    with pytest.raises(SystemExit, match="not 'demo-train', an image folder or an .npz"):
        cli.main(_eval_args(setup, tmp_path / "c.json", "--samples", str(tmp_path / "none.npz")))


def test_eval_reconstruction_measures_the_tokenizer(setup, tmp_path, capsys):
    from dar.metrics import reconstruction_metrics

    out = tmp_path / "r.json"
    cli.main(_eval_args(setup, out, "--reconstruction", "--seed", "3"))
    scores = json.loads(out.read_text())["reconstruction"]
    assert scores["num_images"] == 8 and {"psnr", "ssim", "rfid"} <= set(scores)
    # the same numbers as the library function on the same images, features and seed
    from dar.classifier import ShapeClassifier
    from dar.evaluation import build_feature_extractor
    from dar.pipeline import DARPipeline

    pipe = DARPipeline.from_pretrained(setup / "pipe")
    feature = build_feature_extractor("classifier", classifier=ShapeClassifier.from_pretrained(setup / "clf"))
    images = load_images(setup / "ref")[0].float() / 127.5 - 1
    expected = reconstruction_metrics(pipe.tokenizer, images, generator=torch.Generator().manual_seed(3),
                                      feature=feature, batch_size=4)  # fmt: skip
    assert scores == pytest.approx(expected)
    assert "psnr" in capsys.readouterr().out
