"""The `dar` command on a tiny random pipeline: files written, clear errors, fast --help."""

import subprocess
import sys

import pytest
from dar_test_utils import make_tiny_pipeline
from PIL import Image

from dar import cli
from tokenizer import DARTokenizer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipe")
    make_tiny_pipeline().save_pretrained(folder)
    return folder


def test_sample_writes_a_grid(checkpoint, tmp_path, capsys):
    cli.main(["sample", "--checkpoint", str(checkpoint), "--classes", "cat", "0", "--per-class", "2",
              "--out", str(tmp_path), "--quiet"])  # fmt: skip
    grid = Image.open(tmp_path / "samples.png")
    size = DARTokenizer.from_preset("tiny").config.image_size
    assert grid.size == (2 * (size + 2) + 2, 2 * (size + 2) + 2)
    assert "samples.png" in capsys.readouterr().out


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
    cli.main(["layout", "--checkpoint", str(checkpoint), "--reference-class", "bear", "--classes", "bird", "cat",
              "--layout-tokens", "4", "8", "--out", str(tmp_path), "--quiet"])  # fmt: skip
    size = DARTokenizer.from_preset("tiny").config.image_size
    assert Image.open(tmp_path / "layout.png").size[1] == 3 * (size + 2) + 2  # reference + 2 rows


def test_errors_name_the_fix(checkpoint, tmp_path):
    with pytest.raises(SystemExit, match="Unknown class name 'dragon'"):
        cli.main(["sample", "--checkpoint", str(checkpoint), "--classes", "dragon", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="out of range"):
        cli.main(["sample", "--checkpoint", str(checkpoint), "--classes", "7", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="No pipeline folder"):
        cli.main(
            ["sample", "--checkpoint", str(tmp_path / "missing" / "deeper" / "x"), "--out", str(tmp_path)]
        )
    with pytest.raises(SystemExit, match="model_index.json"):
        cli.main(["sample", "--checkpoint", str(tmp_path), "--out", str(tmp_path)])


def test_help_does_not_import_the_models():
    code = "import sys; from dar import cli; cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
