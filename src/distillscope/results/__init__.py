"""Result datasets: saved as netCDF (h5netcdf engine), loaded back identical.

The layout (dimensions, variables and their attributes) is documented in
``docs/results-format.md``; the variables come from the metric registry.
"""

from .conventions import convention_names, one_convention, stack_conventions
from .netcdf import load_results, save_results

__all__ = ["save_results", "load_results", "stack_conventions", "one_convention",
           "convention_names"]
