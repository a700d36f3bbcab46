"""distillscope's extraction program: teacher and students over clean and corrupted data.

The only part of distillscope that imports torch and timm. It reads a TOML configuration
(``extract/README.md`` documents every key), runs each model over the dataset under each input
condition, and writes the chosen layers' activations to a feature store through
``distillscope.StoreWriter`` (format: ``docs/store-format.md``).

Run it as ``distillscope extract CONFIG.toml``; from Python::

    from distillscope_extract import extract
    extract("extract/configs/default.toml", output="features.h5")
"""

from __future__ import annotations

import os

# Models and datasets are read from local files only: never a silent download. timm's
# ``pretrained = true`` is served from the local Hugging Face cache (set before timm loads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["extract", "plan_extraction"]


def __getattr__(name: str):
    """``extract`` and ``plan_extraction`` import torch when first used, not with the package:
    the ``distillscope`` command loads ``distillscope_extract.cli`` for every command."""
    if name in __all__:
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
