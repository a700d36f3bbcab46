"""Datasets from local files only: CIFAR-10/100, an image folder, numpy arrays, scikit-learn digits.

Nothing is ever downloaded. Each source yields stable sample ids (one order shared by every
model), labels and a split name per sample; images are uint8 arrays of shape (h, w, 3).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import DataSpec
from .errors import DataError

__all__ = ["ImageData", "load_data"]

_CIFAR = {
    "cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)],
                                        "test": ["test_batch"]}, b"labels"),
    "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, b"fine_labels"),
}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
DIGITS_SIZE = 32
DIGITS_TEST_FRACTION = 0.25


@dataclass
class ImageData:
    """Images with ids, labels and splits, in the order the store will keep.

    ``pixels`` holds every image as one (n, h, w, 3) uint8 array when they share a size;
    otherwise ``files`` lists one image file per sample, read when needed.
    """

    source: str
    ids: np.ndarray
    labels: np.ndarray | None
    splits: np.ndarray
    pixels: np.ndarray | None = None
    files: list[Path] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.size)

    def slice(self, start: int, stop: int) -> "ImageData":
        """Samples ``start:stop`` (one shard of an extraction), in the same order."""
        return ImageData(
            self.source, self.ids[start:stop],
            None if self.labels is None else self.labels[start:stop], self.splits[start:stop],
            None if self.pixels is None else self.pixels[start:stop],
            None if self.files is None else self.files[start:stop], dict(self.provenance))

    def images(self, start: int, stop: int) -> list[np.ndarray]:
        """Images ``start:stop`` as uint8 (h, w, 3) arrays."""
        if self.pixels is not None:
            return list(self.pixels[start:stop])
        from PIL import Image

        out = []
        for path in self.files[start:stop]:
            with Image.open(path) as im:
                out.append(np.array(im.convert("RGB")))
        return out


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches (dicts of bytes, lists and numpy arrays) and nothing
    else: no other class can be constructed, so no code from the file runs."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _select(splits: tuple[str, ...], available: tuple[str, ...], where: str) -> None:
    unknown = [s for s in splits if s not in available]
    if unknown:
        raise DataError(f"{where}: no split {unknown[0]!r}; available: {', '.join(available)}")


def _limit(n: int, limit: int) -> int:
    return n if limit == 0 else min(n, limit)


def _cifar(spec: DataSpec) -> ImageData:
    folder_name, files, label_key = _CIFAR[spec.source]
    root = spec.root
    folder = root if root.name == folder_name else root / folder_name
    _select(spec.splits, tuple(files), f"{spec.source} at {folder}")
    missing = [n for s in spec.splits for n in files[s] if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{spec.source}: {folder / missing[0]} not found; put the python version of the "
            f"dataset (the folder {folder_name}/ with {', '.join(sum(files.values(), []))}) "
            f"under {root}; nothing is downloaded"
        )
    pixels, labels, ids, splits = [], [], [], []
    offsets = {"train": 0, "test": 50000}
    digest = hashlib.sha256()
    for split in spec.splits:
        data, lab = [], []
        for name in files[split]:
            path = folder / name
            raw = path.read_bytes()
            digest.update(raw)
            try:
                batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
                arr = np.asarray(batch[b"data"], dtype=np.uint8)
                lab_arr = np.asarray(batch[label_key], dtype=np.int64)
            except Exception as err:  # noqa: BLE001 - any decoding problem is a data error
                raise DataError(f"{path}: not a CIFAR python batch ({type(err).__name__}: {err})") from None
            if arr.ndim != 2 or arr.shape[1] != 3072 or lab_arr.shape != (arr.shape[0],):
                raise DataError(f"{path}: expected data of shape (n, 3072) and n labels; got "
                                f"{arr.shape} and {lab_arr.shape}")
            data.append(arr)
            lab.append(lab_arr)
        data = np.concatenate(data)
        k = _limit(len(data), spec.limit)
        pixels.append(data[:k].reshape(k, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.concatenate(lab)[:k])
        ids.append(offsets[split] + np.arange(k))
        splits += [split] * k
    return ImageData(spec.source, np.concatenate(ids), np.concatenate(labels), np.asarray(splits),
                     pixels=np.ascontiguousarray(np.concatenate(pixels)),
                     provenance={"root": str(folder), "files_sha256": digest.hexdigest()})


def _imagefolder(spec: DataSpec) -> ImageData:
    root = spec.root
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder; expected {root}/<split>/<class>/<image>")
    split_dirs = {s: root / s for s in spec.splits}
    if spec.splits == ("all",) and not (root / "all").is_dir():
        split_dirs = {"all": root}
    missing = [str(d) for d in split_dirs.values() if not d.is_dir()]
    if missing:
        raise DataError(f"imagefolder: {missing[0]} not found; expected one folder per split "
                        f"({', '.join(spec.splits)}) holding one folder per class, or "
                        f"splits = ['all'] for {root}/<class>/<image>")
    classes = sorted({c.name for d in split_dirs.values() for c in d.iterdir() if c.is_dir()})
    if not classes:
        raise DataError(f"imagefolder: no class folders under {', '.join(map(str, split_dirs.values()))}")
    index = {c: i for i, c in enumerate(classes)}
    files, labels, splits = [], [], []
    for split, d in split_dirs.items():
        chosen = []
        for c in classes:
            if (d / c).is_dir():
                images = [p for p in sorted((d / c).iterdir())
                          if p.suffix.lower() in _IMAGE_SUFFIXES]
                chosen += [(p, index[c]) for p in images[:spec.per_class or None]]
        chosen = chosen[:_limit(len(chosen), spec.limit)]
        files += [p for p, _ in chosen]
        labels += [lab for _, lab in chosen]
        splits += [split] * len(chosen)
    if not files:
        raise DataError(f"imagefolder: no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) under {root}")
    listing = "\n".join(str(p.relative_to(root)) for p in files).encode()
    return ImageData("imagefolder", np.arange(len(files), dtype=np.int64),
                     np.asarray(labels, dtype=np.int64), np.asarray(splits), files=files,
                     provenance={"root": str(root), "classes": classes,
                                 "listing_sha256": hashlib.sha256(listing).hexdigest()})


def _numpy(spec: DataSpec) -> ImageData:
    path = spec.root
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"numpy: cannot read {path} ({err}); expected an .npz with 'images' "
                        "(n, h, w, 3) uint8 and optional 'labels', 'split', 'ids'") from None
    if not hasattr(arrays, "files") or "images" not in arrays.files:
        raise DataError(f"numpy: {path} must be an .npz holding 'images'; found "
                        f"{', '.join(getattr(arrays, 'files', [])) or 'a single array'}")
    images = arrays["images"]
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise DataError(f"numpy: {path}:images must be (n, h, w, 3) uint8; got {images.shape} {images.dtype}")
    n = images.shape[0]
    labels = arrays["labels"].astype(np.int64) if "labels" in arrays.files else None
    ids = arrays["ids"].astype(np.int64) if "ids" in arrays.files else np.arange(n, dtype=np.int64)
    split = arrays["split"].astype(str) if "split" in arrays.files else np.full(n, "all")
    _select(spec.splits, tuple(dict.fromkeys(split.tolist())), f"numpy {path}")
    keep = np.concatenate([np.flatnonzero(split == s)[:_limit(int((split == s).sum()), spec.limit)]
                           for s in spec.splits])
    return ImageData("numpy", ids[keep], None if labels is None else labels[keep], split[keep],
                     pixels=np.ascontiguousarray(images[keep]),
                     provenance={"file": str(path),
                                 "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()})


def digits_images(size: int = DIGITS_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten digits (8 x 8, 0..16) as (n, size, size, 3) uint8 RGB.

    Upscaled by bilinear interpolation (half-pixel centres), grey copied to three channels.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    grey = np.rint(x[:, 0].numpy().clip(0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), digits.target.astype(np.int64)


def digits_split(n: int) -> np.ndarray:
    """The fixed train/test split of the digits: a seed-0 permutation, the last 25% test."""
    order = np.random.default_rng(0).permutation(n)
    split = np.full(n, "train", dtype=object)
    split[order[n - int(round(n * DIGITS_TEST_FRACTION)):]] = "test"
    return split.astype(str)


def _digits(spec: DataSpec) -> ImageData:
    images, labels = digits_images()
    split = digits_split(len(images))
    _select(spec.splits, ("train", "test"), "digits")
    keep = np.concatenate([np.flatnonzero(split == s)[:_limit(int((split == s).sum()), spec.limit)]
                           for s in spec.splits])
    import sklearn

    return ImageData("digits", keep.astype(np.int64), labels[keep], split[keep],
                     pixels=np.ascontiguousarray(images[keep]),
                     provenance={"dataset": "sklearn.datasets.load_digits",
                                 "scikit_learn_version": sklearn.__version__,
                                 "size": DIGITS_SIZE, "test_fraction": DIGITS_TEST_FRACTION})


def load_data(spec: DataSpec) -> ImageData:
    """Load the configured dataset from local files."""
    if spec.source in _CIFAR:
        return _cifar(spec)
    return {"imagefolder": _imagefolder, "numpy": _numpy, "digits": _digits}[spec.source](spec)
