"""The `dar` command on a tiny random pipeline: files written, clear errors, fast --help."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from tiny import make_tiny_pipeline

from dar import cli
from tokenizer import DARTokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    make_tiny_pipeline().save_pretrained(folder)
    return folder


def test_sample_writes_a_grid(checkpoint, tmp_path, capsys):
    cli.main(
        [
            "sample",
            "--checkpoint",
            str(checkpoint),
            "--classes",
            "cat",
            "0",
            "--per-class",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    grid = Image.open(tmp_path / "samples.png")
    size = DARTokenizer.from_preset("tiny").config.image_size
    assert grid.size == (2 * (size + 2) + 2, 2 * (size + 2) + 2)
    assert "samples.png" in capsys.readouterr().out


def test_noise_scale_reaches_the_decoder(checkpoint, tmp_path):
    def grid(*extra):
        out = tmp_path / "_".join(extra or ("default",))
        cli.main(
            [
                "sample",
                "--checkpoint",
                str(checkpoint),
                "--classes",
                "0",
                "--out",
                str(out),
                "--quiet",
                *extra,
            ]
        )
        return np.asarray(Image.open(out / "samples.png"))

    default = grid()
    assert np.array_equal(grid("--noise-scale", "1"), default)  # the tiny tokenizer's noise_scale is 1
    assert not np.array_equal(grid("--noise-scale", "0.3"), default)


def test_stream_writes_strip_and_gif(checkpoint, tmp_path):
    cli.main(
        ["stream", "--checkpoint", str(checkpoint), "--classes", "1,2", "--out", str(tmp_path), "--quiet"]
    )
    num_steps = DARTokenizer.from_preset("tiny").config.num_steps
    gif = Image.open(tmp_path / "stream.gif")
    assert gif.n_frames >= num_steps
    size = DARTokenizer.from_preset("tiny").config.image_size
    assert Image.open(tmp_path / "stream_strip.png").size[0] == num_steps * (size + 2) + 2


def test_layout_writes_rows(checkpoint, tmp_path):
    cli.main(
        [
            "layout",
            "--checkpoint",
            str(checkpoint),
            "--reference-class",
            "bear",
            "--classes",
            "bird",
            "cat",
            "--layout-tokens",
            "4",
            "8",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    size = DARTokenizer.from_preset("tiny").config.image_size
    assert Image.open(tmp_path / "layout.png").size[1] == 3 * (size + 2) + 2  # reference + 2 rows


def _error(args, capsys) -> str:
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_errors_name_the_fix_in_one_line(checkpoint, tmp_path, capsys):
    base = ["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path), "--quiet"]
    assert "Unknown class name 'dragon'" in _error(base + ["--classes", "dragon"], capsys)
    assert "outside [0, 3)" in _error(base + ["--classes", "7"], capsys)
    assert "--per-class must be at least 1" in _error(base + ["--per-class", "0"], capsys)
    assert "no pipeline folder" in _error(["sample", "--checkpoint", str(tmp_path / "missing" / "x")], capsys)
    assert "no pipeline folder" in _error(
        ["sample", "--checkpoint", "runs/not/here"], capsys
    )  # never the Hub
    hub_like = _error(
        ["sample", "--checkpoint", "no-such-owner-x/not-here"], capsys
    )  # owner/name: tried on the Hub, offline
    assert "is not a local folder" in hub_like and "or pass a local folder" in hub_like
    assert "model_index.json" in _error(
        ["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path)], capsys
    )
    assert "temperature must be > 0" in _error(base + ["--temperature", "0"], capsys)
    assert "--device tpu is not a torch device: pass cpu" in _error(base + ["--device", "tpu"], capsys)
    assert "--reference-class" in _error(
        ["layout", "--checkpoint", str(checkpoint), "--out", str(tmp_path)], capsys
    )
    assert "Unknown class name 'unicorn'" in _error(
        ["layout", "--checkpoint", str(checkpoint), "--reference-class", "unicorn", "--out", str(tmp_path)],
        capsys,
    )
    (tmp_path / "blocked").write_text("a file")
    assert "cannot write" in _error(base[:-3] + ["--out", str(tmp_path / "blocked" / "dir")], capsys)


def test_repeated_classes_are_all_kept_and_batches_match_one_call(checkpoint, tmp_path):
    import numpy as np

    cli.main(
        [
            "sample",
            "--checkpoint",
            str(checkpoint),
            "--classes",
            "cat",
            "--classes",
            "bear",
            "--per-class",
            "3",
            "--out",
            str(tmp_path / "a"),
            "--quiet",
        ]
    )
    cli.main(
        [
            "sample",
            "--checkpoint",
            str(checkpoint),
            "--classes",
            "cat",
            "bear",
            "--per-class",
            "3",
            "--batch-size",
            "4",
            "--out",
            str(tmp_path / "b"),
            "--quiet",
        ]
    )
    a, b = (np.asarray(Image.open(tmp_path / x / "samples.png")) for x in ("a", "b"))
    size = DARTokenizer.from_preset("tiny").config.image_size
    assert a.shape[0] == 2 * (size + 2) + 2  # two class rows: the first --classes is not dropped
    assert a.shape == b.shape


def test_stream_leaves_the_users_files_alone(checkpoint, tmp_path):
    (tmp_path / ".frame.png").write_bytes(b"mine")
    cli.main(["stream", "--checkpoint", str(checkpoint), "--classes", "0", "--out", str(tmp_path), "--quiet"])
    assert (tmp_path / ".frame.png").read_bytes() == b"mine"


def test_help_does_not_import_the_models():
    code = "import sys; from dar import cli; cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.fixture(scope="module")
def dart_checkpoint(tmp_path_factory):
    from dart import DARTModel, DARTPipeline

    torch.manual_seed(0)
    model = DARTModel.from_preset("tiny", id2label={0: "bear", 1: "bird", 2: "cat", 3: "cow"})
    folder = tmp_path_factory.mktemp("dart")
    DARTPipeline(transformer=model.eval()).save_pretrained(folder)
    return folder


def test_the_same_commands_serve_a_dart_folder(dart_checkpoint, tmp_path, capsys):
    cli.main(
        [
            "sample",
            "--checkpoint",
            str(dart_checkpoint),
            "--classes",
            "cow",
            "bear",
            "--per-class",
            "2",
            "--batch-size",
            "3",
            "--cfg-scale",
            "2",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert Image.open(tmp_path / "samples.png").size == (2 * 10 + 2, 2 * 10 + 2)  # 8-px images
    cli.main(
        ["stream", "--checkpoint", str(dart_checkpoint), "--classes", "1", "--out", str(tmp_path), "--quiet"]
        + ["--prefix", "dart_"]
    )
    assert Image.open(tmp_path / "dart_stream_strip.png").size[0] == 4 * 10 + 2  # T = 4 levels
    assert (tmp_path / "dart_stream.gif").is_file() and not (tmp_path / "stream_strip.png").exists()
    assert "not options of a DART pipeline" in _error(
        ["sample", "--checkpoint", str(dart_checkpoint), "--top-k", "5", "--out", str(tmp_path)], capsys
    )
    assert "--noise-scale is an option of D-AR's decoder" in _error(
        ["sample", "--checkpoint", str(dart_checkpoint), "--noise-scale", "0.5", "--out", str(tmp_path)],
        capsys,
    )


def test_eval_levels_gives_the_held_out_loss_of_every_dart_level(dart_checkpoint, tmp_path, capsys):
    import json

    from dar.images import save_pngs

    save_pngs(torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8), tmp_path / "ref")
    args = [
        "eval",
        "--levels",
        "--checkpoint",
        str(dart_checkpoint),
        "--reference",
        str(tmp_path / "ref"),
        "--features",
        "classifier",
        "--batch-size",
        "4",
        "--quiet",
    ]
    cli.main([*args, "--out", str(tmp_path / "a.json")])
    cli.main([*args, "--out", str(tmp_path / "b.json")])
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert len(a["per_level"]) == 4 and a["num_images"] == 6 and a == {**b, "settings": a["settings"]}
    assert "per-level x0-MSE" in capsys.readouterr().out


def _count_ar_rows(monkeypatch):
    """Record the batch of every AR forward of the pipeline the next command loads."""
    rows, load = [], cli._load_pipeline

    def load_and_watch(args):
        pipe = load(args)
        pipe.ar_model.register_forward_pre_hook(
            lambda module, a, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True
        )
        return pipe

    monkeypatch.setattr(cli, "_load_pipeline", load_and_watch)
    return rows


@pytest.mark.parametrize("command", ["sample", "stream", "layout"])
def test_batch_size_bounds_every_generating_command(command, checkpoint, tmp_path, monkeypatch):
    rows = _count_ar_rows(monkeypatch)
    extra = ["--reference-class", "bear", "--layout-tokens", "4"] if command == "layout" else []
    args = [command, "--checkpoint", str(checkpoint), "--classes", "0", "1", "2", "--per-class", "2"]
    assert cli.main([*args, "--batch-size", "2", *extra, "--out", str(tmp_path), "--quiet"]) == 0
    assert rows and max(rows) == 4  # 2 images, conditional + null rows: never all 6 at once


def test_arguments_are_checked_before_the_model_is_loaded(checkpoint, tmp_path, monkeypatch, capsys):
    def no_load(args):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(cli, "_load_pipeline", no_load)
    base = ["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]
    assert "--per-class must be at least 1" in _error(base + ["--per-class", "0"], capsys)
    assert "--batch-size must be at least 1" in _error(base + ["--batch-size", "0"], capsys)
    assert "temperature must be > 0" in _error(base + ["--temperature", "0"], capsys)
    assert "noise_scale must be a finite number >= 0" in _error(base + ["--noise-scale", "-1"], capsys)
    assert "--kid-subset-size must be at least 1" in _error(
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--kid-subset-size",
            "0",
            "--out",
            str(tmp_path / "e.json"),
        ],
        capsys,
    )


def test_eval_diagnostics_name_the_pipeline_they_need(checkpoint, dart_checkpoint, tmp_path, capsys):
    out = ["--features", "classifier", "--out", str(tmp_path / "e.json"), "--quiet"]
    assert "DART pipeline" in _error(["eval", "--levels", "--checkpoint", str(checkpoint), *out], capsys)
    assert "D-AR pipeline" in _error(
        ["eval", "--reconstruction", "--checkpoint", str(dart_checkpoint), *out], capsys
    )


def test_a_damaged_model_index_is_named(checkpoint, tmp_path, capsys):
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(checkpoint, folder)
    (folder / "model_index.json").write_text("{not json")
    error = _error(["sample", "--checkpoint", str(folder), "--out", str(tmp_path)], capsys)
    assert "model_index.json is not valid JSON" in error
