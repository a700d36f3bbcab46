"""Spectral energy of feature maps by spatial-frequency band: the array layer.

Input: maps ``(n, c, h, w)``, or ViT tokens ``(n, t, d)`` reshaped to ``(n, d, h, w)`` after
dropping the prefix tokens (``tokens_to_maps``). Power spectra are accumulated over samples and
channels by ``SpectrumAccumulator`` (mergeable sums, memory ``O(h w)``), from real FFTs
(``scipy.fft.rfft2``) folded in by one numba pass that also restores the mirrored half of the
spectrum. Definitions: ``docs/metrics.md`` section 3.

1. Float64; optionally remove each map's spatial mean (``remove_mean``; recorded).
2. ``P = |fft2(x, norm="ortho")|^2`` (Parseval: ``sum P = sum x^2``), averaged over samples and
   channels.
3. Normalised radius ``rho = sqrt(fx^2 + fy^2) / 0.5`` with ``fftfreq(h)``, ``fftfreq(w)``: 1 is
   the axis Nyquist, the corners reach ``sqrt(2)``.
4. Bands low ``[0, 1/3)``, mid ``[1/3, 2/3)``, high ``[2/3, sqrt(2)]`` (the Nyquist corner, where
   a checkerboard lives, is high): fractions of the non-DC power.
"""

from __future__ import annotations

import numpy as np

from ._errors import InputError

__all__ = [
    "BANDS",
    "SpectrumAccumulator",
    "tokens_to_maps",
    "normalised_radius",
    "band_fractions",
    "radial_profile",
    "relative_log_amplitude",
    "power_spectrum",
]

#: band name -> [lower, upper) edges of the normalised radius (the last band is closed)
BANDS = {"low": (0.0, 1 / 3), "mid": (1 / 3, 2 / 3), "high": (2 / 3, float(np.sqrt(2.0)))}


def tokens_to_maps(tokens: np.ndarray, grid: tuple[int, int], num_prefix_tokens: int) -> np.ndarray:
    """``(n, t, d)`` tokens to ``(n, d, h, w)`` maps: drop the prefix tokens, then the patch
    tokens in row-major grid order (timm's) become an ``h x w`` map per channel."""
    h, w = (int(g) for g in grid)
    n, t, d = tokens.shape
    if num_prefix_tokens + h * w != t:
        raise InputError(f"{t} tokens != {num_prefix_tokens} prefix + {h}x{w} grid")
    return tokens[:, num_prefix_tokens:, :].reshape(n, h, w, d).transpose(0, 3, 1, 2)


def normalised_radius(h: int, w: int) -> np.ndarray:
    """``rho`` of every FFT bin of an ``h x w`` grid, shape ``(h, w)``, DC at ``[0, 0]``."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    return np.sqrt(fy**2 + fx**2) / 0.5


class SpectrumAccumulator:
    """Mergeable sums of the power spectrum (and log amplitude) of maps, over samples x channels.

    Parameters
    ----------
    grid : (h, w)
    remove_mean : bool, default False
        Subtract each map's spatial mean first (removes the DC term).
    log_amplitude : bool, default False
        Also accumulate ``ln(|fft2| + 1e-6)`` for Park & Kim's relative log amplitude.
    precision : {"input", "float64"}, default "input"
        The FFT runs in float64 for float64 maps and in float32 for float16/32 maps (whose
        values carry no more precision; the FFT adds ~1e-7 relative error) unless "float64";
        powers are summed in float64 either way.
    """

    _BLOCK_BYTES = 32 << 20  # complex FFT output per step

    def __init__(self, grid: tuple[int, int], *, remove_mean: bool = False,
                 log_amplitude: bool = False, precision: str = "input"):
        self.h, self.w = (int(g) for g in grid)
        if precision not in ("input", "float64"):
            raise InputError(f"precision must be 'input' or 'float64'; got {precision!r}")
        self.precision = precision
        self.remove_mean = bool(remove_mean)
        self.log_amplitude = bool(log_amplitude)
        self.count = 0  # maps (samples x channels)
        self.power = np.zeros((self.h, self.w))
        self.log_sum = np.zeros((self.h, self.w)) if log_amplitude else None

    def update(self, maps: np.ndarray) -> "SpectrumAccumulator":
        """Add a block of maps ``(m, c, h, w)`` (float16/32/64); returns ``self``."""
        import scipy.fft

        from ._kernels import fold_power

        maps = np.asarray(maps)
        if maps.ndim != 4 or maps.shape[2:] != (self.h, self.w):
            raise InputError(f"maps must have shape (m, c, {self.h}, {self.w}); got {maps.shape}")
        if maps.dtype.kind != "f":
            raise InputError(f"maps must be floating point; got {maps.dtype}")
        real = (np.float64 if maps.dtype == np.float64 or self.precision == "float64"
                else np.float32)
        m, c = maps.shape[:2]
        wr = self.w // 2 + 1
        step = max(1, self._BLOCK_BYTES // (c * self.h * wr * 2 * np.dtype(real).itemsize))
        log_sum = self.log_sum if self.log_amplitude else np.zeros((0, 0))
        bad = 0
        for start in range(0, m, step):
            x = maps[start:start + step].astype(real, copy=False)
            if self.remove_mean:
                x = x - x.mean(axis=(2, 3), keepdims=True)
            half = scipy.fft.rfft2(x, norm="ortho", workers=-1).reshape(-1, self.h, wr)
            bad += fold_power(half, self.w, self.power, log_sum, self.log_amplitude)
        if bad:
            from .moments import NonFiniteError

            raise NonFiniteError(bad, -1, -1, f"maps hold NaN or infinite values ({bad} corrupted "
                                              "FFT bins); the power sums are no longer valid")
        self.count += m * c
        return self

    def merge(self, other: "SpectrumAccumulator") -> "SpectrumAccumulator":
        if (other.h, other.w, other.remove_mean) != (self.h, self.w, self.remove_mean):
            raise InputError("cannot merge spectra of different grids or preprocessing")
        self.power += other.power
        self.count += other.count
        if self.log_amplitude and other.log_amplitude:
            self.log_sum += other.log_sum
        return self

    def mean_power(self) -> np.ndarray:
        """The power spectrum averaged over maps, ``(h, w)``, DC at ``[0, 0]``."""
        if not self.count:
            raise InputError("no maps were accumulated")
        return self.power / self.count

    def mean_log_amplitude(self) -> np.ndarray:
        if not self.log_amplitude:
            raise InputError("create the accumulator with log_amplitude=True")
        return self.log_sum / self.count


def power_spectrum(maps: np.ndarray, *, remove_mean: bool = False) -> np.ndarray:
    """Mean power spectrum ``(h, w)`` of in-memory maps ``(n, c, h, w)``."""
    maps = np.asarray(maps)
    if maps.ndim != 4:
        raise InputError(f"maps must be 4-D (n, c, h, w); got shape {maps.shape}")
    acc = SpectrumAccumulator(maps.shape[2:], remove_mean=remove_mean)
    return acc.update(maps).mean_power()


def band_fractions(power: np.ndarray) -> dict[str, float]:
    """Fractions of the non-DC power in the low, mid and high bands (sum to 1)."""
    power = np.asarray(power, dtype=np.float64)
    rho = normalised_radius(*power.shape)
    total = power.sum() - power[0, 0]
    out = {}
    for name, (lo, hi) in BANDS.items():
        inside = (rho >= lo) & ((rho < hi) if name != "high" else (rho <= hi + 1e-12))
        inside[0, 0] = False
        out[name] = float(power[inside].sum() / total) if total > 0 else float("nan")
    return out


def radial_profile(power: np.ndarray, bins: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of the non-DC power in ``bins`` equal-width rings of rho over ``(0, sqrt 2]``.

    Returns ``(edges, fractions)``, ``edges`` of length ``bins + 1``. A 7 x 7 grid has only 8
    distinct radii: compare models on the same grid.
    """
    power = np.asarray(power, dtype=np.float64)
    rho = normalised_radius(*power.shape).ravel()
    p = power.ravel().copy()
    p[0] = 0.0
    edges = np.linspace(0.0, np.sqrt(2.0), bins + 1)
    which = np.clip(np.searchsorted(edges, rho, side="right") - 1, 0, bins - 1)
    sums = np.bincount(which, weights=p, minlength=bins)
    total = p.sum()
    return edges, (sums / total if total > 0 else np.full(bins, np.nan))


def relative_log_amplitude(mean_log_amplitude: np.ndarray) -> np.ndarray:
    """Park & Kim's relative log amplitude, reproduced as published.

    The mean of ``ln(|fft2| + 1e-6)`` over samples and channels, ``fftshift``-ed, read along the
    diagonal from the centre (``[h // 2:]``), minus its DC value. Defined for square grids only,
    and on even grids it never reaches the Nyquist corner; prefer ``band_fractions``.

    References
    ----------
    N. Park and S. Kim, "How do vision transformers work?", ICLR 2022, arXiv 2202.06709.
    """
    a = np.asarray(mean_log_amplitude)
    h, w = a.shape
    if h != w:
        raise InputError(f"Park & Kim's relative log amplitude is defined for square grids; got "
                         f"{h}x{w} (use band_fractions or radial_profile)")
    diagonal = np.diag(np.fft.fftshift(a))[h // 2:]
    return diagonal - diagonal[0]
