"""Pre-extracted code shards for AR training, tagged with the tokenizer that made them (DESIGN §6, §10).

``recipes/extract_codes.py`` encodes a dataset once; ``recipes/train_llama_ar.py`` trains on the shards. A code
set is a folder of safetensors shards ``codes-r<rank>-<k>.safetensors`` (tensors ``codes`` (n, V, N) int16/int32,
``labels`` (n,) int64, ``indices`` (n,) int64: the dataset rows; V = 1 view or 10 ten-crop views) plus
``codes_index.json`` (shapes, codebook size, class names, tokenizer path and fingerprint). The fingerprint is
the sha256 of the tokenizer's config and weights; training refuses codes from another tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from dar.data import mix_seed

logger = logging.getLogger(__name__)

INDEX_FILE = "codes_index.json"
FORMAT = "dar-codes-v1"

__all__ = [
    "CodeDataset",
    "CodeSet",
    "CodeShardWriter",
    "CodesIndex",
    "TokenizerMismatchError",
    "load_codes",
    "read_codes_index",
    "tokenizer_fingerprint",
    "write_codes_index",
]


class TokenizerMismatchError(ValueError):
    """Codes were extracted with a different tokenizer than the one in use."""


def _config_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "to_dict"):
        data = config.to_dict()
    elif dataclasses.is_dataclass(config):
        data = dataclasses.asdict(config)
    else:
        data = dict(config)
    return {k: v for k, v in data.items() if not str(k).startswith("_")}


def tokenizer_fingerprint(tokenizer: torch.nn.Module) -> str:
    """sha256 (hex) of a tokenizer's config (JSON, sorted keys, private ``_`` keys dropped) and state dict bytes.

    The same weights give the same fingerprint whether the tokenizer was loaded from disk or is in memory.
    """
    digest = hashlib.sha256()
    config = getattr(tokenizer, "config", None)
    if config is not None:
        digest.update(json.dumps(_config_dict(config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(tokenizer.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def code_dtype(codebook_size: int) -> torch.dtype:
    """int16 for codebooks up to 32768 entries, else int32."""
    return torch.int16 if codebook_size <= 32768 else torch.int32


class CodeShardWriter:
    """Buffer codes of one process and write them as safetensors shards of at most ``shard_size`` rows.

    Args:
        out_dir: the code-set folder.
        fingerprint: ``tokenizer_fingerprint`` of the encoding tokenizer (stored in every shard).
        codebook_size: K, to pick the storage dtype and check the range.
        process_index: rank of this process (part of the shard names).
        shard_size: rows per shard file.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        fingerprint: str,
        codebook_size: int,
        process_index: int = 0,
        shard_size: int = 50_000,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.codebook_size = codebook_size
        self.dtype = code_dtype(codebook_size)
        self.process_index = process_index
        self.shard_size = shard_size
        self.buffers: dict[str, list[torch.Tensor]] = {"codes": [], "labels": [], "indices": []}
        self.buffered = 0
        self.num_shards = 0
        self.files: list[str] = []

    def add(self, codes: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor) -> None:
        """Add (B, V, N) or (B, N) int codes in [0, K), (B,) labels and (B,) dataset row indices."""
        if codes.ndim == 2:
            codes = codes[:, None]  # (B, 1, N)
        if codes.ndim != 3 or codes.shape[0] != labels.shape[0] or labels.shape != indices.shape:
            raise ValueError(
                f"codes (B,V,N) / labels (B,) / indices (B,) mismatch: {codes.shape}, {labels.shape}"
            )
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(
                f"codes outside [0, {self.codebook_size}): [{int(codes.min())}, {int(codes.max())}]"
            )
        self.buffers["codes"].append(codes.to("cpu", self.dtype))
        self.buffers["labels"].append(labels.to("cpu", torch.int64))
        self.buffers["indices"].append(indices.to("cpu", torch.int64))
        self.buffered += codes.shape[0]
        while self.buffered >= self.shard_size:
            self.flush(self.shard_size)

    def flush(self, rows: int | None = None) -> None:
        """Write the first ``rows`` buffered rows (all when None) as one shard."""
        if not self.buffered:
            return
        merged = {key: torch.cat(parts) for key, parts in self.buffers.items()}
        rows = self.buffered if rows is None else rows
        tensors = {key: value[:rows].contiguous() for key, value in merged.items()}
        rest = {key: [value[rows:]] for key, value in merged.items()}
        name = f"codes-r{self.process_index:03d}-{self.num_shards:05d}.safetensors"
        tmp = self.out_dir / f".{name}.tmp"
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "tokenizer_fingerprint": self.fingerprint})
        os.replace(tmp, self.out_dir / name)
        self.files.append(name)
        self.num_shards += 1
        self.buffers = rest
        self.buffered -= rows

    def close(self) -> list[str]:
        """Write the last partial shard; returns this process's shard file names."""
        self.flush()
        return self.files


def write_codes_index(
    out_dir: str | os.PathLike,
    fingerprint: str,
    *,
    num_tokens: int,
    codebook_size: int,
    num_classes: int,
    views: int,
    class_names: list[str] | None = None,
    tokenizer_path: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``codes_index.json`` listing every shard of the folder (call once, after all processes wrote)."""
    out_dir = Path(out_dir)
    shards = sorted(p.name for p in out_dir.glob("codes-r*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"no code shards in {out_dir}")
    total = 0
    for name in shards:
        with safe_open(str(out_dir / name), "pt") as fh:
            total += fh.get_slice("labels").get_shape()[0]
    index = {
        "format": FORMAT,
        "tokenizer_fingerprint": fingerprint,
        "tokenizer_path": tokenizer_path,
        "num_tokens": num_tokens,
        "codebook_size": codebook_size,
        "num_classes": num_classes,
        "views": views,
        "class_names": class_names,
        "num_rows": total,
        "shards": shards,
        **(extra or {}),
    }
    path = out_dir / INDEX_FILE
    path.write_text(json.dumps(index, indent=2))
    return path


@dataclasses.dataclass(frozen=True)
class CodesIndex:
    """The ``codes_index.json`` of a code set (see :func:`write_codes_index`)."""

    tokenizer_fingerprint: str
    num_tokens: int
    codebook_size: int
    num_classes: int
    views: int
    num_rows: int
    shards: list[str]
    tokenizer_path: str | None = None
    class_names: list[str] | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_codes_index(path: str | os.PathLike) -> CodesIndex:
    """Read and check the ``codes_index.json`` of the code-set folder ``path``."""
    index_file = Path(path) / INDEX_FILE
    if not index_file.is_file():
        raise FileNotFoundError(f"{index_file} is missing: run recipes/extract_codes.py into {path} first")
    try:
        data = json.loads(index_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{index_file} is not valid JSON ({error}): re-run recipes/extract_codes.py"
        ) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{index_file} has format {found!r}, expected {FORMAT!r}")
    names = {f.name for f in dataclasses.fields(CodesIndex)} - {"extra"}
    try:
        return CodesIndex(
            **{k: v for k, v in data.items() if k in names},
            extra={k: v for k, v in data.items() if k not in names and k != "format"},
        )
    except TypeError as error:
        raise ValueError(f"{index_file} lacks entries ({error}): re-run recipes/extract_codes.py") from None


@dataclasses.dataclass
class CodeSet:
    """A loaded code set: ``codes`` (n, V, N) int16/int32, ``labels`` (n,) int64 and its :class:`CodesIndex`."""

    codes: torch.Tensor
    labels: torch.Tensor
    index: CodesIndex


def load_codes(path: str | os.PathLike, expected_fingerprint: str | None = None) -> CodeSet:
    """Read a code set written by ``extract_codes``.

    Args:
        path: the code-set folder (with ``codes_index.json``).
        expected_fingerprint: ``tokenizer_fingerprint`` of the tokenizer the AR model will be used with;
            a different fingerprint raises ``TokenizerMismatchError``.
    """
    path = Path(path)
    index = read_codes_index(path)
    fingerprint = index.tokenizer_fingerprint
    if expected_fingerprint is not None and expected_fingerprint != fingerprint:
        raise TokenizerMismatchError(
            f"the codes in {path} were extracted with tokenizer {fingerprint[:12]} ({index.tokenizer_path}), "
            f"but the tokenizer in use is {expected_fingerprint[:12]}: codes from another tokenizer are meaningless "
            "to it. Re-run recipes/extract_codes.py with this tokenizer, or point model.tokenizer_path at the one "
            "that made the codes."
        )
    codes, labels = [], []
    for name in index.shards:
        with safe_open(str(path / name), "pt") as fh:
            shard_fp = (fh.metadata() or {}).get("tokenizer_fingerprint")
            if shard_fp != fingerprint:
                raise TokenizerMismatchError(
                    f"shard {name} was written by tokenizer {str(shard_fp)[:12]}, the index says {fingerprint[:12]}: "
                    f"the folder {path} mixes code sets; extract into an empty folder"
                )
            codes.append(fh.get_tensor("codes"))
            labels.append(fh.get_tensor("labels"))
    return CodeSet(codes=torch.cat(codes), labels=torch.cat(labels), index=index)


class CodeDataset(torch.utils.data.Dataset):
    """Examples ``{"codes": (N,) int64, "labels": () int64}`` of a ``CodeSet``, one random view per epoch.

    With ten-crop codes (V = 10) the view of example ``i`` in epoch ``e`` is drawn from a generator seeded by
    (seed, e, i), as the official recipe picks one of the ten crops at random.
    """

    def __init__(self, code_set: CodeSet, seed: int = 0) -> None:
        self.codes = code_set.codes
        self.labels = code_set.labels
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.codes.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        views = self.codes.shape[1]
        view = 0
        if views > 1:
            seed = mix_seed(self.seed, self.epoch, index)
            view = int(torch.randint(views, (1,), generator=torch.Generator().manual_seed(seed)))
        return {"codes": self.codes[index, view].long(), "labels": self.labels[index]}
