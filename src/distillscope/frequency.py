"""Spectral energy of feature maps by spatial-frequency band: the array layer.

Input: maps ``(n, c, h, w)``, or ViT tokens ``(n, t, d)`` reshaped to ``(n, d, h, w)`` after
dropping the prefix tokens (``tokens_to_maps``). Power spectra are accumulated over samples and
channels by ``SpectrumAccumulator`` (mergeable sums, memory ``O(h^2 w)``). Definitions:
``docs/metrics.md`` section 3.

The mean power spectrum needs no per-map FFT. With the row transform done by one matrix product,
``a_m = X_m C_w`` and ``b_m = X_m S_w`` (cosines and sines of the ``w // 2 + 1`` column
frequencies), the power at ``(ky, kx)`` summed over maps is a quadratic form of
``G_kx = sum_m [a_m; b_m][a_m; b_m]^T`` (the ``2h x 2h`` Gram matrix of column ``kx``):
``sum_m |F_m(ky, kx)|^2 = c^T Gaa c + s^T Gbb s - 2 c^T Gab s + s^T Gaa s + c^T Gbb c + 2 s^T Gab c``
with ``c``, ``s`` the cosines and sines of row frequency ``ky``. Both steps are BLAS products
(float32 within a block of maps for float16/32 input, sums across blocks in float64), faster
than the FFTs themselves on small grids (``docs/performance.md``). Park & Kim's log amplitude
is not linear in the power and still takes one real FFT per map (``log_amplitude=True``).

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
    "band_mask",
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

    _BLOCK_BYTES = 32 << 20  # complex FFT output per step (log amplitude)
    _GRAM_BLOCK_BYTES = 4 << 20  # maps per matrix-product step (2-4 MiB: fastest measured)

    def __init__(self, grid: tuple[int, int], *, remove_mean: bool = False,
                 log_amplitude: bool = False, precision: str = "input"):
        self.h, self.w = (int(g) for g in grid)
        if precision not in ("input", "float64"):
            raise InputError(f"precision must be 'input' or 'float64'; got {precision!r}")
        self.precision = precision
        self.remove_mean = bool(remove_mean)
        self.log_amplitude = bool(log_amplitude)
        self.count = 0  # maps (samples x channels)
        self.wr = self.w // 2 + 1
        self.gram = np.zeros((self.wr, 2 * self.h, 2 * self.h))  # G_kx, float64
        self.log_sum = np.zeros((self.h, self.w)) if log_amplitude else None
        angle = 2 * np.pi * np.outer(np.arange(self.w), np.arange(self.wr)) / self.w
        self._row_basis = np.concatenate([np.cos(angle), np.sin(angle)], axis=1).T  # (2wr, w)

    def update(self, maps: np.ndarray) -> "SpectrumAccumulator":
        """Add a block of maps ``(m, c, h, w)`` (float16/32/64); returns ``self``."""
        maps = np.asarray(maps)
        if maps.ndim != 4 or maps.shape[2:] != (self.h, self.w):
            raise InputError(f"maps must have shape (m, c, {self.h}, {self.w}); got {maps.shape}")
        if maps.dtype.kind != "f":
            raise InputError(f"maps must be floating point; got {maps.dtype}")
        real = (np.float64 if maps.dtype == np.float64 or self.precision == "float64"
                else np.float32)
        m, c = maps.shape[:2]
        h, w, wr = self.h, self.w, self.wr
        basis = self._row_basis.astype(real)
        step = max(1, self._GRAM_BLOCK_BYTES // (c * h * w * np.dtype(real).itemsize))
        for start in range(0, m, step):
            x = maps[start:start + step].astype(real, copy=False)
            if self.remove_mean:
                x = x - x.mean(axis=(2, 3), keepdims=True)
            count = x.shape[0] * c
            rows = (basis @ x.reshape(count * h, w).T).reshape(2 * wr, count, h)
            gram = np.empty((wr, 2 * h, 2 * h))
            for k in range(wr):
                a, b = rows[k], rows[wr + k]  # (maps, h) each
                gram[k, :h, :h] = a.T @ a
                gram[k, h:, h:] = b.T @ b
                gram[k, :h, h:] = a.T @ b
                gram[k, h:, :h] = gram[k, :h, h:].T
            if not np.isfinite(gram).all():  # NaN or infinity anywhere in the block spreads here
                from .moments import NonFiniteError

                raise NonFiniteError(-1, -1, -1, "maps hold NaN or infinite values; the power "
                                                 "sums are no longer valid")
            self.gram += gram
        if self.log_amplitude:
            self._update_log(maps, real)
        self.count += m * c
        return self

    def _update_log(self, maps: np.ndarray, real) -> None:
        import scipy.fft

        from ._kernels import fold_power

        m, c = maps.shape[:2]
        step = max(1, self._BLOCK_BYTES // (c * self.h * self.wr * 2 * np.dtype(real).itemsize))
        scratch = np.zeros((self.h, self.w))
        bad = 0
        for start in range(0, m, step):
            x = maps[start:start + step].astype(real, copy=False)
            if self.remove_mean:
                x = x - x.mean(axis=(2, 3), keepdims=True)
            half = scipy.fft.rfft2(x, norm="ortho", workers=-1).reshape(-1, self.h, self.wr)
            bad += fold_power(half, self.w, scratch, self.log_sum, True)
        if bad:
            from .moments import NonFiniteError

            raise NonFiniteError(bad, -1, -1, f"maps hold NaN or infinite values ({bad} corrupted "
                                              "FFT bins)")

    def merge(self, other: "SpectrumAccumulator") -> "SpectrumAccumulator":
        if (other.h, other.w, other.remove_mean) != (self.h, self.w, self.remove_mean):
            raise InputError("cannot merge spectra of different grids or preprocessing")
        self.gram += other.gram
        self.count += other.count
        if self.log_amplitude and other.log_amplitude:
            self.log_sum += other.log_sum
        return self

    def mean_power(self) -> np.ndarray:
        """The power spectrum averaged over maps, ``(h, w)``, DC at ``[0, 0]``."""
        if not self.count:
            raise InputError("no maps were accumulated")
        h, w, wr = self.h, self.w, self.wr
        angle = 2 * np.pi * np.outer(np.arange(h), np.arange(h)) / h  # (ky, y)
        cos, sin = np.cos(angle), np.sin(angle)
        half = np.empty((h, wr))
        for k in range(wr):
            g = self.gram[k]
            gaa, gbb, gab = g[:h, :h], g[h:, h:], g[:h, h:]

            def form(u, m, v):
                return np.sum((u @ m) * v, axis=1)

            half[:, k] = (form(cos, gaa, cos) + form(sin, gbb, sin) - 2 * form(cos, gab, sin)
                          + form(sin, gaa, sin) + form(cos, gbb, cos) + 2 * form(sin, gab, cos))
        power = np.empty((h, w))
        power[:, :wr] = half
        mirror = np.arange(wr, w)  # F[y, x] = conj F[-y, w - x] for real maps
        power[:, mirror] = half[(-np.arange(h)) % h][:, w - mirror]
        return np.maximum(power, 0.0) / (self.count * h * w)

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
    total = power.sum() - power[0, 0]
    out = {}
    for name in BANDS:
        inside = band_mask(*power.shape, name)
        out[name] = float(power[inside].sum() / total) if total > 0 else float("nan")
    return out


def band_mask(h: int, w: int, band: str) -> np.ndarray:
    """Boolean ``(h, w)`` mask of the DFT bins (DC at ``[0, 0]``) in one band of ``BANDS``.

    Bands are half-open ``[lo, hi)`` in the normalised radius, the last one closed so that the
    Nyquist corner (``rho = sqrt(2)``) counts; the DC bin belongs to no band.
    """
    if band not in BANDS:
        raise InputError(f"band must be one of {', '.join(BANDS)}; got {band!r}")
    lo, hi = BANDS[band]
    rho = normalised_radius(h, w)
    inside = (rho >= lo) & ((rho <= hi + 1e-12) if band == list(BANDS)[-1] else (rho < hi))
    inside[0, 0] = False
    return inside


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
