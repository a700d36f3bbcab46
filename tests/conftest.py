import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference.py

import distillscope as ds  # noqa: E402


def write_store(path, layers, *, n=None, sample_ids=None, labels=None, conditions=("clean",),
                models=None):
    """Write a store from {(model, condition, layer): array or (array, kwargs)}."""
    first = next(iter(layers.values()))
    first = first[0] if isinstance(first, tuple) else first
    n = first.shape[0] if n is None else n
    ids = np.arange(n) + 1000 if sample_ids is None else sample_ids
    models = models or {}
    with ds.StoreWriter(path, sample_ids=ids, labels=labels, config={"test": True}) as w:
        for c in conditions:
            w.add_condition(c, kind="clean" if c == "clean" else "gaussian_noise")
        for model in dict.fromkeys(k[0] for k in layers):
            attrs = dict(models.get(model, {}))
            role = attrs.pop("role", "teacher" if model == "teacher" else "student")
            w.add_model(model, role=role, architecture=f"arch-{model}", n_params=attrs.pop("n_params", 10),
                        **attrs)
        for (model, condition, layer), value in layers.items():
            array, kwargs = value if isinstance(value, tuple) else (value, {})
            w.write_layer(model, condition, layer, array, **kwargs)
    return Path(path)


@pytest.fixture
def small_store(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    layers = {
        ("teacher", "clean", "embedding"): rng.standard_normal((n, 24)).astype(np.float32),
        ("student", "clean", "embedding"): rng.standard_normal((n, 24)).astype(np.float32),
    }
    return write_store(tmp_path / "small.h5", layers)
