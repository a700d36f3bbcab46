"""Errors of the extraction program, in distillscope's one-line message style."""

from __future__ import annotations

from distillscope import InputError

__all__ = ["ConfigError", "DataError", "ModelError"]


class ConfigError(InputError):
    """The TOML configuration is malformed, has an unknown key or an invalid value."""


class DataError(InputError):
    """Dataset files are missing or are not in the expected format."""


class ModelError(InputError):
    """A model cannot be built, its weights do not fit, or a requested layer does not exist."""
