"""CF attributes of the results' coordinates: every one says what it holds and in what units.

Following the CF conventions (section 3.1), each coordinate gets ``long_name`` and ``units``:
``"1"`` for numbers without a physical unit (counts, ranks, ratios, normalised frequencies) and
for labels (strings say what they hold in ``long_name``); a flag also gets ``flag_values`` and
``flag_meanings``. The data variables take theirs from the metric registry
(``engine.assemble``). ``describe`` fills in the coordinates a result dataset has, and refuses a
coordinate nobody described, so a new one cannot be written without them (tested on every kind
of result: one convention, several, a comparison).
"""

from __future__ import annotations

import xarray as xr

__all__ = ["COORDINATES", "describe"]

_LABEL = "1"

#: coordinate name -> its CF attributes
COORDINATES: dict[str, dict] = {
    "model": {"long_name": "model name, as in the feature store", "units": _LABEL},
    "condition": {"long_name": "input condition name (clean or a corruption)", "units": _LABEL},
    "layer": {"long_name": "layer name, as in the feature store", "units": _LABEL},
    "role": {"long_name": "role of the model: teacher or student", "units": _LABEL},
    "architecture": {"long_name": "model architecture (timm name or description)",
                     "units": _LABEL},
    "n_params": {"long_name": "number of parameters of the model", "units": "1"},
    "model_family": {"long_name": "family of seeds the model belongs to (empty: none)",
                     "units": _LABEL},
    "seed": {"long_name": "training seed of the model (-1: not given)", "units": "1"},
    "condition_kind": {"long_name": "kind of condition: clean, gaussian_noise, band_noise, ...",
                       "units": _LABEL},
    "condition_sigma": {"long_name": "noise standard deviation of the condition, in the units "
                                     "of its condition_space (NaN: no noise)", "units": "1"},
    "condition_space": {"long_name": "space the noise is added in: pixel (0-1 intensities) or "
                                     "normalized (after the model's normalisation); empty: none",
                        "units": _LABEL},
    "condition_band": {"long_name": "spatial-frequency band of band-limited noise (empty: none)",
                       "units": _LABEL},
    "estimator": {"long_name": "effective-rank estimator", "units": _LABEL},
    "estimator_center": {"long_name": "whether the estimator centres the features",
                         "units": "1", "flag_values": [0, 1],
                         "flag_meanings": "uncentred centred"},
    "estimator_eps": {"long_name": "regulariser eps of the estimator (docs/metrics.md)",
                      "units": "1"},
    "estimator_definition": {"long_name": "definition of the estimator", "units": _LABEL},
    "component": {"long_name": "rank of the eigenvalue (1: the largest)", "units": "1"},
    "student": {"long_name": "student model name", "units": _LABEL},
    "versus": {"long_name": "the student another student is compared with", "units": _LABEL},
    "teacher_layer": {"long_name": "teacher layer name", "units": _LABEL},
    "student_layer": {"long_name": "student layer name", "units": _LABEL},
    "angle": {"long_name": "index of the principal angle (1: the smallest)", "units": "1"},
    "band": {"long_name": "spatial-frequency band", "units": _LABEL},
    "band_lower": {"long_name": "lower edge of the band (normalised radial frequency, 1 = axis "
                                "Nyquist)", "units": "1"},
    "band_upper": {"long_name": "upper edge of the band (normalised radial frequency, 1 = axis "
                                "Nyquist)", "units": "1"},
    "band_condition": {"long_name": "the band_noise condition of each band", "units": _LABEL},
    "radius": {"long_name": "normalised radial frequency (ring centre)", "units": "1"},
    "radius_lower": {"long_name": "normalised radial frequency (ring lower edge)", "units": "1"},
    "diagonal_step": {"long_name": "step along the diagonal of the 2-D spectrum", "units": "1"},
    "family": {"long_name": "family of seeds (students of one architecture)", "units": _LABEL},
    "family_size": {"long_name": "number of seeds in the family", "units": "1"},
    "bound": {"long_name": "bound of the confidence interval: low or high", "units": _LABEL},
    "convention": {"long_name": "named convention of the analysis (docs/metrics.md)",
                   "units": _LABEL},
    "convention_variables": {"long_name": "variables the convention computed", "units": _LABEL},
    "run": {"long_name": "results file compared", "units": _LABEL},
    "run_convention": {"long_name": "convention of the run", "units": _LABEL},
    "run_primary": {"long_name": "primary effective-rank estimator of the run's convention",
                    "units": _LABEL},
    "run_store": {"long_name": "feature store the run analysed", "units": _LABEL},
    "run_store_created": {"long_name": "creation time of the run's feature store (ISO 8601)",
                          "units": _LABEL},
    "run_n_samples": {"long_name": "samples in the run's feature store", "units": "1"},
    "run_clean_condition": {"long_name": "the run's clean condition", "units": _LABEL},
    "run_layer": {"long_name": "the run's headline layer", "units": _LABEL},
}


def describe(results: xr.Dataset) -> xr.Dataset:
    """Give every coordinate of ``results`` its CF attributes (in place; returns it).

    ``convention_<attribute>`` coordinates (a run attribute that differs between the
    conventions of one pass) are described from their name.

    Raises
    ------
    KeyError
        For a coordinate ``COORDINATES`` does not describe (a programming error).
    """
    for name in results.coords:
        attrs = COORDINATES.get(str(name))
        if attrs is None and str(name).startswith("convention_"):
            attribute = str(name)[len("convention_"):]
            attrs = {"long_name": f"run attribute {attribute!r} of each convention",
                     "units": _LABEL}
        if attrs is None:
            raise KeyError(f"coordinate {name!r} has no CF attributes: add it to "
                           "distillscope.results.attributes.COORDINATES")
        for key, value in attrs.items():
            results[name].attrs.setdefault(key, value)
    return results
