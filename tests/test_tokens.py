"""Per-image token dimensions (Tian et al., arXiv 2511.15572) against a per-image loop of their
released code's formula, on token layers (n, tokens, d) and map layers, through ``analyze``."""

from __future__ import annotations

import numpy as np
import pytest

import distillscope as ds
from distillscope.metrics.tokens import PerImageDims, per_image_dims, token_dims

THRESHOLDS = (0.80, 0.90, 0.95, 0.99)


def released_code(tokens, thresholds=THRESHOLDS):
    """analysis/analyze_svd_separate.py, one image at a time: SVD of the raw token matrix,
    energy s^2, c = cumsum / sum, d_t = np.searchsorted(c, t) + 1; then make_svd_rank_table.py's
    int(round(np.percentile(d_t, 99)))."""
    per_image = []
    for x in tokens:
        s = np.linalg.svd(np.asarray(x, np.float64), compute_uv=False)
        energy = s**2
        c = np.cumsum(energy) / np.sum(energy)
        per_image.append([int(np.searchsorted(c, t)) + 1 for t in thresholds])
    per_image = np.array(per_image)
    return per_image, [int(round(np.percentile(per_image[:, j], 99)))
                       for j in range(len(thresholds))]


def released_dataset_code(tokens, thresholds=THRESHOLDS):
    """analysis/analyze_dataset_pca.py (default --center off): C = sum_i X_i^T X_i / total
    tokens, eigh, descending; per image E_i(d) = ||X_i V_d||^2 / ||X_i||^2 for every d in a
    loop; the first d reaching t (D if none); then int(round(np.percentile(., 99)))."""
    x = [np.asarray(im, np.float64) for im in tokens]
    c = sum(im.T @ im for im in x) / sum(im.shape[0] for im in x)
    w, v = np.linalg.eigh(c)
    v = v[:, np.argsort(w)[::-1]]
    per_image = []
    for im in x:
        total = np.sum(im**2)
        curve = [np.sum((im @ v[:, :d]) ** 2) / total for d in range(1, v.shape[1] + 1)]
        per_image.append([next((d + 1 for d, e in enumerate(curve) if e >= t), v.shape[1])
                          for t in thresholds])
    per_image = np.array(per_image)
    return per_image, [int(round(np.percentile(per_image[:, j], 99)))
                       for j in range(len(thresholds))]


def tokens_with_structure(rng, n, t, d, rank):
    """Images whose token matrices have a decaying spectrum of varying rank."""
    out = np.empty((n, t, d))
    for i in range(n):
        k = rng.integers(1, rank + 1)
        out[i] = (rng.standard_normal((t, k)) * np.geomspace(4, 0.5, k)) @ rng.standard_normal(
            (k, d)) + 0.05 * rng.standard_normal((t, d))
    return out


def test_per_image_dims_equal_the_released_code():
    rng = np.random.default_rng(0)
    x = tokens_with_structure(rng, 60, 16, 12, 8)
    per_image, table = released_code(x)
    np.testing.assert_array_equal(per_image_dims(x), per_image)
    acc = PerImageDims()
    acc.update(x[30:], start=30)
    acc.merge(PerImageDims()).update(x[:30], start=0)  # any order of blocks
    np.testing.assert_array_equal(acc.dims, per_image)
    assert [token_dims(acc, t) for t in THRESHOLDS] == table


def test_shared_basis_dims_equal_the_released_code():
    from distillscope.metrics.tokens import shared_basis_dims

    rng = np.random.default_rng(4)
    x = tokens_with_structure(rng, 40, 16, 12, 8) + rng.standard_normal(12)  # uncentred
    per_image, table = released_dataset_code(x)
    np.testing.assert_array_equal(shared_basis_dims([x[:13], x[13:]]), per_image)
    acc = PerImageDims(keep_tokens=True)
    acc.update(x[20:], start=20)
    acc.update(x[:20], start=0)
    assert [token_dims(acc, t, shared_basis=True) for t in THRESHOLDS] == table
    with pytest.raises(ds.InputError, match="keep_tokens=True"):
        token_dims(PerImageDims(), 0.9, shared_basis=True)


def test_invariances_rotation_token_order_and_scale():
    rng = np.random.default_rng(1)
    x = tokens_with_structure(rng, 20, 10, 8, 6)
    q = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    base = per_image_dims(x)
    np.testing.assert_array_equal(per_image_dims(x @ q), base)  # rotations of the features
    np.testing.assert_array_equal(per_image_dims(x[:, rng.permutation(10)]), base)  # tokens
    np.testing.assert_array_equal(per_image_dims(x * rng.uniform(0.1, 10, (20, 1, 1))), base)
    assert per_image_dims(np.zeros((1, 4, 3))).tolist() == [[0, 0, 0, 0]]
    with pytest.raises(ds.InputError, match="thresholds must lie in"):
        per_image_dims(x, [0.0])


def test_analyze_under_the_convention_on_token_and_map_layers(tmp_path):
    rng = np.random.default_rng(2)
    n, grid, d = 90, (4, 4), 12
    patches = tokens_with_structure(rng, n, 16, d, 9)
    cls = rng.standard_normal((n, 1, d)) * 50  # dropped: it would dominate the energy
    maps = tokens_with_structure(rng, n, 9, 6, 5).transpose(0, 2, 1).reshape(n, 6, 3, 3)
    path = tmp_path / "tokens.h5"
    with ds.StoreWriter(path, sample_ids=np.arange(n)) as w:
        w.add_condition("clean", kind="clean")
        w.add_model("teacher", role="teacher", architecture="vit")
        w.add_model("student", role="student", architecture="cnn")
        w.write_layer("teacher", "clean", "blocks.11",
                      np.concatenate([cls, patches], axis=1).astype(np.float32), kind="tokens",
                      grid=grid, num_prefix_tokens=1)
        w.write_layer("teacher", "clean", "embedding", patches.mean(axis=1).astype(np.float32))
        w.write_layer("student", "clean", "layer2", maps.astype(np.float32))
    stored_patches = patches.astype(np.float32)
    stored_maps = maps.astype(np.float32).reshape(n, 6, 9).transpose(0, 2, 1)
    for convention, prefix, reference in (("tian_2511_15572_per_image", "token_dims_",
                                           released_code),
                                          ("tian_2511_15572_dataset", "token_dims_dataset_",
                                           released_dataset_code)):
        result = ds.analyze(path, convention=convention, rows=32)
        for model, layer, tokens in (("teacher", "blocks.11", stored_patches),
                                     ("student", "layer2", stored_maps)):
            _, table = reference(tokens)
            got = [float(result[f"{prefix}{round(t * 100)}"].sel(
                model=model, condition="clean", layer=layer)) for t in THRESHOLDS]
            assert got == table, (convention, model, layer)
        assert np.isnan(float(result[f"{prefix}90"].sel(
            model="teacher", condition="clean", layer="embedding")))  # not a token layer
    assert "token_dims_90" not in ds.analyze(path)  # off by default, on with the convention
    plan = ds.analyze(path, convention="tian_2511_15572_dataset", dry_run=True)
    assert plan.memory()["token matrices held (shared token basis)"] == n * (17 * 12 + 6 * 9) * 4
