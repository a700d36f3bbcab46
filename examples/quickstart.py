"""Quickstart: from arrays of your own to effective ranks, spectra and a results file.

Run it with ``python examples/quickstart.py [OUTPUT_FOLDER]``. It builds a small feature store
from numpy arrays (as you would from your own pipeline, e.g. ``tensor.numpy()`` or ``.npy``
files), analyses it under two conventions and prints the headline numbers.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

import distillscope as ds

out = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
n = 2000

# A teacher with a rich 256-d embedding and a student that kept 12 directions of it.
teacher = rng.standard_normal((n, 256)) * np.arange(1, 257) ** -0.5
student = teacher[:, :12] @ rng.standard_normal((12, 256)) + 0.01 * rng.standard_normal((n, 256))

# 1. Effective rank of in-memory arrays, under explicit preprocessing.
print("teacher erank_variance:", round(ds.effective_rank(teacher), 2))
print("student erank_variance:", round(ds.effective_rank(student), 2))
print("student rankme (uncentred, eps 1e-7, as published):",
      round(ds.effective_rank(student, "rankme"), 2))

# 2. The same features as a feature store, written atomically with provenance.
store = out / "features.h5"
with ds.StoreWriter(store, sample_ids=np.arange(n), overwrite=True,
                    config={"source": "examples/quickstart.py"}) as w:
    w.add_condition("clean")
    w.add_model("teacher", role="teacher", architecture="my-vit", n_params=5_000_000)
    w.add_model("student", role="student", architecture="my-cnn", n_params=200_000)
    w.write_layer("teacher", "clean", "embedding", teacher.astype(np.float32))
    w.write_layer("student", "clean", "embedding", student.astype(np.float16))

# 3. Stream the store: every estimator for every model, condition and layer.
results = ds.analyze(store, convention="arxiv_2603_06698")
table = results["effective_rank"].sel(condition="clean", layer="embedding")
print(table.sel(estimator=["erank_variance", "n_components_90", "rankme"]).to_pandas().round(2))

# 4. Results are self-describing xarray; netCDF keeps every attribute.
path = ds.save_results(results, out / "results.nc", overwrite=True)
print("saved", path, "| convention:", ds.load_results(path).attrs["convention"])
