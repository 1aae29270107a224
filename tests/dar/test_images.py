"""Tests of dar.images: the uint8 convention, sample files (npz, PNG), grids and output-path checks."""

import numpy as np
import pytest
import torch
from PIL import Image

from dar import images as M


def noise_images(n, seed, size=16):
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_to_uint8_rounds_halves_up_and_clamps():
    values = torch.tensor([-1.0, -1 + 1 / 255, -1 + 0.9 / 255, 0.0, 1.0, 1.2, -1.3])
    images = values.view(1, 1, 1, -1).expand(1, 3, 1, -1)
    assert M.to_uint8(images)[0, 0, 0].tolist() == [0, 1, 0, 128, 255, 255, 0]
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).expand(2, 3, 16, 16)
    assert torch.equal(M.to_uint8(pixels.float() / 127.5 - 1), pixels)  # exact round trip of every level
    # same bytes as DiT/LlamaGen's sample scripts
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2.2 - 1.1
    assert torch.equal(M.to_uint8(x), torch.clamp(127.5 * x + 128.0, 0, 255).to(torch.uint8))


def test_to_uint8_refuses_other_ranges_and_shapes():
    with pytest.raises(ValueError, match=r"must be in \[-1, 1\].*127.5 - 1"):
        M.to_uint8(torch.full((1, 3, 4, 4), 200.0))
    with pytest.raises(ValueError, match="float images"):
        M.to_uint8(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        M.to_uint8(torch.full((1, 3, 4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        M.to_uint8(torch.zeros(3, 4, 4))


def test_npz_round_trip_is_adm_compatible(tmp_path):
    images, labels = noise_images(5, 0), torch.tensor([0, 0, 1, 1, 2])
    path = M.save_npz(images, tmp_path / "samples.npz", labels=labels)
    with np.load(path) as data:
        assert data["arr_0"].shape == (5, 16, 16, 3) and data["arr_0"].dtype == np.uint8  # ADM: NHWC uint8
        assert np.array_equal(data["arr_0"], images.permute(0, 2, 3, 1).numpy())
    loaded, loaded_labels = M.load_images(path)
    assert torch.equal(loaded, images) and torch.equal(loaded_labels, labels)


def test_png_folder_round_trip_and_errors(tmp_path):
    images = noise_images(3, 1)
    paths = M.save_pngs(images, tmp_path / "png", start_index=10)
    assert [p.name for p in paths] == ["000010.png", "000011.png", "000012.png"]
    loaded, labels = M.load_images(tmp_path / "png")
    assert torch.equal(loaded, images) and labels is None
    M.save_pngs(noise_images(1, 2, size=8), tmp_path / "png", start_index=20)
    with pytest.raises(ValueError, match="different sizes"):
        M.load_images(tmp_path / "png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .png"):
        M.load_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        M.load_images(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="uint8"):
        M.save_npz(images.float(), tmp_path / "x.npz")


def test_grid_has_a_gutter_and_takes_floats_or_uint8(tmp_path):
    floats = torch.rand(5, 3, 8, 8) * 2 - 1
    grid = M.image_grid(floats, nrow=3)
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2, 3) and grid.dtype == np.uint8
    assert np.array_equal(grid, M.image_grid(M.to_uint8(floats), nrow=3))  # one quantisation: to_uint8's
    assert (grid[:2] == 255).all()  # white gutter
    path = M.save_grid(floats, tmp_path / "grid.png", nrow=3)
    assert Image.open(path).size == (32, 22)
    gif = M.save_gif([floats, floats.flip(0)], tmp_path / "a.gif", nrow=5)
    assert Image.open(gif).n_frames >= 2


def test_output_paths_are_checked_before_any_work(tmp_path):
    assert M.prepare_output_file(tmp_path / "new" / "eval.json", ".json").parent.is_dir()
    with pytest.raises(ValueError, match="must end in .npz"):
        M.prepare_output_file(tmp_path / "foo", ".npz")  # never renamed to foo.npz silently
    with pytest.raises(ValueError, match="is a folder"):
        M.prepare_output_file(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="cannot write"):
        M.prepare_output_file(blocker / "sub" / "eval.json")


def test_an_image_folder_with_old_images_is_refused_or_cleared(tmp_path):
    M.save_pngs(noise_images(2, 0), tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds 2 images.*--overwrite"):
        M.prepare_image_folder(tmp_path)
    M.prepare_image_folder(tmp_path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # only images are deleted


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    """A 16-bit greyscale PNG (``--samples`` / ``--reference`` folders) reads as its 8-bit equivalent."""
    levels = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    (tmp_path / "png").mkdir()
    Image.fromarray(levels).save(tmp_path / "png" / "000000.png")
    loaded, _ = M.load_images(tmp_path / "png")
    expected = torch.from_numpy(np.rint(levels * (255 / 65535)).astype(np.uint8))
    assert loaded.shape == (1, 3, 16, 16)
    assert torch.equal(loaded[0, 0], expected) and torch.equal(loaded[0, 2], expected)  # grey → RGB
