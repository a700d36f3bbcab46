"""Input conditions: clean, noise, blur and band-limited noise, reproducible per sample.

Every random draw comes from a generator seeded by ``(run seed, condition name, sample id)``
(``numpy.random.SeedSequence``), so every model sees the very same corrupted image, and a rerun,
a resumed run or a different batch size reproduces it bit for bit.

Stages and spaces (``../shared/METRICS.md`` section 4):

* ``stage = "input"`` (default): applied at the model's input resolution, after resizing and
  cropping. ``space = "pixel"``: on ``x`` in [0, 1] before normalisation, clipped to [0, 1]
  (ImageNet-C, torchvision). ``space = "normalized"``: added after normalisation, no clipping
  (arXiv 2603.06698; sigma_pixel = sigma * std_c).
* ``stage = "source"``: applied to the source image before any resizing, as CIFAR-10-C was made
  from 32 x 32 images (pixel space only).

Severities 1..5 use the published parameters of Hendrycks & Dietterich (ICLR 2019),
``make_cifar_c.py`` (``table = "cifar"``, default) and ``make_imagenet_c.py``
(``table = "imagenet"``).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from distillscope.metrics.frequency import BANDS, band_mask

from .counter import counter_normals, counter_uniforms, sample_keys
from .errors import ConfigError

__all__ = ["Condition", "KINDS", "SEVERITIES", "gaussian_blur", "parse_condition", "with_rng"]

#: published per-severity parameters, Hendrycks & Dietterich (2019), hendrycks/robustness
SEVERITIES: dict[str, dict[str, tuple[float, ...]]] = {
    "cifar": {  # make_cifar_c.py
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    },
    "imagenet": {  # make_imagenet_c.py
        "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
        "shot_noise": (60, 25, 12, 5, 3),
        "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
        "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
        "gaussian_blur": (1, 2, 3, 4, 6),
        "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    },
}

#: kind -> (name of its strength parameter, keys it accepts beyond name/kind)
KINDS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "clean": (None, ()),
    "gaussian_noise": ("sigma", ("sigma", "severity", "table", "space", "stage")),
    "shot_noise": ("lam", ("lam", "severity", "table", "stage")),
    "impulse_noise": ("amount", ("amount", "severity", "table", "stage")),
    "speckle_noise": ("sigma", ("sigma", "severity", "table", "stage")),
    "gaussian_blur": ("sigma", ("sigma", "severity", "table", "stage")),
    "contrast": ("factor", ("factor", "severity", "table", "stage")),
    "band_noise": ("sigma", ("sigma", "band", "space")),
}


@dataclass(frozen=True)
class Condition:
    """One input condition; ``params`` are recorded in the store's ``/conditions/<name>``."""

    name: str
    kind: str
    strength: float | None = None
    space: str = "pixel"
    stage: str = "input"
    band: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    #: ``"numpy"``: per-sample numpy generators on the CPU; ``"counter"``: counter-based draws
    #: on the batch's device (``counter.py``; shot noise stays numpy's)
    rng: str = "numpy"

    @property
    def key(self) -> int:
        """32-bit key of the condition name, part of every sample's seed."""
        return zlib.crc32(self.name.encode())

    def generator(self, seed: int, sample_id: int) -> np.random.Generator:
        """The generator for one sample: seeded by (run seed, condition, sample id)."""
        return np.random.default_rng([int(seed), self.key, int(sample_id)])

    def applies_at(self, stage: str, space: str) -> bool:
        return self.kind != "clean" and self.stage == stage and self.space == space

    def __call__(self, x: torch.Tensor, sample_ids: Sequence[int], seed: int) -> torch.Tensor:
        """Corrupt a batch ``x`` of shape (k, c, h, w), float32, one image per sample id.

        ``x`` may live on any device. With ``rng = "numpy"`` random draws are made on the CPU
        by numpy (so they do not depend on the device) and moved to ``x``'s device, one batch
        at a time for additive noise; with ``"counter"`` they are computed on ``x``'s device
        (``counter.py``: normals for the additive noises; for impulse noise words ``0..m-1``
        decide the hits, ``m..2m-1`` salt or pepper, for ``m`` values per image).
        """
        if self.kind == "clean":
            return x
        s = self.strength
        shape = tuple(x.shape[1:])
        if self.kind in ("gaussian_noise", "band_noise", "speckle_noise"):
            noise = self._normals(sample_ids, seed, shape, x.device)
            out = x + x * s * noise if self.kind == "speckle_noise" else x + s * noise
        elif self.kind == "impulse_noise" and self.rng == "counter":
            keys = sample_keys(seed, self.key, sample_ids)
            u = counter_uniforms(keys, 2 * x[0].numel(), x.device).view(len(x), 2, *shape)
            hit = u[:, 0] < s
            out = torch.where(hit & (u[:, 1] < 0.5), 1.0, torch.where(hit, 0.0, x))
        else:
            out = torch.empty_like(x)
            for i, sid in enumerate(sample_ids):
                out[i] = self._one(x[i], self.generator(seed, sid))
        if self.space == "pixel":
            out.clamp_(0.0, 1.0)
        return out

    def _normals(self, sample_ids: Sequence[int], seed: int, shape: tuple[int, ...],
                 device) -> torch.Tensor:
        """Unit normals per sample (band-limited for band noise), on ``device``."""
        if self.rng == "counter":
            noise = counter_normals(sample_keys(seed, self.key, sample_ids), shape, device)
            return _band_limited_on(noise, self.band) if self.kind == "band_noise" else noise
        if self.kind == "band_noise":  # white noise per sample, filtered as one batch
            white = np.stack([self.generator(seed, sid).standard_normal(shape)
                              for sid in sample_ids])
            return torch.from_numpy(_band_limited(white, self.band)).to(device)
        return torch.from_numpy(np.stack([_normal(self.generator(seed, sid), shape)
                                          for sid in sample_ids])).to(device)

    def _one(self, x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        s = self.strength
        shape = tuple(x.shape)
        if self.kind == "shot_noise":
            lam = x.clamp(0, 1).cpu().numpy().astype(np.float64) * s
            return torch.from_numpy((rng.poisson(lam) / s).astype(np.float32)).to(x.device)
        if self.kind == "impulse_noise":  # skimage random_noise(mode="s&p", salt_vs_pepper=0.5)
            hit = rng.random(shape) < s
            salt = rng.random(shape) < 0.5
            y = x.clone()
            y[torch.from_numpy(hit & salt).to(x.device)] = 1.0
            y[torch.from_numpy(hit & ~salt).to(x.device)] = 0.0
            return y
        if self.kind == "gaussian_blur":
            return gaussian_blur(x, s)
        if self.kind == "contrast":  # make_cifar_c.py: (x - mean) * c + mean, mean per image
            m = x.mean(dim=(1, 2), keepdim=True)
            return (x - m) * s + m
        raise AssertionError(self.kind)  # parse_condition admits only KINDS


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _band_limited(white: np.ndarray, band: str) -> np.ndarray:
    """White Gaussian noise ``(..., h, w)`` (float64) filtered to one radial band, per-pixel
    standard deviation 1, as float32; every image on its own (a batch in one FFT call).

    With a 0/1 mask M on the DFT grid, the filtered noise has per-pixel variance
    mean(M) (Parseval), so dividing by sqrt(mean(M)) gives unit variance in every band: the
    bands differ in frequency content, never in per-pixel energy.

    The mask depends on the radius of each frequency only, so it is Hermitian symmetric
    (``M[k, l] = M[-k, -l]``) and the filtered noise is real: the half spectrum of ``rfft2`` and
    ``irfft2`` give it in half the work of the full complex transforms and their real part.
    """
    h, w = white.shape[-2:]
    mask = band_mask(h, w, band)
    half = np.fft.rfft2(white, axes=(-2, -1)) * mask[:, : w // 2 + 1]
    filtered = np.fft.irfft2(half, s=(h, w), axes=(-2, -1))
    return (filtered / np.sqrt(mask.mean())).astype(np.float32)


def _band_limited_on(white: torch.Tensor, band: str) -> torch.Tensor:
    """``_band_limited`` of a batch of white noise ``(k, c, h, w)`` where it lives (float32)."""
    h, w = white.shape[-2:]
    mask = torch.from_numpy(band_mask(h, w, band)).to(white.device, torch.float32)
    filtered = torch.fft.ifft2(torch.fft.fft2(white) * mask).real
    return filtered / math.sqrt(float(mask.mean()))


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian blur of (c, h, w) with edge replication (scikit-image's default
    ``mode="nearest"``, ``truncate=4``), as ImageNet-C's ``gaussian_blur``."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=x.device, dtype=x.dtype)
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    y = F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return y[0]


def with_rng(condition: Condition, rng: str) -> Condition:
    """``condition`` drawing with ``rng`` (``[run] rng``); recorded in its parameters (so in
    the store) when it is not numpy's and the condition draws at all."""
    if rng == "numpy" or condition.kind in ("clean", "shot_noise", "gaussian_blur", "contrast"):
        return condition
    return replace(condition, rng=rng, params={**condition.params, "rng": rng})


def parse_condition(entry: Mapping[str, Any], where: str) -> Condition:
    """Validate one ``[[conditions]]`` table of the configuration."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: expected a table; got {type(entry).__name__}")
    entry = dict(entry)
    for key in ("name", "kind"):
        if key not in entry:
            raise ConfigError(f"{where}: missing key {key!r}")
    name, kind = entry.pop("name"), entry.pop("kind")
    if kind not in KINDS:
        raise ConfigError(f"{where}: unknown condition kind {kind!r}; valid kinds: "
                          + ", ".join(KINDS))
    strength_key, valid = KINDS[kind]
    unknown = sorted(set(entry) - set(valid))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for kind {kind!r}; valid keys: "
                          + ", ".join(("name", "kind") + valid))
    params: dict[str, Any] = {}
    strength = None
    if strength_key is not None:
        if "severity" in entry:
            table = entry.get("table", "cifar")
            if table not in SEVERITIES:
                raise ConfigError(f"{where}: table must be one of {', '.join(SEVERITIES)}; got {table!r}")
            severity = entry["severity"]
            if kind not in SEVERITIES[table] or severity not in (1, 2, 3, 4, 5):
                raise ConfigError(f"{where}: severity must be an integer 1..5 for {kind} "
                                  f"(table {table!r}); got {severity!r}")
            if strength_key in entry:
                raise ConfigError(f"{where}: give either severity or {strength_key}, not both")
            strength = float(SEVERITIES[table][kind][severity - 1])
            params.update(severity=severity, table=table)
        elif strength_key in entry:
            strength = entry[strength_key]
            if not isinstance(strength, (int, float)) or isinstance(strength, bool) or strength < 0:
                raise ConfigError(f"{where}: {strength_key} must be a number >= 0; got {strength!r}")
            strength = float(strength)
        else:
            raise ConfigError(f"{where}: kind {kind!r} needs {strength_key!r} or severity (1..5)")
        if kind in ("shot_noise", "gaussian_blur") and strength <= 0:
            raise ConfigError(f"{where}: {strength_key} must be > 0 for {kind}")
        params[strength_key] = strength
    space = entry.get("space", "normalized" if kind == "band_noise" else "pixel")
    if space not in ("pixel", "normalized"):
        raise ConfigError(f"{where}: space must be 'pixel' or 'normalized'; got {space!r}")
    stage = entry.get("stage", "input")
    if stage not in ("input", "source"):
        raise ConfigError(f"{where}: stage must be 'input' or 'source'; got {stage!r}")
    if stage == "source" and space != "pixel":
        raise ConfigError(f"{where}: stage 'source' works in pixel space only")
    band = None
    if kind == "band_noise":
        band = entry.get("band")
        if band not in BANDS:
            raise ConfigError(f"{where}: band must be one of {', '.join(BANDS)}; got {band!r}")
        params["band"] = band
        params["band_edges"] = list(BANDS[band])
    if kind != "clean":
        params.update(space=space, stage=stage)
    return Condition(name=name, kind=kind, strength=strength, space=space, stage=stage,
                     band=band, params=params)
