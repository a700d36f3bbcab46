"""The feature store, format version 1: schema and validation, writer, reader.

``docs/store-format.md`` documents the format; ``schema`` holds it in code.
"""

from .reader import Store, open_store, validate_store
from .schema import FORMAT, FORMAT_VERSION, LayerInfo, ModelInfo, nonfinite_message
from .writer import LayerWriter, StoreWriter

__all__ = ["FORMAT", "FORMAT_VERSION", "LayerInfo", "ModelInfo", "Store", "StoreWriter",
           "LayerWriter", "open_store", "validate_store", "nonfinite_message"]
