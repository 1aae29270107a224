"""dar.evaluation.protocol through `dar eval` and recipes/evaluate.py, end to end on a tiny random pipeline, a tiny
classifier and a PNG reference."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tiny import make_tiny_pipeline

from dar import cli
from dar.demo.classifier import ShapeClassifier
from dar.images import load_images, save_pngs

REPO = Path(__file__).resolve().parents[3]


def fails_with(args, capsys) -> str:
    """Run ``dar`` expecting a user error: exit status 2, one line on stderr (no traceback); returns it."""
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dar ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


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
    return [
        "eval",
        "--checkpoint",
        str(root / "pipe"),
        "--per-class",
        "2",
        "--batch-size",
        "4",
        "--reference",
        str(root / "ref"),
        "--features",
        "classifier",
        "--classifier",
        str(root / "clf"),
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
        *extra,
    ]


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
    assert results["num_samples"] == 6 and results["settings"]["features"] == "classifier"
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
    cfg = recipe.parse_args(
        [
            "--checkpoint",
            str(setup / "pipe"),
            "--out-dir",
            str(tmp_path / "run"),
            "--per-class",
            "2",
            "--batch-size",
            "4",
            "--reference",
            str(setup / "ref"),
            "--features",
            "classifier",
            "--classifier",
            str(setup / "clf"),
            "--save-png",
        ]
    )
    results = recipe.main(cfg)
    run = tmp_path / "run"
    assert (run / "metrics.json").is_file() and (run / "shards" / "rank000.npz").is_file()
    assert len(list((run / "png").glob("*.png"))) == 6
    # rank 0 samples with seed + 0: the same images as `dar eval --seed 0` at the same batch size
    assert torch.equal(load_images(run / "samples.npz")[0], load_images(tmp_path / "cli.npz")[0])
    cli_metrics = json.loads((tmp_path / "cli.json").read_text())["metrics"]
    assert results["metrics"]["fid"] == pytest.approx(cli_metrics["fid"])


def test_eval_errors_name_the_fix(setup, tmp_path, monkeypatch, capsys):
    base = _eval_args(setup, tmp_path / "x.json")
    assert "not 'demo-test', an image folder or an existing .npz" in fails_with(
        base + ["--reference", str(tmp_path / "missing")], capsys
    )
    save_pngs(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), tmp_path / "small")
    assert "(8, 8) px but the model makes 16×16" in fails_with(
        base + ["--reference", str(tmp_path / "small")], capsys
    )
    assert "no classifier at" in fails_with(base + ["--classifier", str(tmp_path / "none")], capsys)
    assert "--per-class must be at least 1" in fails_with(base + ["--per-class", "0"], capsys)
    assert "cfg_scale must lie in [0, 1000]" in fails_with(base + ["--cfg-scale", "1e38"], capsys)
    assert "temperature must be > 0" in fails_with(base + ["--temperature", "0"], capsys)
    assert "top_p must lie in (0, 1]" in fails_with(base + ["--top-p", "2"], capsys)
    assert "no CUDA device" in fails_with(base + ["--device", "cuda"], capsys) or torch.cuda.is_available()
    assert "must end in .npz" in fails_with(base + ["--save-npz", str(tmp_path / "foo")], capsys)
    import torchmetrics.image.fid

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", offline)
    assert "--inception PATH" in fails_with(base + ["--features", "inception"], capsys)
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "foo.npz").exists()


def test_unwritable_outputs_fail_before_any_sampling(setup, tmp_path, monkeypatch, capsys):
    import dar.evaluation.protocol as protocol

    monkeypatch.setattr(
        protocol, "sample_images", lambda *a, **k: pytest.fail("sampled before checking --out")
    )
    (tmp_path / "file").write_text("x")
    assert "cannot write" in fails_with(_eval_args(setup, tmp_path / "file" / "eval.json"), capsys)


def test_save_png_into_a_used_folder_is_refused_then_cleared_with_overwrite(setup, tmp_path, capsys):
    save_pngs(torch.zeros(9, 3, 16, 16, dtype=torch.uint8), tmp_path / "png")
    args = _eval_args(setup, tmp_path / "e.json", "--save-png", str(tmp_path / "png"))
    assert "already holds 9 images" in fails_with(args, capsys)
    assert cli.main(args + ["--overwrite"]) == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 6  # only the new samples: none of the stale ones


def test_eval_of_saved_samples_equals_eval_while_sampling(setup, tmp_path, capsys):
    cli.main(_eval_args(setup, tmp_path / "a.json", "--save-npz", str(tmp_path / "s.npz")))
    cli.main(_eval_args(setup, tmp_path / "b.json", "--samples", str(tmp_path / "s.npz")))
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert b["metrics"] == a["metrics"] and b["class_accuracy"] == a["class_accuracy"]
    assert b["settings"]["samples"] == str(tmp_path / "s.npz") and b["settings"]["checkpoint"] is None
    assert "not 'demo-train', an image folder or an .npz" in fails_with(
        _eval_args(setup, tmp_path / "c.json", "--samples", str(tmp_path / "none.npz")), capsys
    )


def test_eval_reconstruction_measures_the_tokenizer(setup, tmp_path, capsys):
    from dar.evaluation.metrics import reconstruction_metrics

    out = tmp_path / "r.json"
    cli.main(_eval_args(setup, out, "--reconstruction", "--seed", "3"))
    scores = json.loads(out.read_text())["reconstruction"]
    assert scores["num_images"] == 8 and {"psnr", "ssim", "rfid"} <= set(scores)
    # the same numbers as the library function on the same images, features and seed
    from dar.demo.classifier import ShapeClassifier
    from dar.evaluation.features import build_feature_extractor
    from dar.pipeline import DARPipeline

    pipe = DARPipeline.from_pretrained(setup / "pipe")
    feature = build_feature_extractor("classifier", classifier=ShapeClassifier.from_pretrained(setup / "clf"))
    images = load_images(setup / "ref")[0].float() / 127.5 - 1
    expected = reconstruction_metrics(
        pipe.tokenizer, images, generator=torch.Generator().manual_seed(3), feature=feature, batch_size=4
    )
    assert scores == pytest.approx(expected)
    assert "psnr" in capsys.readouterr().out
