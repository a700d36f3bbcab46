"""Labelled band-energy variables for ``analyze`` (spectra accumulated while streaming)."""

from __future__ import annotations

import numpy as np

from .metrics.frequency import BANDS, SpectrumAccumulator, band_fractions, radial_profile, relative_log_amplitude

__all__ = ["frequency_variables", "RADIAL_BINS"]

RADIAL_BINS = 8


def frequency_variables(data_vars: dict, coords: dict, attrs: dict,
                        spectra: dict[tuple[int, int, int], SpectrumAccumulator],
                        shape: tuple[int, int, int], remove_mean: bool) -> None:
    """Add band fractions, radial profiles, log amplitudes and grid sizes per entry."""
    dims3 = ("model", "condition", "layer")
    fractions = np.full((*shape, len(BANDS)), np.nan)
    profile = np.full((*shape, RADIAL_BINS), np.nan)
    logged = [acc for acc in spectra.values() if acc.log_amplitude]
    longest = max((acc.h - acc.h // 2 for acc in logged), default=0)
    amplitude = np.full((*shape, longest), np.nan)
    grid = np.zeros((*shape, 2), dtype=np.int64)
    edges = None
    for idx, acc in spectra.items():
        power = acc.mean_power()
        fractions[idx] = list(band_fractions(power).values())
        edges, profile[idx] = radial_profile(power, RADIAL_BINS)
        grid[idx] = (acc.h, acc.w)
        if acc.log_amplitude:
            curve = relative_log_amplitude(acc.mean_log_amplitude())
            amplitude[idx + (slice(0, curve.size),)] = curve
    centres = (edges[:-1] + edges[1:]) / 2
    coords["band"] = list(BANDS)
    coords["band_lower"] = ("band", np.array([lo for lo, _ in BANDS.values()]))
    coords["band_upper"] = ("band", np.array([hi for _, hi in BANDS.values()]))
    coords["radius"] = ("radius", centres, {"long_name": "normalised radial frequency (ring centre)",
                                            "units": "1", "definition": "sqrt(fx^2 + fy^2) / 0.5; 1 = axis Nyquist"})
    coords["radius_lower"] = ("radius", edges[:-1])
    if logged:
        coords["diagonal_step"] = np.arange(amplitude.shape[-1])
        data_vars["relative_log_amplitude"] = ((*dims3, "diagonal_step"), amplitude, {
            "long_name": "relative log amplitude (Park & Kim)", "units": "1",
            "definition": "mean ln(|fft2| + 1e-6), fftshift, half diagonal from the centre, minus "
                          "DC; Park & Kim, arXiv 2202.06709; square grids only"})
    how = "spatial mean removed per map" if remove_mean else "spatial mean kept"
    data_vars["band_fraction"] = ((*dims3, "band"), fractions, {
        "long_name": "fraction of non-DC spatial power", "units": "1",
        "definition": "P = |fft2(x, norm='ortho')|^2 averaged over samples and channels; bands of "
                      "rho = sqrt(fx^2 + fy^2)/0.5: low [0, 1/3), mid [1/3, 2/3), high "
                      f"[2/3, sqrt 2]; {how}; docs/metrics.md section 3"})
    data_vars["radial_profile"] = ((*dims3, "radius"), profile, {
        "long_name": "fraction of non-DC spatial power per ring", "units": "1",
        "definition": f"{RADIAL_BINS} equal rings of rho over (0, sqrt 2]; {how}"})
    data_vars["grid_height"] = (dims3, grid[..., 0], {
        "long_name": "spatial grid height", "units": "1",
        "definition": "h of the maps or token grid (0 for embeddings); compare bands on equal grids"})
    data_vars["grid_width"] = (dims3, grid[..., 1], {
        "long_name": "spatial grid width", "units": "1", "definition": "w of the maps or token grid"})
    attrs["remove_map_mean"] = int(remove_mean)
