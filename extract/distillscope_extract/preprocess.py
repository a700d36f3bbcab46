"""Preprocessing as batched torch operations, with the input conditions at their stage.

Order for every image: uint8 -> float in [0, 1] -> conditions at ``stage = "source"`` -> resize
the shorter side to ``resize`` (PIL's antialiased kernels) -> centre crop to ``size`` -> clamp
to [0, 1] (as PIL's uint8 output saturates) -> pixel-space conditions -> ``(x - mean) / std``
-> normalized-space conditions. An image already at ``size`` is not resampled.

With ``quantize`` (the ``clip`` preset's default) the resize is PIL's on uint8 images, as
torchvision's ``Resize`` on a PIL image and CLIP's own preprocessing do: the horizontal pass,
then the vertical one, each clamped and rounded to 8 bits (PIL keeps its intermediate image in
uint8), so the model sees what ``ToTensor`` of PIL's output gives, within one level where PIL's
fixed-point coefficients round the other way. Without it the resize stays in float (PIL's
kernel, no rounding): on noise images the two differ by up to 21/255.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .conditions import Condition
from .config import PreprocessSpec
from .errors import ConfigError

__all__ = ["CLIP_MEAN", "CLIP_STD", "Preprocessing", "resolve_preprocessing"]

#: OpenAI CLIP's normalisation (Radford et al. 2021), used by arXiv 2603.06698 for every model
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocessing:
    """Resolved preprocessing of one model; recorded in the store as the model's attribute."""

    size: tuple[int, int] | None  # None: keep the source size
    resize: int | None  # shorter side before the centre crop; None: straight to ``size``
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    quantize: bool = False  # PIL's uint8 resize: each pass clamped and rounded to 8 bits

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: Sequence[np.ndarray] | torch.Tensor, condition: Condition,
                 sample_ids: Sequence[int], seed: int,
                 device: str | torch.device = "cpu") -> torch.Tensor:
        """Model inputs (k, 3, h, w) float32 for uint8 images under one condition.

        ``images``: uint8 (h, w, 3) arrays, or one (k, h, w, 3) uint8 tensor (pinned, from the
        input pipeline). The uint8 pixels move to ``device`` first, so resizing runs there (on
        a GPU, the input pipeline's costliest step on the CPU); random draws stay on the CPU.
        """
        if isinstance(images, torch.Tensor):
            return self._batch(images, condition, sample_ids, seed, device)
        if len(images) and all(im.shape == images[0].shape for im in images):
            return self._batch(np.stack(images), condition, sample_ids, seed, device)
        return torch.cat([self._batch(im[None], condition, sample_ids[i:i + 1], seed, device)
                          for i, im in enumerate(images)])

    def _batch(self, pixels: np.ndarray | torch.Tensor, condition: Condition, ids: Sequence[int],
               seed: int, device: str | torch.device = "cpu") -> torch.Tensor:
        if not isinstance(pixels, torch.Tensor):
            pixels = torch.from_numpy(pixels)
        x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
        if condition.applies_at("source", "pixel"):
            x = condition(x, ids, seed)
        x = self.geometry(x)
        if condition.applies_at("input", "pixel"):
            x = condition(x, ids, seed)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        if condition.applies_at("input", "normalized"):
            x = condition(x, ids, seed)
        return x.contiguous()

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Resize the shorter side, centre crop, clamp to [0, 1]."""
        h, w = x.shape[-2:]
        if self.size is None or (h, w) == tuple(self.size):
            return x
        th, tw = self.size
        if self.resize is None:
            nh, nw = th, tw
        else:
            short, long_ = (h, w) if h <= w else (w, h)
            new_long = int(self.resize * long_ / short)  # torchvision's Resize(int)
            nh, nw = (self.resize, new_long) if h <= w else (new_long, self.resize)
        if (nh, nw) != (h, w):
            # antialias=True also when enlarging: torch's antialiased kernels are PIL's (bicubic
            # a = -0.5, as CLIP's PIL pipeline and torchvision's Resize use), the plain ones not
            mode = self.interpolation
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            if self.quantize:  # PIL: horizontal pass, then vertical, each to uint8
                if nw != w:
                    x = _to_8_bits(F.interpolate(x, size=(h, nw), mode=mode, **kwargs))
                if nh != h:
                    x = _to_8_bits(F.interpolate(x, size=(nh, nw), mode=mode, **kwargs))
            else:
                x = F.interpolate(x, size=(nh, nw), mode=mode, **kwargs)
        if (nh, nw) != (th, tw):
            if nh < th or nw < tw:
                raise ConfigError(f"preprocessing: resized image {nh}x{nw} is smaller than the "
                                  f"crop {th}x{tw}; set resize >= size")
            top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
            x = x[..., top:top + th, left:left + tw]
        return x.clamp(0.0, 1.0)


def _to_8_bits(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to the nearest of the 256 levels, as PIL's uint8 output."""
    return x.clamp_(0.0, 1.0).mul_(255.0).round_().div_(255.0)


def _from_model(model: torch.nn.Module) -> dict:
    import timm.data

    if getattr(model, "pretrained_cfg", None) is None:
        raise ConfigError(f"{type(model).__name__} has no timm data config to take the "
                          "preprocessing from; set [preprocess] preset = 'clip', or 'none' with "
                          "size, mean and std")
    cfg = timm.data.resolve_data_config({}, model=model)
    size = tuple(cfg["input_size"][1:])
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None:  # a ViT built at another resolution than its pretrained config
        size = tuple(int(s) for s in img_size)
    crop_pct = cfg.get("crop_pct", 1.0) or 1.0
    return {"size": size, "resize": int(math.floor(min(size) / crop_pct)),
            "interpolation": cfg.get("interpolation", "bicubic"),
            "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


def resolve_preprocessing(spec: PreprocessSpec, model: torch.nn.Module | None) -> Preprocessing:
    """The preprocessing of ``spec`` (preset, then explicit values) for ``model``."""
    if spec.preset == "clip":  # CLIP's preprocess: PIL Resize, CenterCrop, ToTensor, Normalize
        values = {"size": (224, 224), "resize": 224, "interpolation": "bicubic",
                  "mean": CLIP_MEAN, "std": CLIP_STD, "quantize": True}
    elif spec.preset == "model":
        values = _from_model(model)
    else:  # "none": the source geometry, normalisation given explicitly
        values = {"size": None, "resize": None, "interpolation": "bilinear", "mean": None,
                  "std": None}
    for key in ("size", "resize", "interpolation", "mean", "std", "quantize"):
        if getattr(spec, key) is not None:
            values[key] = getattr(spec, key)
    if spec.size is not None and spec.resize is None:  # a size alone: resize straight to it
        values["resize"] = None
    if values["mean"] is None or values["std"] is None:
        raise ConfigError("[preprocess]: preset 'none' needs mean and std")
    if any(s <= 0 for s in values["std"]):
        raise ConfigError(f"[preprocess]: std must be positive; got {values['std']}")
    return Preprocessing(size=tuple(values["size"]) if values["size"] else None,
                         resize=values["resize"], interpolation=values["interpolation"],
                         mean=tuple(float(m) for m in values["mean"]),
                         std=tuple(float(s) for s in values["std"]),
                         quantize=bool(values.get("quantize", False)))
