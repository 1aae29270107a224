"""Images as the project writes and reads them: uint8 ↔ [−1, 1] conversions, grids, sample files (DESIGN §8).

One convention throughout: float images are (N, 3, H, W) in [−1, 1]; files hold **uint8** pixels made by
:func:`to_uint8`, ``clamp(round(127.5·(x + 1)), 0, 255)`` with halves rounded up — bit for bit DiT/LlamaGen's
``clamp(127.5·x + 128, 0, 255).to(uint8)`` — so a metric computed in memory equals the metric on the saved files.
Output paths are checked (and created) before any work is done: :func:`prepare_output_file`,
:func:`prepare_image_folder`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from PIL import Image

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
GRID_GUTTER = 2  # white pixels between grid cells

__all__ = [
    "IMAGE_SUFFIXES",
    "check_uint8",
    "from_uint8",
    "image_grid",
    "load_images",
    "prepare_image_folder",
    "prepare_output_file",
    "save_gif",
    "save_grid",
    "save_npz",
    "save_pngs",
    "to_8bit",
    "to_uint8",
]


# --------------------------------------------------------------------------------------------- pixels


def check_images(images: torch.Tensor, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a (N, 3, H, W) tensor."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(images.shape)}")


def check_uint8(images: torch.Tensor, name: str = "images") -> None:
    """Raise ``ValueError`` unless ``images`` is a uint8 (N, 3, H, W) tensor."""
    check_images(images, name)
    if images.dtype != torch.uint8:
        raise ValueError(
            f"{name} must be uint8 (N, 3, H, W), got dtype {images.dtype}: convert float images in [-1, 1] "
            "with dar.images.to_uint8"
        )


def to_uint8(images: torch.Tensor, tolerance: float = 0.5) -> torch.Tensor:
    """Quantize float images in [-1, 1] to uint8 as ``clamp(round(127.5·(x + 1)), 0, 255)``, halves rounded up.

    Computed as DiT/LlamaGen's sample scripts do, ``clamp(127.5·x + 128, 0, 255)`` truncated to uint8, so that
    our sample files equal theirs bit for bit (``torch.round`` would round halves to even).

    Args:
        images: (B, 3, H, W) float. Decoder outputs overshoot [-1, 1] slightly and are clamped; values beyond
            ``±(1 + tolerance)`` mean the images are in another range ([0, 255], ...) and are refused.
        tolerance: how far outside [-1, 1] a value may lie before it is treated as a range error.

    Returns:
        (B, 3, H, W) uint8 on the input's device.
    """
    check_images(images)
    if not images.is_floating_point():
        raise ValueError(f"to_uint8 expects float images in [-1, 1], got dtype {images.dtype}")
    if images.numel():
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or inf: check the model output before quantizing")
        low, high = images.min().item(), images.max().item()
        if low < -1 - tolerance or high > 1 + tolerance:
            raise ValueError(
                f"images span [{low:.3g}, {high:.3g}] but must be in [-1, 1]: pass pixels / 127.5 - 1 "
                "(or 2 * x - 1 for images in [0, 1])"
            )
    return torch.clamp(127.5 * images.float() + 128.0, 0, 255).to(torch.uint8)


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [−1, 1] (``x / 127.5 − 1``); :func:`to_uint8` maps them back exactly."""
    if pixels.dtype != torch.uint8:
        raise ValueError(f"from_uint8 expects uint8 pixels, got dtype {pixels.dtype}")
    return pixels.float() / 127.5 - 1.0


def to_8bit(image: Image.Image) -> Image.Image:
    """High-bit-depth greyscale (16-bit PNG: modes ``I;16*``, or ``I`` with values above 255) → 8-bit ``L``.

    ``Image.convert("RGB")`` would clip such pixels at 255 (a 16-bit image comes out almost white); here they are
    scaled by 255 / 65535 instead. 8-bit images are returned unchanged. Every reader of image files and PIL
    images uses it: training data (:mod:`dar.data.images`), sample and reference folders, layout references.
    """
    from PIL import Image

    if image.mode.startswith("I;16") or image.mode == "I":
        array = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or array.max(initial=0) > 255:
            array = array * (255.0 / 65535.0)
        return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
    return image


# --------------------------------------------------------------------------------------------- grids


def image_grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """Tile (B, 3, H, W) images — float in [−1, 1] or uint8 — into one (rows·(H+2)+2, nrow·(W+2)+2, 3) uint8
    array with a 2-px white gutter, ``nrow`` images per row."""
    pixels = images if images.dtype == torch.uint8 else to_uint8(images.detach().float().clamp(-1, 1))
    check_uint8(pixels)
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive int, got {nrow!r}")
    batch, _, height, width = pixels.shape
    nrow = min(nrow, batch)
    rows, pad = -(-batch // nrow), GRID_GUTTER
    grid = np.full((rows * (height + pad) + pad, nrow * (width + pad) + pad, 3), 255, dtype=np.uint8)
    for i, image in enumerate(pixels.permute(0, 2, 3, 1).cpu().numpy()):
        r, c = divmod(i, nrow)
        y, x = pad + r * (height + pad), pad + c * (width + pad)
        grid[y : y + height, x : x + width] = image
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int) -> Path:
    """Write :func:`image_grid` of ``images`` as a PNG; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image_grid(images, nrow)).save(path)
    return path


def save_gif(frames: Sequence[torch.Tensor], path: str | os.PathLike, nrow: int, hold_last: int = 3) -> Path:
    """An animated GIF of image grids, one frame per entry of ``frames`` ((B, 3, H, W) each); the last frame is
    shown ``hold_last`` extra times. 400 ms per frame, looping."""
    from PIL import Image

    if not frames:
        raise ValueError("save_gif needs at least one frame")
    pictures = [Image.fromarray(image_grid(frame, nrow)) for frame in frames]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tail = pictures[1:] + [pictures[-1]] * hold_last
    pictures[0].save(path, save_all=True, append_images=tail, duration=400, loop=0)
    return path


# --------------------------------------------------------------------------------------------- files


def prepare_output_file(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """Check before any work that ``path`` can be written: create its folder and probe it.

    Args:
        path: the file to be written later.
        suffix: required file suffix (e.g. ``".npz"``); a path with another suffix is refused, never renamed.

    Raises:
        ValueError: wrong suffix, or the path is a folder.
        PermissionError: the folder cannot be created or written.
    """
    path = Path(path)
    if suffix is not None and path.suffix != suffix:
        raise ValueError(
            f"{path} must end in {suffix} (got {path.suffix or 'no suffix'}): pass e.g. {path.stem}{suffix}"
        )
    if path.is_dir():
        raise ValueError(f"{path} is a folder: pass a file path")
    _probe_folder(path.parent)
    return path


def prepare_image_folder(folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check before any work that ``folder`` can receive image files and holds none yet.

    With ``overwrite`` the images already there (``*.png``, ``*.jpg``) are deleted now; without it a folder that
    holds images is refused, so later evaluations never mix new and stale samples.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder")
    stale = (
        sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    )
    if stale and not overwrite:
        raise FileExistsError(
            f"{folder} already holds {len(stale)} images (e.g. {stale[0].name}); pass --overwrite to delete them "
            "first, or choose an empty folder"
        )
    _probe_folder(folder)
    for file in stale:
        file.unlink()
    return folder


def _probe_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".dar-write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise PermissionError(
            f"cannot write to {folder} ({error.strerror or error}): choose another output path"
        ) from None


def save_pngs(images: torch.Tensor, folder: str | os.PathLike, start_index: int = 0) -> list[Path]:
    """Write uint8 (N, 3, H, W) images as ``{index:06d}.png`` files, indices from ``start_index``."""
    from PIL import Image

    check_uint8(images, "images")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images.permute(0, 2, 3, 1).cpu().numpy()):
        path = folder / f"{start_index + i:06d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def save_npz(
    images: torch.Tensor,
    path: str | os.PathLike,
    labels: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write an ADM-evaluator-compatible npz: ``arr_0`` = (N, H, W, 3) uint8, plus ``labels`` (N,) int64 and the
    ``class_names`` of the label ids (a string array; the ADM evaluator ignores both).

    ``path`` must end in ``.npz`` (numpy would otherwise append it silently).
    """
    check_uint8(images, "images")
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path} must end in .npz")
    arrays = {"arr_0": images.permute(0, 2, 3, 1).cpu().numpy()}
    if labels is not None:
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        arrays["labels"] = torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    if class_names is not None:
        arrays["class_names"] = np.array([str(name) for name in class_names])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def load_images(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Read a folder of PNG/JPEG files (sorted by name) or an npz with ``arr_0`` (N, H, W, 3) uint8.

    Returns:
        (N, 3, H, W) uint8 images, and the (N,) int64 labels an npz stores as ``labels`` (or ADM's ``arr_1``),
        else None.
    """
    from PIL import Image

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {path}")
        arrays = [np.asarray(to_8bit(Image.open(p)).convert("RGB")) for p in files]
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise ValueError(
                f"images in {path} have different sizes {sorted(sizes)}: resize them to one size"
            )
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous(), None
    if not path.is_file():
        raise FileNotFoundError(f"{path} is neither an image folder nor an npz file")
    with np.load(path, allow_pickle=False) as data:
        if "arr_0" not in data:
            raise ValueError(f"{path} has no arr_0 image array (keys: {list(data.keys())})")
        array = data["arr_0"]
        label_key = "labels" if "labels" in data else ("arr_1" if "arr_1" in data else None)
        labels = torch.from_numpy(data[label_key].astype(np.int64)) if label_key else None
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
        raise ValueError(f"arr_0 in {path} must be (N, H, W, 3) uint8, got {array.shape} {array.dtype}")
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous(), labels
