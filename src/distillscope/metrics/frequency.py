"""Spectral energy of feature maps by spatial-frequency band: the array layer.

Input: maps ``(n, c, h, w)``, or ViT tokens ``(n, t, d)`` reshaped to ``(n, d, h, w)`` after
dropping the prefix tokens (``tokens_to_maps``). Power spectra are accumulated over samples and
channels by ``SpectrumAccumulator`` (mergeable sums, memory ``O(h w)``). Definitions:
``docs/metrics.md`` section 3.

The mean power spectrum needs no per-map FFT. Write ``R_n`` for the real DFT basis of length
``n`` (the cosines of frequencies ``0..n//2`` and the sines of ``1..(n-1)//2``: ``n`` columns).
Two matrix products give every map's projections ``R_h^T X_m R_w``, and for real maps

``(|F(ky, kx)|^2 + |F(-ky, kx)|^2) / 2 = (c^T X a)^2 + (c^T X b)^2 + (s^T X a)^2 + (s^T X b)^2``

with ``a``, ``b`` the cosines and sines of ``kx`` and ``c``, ``s`` those of ``ky``: the cross
terms cancel. So the spectrum averaged over the signs of the frequencies (the four quadrants
``(+-ky, +-kx)``, which for real maps differ by one reflection) is a sum of squares of the
projections, summed over maps in float64 by a numba kernel. Bands and rings depend on ``|fy|``
and ``|fx|`` only, so they are exactly those of the unsymmetrised spectrum. Both products are
BLAS calls with outputs the size of the maps, so BLAS threads them (float32 within a block of
maps for float16/32 input, float64 sums across blocks), faster than the FFTs themselves on small
grids (``docs/performance.md``). Park & Kim's log amplitude is not a sum of squares and still
takes one real FFT per map (``log_amplitude=True``).

1. Optionally remove each map's spatial mean (``remove_mean``; recorded): the DC term only.
2. ``P = |fft2(x, norm="ortho")|^2`` (Parseval: ``sum P = sum x^2``), averaged over samples and
   channels and over the sign quadrants (``P(ky, kx)`` with ``P(-ky, kx)``).
3. Normalised radius ``rho = sqrt(fx^2 + fy^2) / 0.5`` with ``fftfreq(h)``, ``fftfreq(w)``: 1 is
   the axis Nyquist, the corners reach ``sqrt(2)``.
4. Bands low ``[0, 1/3)``, mid ``[1/3, 2/3)``, high ``[2/3, sqrt(2)]`` (the Nyquist corner, where
   a checkerboard lives, is high): fractions of the non-DC power.
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError
from .registry import REPRESENTATION, Metric, register

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
    "RADIAL_BINS",
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


def real_dft_basis(n: int) -> np.ndarray:
    """The real DFT basis of length ``n``, ``(n, n)`` float64: columns ``cos(2 pi k t / n)`` for
    ``k = 0..n//2``, then ``sin(2 pi k t / n)`` for ``k = 1..(n-1)//2`` (the sines of 0 and of
    the even-``n`` Nyquist frequency vanish and are left out)."""
    t = np.arange(n)[:, None]
    cos = np.cos(2 * np.pi * t * np.arange(n // 2 + 1) / n)
    sin = np.sin(2 * np.pi * t * np.arange(1, (n - 1) // 2 + 1) / n)
    return np.concatenate([cos, sin], axis=1)


def _basis_index(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of ``real_dft_basis(n)`` holding the cosine and the sine of ``k = 0..n//2``; a
    missing sine points at column ``n`` (a zero the caller pads)."""
    k = np.arange(n // 2 + 1)
    has_sine = (k >= 1) & (k <= (n - 1) // 2)
    return k, np.where(has_sine, n // 2 + k, n)


class SpectrumAccumulator:
    """Mergeable sums of the power spectrum (and log amplitude) of maps, over samples x channels.

    ``sums[r, q]`` is the sum over maps of ``(R_h^T X R_w)[q, r]^2`` (module docstring), from
    which ``mean_power`` assembles the sign-averaged spectrum.

    Parameters
    ----------
    grid : (h, w)
    remove_mean : bool, default False
        Remove each map's spatial mean first, which zeroes the DC term and nothing else.
    log_amplitude : bool, default False
        Also accumulate ``ln(|fft2| + 1e-6)`` for Park & Kim's relative log amplitude.
    precision : {"input", "float64"}, default "input"
        The products run in float64 for float64 maps and in float32 for float16/32 maps (whose
        values carry no more precision; each projection gains ~1e-7 relative error) unless
        "float64"; the squares are summed in float64 either way.
    """

    _BLOCK_BYTES = 32 << 20  # complex FFT output per step (log amplitude)
    _PRODUCT_BLOCK_BYTES = 4 << 20  # maps per matrix-product step (docs/performance.md)

    def __init__(self, grid: tuple[int, int], *, remove_mean: bool = False,
                 log_amplitude: bool = False, precision: str = "input"):
        self.h, self.w = (int(g) for g in grid)
        if precision not in ("input", "float64"):
            raise InputError(f"precision must be 'input' or 'float64'; got {precision!r}")
        self.precision = precision
        self.remove_mean = bool(remove_mean)
        self.log_amplitude = bool(log_amplitude)
        self.count = 0  # maps (samples x channels)
        self.sums = np.zeros((self.w, self.h))  # float64
        self.log_sum = np.zeros((self.h, self.w)) if log_amplitude else None

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
        if m * c:
            self._update_power(maps, real)
        if self.log_amplitude:
            self._update_log(maps, real)
        self.count += m * c
        return self

    def _update_power(self, maps: np.ndarray, real) -> None:
        """Sum the squared projections of ``maps`` into ``self.sums``, block by block.

        The scratch arrays (converted input, row transforms, projections) are allocated once per
        call and reused: fresh multi-MiB arrays per block cost more in page faults than the
        products themselves.
        """
        from .._kernels import jit_enabled, sum_squares
        from .._scratch import cast_into

        m, c = maps.shape[:2]
        h, w = self.h, self.w
        row_basis = real_dft_basis(w).T.astype(real)  # (w, w): frequencies x columns
        col_basis = real_dft_basis(h).astype(real)  # (h, h): rows x frequencies
        step = max(1, min(m, self._PRODUCT_BLOCK_BYTES // (c * h * w * np.dtype(real).itemsize)))
        size = step * c * h * w
        direct = maps.dtype == real and maps.flags.c_contiguous  # else copied per step (tokens)
        converted = None if direct else np.empty(size, dtype=real)
        rows = np.empty(size, dtype=real)
        projections = np.empty(size, dtype=real)
        block_sums = np.zeros_like(self.sums)
        for start in range(0, m, step):
            block = maps[start:start + step]
            count = block.shape[0] * c
            if converted is not None:
                x = converted[:count * h * w].reshape(block.shape)
                cast_into(block, x)
            else:
                x = block
            r = rows[:count * h * w].reshape(w, count * h)
            np.matmul(row_basis, x.reshape(count * h, w).T, out=r)  # (kx basis, map x y)
            p = projections[:count * h * w].reshape(w * count, h)
            np.matmul(r.reshape(w * count, h), col_basis, out=p)  # (kx basis x map, ky basis)
            p = p.reshape(w, count, h)
            if jit_enabled():
                sum_squares(p, block_sums)
            else:  # plain Python loops would crawl: same sums by numpy
                block_sums += np.einsum("rmq,rmq->rq", p, p, dtype=np.float64)
        if not np.isfinite(block_sums).all():  # NaN or infinity anywhere in the maps spreads here
            from .moments import NonFiniteError

            raise NonFiniteError(-1, -1, -1, "maps hold NaN or infinite values; the power "
                                             "sums are no longer valid")
        self.sums += block_sums

    def _update_log(self, maps: np.ndarray, real) -> None:
        import scipy.fft

        from .._kernels import fold_log_amplitude

        m, c = maps.shape[:2]
        wr = self.w // 2 + 1
        step = max(1, self._BLOCK_BYTES // (c * self.h * wr * 2 * np.dtype(real).itemsize))
        bad = 0
        for start in range(0, m, step):
            x = maps[start:start + step].astype(real, copy=False)
            if self.remove_mean:
                x = x - x.mean(axis=(2, 3), keepdims=True)
            half = scipy.fft.rfft2(x, norm="ortho", workers=-1).reshape(-1, self.h, wr)
            bad += fold_log_amplitude(half, self.w, self.log_sum)
        if bad:
            from .moments import NonFiniteError

            raise NonFiniteError(bad, -1, -1, f"maps hold NaN or infinite values ({bad} corrupted "
                                              "FFT bins)")

    def merge(self, other: "SpectrumAccumulator") -> "SpectrumAccumulator":
        if (other.h, other.w, other.remove_mean) != (self.h, self.w, self.remove_mean):
            raise InputError("cannot merge spectra of different grids or preprocessing")
        self.sums += other.sums
        self.count += other.count
        if self.log_amplitude and other.log_amplitude:
            self.log_sum += other.log_sum
        return self

    def mean_power(self) -> np.ndarray:
        """The power spectrum averaged over maps and sign quadrants, ``(h, w)``, DC at ``[0, 0]``.

        ``P[ky, kx] = (|F(ky, kx)|^2 + |F(-ky, kx)|^2) / 2`` averaged over maps, with
        ``F = fft2(x, norm="ortho")``; equal at ``(+-ky, +-kx)``; sums to the mean ``sum x^2``.
        """
        if not self.count:
            raise InputError("no maps were accumulated")
        h, w = self.h, self.w
        padded = np.zeros((w + 1, h + 1))  # a zero row and column for the missing sines
        padded[:w, :h] = self.sums
        cos_x, sin_x = _basis_index(w)
        cos_y, sin_y = _basis_index(h)
        quadrant = sum(padded[bx[None, :], by[:, None]]
                       for bx in (cos_x, sin_x) for by in (cos_y, sin_y))  # (h//2+1, w//2+1)
        fold_y = np.minimum(np.arange(h), h - np.arange(h))
        fold_x = np.minimum(np.arange(w), w - np.arange(w))
        power = quadrant[fold_y[:, None], fold_x[None, :]] / (self.count * h * w)
        if self.remove_mean:
            power[0, 0] = 0.0
        return power

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


# ------------------------------------------------------------------------------- declarations
#: rings of the radial profile in results
RADIAL_BINS = 8
_POWER = ("P = |fft2(x, norm='ortho')|^2 averaged over samples and channels; bands of "
          "rho = sqrt(fx^2 + fy^2)/0.5: low [0, 1/3), mid [1/3, 2/3), high [2/3, sqrt 2]")


def _declare(name: str, long_name: str, compute, definition: str, **fields) -> None:
    register(Metric(name=name, long_name=long_name, units="1", takes=REPRESENTATION,
                    statistic="maps", compute=compute, definition=definition,
                    anchor="spectral-energy-by-spatial-frequency-band", family="frequency",
                    **fields))


_declare("band_fraction", "fraction of non-DC spatial power",
         lambda acc: np.array(list(band_fractions(acc.mean_power()).values())),
         f"{_POWER}; docs/metrics.md section 3", dims=("band",), function=band_fractions)
_declare("radial_profile", "fraction of non-DC spatial power per ring",
         lambda acc, bins: radial_profile(acc.mean_power(), bins)[1],
         f"{RADIAL_BINS} equal rings of rho over (0, sqrt 2]", dims=("radius",),
         params={"bins": RADIAL_BINS}, function=radial_profile)
_declare("relative_log_amplitude", "relative log amplitude (Park & Kim)",
         lambda acc: relative_log_amplitude(acc.mean_log_amplitude()),
         "mean ln(|fft2| + 1e-6), fftshift, half diagonal from the centre, minus DC; Park & Kim, "
         "arXiv 2202.06709; square grids only", dims=("diagonal_step",), default=False,
         needs=lambda: {"log_amplitude": True}, source="Park & Kim, arXiv 2202.06709",
         function=relative_log_amplitude)
_declare("grid_height", "spatial grid height", lambda acc: acc.h,
         "h of the maps or token grid (0 for embeddings); compare bands on equal grids", fill=0)
_declare("grid_width", "spatial grid width", lambda acc: acc.w,
         "w of the maps or token grid", fill=0)
