"""A synthetic feature store the package can generate itself, for the README and the tests.

It imitates the geometry that arXiv 2603.06698 reports, with known ground truth and no model:
a 512-d teacher embedding with a power-law spectrum (effective rank near 90), and three
"students" of growing width whose embeddings live in the teacher's space but keep only a ~16
dimensional subspace of it (dimensional collapse, whatever the width), two seeds each. A
Gaussian-noise condition perturbs the common latent inputs. The teacher also stores ViT-like
tokens (CLS + a 7x7 grid) and each student a 8x8 feature map, so pooling is exercised.

These are *not* real models: the trained embedded default arrives with the ``examples/`` training
script. Everything is seeded; the same arguments give the same store bit for bit.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .store import StoreWriter

__all__ = ["make_demo_store", "DEMO_STUDENTS"]

#: student name -> (width multiplier, kept teacher directions)
DEMO_STUDENTS = {"student_s": (1, 20), "student_m": (2, 21), "student_l": (4, 21)}
_D = 512
_TOKENS_D = 64
_GRID = (7, 7)


def _orthonormal(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return q


def make_demo_store(path: str | os.PathLike[str], *, n_samples: int = 2000, seed: int = 0,
                    overwrite: bool = False) -> Path:
    """Write the synthetic demo store to ``path`` and return the path.

    Parameters
    ----------
    path : path-like
    n_samples : int, default 2000
    seed : int, default 0
    overwrite : bool, default False
    """
    rng = np.random.default_rng(seed)
    n = int(n_samples)
    scale = np.arange(1, _D + 1, dtype=np.float64) ** -0.535  # teacher eigenvalues ~ i^-1.07
    basis = _orthonormal(rng, _D, _D)
    latent = rng.standard_normal((n, _D))
    conditions = {"clean": 0.0, "latent_noise": 0.35}
    noise = rng.standard_normal((n, _D))
    labels = np.argmax(latent[:, :10], axis=1)
    config = {"generator": "distillscope.demo.make_demo_store", "n_samples": n, "seed": seed}
    with StoreWriter(path, sample_ids=np.arange(n, dtype=np.int64) + 10_000, labels=labels,
                     splits=np.where(np.arange(n) % 5 == 0, "test", "train"), config=config,
                     producer="distillscope.demo", overwrite=overwrite) as w:
        for name, strength in conditions.items():
            if strength:
                w.add_condition(name, kind="gaussian_noise", space="latent", sigma=strength)
            else:
                w.add_condition(name, kind="clean")
        w.add_model("teacher", role="teacher", architecture="synthetic power-law teacher",
                    n_params=0)
        token_mix = _orthonormal(rng, _D, _TOKENS_D)
        patch_mix = rng.standard_normal((_GRID[0] * _GRID[1], _TOKENS_D)) * 0.3
        students = {}
        for name, (width, kept) in DEMO_STUDENTS.items():
            for s in range(2):
                model = f"{name}_seed{s}"
                w.add_model(model, role="student", architecture=f"synthetic cnn x{width}",
                            n_params=70_000 * width * width, family=name, seed=s)
                students[model] = (width, kept, s)
        for condition, strength in conditions.items():
            x = latent + strength * noise
            teacher = (x * scale) @ basis.T
            w.write_layer("teacher", condition, "embedding", teacher.astype(np.float32))
            cls = teacher @ token_mix
            patches = cls[:, None, :] * 0.2 + patch_mix * x[:, None, :_TOKENS_D]
            tokens = np.concatenate([cls[:, None, :], patches], axis=1)
            w.write_layer("teacher", condition, "tokens", tokens.astype(np.float16),
                          grid=_GRID, num_prefix_tokens=1)
            for model, (width, kept, s) in students.items():
                r = np.random.default_rng([seed, width, s])
                # the student keeps a mixture of the leading teacher directions only
                mix = _orthonormal(r, kept, kept)
                weights = np.linspace(1.0, 0.8, kept) * np.arange(1, kept + 1) ** -0.3
                kept_part = (x[:, :kept] * weights) @ mix
                jitter = 0.05 * r.standard_normal((n, kept)) * (1 + 2 * strength * width)
                embedding = (kept_part + jitter) @ basis[:, :kept].T
                w.write_layer(model, condition, "embedding", embedding.astype(np.float32))
                channels = 16 * width
                spatial = r.standard_normal((channels, 8, 8)) * 0.1 + 1.0
                projection = r.standard_normal((kept, channels)) / np.sqrt(kept)
                pre = (kept_part @ projection)[:, :, None, None] * spatial
                maps = np.maximum(pre, 0.0)  # post-ReLU, non-negative like a real CNN
                w.write_layer(model, condition, "conv3", maps.astype(np.float16))
    return Path(path)
