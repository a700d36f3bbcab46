"""A small extraction configuration over scikit-learn's digits, for the extraction tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

NOISE = """
[[conditions]]
name = "noise"
kind = "gaussian_noise"
space = "normalized"
sigma = 0.1
"""


def band(name: str = "band", which: str = "high", sigma: float = 0.2) -> str:
    """A band-limited noise condition."""
    return f"""
[[conditions]]
name = "{name}"
kind = "band_noise"
band = "{which}"
sigma = {sigma}
"""


def digits_config(path: Path, *, models: str, run: str = "", limit: int = 12,
                  conditions: str = NOISE + band()) -> Path:
    """Write a configuration: batches of 8 in float32, ``limit`` digits per split at 32 x 32
    with one shared preprocessing, the clean condition, ``conditions`` and ``models``."""
    path.write_text(textwrap.dedent(f"""
        [run]
        batch_size = 8
        dtype = "float32"
        {run}
        [data]
        source = "digits"
        limit = {limit}
        [preprocess]
        preset = "none"
        size = 32
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
        [[conditions]]
        name = "clean"
        kind = "clean"
        """) + textwrap.dedent(conditions) + textwrap.dedent(models))
    return path
